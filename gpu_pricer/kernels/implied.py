"""Scalar implied-volatility solvers, compiled once for the CPU and once for CUDA.

`build(jit, F)` takes the scalar formulas `F` of `formulas.build` (compiled
with the same decorator) and defines the solvers on top of them, so the
Numba CPU and CUDA kernels run the same source lines.

Black (bsm and black76): the method of P. Jaeckel, "Let's Be Rational"
(Wilmott, 2015), written from the paper.  The price becomes the
normalised out-of-the-money time value ``beta = b(-|x|, s)`` of the
normalised Black call (``x = ln(F/K)``, ``s = sigma sqrt(t)``; in-the-money
prices lose their intrinsic value first, which is where their information
runs out).  Around the inflexion point ``s_c = sqrt(2|x|)`` the tangents at
``s_c`` cut the range of ``beta`` into four branches; in each, a rational
cubic interpolation (Delbourgo & Gregory, 1985) of a map that is nearly
linear there gives the first guess, and third-order Householder steps on
an objective function chosen for the branch (``1/ln b`` in the lowest,
``b`` in the middle two, ``ln(b_max - b)`` in the highest) polish it to
machine precision, usually in two steps.  The inverse normal cdf of the
guesses is Abramowitz & Stegun 26.2.23 refined by one Halley step.

Bachelier: the normal vol from ``Q(v) = v psi(1/v) = q``, where
``q = time value / |F - K|`` and ``psi(u) = n(u) - u N(-u)`` (the
cancellation-free `bachelier_otm`), by the same Householder steps on
``ln Q``, which is increasing and concave in ``v``; the first guess comes
from the expansions of ``Q`` for small and large ``v``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from . import formulas as f

SQRT_2PI = 2.5066282746310002
INV_SQRT_2PI = f.INV_SQRT_2PI
SQRT3 = 1.7320508075688772
#: 2 pi / sqrt(27): the lowest branch's map ``f(s) = c |x| N(-|x|/(sqrt(3) s))^3``
#: has ``f ~ b`` as ``s -> 0``.
LOWER_MAP_C = 1.2091995761561452
#: Householder steps stop once a step changes s by less than this, relative:
#: the error left after a third-order step is of the order of the step to
#: the fourth power (on a dense grid the results are the same as with 1e-8,
#: and 1e-4 still gives them; 1e-3 does not).
STEP_RTOL = 1e-5
MAX_STEPS = 12
#: A price at most this many ulps of its intrinsic value's terms below that
#: value is taken as at intrinsic value: implied vol 0.  The ulps are those of
#: the terms (discounted forward + discounted strike), not of their
#: difference: each term carries the rounding of its exp, which the difference
#: of two close terms magnifies, and which differs between math libraries
#: (glibc on the CPU, CUDA's on the GPU) by an ulp or two.
INTRINSIC_ULPS = 4.0
EPS = 2.220446049250313e-16
#: |ln(F/K)| above which no vol is solved (NO_SOLUTION): beyond it a term
#: e^(|x|/2) N(.) of the normalised Black function leaves the double range
#: where the other is within it (on random books out to |x| = 1,060 every
#: wrong vol had |x| > 740; every one below 700 repriced its price to 1e-12).
MAX_LOG_MONEYNESS = 700.0
#: Smallest rational-cubic control parameter (the denominator stays > 0).
MIN_CONTROL = -(1.0 - 1.4901161193847656e-08)
MAX_CONTROL = 2.0 / 2.220446049250313e-16

# Objective of each branch.
LOWER, MIDDLE, UPPER = 0, 1, 2

# Abramowitz & Stegun 26.2.23 (|error| < 4.5e-4).
_AS_C0, _AS_C1, _AS_C2 = 2.515517, 0.802853, 0.010328
_AS_D1, _AS_D2, _AS_D3 = 1.432788, 0.189269, 0.001308


def build(jit: Callable[[Any], Any], F: SimpleNamespace) -> SimpleNamespace:
    """Compile the solvers with `jit` over the formulas `F` (same decorator)."""
    norm_cdf = F.norm_cdf
    norm_pdf = F.norm_pdf
    finite = F.finite
    log_ratio = F.log_ratio
    normal = F.normal
    black_parts = F.black_parts
    bachelier_otm = F.bachelier_otm

    @jit
    def inv_norm_cdf(p: float) -> float:
        """N^{-1}(p) for 0 < p < 1, about 1e-9 absolute (a first guess only)."""
        q = p if p < 0.5 else 1.0 - p
        u = math.sqrt(-2.0 * math.log(q))
        z = -(u - (_AS_C0 + u * (_AS_C1 + u * _AS_C2))
              / (1.0 + u * (_AS_D1 + u * (_AS_D2 + u * _AS_D3))))
        dens = norm_pdf(z)
        if dens > 0.0:
            e = (norm_cdf(z) - q) / dens
            z -= e / (1.0 + 0.5 * z * e)
        return z if p < 0.5 else -z

    @jit
    def black_otm(ax: float, s: float, e: float) -> float:
        """b(-ax, s) for e = e^{ax/2}: the normalised out-of-the-money Black
        call, `formulas.black_parts`' price (its other parts go unused)."""
        return black_parts(ax, -ax / s if s > 0.0 else 0.0, s, e)[0]

    @jit
    def black_complement(ax: float, s: float, e: float) -> float:
        """b_max - b(-ax, s) = e^{-ax/2} N(-h-t) + e^{ax/2} N(h-t), two positive terms."""
        h = -ax / s
        t = 0.5 * s
        return norm_cdf(-h - t) / e + e * norm_cdf(h - t)

    @jit
    def black_vega(ax: float, s: float) -> float:
        """db/ds = n(x/s + s/2) e^{x/2}, symmetric in x."""
        h = ax / s
        return INV_SQRT_2PI * math.exp(-0.5 * (h * h + 0.25 * s * s))

    @jit
    def householder_step(nu: float, g2: float, g3: float, x: float) -> float:
        """The third-order Householder step from the Newton step nu = -g/g1,
        g2 = g2nd/g1 and g3 = g3rd/g1 (g1, g2nd, g3rd: the objective's
        derivatives); Newton's step where that is not finite; never more than
        halving x; NaN when neither step is finite."""
        step = nu * (1.0 + 0.5 * g2 * nu) / (1.0 + nu * (g2 + g3 * nu * (1.0 / 6.0)))
        if not finite(step):
            step = nu
        return max(step, -0.5 * x) if finite(step) else math.nan

    @jit
    def rational_cubic(x: float, x_l: float, x_r: float, y_l: float, y_r: float,
                       d_l: float, d_r: float, r: float) -> float:
        """Delbourgo-Gregory rational cubic through (x_l, y_l, slope d_l) and
        (x_r, y_r, slope d_r) with control parameter r (3 = cubic Hermite)."""
        h = x_r - x_l
        if not h > 0.0:
            return 0.5 * (y_l + y_r)
        t = (x - x_l) / h
        if t <= 0.0:
            return y_l
        if t >= 1.0:
            return y_r
        o = 1.0 - t
        num = (y_r * t * t * t + (r * y_r - h * d_r) * t * t * o
               + (r * y_l + h * d_l) * t * o * o + y_l * o * o * o)
        return num / (1.0 + (r - 3.0) * t * o)

    @jit
    def shape_control(d_l: float, d_r: float, slope: float) -> float:
        """The least control parameter keeping the interpolant monotone and
        convex (or concave) when the data are."""
        monotone = d_l * slope >= 0.0 and d_r * slope >= 0.0
        convex = d_l <= slope <= d_r
        concave = d_l >= slope >= d_r
        r = MIN_CONTROL
        if monotone and slope != 0.0:
            r = max(r, (d_r + d_l) / slope)
        if convex or concave:
            a = slope - d_l
            b = d_r - slope
            if a != 0.0 and b != 0.0:
                r = max(r, abs((d_r - d_l) / b), abs((d_r - d_l) / a))
            else:
                r = MAX_CONTROL
        return r

    @jit
    def control_left(x_l: float, x_r: float, y_l: float, y_r: float, d_l: float,
                     d_r: float, second: float) -> float:
        """Control parameter matching the second derivative `second` at x_l,
        raised to `shape_control`."""
        h = x_r - x_l
        slope = (y_r - y_l) / h
        den = slope - d_l
        r = (d_r - d_l + 0.5 * h * second) / den if den != 0.0 else MAX_CONTROL
        return max(r, shape_control(d_l, d_r, slope))

    @jit
    def control_right(x_l: float, x_r: float, y_l: float, y_r: float, d_l: float,
                      d_r: float, second: float) -> float:
        """The same at x_r."""
        h = x_r - x_l
        slope = (y_r - y_l) / h
        den = d_r - slope
        r = (d_r - d_l + 0.5 * h * second) / den if den != 0.0 else MAX_CONTROL
        return max(r, shape_control(d_l, d_r, slope))

    @jit
    def lower_guess(beta: float, ax: float, s_l: float, b_l: float) -> float:
        """First guess below b_l: interpolate f(beta) for the map
        f = c ax N(-z)^3, z = ax/(sqrt(3) s), from (0, 0, slope 1) to
        b_l, then invert the map."""
        z = ax / (SQRT3 * s_l)
        p = norm_cdf(-z)
        f_l = LOWER_MAP_C * ax * p * p * p
        # df/db and d2f/db2 at s_l (derivatives in s divided by b's)
        d_r = 2.0 * math.pi * z * z * p * p * math.exp(z * z + 0.125 * s_l * s_l)
        second = (2.0 * math.pi * z * z / s_l * p * math.exp(2.0 * z * z + 0.25 * s_l * s_l)
                  * (2.0 * z + p / norm_pdf(z) * (0.25 * s_l * s_l - 2.0 - 2.0 * z * z)))
        r = control_right(0.0, b_l, 0.0, f_l, 1.0, d_r, second)
        fv = rational_cubic(beta, 0.0, b_l, 0.0, f_l, 1.0, d_r, r)
        if not fv > 0.0:
            return 0.5 * s_l
        u = fv / (LOWER_MAP_C * ax)
        if u >= 0.125:  # N(-z)^3 < 1/8
            return s_l
        zz = -inv_norm_cdf(u ** (1.0 / 3.0))
        return ax / (SQRT3 * zz)

    @jit
    def upper_guess(beta: float, ax: float, s_u: float, b_u: float, b_max: float) -> float:
        """First guess above b_u: interpolate f(beta) for the map
        f = N(-s/2) from b_u to (b_max, 0, slope -1/2), then invert."""
        f_u = norm_cdf(-0.5 * s_u)
        w = ax / s_u
        d_l = -0.5 * math.exp(0.5 * w * w)
        second = 0.5 * SQRT_2PI * w * w / s_u * math.exp(w * w + 0.125 * s_u * s_u)
        r = control_left(b_u, b_max, f_u, 0.0, d_l, -0.5, second)
        fv = rational_cubic(beta, b_u, b_max, f_u, 0.0, d_l, -0.5, r)
        if not fv > 0.0:
            return 2.0 * s_u
        if fv >= 0.5:
            return s_u
        return -2.0 * inv_norm_cdf(fv)

    @jit
    def normalised_vol(beta: float, ax: float, e: float) -> float:
        """s = sigma sqrt(t) with b(-ax, s) = beta, for 0 < beta < 1/e, e = e^{ax/2}."""
        b_max = 1.0 / e
        s_c = math.sqrt(2.0 * ax)
        # at s_c, x/s + s/2 = 0: one erfc (only the guess and the branch depend on it)
        b_c = 0.5 * b_max - e * norm_cdf(-s_c)
        v_c = INV_SQRT_2PI * b_max  # b'(s_c)
        if beta < b_c:
            s_l = s_c - b_c / v_c
            b_l = black_otm(ax, s_l, e)
            if beta < b_l:
                mode = LOWER
                s = lower_guess(beta, ax, s_l, b_l)
            else:
                mode = MIDDLE
                v_l = black_vega(ax, s_l)
                r = control_right(b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, 0.0)
                s = rational_cubic(beta, b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, r)
        else:
            s_u = s_c + (b_max - b_c) / v_c
            b_u = black_otm(ax, s_u, e)
            if beta <= b_u:
                mode = MIDDLE
                v_u = black_vega(ax, s_u)
                r = control_left(b_c, b_u, s_c, s_u, 1.0 / v_c, 1.0 / v_u, 0.0)
                s = rational_cubic(beta, b_c, b_u, s_c, s_u, 1.0 / v_c, 1.0 / v_u, r)
            else:
                mode = UPPER
                s = upper_guess(beta, ax, s_u, b_u, b_max)
        if not (s > 0.0 and finite(s)):
            s = s_c if s_c > 0.0 else 1.0
        return householder_black(beta, ax, s, mode, e)

    @jit
    def householder_black(beta: float, ax: float, s: float, mode: int, e: float) -> float:
        """Third-order Householder steps on the branch's objective; NaN when
        they do not converge."""
        log_beta = math.log(beta)
        c_beta = 1.0 / e - beta
        for _ in range(MAX_STEPS):
            v = black_vega(ax, s)
            h2 = (ax * ax / (s * s) - 0.25 * s * s) / s  # b''/b'
            h3 = h2 * h2 - 3.0 * ax * ax / (s * s * s * s) - 0.25  # b'''/b'
            if mode == LOWER:
                b = black_otm(ax, s, e)
                if not b > 0.0:
                    s *= 2.0
                    continue
                lb = math.log(b)
                # g = 1/ln b - 1/ln beta; F(u) = 1/ln u
                nu = (1.0 / lb - 1.0 / log_beta) * b * lb * lb / v
                a2 = -(2.0 + lb) / lb * (v / b)  # F''/F' * b'
                a3 = (2.0 * lb * lb + 6.0 * lb + 6.0) / (lb * lb) * (v / b) * (v / b)
            elif mode == MIDDLE:
                nu = (beta - black_otm(ax, s, e)) / v
                a2 = 0.0
                a3 = 0.0
            else:
                c = black_complement(ax, s, e)
                # g = ln(b_max - beta) - ln(b_max - b); F(u) = -ln(b_max - u)
                nu = -(math.log(c_beta) - math.log(c)) * c / v
                a2 = v / c
                a3 = 2.0 * a2 * a2
            step = householder_step(nu, a2 + h2, a3 + 3.0 * a2 * h2 + h3, s)
            if not finite(step):
                return math.nan
            s += step
            if abs(step) <= STEP_RTOL * s:
                return s
        return math.nan

    @jit
    def lognormal_iv(w: float, und: float, k: float, t: float, price: float, r: float,
                     q: float) -> Any:
        """(sigma, error code) of a bsm (q = dividend yield) or black76 (q = r)
        price; und is the spot or the forward.  A discount factor, discounted
        forward or strike, or normalised time value that is not a normal
        double (`normal`: r t or q t past +-708, a price of 1e-300 far out of
        the money) has lost its precision, or is 0 or inf: the vol it would
        give is wrong, so none is given (NO_SOLUTION)."""
        dr = math.exp(-r * t)
        dq = math.exp(-q * t)
        fd = und * dq  # discounted forward
        kd = k * dr  # discounted strike
        if not (normal(dr) and normal(dq) and normal(fd) and normal(kd)):
            return math.nan, f.NO_SOLUTION
        intrinsic = w * (fd - kd)
        intrinsic = max(intrinsic, 0.0)
        tv = price - intrinsic
        if tv <= 0.0:
            if tv < -INTRINSIC_ULPS * EPS * (fd + kd):
                return math.nan, f.BELOW_INTRINSIC
            return 0.0, f.OK
        # at or above the bound (the discounted forward for a call, the discounted
        # strike for a put), within its rounding: on the price itself too, as tv
        # may round below it; a price that close to the bound determines no vol
        bound = (fd if w > 0.0 else kd) * (1.0 - INTRINSIC_ULPS * EPS)
        if t == 0.0 or tv >= min(fd, kd) or price >= bound:
            return math.nan, f.ABOVE_BOUND
        ax = abs(log_ratio(fd, kd))  # fd/kd may be past the double range
        if ax > MAX_LOG_MONEYNESS:
            return math.nan, f.NO_SOLUTION
        beta = tv / (math.sqrt(fd) * math.sqrt(kd))
        if beta < f.NORMAL_MIN:
            return math.nan, f.NO_SOLUTION
        e = math.exp(0.5 * ax)
        if beta * e >= 1.0:  # at the bound once normalised
            return math.nan, f.ABOVE_BOUND
        s = normalised_vol(beta, ax, e)
        sigma = s / math.sqrt(t)
        if not (finite(sigma) and sigma >= 0.0):
            return math.nan, f.NO_SOLUTION
        return sigma, f.OK

    @jit
    def normal_guess(q: float) -> float:
        """First guess of v with Q(v) = v psi(1/v) = q."""
        if q >= 0.07:
            # Q = v/sqrt(2 pi) - 1/2 + 1/(2 sqrt(2 pi) v) + O(1/v^3)
            a = SQRT_2PI * (q + 0.5)
            disc = a * a - 2.0
            return 0.5 * (a + math.sqrt(disc)) if disc > 0.0 else 0.5 * a
        # Q ~ n(u)/u^3 for u = 1/v large: u^2/2 + 3 ln u = -ln(q sqrt(2 pi))
        rhs = -math.log(q * SQRT_2PI)
        u = math.sqrt(2.0 * rhs)
        u -= (0.5 * u * u + 3.0 * math.log(u) - rhs) / (u + 3.0 / u)
        if not u > 1.0:
            u = 1.0
        return 1.0 / u

    @jit
    def householder_normal(q: float) -> float:
        """v with Q(v) = q: Householder steps on ln Q - ln q; NaN when they
        do not converge."""
        v = normal_guess(q)
        log_q = math.log(q)
        for _ in range(MAX_STEPS):
            u = 1.0 / v
            big_q = v * bachelier_otm(-u)
            if not big_q > 0.0:
                v *= 1.5
                continue
            dq = norm_pdf(u)  # Q'
            ratio = dq / big_q
            nu = -(math.log(big_q) - log_q) / ratio
            u3 = u * u * u
            g3 = 2.0 * ratio * ratio - 3.0 * ratio * u3 + u3 * u * (u * u - 3.0)
            step = householder_step(nu, -ratio + u3, g3, v)
            if not finite(step):
                return math.nan
            v += step
            if abs(step) <= STEP_RTOL * v:
                return v
        return math.nan

    @jit
    def normal_iv(w: float, fwd: float, k: float, t: float, price: float, r: float) -> Any:
        """(normal sigma, error code) of a bachelier price."""
        dr = math.exp(-r * t)
        if not normal(dr):
            return math.nan, f.NO_SOLUTION  # as lognormal_iv
        m = fwd - k
        intrinsic = dr * w * m
        intrinsic = max(intrinsic, 0.0)
        tv = price - intrinsic
        if tv <= 0.0:
            if tv < -INTRINSIC_ULPS * EPS * dr * (abs(fwd) + abs(k)):
                return math.nan, f.BELOW_INTRINSIC
            return 0.0, f.OK
        if t == 0.0:
            return math.nan, f.ABOVE_BOUND
        tvu = tv / dr
        am = abs(m)
        if am == 0.0:
            v = SQRT_2PI * tvu
        else:
            qn = tvu / am
            if qn < f.NORMAL_MIN:
                return math.nan, f.NO_SOLUTION  # as lognormal_iv
            v = am * householder_normal(qn)
        sigma = v / math.sqrt(t)
        if not (finite(sigma) and sigma >= 0.0):
            return math.nan, f.NO_SOLUTION
        return sigma, f.OK

    @jit
    def check_iv(lognormal: bool, otype: int, und: float, k: float, t: float, price: float,
                 r: float, q: float) -> int:
        """The row's error code before solving (0 when it can be solved)."""
        if otype < 0:
            return f.BAD_TYPE
        if not (finite(und) and finite(k) and finite(t) and finite(price) and finite(r)
                and finite(q)):
            return f.NON_FINITE
        if t < 0.0:
            return f.NEG_T
        if lognormal:
            if und <= 0.0:
                return f.BAD_UNDERLYING
            if k <= 0.0:
                return f.BAD_STRIKE
        if price <= 0.0:
            return f.BAD_PRICE
        return f.OK

    @jit
    def bsm_iv_row(out: Any, i: int, size: int, otype: int, und: float, k: float, t: float,
                   price: float, r: float, q: float) -> int:
        """Solve bsm row i into out[0, i] (NaN for a bad row); returns its code."""
        err = check_iv(True, otype, und, k, t, price, r, q)
        vol = math.nan
        if err == f.OK:
            vol, err = lognormal_iv(1.0 if otype == 1 else -1.0, und, k, t, price, r, q)
        out[0, i] = vol
        return err

    @jit
    def black76_iv_row(out: Any, i: int, size: int, otype: int, und: float, k: float,
                       t: float, price: float, r: float, q: float) -> int:
        """The same for black76 (the forward is discounted at r)."""
        err = check_iv(True, otype, und, k, t, price, r, q)
        vol = math.nan
        if err == f.OK:
            vol, err = lognormal_iv(1.0 if otype == 1 else -1.0, und, k, t, price, r, r)
        out[0, i] = vol
        return err

    @jit
    def normal_iv_row(out: Any, i: int, size: int, otype: int, und: float, k: float, t: float,
                      price: float, r: float, q: float) -> int:
        """The same for bachelier (normal vol)."""
        err = check_iv(False, otype, und, k, t, price, r, q)
        vol = math.nan
        if err == f.OK:
            vol, err = normal_iv(1.0 if otype == 1 else -1.0, und, k, t, price, r)
        out[0, i] = vol
        return err

    return SimpleNamespace(
        rows={f.BSM: bsm_iv_row, f.BLACK76: black76_iv_row, f.BACHELIER: normal_iv_row},
        normalised_vol=normalised_vol,
        black_otm=black_otm,
        householder_normal=householder_normal,
        inv_norm_cdf=inv_norm_cdf,
    )
