"""Array-module-generic implied volatility: one source for NumPy and CuPy.

The algorithm of `gpu_pricer.kernels.implied` (Jaeckel's "Let's Be
Rational" for the lognormal models, Householder steps on ``ln Q`` for
Bachelier), written with masks instead of branches: every branch's first
guess is formed for every row and the row's own is selected, and the
Householder steps run on all rows until each has converged.  The inverse
normal cdf is the array module's ``ndtri``.  The fused kernels are tested
against it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from . import reference as ref
from .kernels import formulas as f
from .kernels import implied as k

Array = Any


def _ndtri(xp: ModuleType) -> Any:
    if xp.__name__ == "cupy":
        from cupyx.scipy import special  # noqa: PLC0415
    else:
        from scipy import special  # noqa: PLC0415
    return special.ndtri


def _rational_cubic(xp: ModuleType, x: Array, x_l: Array, x_r: Array, y_l: Array, y_r: Array,
                    d_l: Array, d_r: Array, r: Array) -> Array:
    h = x_r - x_l
    t = xp.clip((x - x_l) / xp.where(h > 0.0, h, 1.0), 0.0, 1.0)
    o = 1.0 - t
    num = (y_r * t * t * t + (r * y_r - h * d_r) * t * t * o + (r * y_l + h * d_l) * t * o * o
           + y_l * o * o * o)
    return xp.where(h > 0.0, num / (1.0 + (r - 3.0) * t * o), 0.5 * (y_l + y_r))


def _shape_control(xp: ModuleType, d_l: Array, d_r: Array, slope: Array) -> Array:
    monotone = (d_l * slope >= 0.0) & (d_r * slope >= 0.0)
    curved = ((d_l <= slope) & (slope <= d_r)) | ((d_l >= slope) & (slope >= d_r))
    r = xp.full_like(slope, k.MIN_CONTROL)
    safe = xp.where(slope != 0.0, slope, 1.0)
    r = xp.where(monotone & (slope != 0.0), xp.maximum(r, (d_r + d_l) / safe), r)
    a = slope - d_l
    b = d_r - slope
    ok = (a != 0.0) & (b != 0.0)
    a1 = xp.where(ok, a, 1.0)
    b1 = xp.where(ok, b, 1.0)
    fit = xp.maximum(xp.abs((d_r - d_l) / b1), xp.abs((d_r - d_l) / a1))
    return xp.where(curved, xp.where(ok, xp.maximum(r, fit), k.MAX_CONTROL), r)


def _control(xp: ModuleType, left: bool, x_l: Array, x_r: Array, y_l: Array, y_r: Array,
             d_l: Array, d_r: Array, second: Array) -> Array:
    h = x_r - x_l
    slope = (y_r - y_l) / xp.where(h != 0.0, h, 1.0)
    den = slope - d_l if left else d_r - slope
    r = xp.where(den != 0.0, (d_r - d_l + 0.5 * h * second) / xp.where(den != 0.0, den, 1.0),
                 k.MAX_CONTROL)
    return xp.maximum(r, _shape_control(xp, d_l, d_r, slope))


def _b(xp: ModuleType, ax: Array, s: Array) -> Array:
    return ref.black_otm(xp, -ax, s)


def _vega(xp: ModuleType, ax: Array, s: Array) -> Array:
    h = ax / s
    return k.INV_SQRT_2PI * xp.exp(-0.5 * (h * h + 0.25 * s * s))


def _complement(xp: ModuleType, ax: Array, s: Array) -> Array:
    h = -ax / s
    t = 0.5 * s
    e = xp.exp(0.5 * ax)
    return ref.norm_cdf(xp, -h - t) / e + e * ref.norm_cdf(xp, h - t)


def normalised_vol(xp: ModuleType, beta: Array, ax: Array) -> Array:
    """s with b(-ax, s) = beta for 0 < beta < e^{-ax/2} (1-d arrays)."""
    ndtri = _ndtri(xp)
    with ref._quiet(xp):
        b_max = xp.exp(-0.5 * ax)
        s_c = xp.sqrt(2.0 * ax)
        b_c = _b(xp, ax, s_c)
        v_c = k.INV_SQRT_2PI * b_max
        s_l = xp.maximum(s_c - b_c / v_c, 1e-300)
        b_l = _b(xp, ax, s_l)
        s_u = s_c + (b_max - b_c) / v_c
        b_u = _b(xp, ax, s_u)
        v_l = _vega(xp, ax, s_l)
        v_u = _vega(xp, ax, s_u)
        lower = beta < b_l
        upper = beta > b_u
        mode = xp.where(lower, k.LOWER, xp.where(upper, k.UPPER, k.MIDDLE))
        # middle branches: s(beta) through the tangent points
        left = beta < b_c
        r_ml = _control(xp, False, b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, 0.0 * ax)
        s_ml = _rational_cubic(xp, beta, b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, r_ml)
        r_mu = _control(xp, True, b_c, b_u, s_c, s_u, 1.0 / v_c, 1.0 / v_u, 0.0 * ax)
        s_mu = _rational_cubic(xp, beta, b_c, b_u, s_c, s_u, 1.0 / v_c, 1.0 / v_u, r_mu)
        # lowest branch: the map f = c ax N(-z)^3
        z = ax / (k.SQRT3 * s_l)
        p = ref.norm_cdf(xp, z * -1.0)
        f_l = k.LOWER_MAP_C * ax * p * p * p
        d_r = 2.0 * xp.pi * z * z * p * p * xp.exp(z * z + 0.125 * s_l * s_l)
        second = (2.0 * xp.pi * z * z / s_l * p * xp.exp(2.0 * z * z + 0.25 * s_l * s_l)
                  * (2.0 * z + p / ref.norm_pdf(xp, z) * (0.25 * s_l * s_l - 2.0 - 2.0 * z * z)))
        zero = 0.0 * ax
        one = zero + 1.0
        r_lo = _control(xp, False, zero, b_l, zero, f_l, one, d_r, second)
        f_lo = _rational_cubic(xp, beta, zero, b_l, zero, f_l, one, d_r, r_lo)
        u = f_lo / (k.LOWER_MAP_C * ax)
        zz = -ndtri(xp.cbrt(xp.clip(u, 0.0, 0.125)))
        s_lo = xp.where((f_lo > 0.0) & (u < 0.125), ax / (k.SQRT3 * zz), s_l)
        # highest branch: the map f = N(-s/2)
        f_u = ref.norm_cdf(xp, -0.5 * s_u)
        w = ax / s_u
        d_l = -0.5 * xp.exp(0.5 * w * w)
        second_u = 0.5 * k.SQRT_2PI * w * w / s_u * xp.exp(w * w + 0.125 * s_u * s_u)
        r_hi = _control(xp, True, b_u, b_max, f_u, zero, d_l, zero - 0.5, second_u)
        f_hi = _rational_cubic(xp, beta, b_u, b_max, f_u, zero, d_l, zero - 0.5, r_hi)
        s_hi = xp.where(f_hi > 0.0, -2.0 * ndtri(xp.clip(f_hi, 0.0, 0.5)), 2.0 * s_u)
        s = xp.where(lower, s_lo, xp.where(upper, s_hi, xp.where(left, s_ml, s_mu)))
        bad = ~(xp.isfinite(s) & (s > 0.0))
        s = xp.where(bad, xp.where(s_c > 0.0, s_c, 1.0), s)
        return _householder_black(xp, beta, ax, s, mode, b_max)


def _householder_step(xp: ModuleType, nu: Array, g2: Array, g3: Array) -> Array:
    """The third-order Householder step, Newton's where it is not finite
    (the kernels' householder_step before its clamp)."""
    step = nu * (1.0 + 0.5 * g2 * nu) / (1.0 + nu * (g2 + g3 * nu * (1.0 / 6.0)))
    return xp.where(xp.isfinite(step), step, nu)


def _householder_black(xp: ModuleType, beta: Array, ax: Array, s: Array, mode: Array,
                       b_max: Array) -> Array:
    log_beta = xp.log(beta)
    c_beta = b_max - beta
    active = xp.ones(beta.shape, dtype=bool)
    is_lower = mode == k.LOWER
    is_upper = mode == k.UPPER
    for _ in range(k.MAX_STEPS):
        v = _vega(xp, ax, s)
        h2 = (ax * ax / (s * s) - 0.25 * s * s) / s
        h3 = h2 * h2 - 3.0 * ax * ax / (s * s * s * s) - 0.25
        b = _b(xp, ax, s)
        lb = xp.log(xp.where(b > 0.0, b, 1.0))
        lb = xp.where(lb != 0.0, lb, -1.0)
        vb = v / xp.where(b > 0.0, b, 1.0)
        nu_lo = (1.0 / lb - 1.0 / log_beta) * lb * lb / vb
        a2_lo = -(2.0 + lb) / lb * vb
        a3_lo = (2.0 * lb * lb + 6.0 * lb + 6.0) / (lb * lb) * vb * vb
        c = _complement(xp, ax, s)
        nu_hi = -(xp.log(c_beta) - xp.log(c)) * c / v
        a2_hi = v / c
        nu = xp.where(is_lower, nu_lo, xp.where(is_upper, nu_hi, (beta - b) / v))
        a2 = xp.where(is_lower, a2_lo, xp.where(is_upper, a2_hi, 0.0))
        a3 = xp.where(is_lower, a3_lo, xp.where(is_upper, 2.0 * a2_hi * a2_hi, 0.0))
        step = _householder_step(xp, nu, a2 + h2, a3 + 3.0 * a2 * h2 + h3)
        step = xp.where(is_lower & ~(b > 0.0), s, step)  # underflow: double s
        stuck = active & ~xp.isfinite(step)
        step = xp.where(xp.isfinite(step), xp.maximum(step, -0.5 * s), 0.0)
        step = xp.where(active, step, 0.0)
        s = xp.where(stuck, xp.nan, s + step)
        active = active & ~stuck & (xp.abs(step) > k.STEP_RTOL * s)
        if not bool(active.any()):
            break
    return xp.where(active, xp.nan, s)


def _normal_guess(xp: ModuleType, q: Array) -> Array:
    a = k.SQRT_2PI * (q + 0.5)
    disc = a * a - 2.0
    near = xp.where(disc > 0.0, 0.5 * (a + xp.sqrt(xp.maximum(disc, 0.0))), 0.5 * a)
    rhs = -xp.log(q * k.SQRT_2PI)
    u = xp.sqrt(2.0 * xp.maximum(rhs, 0.0))
    u_safe = xp.where(u > 0.0, u, 1.0)
    u = u - (0.5 * u * u + 3.0 * xp.log(u_safe) - rhs) / (u_safe + 3.0 / u_safe)
    u = xp.where(u > 1.0, u, 1.0)
    return xp.where(q >= 0.07, near, 1.0 / u)


def householder_normal(xp: ModuleType, q: Array) -> Array:
    """v with Q(v) = v psi(1/v) = q > 0 (1-d arrays)."""
    with ref._quiet(xp):
        v = _normal_guess(xp, q)
        log_q = xp.log(q)
        active = xp.ones(q.shape, dtype=bool)
        for _ in range(k.MAX_STEPS):
            u = 1.0 / v
            big_q = v * ref.bachelier_otm(xp, -u)
            ok = big_q > 0.0
            ratio = ref.norm_pdf(xp, u) / xp.where(ok, big_q, 1.0)
            nu = -(xp.log(xp.where(ok, big_q, 1.0)) - log_q) / ratio
            u3 = u * u * u
            g3 = 2.0 * ratio * ratio - 3.0 * ratio * u3 + u3 * u * (u * u - 3.0)
            step = _householder_step(xp, nu, -ratio + u3, g3)
            step = xp.where(ok, step, 0.5 * v)
            stuck = active & ~xp.isfinite(step)
            step = xp.where(xp.isfinite(step), xp.maximum(step, -0.5 * v), 0.0)
            step = xp.where(active, step, 0.0)
            v = xp.where(stuck, xp.nan, v + step)
            active = active & ~stuck & (xp.abs(step) > k.STEP_RTOL * v)
            if not bool(active.any()):
                break
        return xp.where(active, xp.nan, v)


def check(xp: ModuleType, model: int, otype: Array, und: Array, strike: Array, t: Array,
          price: Array, r: Array, q: Array) -> Array:
    """Per-row codes before solving, in the order of `gpu_pricer.errors.ErrorCode`."""
    err = xp.zeros(und.shape, dtype=xp.int8)
    err[price <= 0.0] = f.BAD_PRICE
    if model != f.BACHELIER:
        err[strike <= 0.0] = f.BAD_STRIKE
        err[und <= 0.0] = f.BAD_UNDERLYING
    err[t < 0.0] = f.NEG_T
    finite = (xp.isfinite(und) & xp.isfinite(strike) & xp.isfinite(t) & xp.isfinite(price)
              & xp.isfinite(r) & xp.isfinite(q))
    err[~finite] = f.NON_FINITE
    err[otype < 0] = f.BAD_TYPE
    return err


def implied_vol(xp: ModuleType, model: int, otype: Array, und: Array, strike: Array, t: Array,
                price: Array, r: Array, q: Array) -> tuple[Array, Array]:
    """(error codes, implied vols) for 1-d float64 arrays of one length."""
    err = check(xp, model, otype, und, strike, t, price, r, q)
    bad = err != 0
    und, strike, t, price, r, q = ref.sanitise(xp, bad if bool(bad.any()) else None, und,
                                               strike, t, price, 0.1, r, q)
    w = xp.where(otype == 1, 1.0, -1.0)
    with ref._quiet(xp):
        dr = xp.exp(-r * t)
        if model == f.BACHELIER:
            imprecise = ~ref.normal(xp, dr)
            m = und - strike
            intrinsic = xp.maximum(dr * w * m, 0.0)
            terms = dr * (xp.abs(und) + xp.abs(strike))
            cap = xp.full_like(und, xp.inf)
            bound = cap
        else:
            dq = xp.exp(-(r if model == f.BLACK76 else q) * t)
            fd = und * dq
            kd = strike * dr
            # as the kernel (`implied.lognormal_iv`): no vol from digits already lost
            imprecise = ~(ref.normal(xp, dr) & ref.normal(xp, dq) & ref.normal(xp, fd)
                          & ref.normal(xp, kd))
            intrinsic = xp.maximum(w * (fd - kd), 0.0)
            terms = fd + kd
            cap = xp.minimum(fd, kd)
            bound = xp.where(w > 0, fd, kd)  # checked on the price too: tv may round below
        tv = price - intrinsic
        below = tv < -k.INTRINSIC_ULPS * k.EPS * terms  # see INTRINSIC_ULPS
        at = (tv <= 0.0) & ~below
        above = ~below & ~at & ((t == 0.0) | (tv >= cap)
                                | (price >= bound * (1.0 - k.INTRINSIC_ULPS * k.EPS)))
        imprecise &= ~bad
        below &= ~imprecise
        at &= ~imprecise
        above &= ~imprecise
        solve = ~(bad | below | at | above | imprecise)
        vol = xp.zeros_like(und)
        idx = xp.nonzero(solve)[0]
        if idx.size:
            ts = t[idx]
            if model == f.BACHELIER:
                tvu = tv[idx] / dr[idx]
                am = xp.abs(m[idx])
                atm = am == 0.0
                qn = tvu / xp.where(atm, 1.0, am)
                imprecise[idx[~atm & (qn < f.NORMAL_MIN)]] = True  # as the kernel
                qn = xp.maximum(qn, f.NORMAL_MIN)  # those rows' vols are dropped
                v = xp.where(atm, k.SQRT_2PI * tvu, am * householder_normal(xp, qn))
            else:
                fs, ks = fd[idx], kd[idx]
                ax = xp.abs(ref.log_ratio(xp, fs, ks))  # fs/ks may be past the double range
                imprecise[idx[ax > k.MAX_LOG_MONEYNESS]] = True
                ax = xp.minimum(ax, k.MAX_LOG_MONEYNESS)  # those rows' vols are dropped
                beta = tv[idx] / (xp.sqrt(fs) * xp.sqrt(ks))
                capped = beta >= xp.exp(-0.5 * ax)  # at the bound once normalised
                above[idx[capped]] = True
                imprecise[idx[beta < f.NORMAL_MIN]] = True
                beta = xp.maximum(beta, f.NORMAL_MIN)  # those rows' vols are dropped
                v = xp.where(capped, xp.nan, normalised_vol(xp, xp.where(capped, 0.5 * beta,
                                                                         beta), ax))
            vol[idx] = v / xp.sqrt(ts)
    failed = (solve & ~above & ~(xp.isfinite(vol) & (vol >= 0.0))) | imprecise
    err[below & ~bad] = f.BELOW_INTRINSIC
    err[above & ~bad] = f.ABOVE_BOUND
    err[failed] = f.NO_SOLUTION
    vol = xp.where(err != 0, xp.nan, vol)
    return err, vol
