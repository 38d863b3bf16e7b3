"""Array-module-generic reference formulas: one source for NumPy and CuPy.

Every function takes the array module ``xp`` (``numpy`` or ``cupy``) first
and works element-wise on whole arrays, in the manner of CuPy's
``black_scholes(xp, ...)`` example.  The algorithm is the one of the scalar
kernels (see `gpu_pricer.kernels.formulas` for the regions and references),
written with masks instead of branches; the fused kernels are tested
against it on every run.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .kernels import formulas as f

Array = Any

INV_SQRT2 = f.INV_SQRT2
INV_SQRT_2PI = f.INV_SQRT_2PI


def _erfc(xp: ModuleType) -> Any:
    if xp.__name__ == "cupy":
        from cupyx.scipy import special  # noqa: PLC0415
    else:
        from scipy import special  # noqa: PLC0415
    return special.erfc


def norm_cdf(xp: ModuleType, z: Array) -> Array:
    """Standard normal cumulative distribution through erfc (accurate tails)."""
    return 0.5 * _erfc(xp)(-z * INV_SQRT2)


def norm_pdf(xp: ModuleType, z: Array) -> Array:
    """Standard normal density."""
    return INV_SQRT_2PI * xp.exp(-0.5 * z * z)


def _miller_ratio(xp: ModuleType, h: Array, k: int, n_start: int) -> Array:
    r = 0.5 * h + xp.sqrt(n_start + 1.0 + 0.25 * h * h)
    for n in range(n_start, k - 1, -1):
        r = n / (r - h)
    return r


def _taylor_forward(xp: ModuleType, h: Array, t: Array) -> Array:
    rho_prev = xp.ones_like(h)
    rho = norm_pdf(xp, h) / norm_cdf(xp, h) + h
    c = t.copy()
    total = rho * c
    for k in range(1, f.TAYLOR_TERMS):
        rho_prev, rho = rho, h * rho + k * rho_prev
        c *= t / (k + 1)
        if k % 2 == 0:
            total += rho * c
    return total


def _taylor_miller(xp: ModuleType, h: Array, t: Array) -> Array:
    r = _miller_ratio(xp, h, f.TAYLOR_TERMS + 1, f.TAYLOR_TERMS + f.MILLER_EXTRA)
    acc = xp.ones_like(h)
    a_odd = xp.zeros_like(h)
    for k in range(f.TAYLOR_TERMS, 0, -1):
        r = k / (r - h)
        a = r * t / k
        if k % 2 == 1:
            a_odd = a
        else:
            acc = 1.0 + a * a_odd * acc
    return a_odd * acc


def _taylor_odd_sum(xp: ModuleType, h: Array, t: Array) -> Array:
    out = xp.empty_like(h)
    fwd = h >= f.FORWARD_H
    out[fwd] = _taylor_forward(xp, h[fwd], t[fwd])
    out[~fwd] = _taylor_miller(xp, h[~fwd], t[~fwd])
    return out


def _asymptotic_difference(xp: ModuleType, h: Array, t: Array) -> Array:
    p = 1.0 / (-h - t)
    q = 1.0 / (-h + t)
    sp = p + q
    pq = p * q
    e_even = xp.zeros_like(h)
    e_odd = xp.ones_like(h)
    total = xp.ones_like(h)
    coef = 1.0
    for m in range(1, 40):
        e_even = sp * e_odd - pq * e_even
        e_odd = sp * e_even - pq * e_odd
        coef *= -(2.0 * m - 1.0)
        total += coef * e_odd
    return 2.0 * t * pq * total


def black_otm(xp: ModuleType, x: Array, s: Array) -> Array:
    """Normalised out-of-the-money Black call b(x, s) for x <= 0, s >= 0
    (Jaeckel 2015, eq. 2.3), computed without cancellation."""
    out = xp.zeros_like(x)
    pos = s > 0.0
    with _quiet(xp):
        h = xp.where(pos, x / xp.where(pos, s, 1.0), 0.0)
    t = 0.5 * s
    asym = pos & (h + t < f.ASYMPTOTIC_D1)
    taylor = pos & ~asym & (t < 0.5 - 0.125 * h)
    direct = pos & ~asym & ~taylor
    ha, ta = h[asym], t[asym]
    out[asym] = INV_SQRT_2PI * xp.exp(-0.5 * (ha * ha + ta * ta)) * _asymptotic_difference(
        xp, ha, ta
    )
    hs, ts = h[taylor], t[taylor]
    out[taylor] = 2.0 * xp.exp(-0.5 * ts * ts) * norm_cdf(xp, hs) * _taylor_odd_sum(xp, hs, ts)
    hd, td, xd = h[direct], t[direct], x[direct]
    out[direct] = xp.exp(0.5 * xd) * norm_cdf(xp, hd + td) - xp.exp(-0.5 * xd) * norm_cdf(
        xp, hd - td
    )
    return out


def bachelier_otm(xp: ModuleType, z: Array) -> Array:
    """z N(z) + n(z) for z <= 0 without cancellation."""
    near = z >= f.FORWARD_H
    out = xp.empty_like(z)
    zn = z[near]
    out[near] = zn * norm_cdf(xp, zn) + norm_pdf(xp, zn)
    zf = z[~near]
    out[~near] = norm_cdf(xp, zf) * _miller_ratio(xp, zf, 1, f.MILLER_EXTRA + 40)
    return out


class _quiet:
    """Silence floating-point warnings for masked-out lanes (NumPy only)."""

    def __init__(self, xp: ModuleType) -> None:
        self._np = xp.__name__ == "numpy"
        self._state: Any = None

    def __enter__(self) -> None:
        if self._np:
            import numpy as np  # noqa: PLC0415

            self._state = np.seterr(all="ignore")

    def __exit__(self, *exc: object) -> None:
        if self._np:
            import numpy as np  # noqa: PLC0415

            np.seterr(**self._state)


def normal(xp: ModuleType, v: Array) -> Array:
    """Where v is a normal double (the kernels' `formulas.normal`)."""
    return (v >= f.NORMAL_MIN) & (v <= f.NORMAL_MAX)


def log_ratio(xp: ModuleType, a: Array, b: Array) -> Array:
    """ln(a/b) for a, b > 0, as the kernels' `formulas.log_ratio`: from the
    quotient where it is a normal number, else ln a - ln b (a quotient past
    the double range would give an infinite or imprecise log)."""
    ratio = a / b
    x = xp.log(ratio)
    wide = ~normal(xp, ratio)
    if bool(wide.any()):
        x = xp.where(wide, xp.log(a) - xp.log(b), x)
    return x


def _signed_inf(xp: ModuleType, v: Array) -> Array:
    return xp.where(v == 0.0, 0.0, xp.copysign(xp.inf, v))


def lognormal(
    xp: ModuleType,
    w: Array,
    und: Array,
    k: Array,
    t: Array,
    sigma: Array,
    r: Array,
    carry: Array,
    forward_rho: bool,
    size: int = f.N_VALUES,
) -> tuple[Array, ...]:
    """Price and Greeks of generalised Black-Scholes, in the order of
    `gpu_pricer.kernels.formulas` (PRICE, DELTA, ..., VETA): the first `size`
    of them (1: the price; 7: and the first-order Greeks; 14: all), the
    others not computed."""
    with _quiet(xp):
        q = r - carry
        dr = xp.exp(-r * t)
        dq = xp.exp(-q * t)
        sqt = xp.sqrt(t)
        s = sigma * sqt
        x = log_ratio(xp, und, k) + carry * t
        scale = xp.sqrt(und) * xp.sqrt(k) * xp.exp(-0.5 * (r + q) * t)
        itm = w * x > 0.0
        # intrinsic value of the discounted forward, exact at t = 0, plus time value
        intrinsic = xp.where(itm, w * (und * dq - k * dr), 0.0)
        price = intrinsic + scale * black_otm(xp, -xp.abs(x), s)
        if size <= f.DELTA:
            return (price,)
        pos = s > 0.0
        atm = ~pos & (x == 0.0)
        s_safe = xp.where(pos, s, 1.0)
        d1 = xp.where(pos, x / s_safe + 0.5 * s, 0.0)
        d2 = d1 - xp.where(pos, s, 0.0)
        n1 = xp.where(pos, norm_pdf(xp, d1), xp.where(atm, INV_SQRT_2PI, 0.0))
        half = xp.where(atm, 0.5, xp.where(itm, 1.0, 0.0))
        nd1 = xp.where(pos, norm_cdf(xp, w * d1), half)
        nd2 = xp.where(pos, norm_cdf(xp, w * d2), half)
        delta = w * dq * nd1
        theta = w * (q * und * dq * nd1 - r * k * dr * nd2)
        if forward_rho:
            rho = -t * price
            drho = xp.full_like(price, xp.nan)
        else:
            rho = w * k * t * dr * nd2
            drho = -w * und * t * dq * nd1
        zero = xp.zeros_like(price)
        reg = pos & (n1 > 0.0)
        sig = xp.where(reg, sigma, 1.0)
        tt = xp.where(reg, t, 1.0)
        gamma_r = dq * n1 / (und * s_safe)
        vega_r = und * dq * n1 * sqt
        gamma = xp.where(reg, gamma_r, zero)
        vega = xp.where(reg, vega_r, zero)
        theta = theta - xp.where(reg, 0.5 * und * dq * n1 * sig / xp.where(reg, sqt, 1.0), 0.0)
        any_atm = bool(atm.any())
        if any_atm:
            # One-sided limits at sigma*sqrt(t) = 0 at the money.
            t0 = t == 0.0
            gamma = xp.where(atm, xp.inf, gamma)
            vega = xp.where(atm, vega_r, vega)
            theta_sing = xp.where(
                t0, _signed_inf(xp, 0.5 * und * dq * n1 * sigma), 0.5 * und * dq * n1 * sigma / sqt
            )
            theta = theta - xp.where(atm, theta_sing, 0.0)
        first = (price, delta, gamma, vega, theta, rho, drho)
        if size <= f.VANNA:
            return first
        charm = q * delta
        dd1 = carry / s_safe - 0.5 * d2 / tt
        vanna = xp.where(reg, -dq * n1 * d2 / sig, zero)
        volga = xp.where(reg, vega_r * d1 * d2 / sig, zero)
        charm = charm - xp.where(reg, dq * n1 * dd1, 0.0)
        speed = xp.where(reg, -gamma_r / und * (d1 / s_safe + 1.0), zero)
        zomma = xp.where(reg, gamma_r * (d1 * d2 - 1.0) / sig, zero)
        color = xp.where(reg, gamma_r * (q + 0.5 / tt + d1 * dd1), zero)
        veta = xp.where(reg, vega_r * (q - 0.5 / tt + d1 * dd1), zero)
        if any_atm:
            vanna = xp.where(atm, 0.5 * dq * n1 * sqt, vanna)
            sig_pos = sigma > 0.0
            dd1_a = xp.where(
                sig_pos,
                xp.where(
                    t0,
                    _signed_inf(xp, carry / xp.where(sig_pos, sigma, 1.0) + 0.25 * sigma),
                    (carry / xp.where(sig_pos, sigma, 1.0) + 0.25 * sigma) / sqt,
                ),
                _signed_inf(xp, carry),
            )
            charm = charm - xp.where(atm, dq * n1 * dd1_a, 0.0)
            speed = xp.where(atm, -xp.inf, speed)
            zomma = xp.where(atm, -xp.inf, zomma)
            d1_dd1 = 0.5 * carry + 0.125 * sigma * sigma
            t_safe = xp.where(t0, 1.0, t)
            color = xp.where(
                atm, xp.where(t0, xp.inf, _signed_inf(xp, q + 0.5 / t_safe + d1_dd1)), color
            )
            veta = xp.where(
                atm, xp.where(t0, -xp.inf, vega_r * (q - 0.5 / t_safe + d1_dd1)), veta
            )
    return (*first, vanna, volga, charm, speed, zomma, color, veta)


def bachelier(
    xp: ModuleType, w: Array, fwd: Array, k: Array, t: Array, sigma: Array, r: Array,
    size: int = f.N_VALUES,
) -> tuple[Array, ...]:
    """Price and Greeks of the normal model on a forward (forward fixed for
    theta and rho), in the order of `gpu_pricer.kernels.formulas`: the first
    `size` of them, as `lognormal`."""
    with _quiet(xp):
        dr = xp.exp(-r * t)
        sqt = xp.sqrt(t)
        s = sigma * sqt
        m = fwd - k
        itm = w * m > 0.0
        intrinsic = xp.where(itm, xp.abs(m), 0.0)
        pos = s > 0.0
        atm = ~pos & (m == 0.0)
        s_safe = xp.where(pos, s, 1.0)
        d = xp.where(pos, m / s_safe, 0.0)
        price = dr * (intrinsic + xp.where(pos, s, 0.0) * bachelier_otm(xp, -xp.abs(d)))
        if size <= f.DELTA:
            return (price,)
        n = xp.where(pos, norm_pdf(xp, d), xp.where(atm, INV_SQRT_2PI, 0.0))
        nd = xp.where(pos, norm_cdf(xp, w * d), xp.where(atm, 0.5, xp.where(itm, 1.0, 0.0)))
        delta = w * dr * nd
        theta = r * price
        rho = -t * price
        zero = xp.zeros_like(price)
        reg = pos & (n > 0.0)
        sig = xp.where(reg, sigma, 1.0)
        tt = xp.where(reg, t, 1.0)
        gamma_r = dr * n / s_safe
        vega_r = dr * sqt * n
        gamma = xp.where(reg, gamma_r, zero)
        vega = xp.where(reg, vega_r, zero)
        theta = theta - xp.where(reg, 0.5 * dr * n * sig / xp.where(reg, sqt, 1.0), 0.0)
        any_atm = bool(atm.any())
        if any_atm:
            t0 = t == 0.0
            t_safe = xp.where(t0, 1.0, t)
            gamma = xp.where(atm, xp.inf, gamma)
            vega = xp.where(atm, vega_r, vega)
            theta_sing = xp.where(
                t0, _signed_inf(xp, 0.5 * dr * n * sigma), 0.5 * dr * n * sigma / sqt
            )
            theta = theta - xp.where(atm, theta_sing, 0.0)
        first = (price, delta, gamma, vega, theta, rho, xp.full_like(price, xp.nan))
        if size <= f.VANNA:
            return first
        charm = r * delta
        vanna = xp.where(reg, -dr * n * d / sig, zero)
        volga = xp.where(reg, vega_r * d * d / sig, zero)
        speed = xp.where(reg, -gamma_r * d / s_safe, zero)
        zomma = xp.where(reg, gamma_r * (d * d - 1.0) / sig, zero)
        charm = charm + xp.where(reg, 0.5 * dr * n * d / tt, 0.0)
        color = xp.where(reg, r * gamma_r - 0.5 * gamma_r * (d * d - 1.0) / tt, zero)
        veta = xp.where(reg, r * vega_r - 0.5 * vega_r * (1.0 + d * d) / tt, zero)
        if any_atm:
            zomma = xp.where(atm, -xp.inf, zomma)
            color = xp.where(atm, xp.where(t0, xp.inf, _signed_inf(xp, r + 0.5 / t_safe)), color)
            veta = xp.where(atm, xp.where(t0, -xp.inf, vega_r * (r - 0.5 / t_safe)), veta)
    return (*first, vanna, volga, charm, speed, zomma, color, veta)


def check(
    xp: ModuleType, model: int, otype: Array, und: Array, k: Array, t: Array, sigma: Array,
    r: Array, q: Array,
) -> Array:
    """Per-row error codes (0 for a row that can be priced); the first
    failing check wins, in the order of `gpu_pricer.errors.ErrorCode`."""
    err = xp.zeros(und.shape, dtype=xp.int8)
    # Later assignments must not overwrite earlier (higher-priority) codes, so go backwards.
    if model != f.BACHELIER:
        err[k <= 0.0] = f.BAD_STRIKE
        err[und <= 0.0] = f.BAD_UNDERLYING
    err[t < 0.0] = f.NEG_T
    err[sigma < 0.0] = f.NEG_SIGMA
    finite = (
        xp.isfinite(und) & xp.isfinite(k) & xp.isfinite(t) & xp.isfinite(sigma)
        & xp.isfinite(r) & xp.isfinite(q)
    )
    err[~finite] = f.NON_FINITE
    err[otype < 0] = f.BAD_TYPE
    return err


def sanitise(xp: ModuleType, bad: Array | None, und: Array, k: Array, t: Array, value: Array,
             safe_value: float, r: Array, q: Array) -> tuple[Array, ...]:
    """The six inputs with harmless values in the `bad` rows (1 for und, k
    and t, `safe_value` for the fourth, 0 for the rates), so that no warning
    or branch sees them; the inputs themselves when `bad` is None (no bad
    row: the usual chunk, six passes and their arrays saved)."""
    if bad is None:
        return und, k, t, value, r, q
    one = xp.ones_like(und)
    return (xp.where(bad, one, und), xp.where(bad, one, k), xp.where(bad, one, t),
            xp.where(bad, safe_value * one, value), xp.where(bad, 0.0, r),
            xp.where(bad, 0.0, q))


def evaluate(
    xp: ModuleType, model: int, otype: Array, und: Array, k: Array, t: Array, sigma: Array,
    r: Array, q: Array, *, size: int = f.N_VALUES,
) -> tuple[Array, tuple[Array, ...]]:
    """(error codes, values) for 1-d float64 arrays of one length: the first
    `size` values (the kernels' tiers: 1, 7 or all 14), the others not
    computed; rows with a non-zero code are NaN in every value."""
    err = check(xp, model, otype, und, k, t, sigma, r, q)
    bad = err != 0
    any_bad = bool(bad.any())
    und_s, k_s, t_s, sig_s, r_s, q_s = sanitise(xp, bad if any_bad else None, und, k, t,
                                                sigma, 0.2, r, q)
    w = xp.where(otype == 1, 1.0, -1.0)
    if model == f.BSM:
        vals = lognormal(xp, w, und_s, k_s, t_s, sig_s, r_s, r_s - q_s, False, size)
    elif model == f.BLACK76:
        vals = lognormal(xp, w, und_s, k_s, t_s, sig_s, r_s, 0.0 * r_s, True, size)
    else:
        vals = bachelier(xp, w, und_s, k_s, t_s, sig_s, r_s, size)
    # a priced row with a non-finite price, or a NaN value other than the one
    # its model leaves undefined, is OVERFLOW, as the kernels' rows (formulas' finish)
    failed = ~xp.isfinite(vals[f.PRICE])
    for c, v in enumerate(vals[1:], start=1):
        if c != f.UNDEFINED_VALUE[model]:
            failed |= xp.isnan(v)
    overflow = ~bad & failed
    if any_bad or bool(overflow.any()):
        err[overflow] = f.OVERFLOW
        bad = bad | overflow
        vals = tuple(xp.where(bad, xp.nan, v) for v in vals)
    return err, vals
