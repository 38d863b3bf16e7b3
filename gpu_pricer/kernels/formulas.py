"""Scalar pricing formulas, compiled once for the CPU and once for CUDA.

`build(jit)` defines every scalar function with the decorator it is given
(``numba.njit`` for the CPU kernel, ``numba.cuda.jit(device=True)`` for the
CUDA kernel), so both kernels run the same source lines.  Each function
works on one option in float64 and returns plain floats.

Accuracy.  The normalised Black call
``b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)``
(Jaeckel, "Let's Be Rational", 2015; the price is ``D K e^{x/2} b``) is
evaluated for the out-of-the-money side ``h = -|x|/s``, ``t = s/2`` in three
regions, so that the error stays within a few ulps times the price's own
condition number (tests/test_accuracy.py checks this against mpmath):

* ``t < SMALL_T`` (and ``h >= -RHO1_H``, the table's range): the short
  Taylor series below;
* else ``h + t < -10``: the asymptotic expansion of Mills' ratio
  ``M(z) = N(z)/n(z) ~ sum_m (-1)^m (2m-1)!! / |z|^(2m+1)`` in
  ``b = n(h) e^{-t^2/2} (M(h+t) - M(h-t))``, the difference of powers taken
  factor by factor, so nothing cancels; the same loop sums ``M(h +- t)``
  themselves, so ``N(h +- t) = n(h +- t) M(h +- t)`` for the Greeks need no
  erfc (whose rounded argument ``-z/sqrt(2)`` alone costs up to ``z^2`` ulps
  in the far tail);
* the short series: the Taylor series in ``t`` of ``M(h +- t)``, whose
  coefficients ``I_k(h)/I_0(h)`` (``I_k = M^(k) = int_0^inf u^k e^{hu-u^2/2} du``)
  follow from ``I_{k+1} = h I_k + k I_{k-1}`` started at ``I_1/I_0``, read
  from a Chebyshev table (`mills_table`); ``N(h) = n(h)/(I_1/I_0 - h)`` (a
  sum of two non-negative terms) and the same series give ``N(d1)``,
  ``N(d2)`` and ``n(d1)`` for the Greeks without any erfc call;
* elsewhere the textbook formula, whose subtraction loses at most a factor
  ``|h|/(2t)`` there, below the condition number.

The densities ``e^{-z^2/2}`` there are corrected for the rounding of ``z*z``
(and of ``h +- t``), so each part is within a few ulps for exact inputs
(tests/test_accuracy.py, `test_kernel_black_parts_are_accurate_to_a_few_ulps`).

In-the-money prices are the discounted intrinsic value (exact at t = 0)
plus the out-of-the-money time value.  The Bachelier price uses
``s (z N(z) + n(z)) = s N(z) I_1(z)/I_0(z)`` for ``z = -|d| <= 0`` in the
same way, and its Greeks ``N(z) = n(z)/(I_1/I_0 - z)`` and ``n(z)`` from the
same table lookup (`bachelier_parts`; Miller's recurrence beyond the
table's range).
The reference path (`gpu_pricer.reference`) uses the Taylor series for
larger ``t`` too, with Miller's backward recurrence for the ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from .mills_table import COEFFS as _RHO1_COEFFS
from .mills_table import DEGREE as _RHO1_DEGREE
from .mills_table import PIECES as _RHO1_PIECES
from .mills_table import WIDTH as _RHO1_WIDTH

INV_SQRT2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327

#: Number of Taylor terms of the reference path (odd: the nesting pairs them).
TAYLOR_TERMS = 41
#: Terms of the kernels' short series, used for t = s/2 below SMALL_T.
SMALL_T_TERMS = 12
SMALL_T = 0.08
#: Extra steps of Miller's backward recurrence before the first used ratio.
MILLER_EXTRA = 60
#: ``h + t`` below this uses the asymptotic expansion (unless the short series
#: applies: t < SMALL_T and h >= -RHO1_H).
ASYMPTOTIC_D1 = -10.0
#: The table of I_1/I_0 (`mills_table`) covers h in [-RHO1_H, 0].
RHO1_H = _RHO1_PIECES * _RHO1_WIDTH
#: ``h`` at or above this uses the forward recurrence for ``I_k/I_0``.
FORWARD_H = -2.0

# Indices of the values `evaluate` returns.
PRICE, DELTA, GAMMA, VEGA, THETA, RHO, DIVIDEND_RHO = 0, 1, 2, 3, 4, 5, 6
VANNA, VOLGA, CHARM, SPEED, ZOMMA, COLOR, VETA = 7, 8, 9, 10, 11, 12, 13
N_VALUES = 14

# Model codes.
BSM, BLACK76, BACHELIER = 0, 1, 2
#: The value each model leaves NaN by definition (-1: none): a forward
#: model's dividend rho.  Any other NaN in a priced row makes it OVERFLOW.
UNDEFINED_VALUE = {BSM: -1, BLACK76: DIVIDEND_RHO, BACHELIER: DIVIDEND_RHO}

# Per-row error codes (mirrors gpu_pricer.errors.ErrorCode); 8.. are implied vol's.
OK, NON_FINITE, NEG_SIGMA, NEG_T, BAD_UNDERLYING, BAD_STRIKE, BAD_TYPE, OVERFLOW = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
)
BAD_PRICE, BELOW_INTRINSIC, ABOVE_BOUND, NO_SOLUTION = 8, 9, 10, 11


#: Veltkamp's splitting constant 2^27 + 1 (exact products of two halves).
SPLIT = 134217729.0
#: z*z above this: e^{-z^2/2} underflows to 0 (e^{-745.2} is the least subnormal).
GAUSS_ZERO = 1491.0
#: e^{-(h^2+t^2)/2} below this (near subnormal), the asymptotic branch takes
#: n(h +- t) from h +- t directly rather than as its product with e^{-+ht}.
DENSITY_TINY = 1e-290
#: The least and the greatest normal double.
NORMAL_MIN, NORMAL_MAX = 2.2250738585072014e-308, 1.7976931348623157e308

# 1/(k+1) for the series loop (multiplications, not divisions, on the hot path).
_INV_NEXT = np.array([1.0 / (k + 1) for k in range(64)])



def build(jit: Callable[[Any], Any], cold: Callable[[Any], Any] | None = None,
          table: Any = None) -> SimpleNamespace:
    """Compile the scalar formulas with `jit` and return them by name.

    `cold`, when given, compiles the rarely taken paths (limits at a
    singular point) so they are called rather than inlined.  `table`, when
    given, is the Mills-ratio table (`mills_table.COEFFS`'s values) as the
    formulas should read it: on a GPU a device array, which the kernels read
    from global memory rather than as a constant (constant memory serialises
    a warp whose rows read different pieces).
    """
    cold = cold or jit
    coeffs = _RHO1_COEFFS if table is None else table

    @jit
    def norm_cdf(z: float) -> float:
        """N(z) through erfc, accurate in both tails."""
        return 0.5 * math.erfc(-z * INV_SQRT2)

    @jit
    def norm_pdf(z: float) -> float:
        return INV_SQRT_2PI * math.exp(-0.5 * z * z)

    @jit
    def gauss(z: float) -> float:
        """e^{-z^2/2} to about 1 ulp: the rounding error of z*z (up to z^2/2 ulps
        of the result if left in the exponent) is recovered exactly by
        Veltkamp's split and applied to first order."""
        zz = z * z
        if not zz < GAUSS_ZERO:
            return 0.0 if zz > 0.0 else math.exp(-0.5 * zz)  # 0, or NaN for NaN
        c = SPLIT * z
        hi = c - (c - z)
        lo = z - hi
        err = ((hi * hi - zz) + 2.0 * hi * lo) + lo * lo  # z*z = zz + err exactly
        return math.exp(-0.5 * zz) * (1.0 - 0.5 * err)

    @jit
    def gauss_sum(a: float, b: float) -> float:
        """e^{-(a+b)^2/2} to a few ulps: the rounding of a + b (Knuth's
        two-sum) applied to first order."""
        z = a + b
        bb = z - a
        dz = (a - (z - bb)) + (b - bb)  # a + b = z + dz exactly
        return gauss(z) * (1.0 - z * dz)

    @jit
    def miller_ratio(h: float, k: int, n_start: int) -> float:
        """r_k = I_k(h)/I_{k-1}(h) for h <= 0 by the backward recurrence
        r_n = n/(r_{n+1} - h), started at n_start from the saddle point."""
        r = 0.5 * h + math.sqrt(n_start + 1.0 + 0.25 * h * h)
        n = n_start
        while n >= k:
            r = n / (r - h)
            n -= 1
        return r

    @jit
    def rho1(h: float) -> float:
        """I_1(h)/I_0(h) = 1/M(h) + h for -RHO1_H <= h <= 0, from the piecewise
        polynomial table (about 1 ulp; the direct formula cancels as h^2).
        Even and odd powers run as two independent Horner chains."""
        j = int(-h * (1.0 / _RHO1_WIDTH))
        if j >= _RHO1_PIECES:
            j = _RHO1_PIECES - 1
        u = 2.0 * (h + (j + 1) * _RHO1_WIDTH) * (1.0 / _RHO1_WIDTH) - 1.0
        v = u * u
        even = coeffs[j, _RHO1_DEGREE - 1]
        odd = coeffs[j, _RHO1_DEGREE]
        for i in range(_RHO1_DEGREE - 3, -1, -2):
            even = even * v + coeffs[j, i]
            odd = odd * v + coeffs[j, i + 1]
        return even + u * odd

    @jit
    def gauss_small(t: float) -> float:
        """exp(-t^2/2) for t < SMALL_T by its Taylor polynomial (error < 1e-17)."""
        u = 0.5 * t * t
        return 1.0 - u * (1.0 - u * 0.5 * (1.0 - u * (1.0 / 3.0) * (1.0 - u * 0.25 * (
            1.0 - u * 0.2 * (1.0 - u * (1.0 / 6.0) * (1.0 - u * (1.0 / 7.0)))))))

    @jit
    def taylor_terms(h: float, t: float, rho1: float, terms: int) -> Any:
        """The sums of `taylor_sums` to `terms` terms (even), by the forward
        recurrence rho_{k+1} = h rho_k + k rho_{k-1}, two steps at a time
        (rho_{k+2} = (h^2 + k + 1) rho_k + h k rho_{k-1}) so the dependency
        chain is half as long."""
        hh = h * h
        rho_prev = 1.0  # rho_{k-1}, k odd
        rho = rho1  # rho_k
        c = t  # t^k / k!
        even = 1.0
        odd = rho * c
        for k in range(1, terms, 2):
            rho_a = h * rho + k * rho_prev  # rho_{k+1}
            rho_b = (hh + k + 1) * rho + h * k * rho_prev  # rho_{k+2}
            c_a = c * t * _INV_NEXT[k]
            c = c_a * t * _INV_NEXT[k + 1]
            even += rho_a * c_a
            odd += rho_b * c
            rho_prev = rho_a
            rho = rho_b
        return even, odd

    @jit
    def taylor_sums(h: float, t: float, rho1: float) -> Any:
        """(even, odd) parts of sum_k (I_k(h)/I_0(h)) t^k/k! for h <= 0, t < SMALL_T
        (`taylor_terms`), with fewer terms where t is small."""
        terms = SMALL_T_TERMS if t > 0.03 else (SMALL_T_TERMS - 4 if t > 0.005 else 6)
        return taylor_terms(h, t, rho1, terms)

    @jit
    def asymptotic_parts(h: float, t: float) -> Any:
        """(M(h+t) - M(h-t), M(h+t), M(h-t)) for h + t << 0 by the asymptotic
        series M(z) ~ sum_m (-1)^m (2m-1)!! |z|^-(2m+1), the difference
        summed as such (nothing cancels)."""
        p = 1.0 / (-h - t)
        q = 1.0 / (-h + t)
        sp = p + q
        pq = p * q
        pp = p * p
        qq = q * q
        e_even = 0.0  # e_{2m}, starting at e_0
        e_odd = 1.0  # e_{2m+1} = (p^{2m+1} - q^{2m+1})/(p - q), starting at e_1
        total = 1.0
        coef = 1.0
        p_pow = p  # p^{2m+1}
        q_pow = q
        m_p = p
        m_q = q
        for m in range(1, 40):
            # e_{n+1} = (p + q) e_n - p q e_{n-1}, two steps per term
            e_even = sp * e_odd - pq * e_even
            e_odd = sp * e_even - pq * e_odd
            coef *= -(2.0 * m - 1.0)
            p_pow *= pp
            q_pow *= qq
            m_p += coef * p_pow
            m_q += coef * q_pow
            term = coef * e_odd
            total += term
            # e_{2m+1} >= p^{2m}: M(h+t) and M(h-t) have converged too
            if abs(term) < 1e-17 * abs(total):
                break
        return 2.0 * t * pq * total, m_p, m_q

    @jit
    def black_parts(ax: float, h: float, s: float, e: float) -> Any:
        """For h = -ax/s <= 0, t = s/2 and e = e^{ax/2}: (b, N(h+t), N(h-t), n(h+t), e),
        b the normalised out-of-the-money Black call, every part without
        cancellation."""
        if s <= 0.0:
            if ax == 0.0:
                return 0.0, 0.5, 0.5, INV_SQRT_2PI, e
            return 0.0, 0.0, 0.0, 0.0, e
        t = 0.5 * s
        if t < SMALL_T and h >= -RHO1_H:
            # N(h) = n(h) M(h) = n(h)/(rho1 - h): both terms >= 0, no erfc needed
            r1 = rho1(h)
            g = gauss_small(t)
            even, odd = taylor_sums(h, t, r1)
            pdf_g = INV_SQRT_2PI * gauss(h) * g
            c = pdf_g / (r1 - h)
            return 2.0 * c * odd, c * e * (even + odd), c / e * (even - odd), pdf_g * e, e
        if h + t < ASYMPTOTIC_D1:
            # n(h +- t) = n0 e^{-+ht} = n0 e^{+-ax/2}: one density for all three
            n0 = INV_SQRT_2PI * gauss(h) * gauss(t)
            diff, m_a, m_b = asymptotic_parts(h, t)
            if n0 > DENSITY_TINY and e < 1e290:
                n_a = n0 * e
                return n0 * diff, n_a * m_a, n0 / e * m_b, n_a, e
            n_a = INV_SQRT_2PI * gauss_sum(h, t)
            return n0 * diff, n_a * m_a, INV_SQRT_2PI * gauss_sum(h, -t) * m_b, n_a, e
        pa = norm_cdf(h + t)
        pb = norm_cdf(h - t)
        return pa / e - e * pb, pa, pb, norm_pdf(h + t), e

    @jit
    def bachelier_parts(z: float) -> Any:
        """(z N(z) + n(z), N(z), n(z)) for -RHO1_H <= z <= 0, without
        cancellation and from one table lookup: with rho = I_1(z)/I_0(z)
        (`rho1`), N(z) = n(z)/(rho - z), a sum of two non-negative terms,
        and z N(z) + n(z) = N(z) rho."""
        r1 = rho1(z)
        n = INV_SQRT_2PI * gauss(z)
        tail = n / (r1 - z)
        return tail * r1, tail, n

    @jit
    def bachelier_otm(z: float) -> float:
        """z N(z) + n(z) for z <= 0, without cancellation: `bachelier_parts`
        on the table's range, Miller's recurrence for I_1/I_0 beyond it."""
        if z >= -RHO1_H:
            return bachelier_parts(z)[0]  # type: ignore[no-any-return]
        return norm_cdf(z) * miller_ratio(z, 1, MILLER_EXTRA + 40)

    @jit
    def store(out: Any, i: int, size: int, price: float, delta: float, gamma: float,
              vega: float, theta: float, rho: float, drho: float, vanna: float, volga: float,
              charm: float, speed: float, zomma: float, color: float, veta: float) -> None:
        """Write value codes 0..size-1 of row i (`size` is a compile-time
        constant of each kernel, so unused values are never computed)."""
        out[PRICE, i] = price
        if size > DELTA:
            out[DELTA, i] = delta
            out[GAMMA, i] = gamma
            out[VEGA, i] = vega
            out[THETA, i] = theta
            out[RHO, i] = rho
            out[DIVIDEND_RHO, i] = drho
        if size > VANNA:
            out[VANNA, i] = vanna
            out[VOLGA, i] = volga
            out[CHARM, i] = charm
            out[SPEED, i] = speed
            out[ZOMMA, i] = zomma
            out[COLOR, i] = color
            out[VETA, i] = veta

    @jit
    def store_nan(out: Any, i: int, size: int) -> None:
        nan = math.nan
        store(out, i, size, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan,
              nan)

    @jit
    def normal(v: float) -> bool:
        """Whether v is a normal double, NORMAL_MIN <= v <= NORMAL_MAX (outside:
        0, subnormal with its digits lost, or inf)."""
        return NORMAL_MIN <= v <= NORMAL_MAX

    @jit
    def log_ratio(a: float, b: float) -> float:
        """ln(a/b) for a, b > 0: from the quotient where it is a normal number,
        else as ln a - ln b (a quotient past the double range, 1e300/1e-300,
        would give an infinite log and NaN Greeks)."""
        ratio = a / b
        if normal(ratio):
            return math.log(ratio)
        return math.log(a) - math.log(b)

    @jit
    def rate(num: float, den: float) -> float:
        """num/den for den >= 0, with the limits 0 (num == 0) and +-inf (den == 0)."""
        if num == 0.0:
            return 0.0
        if den == 0.0:
            return math.copysign(math.inf, num)
        return num / den

    @jit
    def lognormal_row(out: Any, i: int, size: int, w: float, und: float, k: float, t: float,
                      sigma: float, r: float, carry: float, forward_rho: bool) -> int:
        """Price and Greeks of generalised Black-Scholes (Haug 2007, ch. 1-2) into
        row i of `out`; returns the error code (OVERFLOW, or OK).  `und` is the
        spot (bsm, cost of carry r - q) or the forward (black76, carry 0 so
        q = r); `w` is +1 for a call, -1 for a put.  Units: see gpu_pricer.price."""
        q = r - carry
        x = log_ratio(und, k) + carry * t
        dr = math.exp(-r * t)
        dq = math.exp(-q * t)
        sqt = math.sqrt(t)
        s = sigma * sqt
        ax = abs(x)
        xs = x / s if s > 0.0 else 0.0
        h = -abs(xs)
        d1 = xs + 0.5 * s
        d2 = d1 - s
        if 0.5 * s >= SMALL_T and h + 0.5 * s >= ASYMPTOTIC_D1:
            # The textbook formula: here its subtraction loses at most a few bits,
            # well within the problem's own condition number.
            nd1 = norm_cdf(w * d1)
            nd2 = norm_cdf(w * d2)
            n1 = norm_pdf(d1)
            price = w * (und * dq * nd1 - k * dr * nd2)
        else:
            # e^{|x|/2} from the discounted forward and strike (a sqrt, not an exp),
            # or from x where their quotient is past the double range
            ratio = (und * dq) / (k * dr)
            if normal(ratio):
                e_half = math.sqrt(ratio if x > 0.0 else 1.0 / ratio)
            else:
                e_half = math.exp(0.5 * ax)
            b, pa, pb, n_a, e = black_parts(ax, h, s, e_half)
            # x <= 0: d1 = h + t, d2 = h - t;  x > 0: d1 = -(h - t), d2 = -(h + t)
            intrinsic = w * (und * dq - k * dr) if w * x > 0.0 else 0.0
            if x > 0.0:
                n1 = n_a / (e * e)
                nd1 = 1.0 - pb if w > 0.0 else pb
                nd2 = 1.0 - pa if w > 0.0 else pa
                price = intrinsic + dr * k * e * b
            else:
                n1 = n_a
                nd1 = pa if w > 0.0 else 1.0 - pa
                nd2 = pb if w > 0.0 else 1.0 - pb
                price = intrinsic + dr * k * b / e
        if not finite(price):
            return OVERFLOW
        delta = w * dq * nd1
        theta0 = w * (q * und * dq * nd1 - r * k * dr * nd2)
        charm0 = q * delta
        if forward_rho:
            rho = -t * price
            drho = math.nan
        else:
            rho = w * k * t * dr * nd2
            drho = -w * und * t * dq * nd1
        if n1 == 0.0:  # far from the money, or sigma*sqrt(t) = 0 away from it
            store(out, i, size, price, delta, 0.0, 0.0, theta0, rho, drho, 0.0, 0.0, charm0,
                  0.0, 0.0, 0.0, 0.0)
        elif s > 0.0:
            gamma = dq * n1 / (und * s)
            vega = und * dq * n1 * sqt
            dd1 = carry / s - 0.5 * d2 / t
            store(out, i, size, price, delta, gamma, vega,
                  theta0 - 0.5 * und * dq * n1 * sigma / sqt, rho, drho,
                  -dq * n1 * d2 / sigma, vega * d1 * d2 / sigma, charm0 - dq * n1 * dd1,
                  -gamma / und * (d1 / s + 1.0), gamma * (d1 * d2 - 1.0) / sigma,
                  gamma * (q + 0.5 / t + d1 * dd1), vega * (q - 0.5 / t + d1 * dd1))
        else:
            lognormal_singular(out, i, size, price, delta, theta0, rho, drho, charm0, und, t,
                               sigma, q, carry, dq, sqt, n1)
        return OK

    @cold
    def lognormal_singular(out: Any, i: int, size: int, price: float, delta: float,
                           theta0: float, rho: float, drho: float, charm0: float, und: float,
                           t: float, sigma: float, q: float, carry: float, dq: float, sqt: float,
                           n1: float) -> None:
        """At the money with sigma*sqrt(t) = 0: the one-sided limits, +-inf
        where the Greek is singular."""
        vega = und * dq * n1 * sqt
        theta = theta0 - rate(0.5 * und * dq * n1 * sigma, sqt)
        if sigma > 0.0:
            charm = charm0 - dq * n1 * rate(carry / sigma + 0.25 * sigma, sqt)
        else:
            charm = charm0 - dq * n1 * rate(carry, 0.0)
        d1_dd1 = 0.5 * carry + 0.125 * sigma * sigma
        color = math.inf if t == 0.0 else rate(q + 0.5 / t + d1_dd1, 0.0)
        veta = -math.inf if t == 0.0 else vega * (q - 0.5 / t + d1_dd1)
        store(out, i, size, price, delta, math.inf, vega, theta, rho, drho, 0.5 * dq * n1 * sqt,
              0.0, charm, -math.inf, -math.inf, color, veta)

    @jit
    def bachelier_row(out: Any, i: int, size: int, w: float, f: float, k: float, t: float,
                      sigma: float, r: float) -> int:
        """Price and Greeks of the normal model on a forward, discounted at r
        (forward held fixed for theta and rho), into row i; returns the error
        code.  dividend_rho is NaN: the model has no dividend yield."""
        nan = math.nan
        dr = math.exp(-r * t)
        sqt = math.sqrt(t)
        s = sigma * sqt
        m = f - k
        intrinsic = abs(m) if w * m > 0.0 else 0.0
        if s > 0.0:
            d = m / s
            a = abs(d)
            if a <= RHO1_H:  # z N(z) + n(z), N(z) and n(z) at z = -|d| from one lookup
                otm, tail, n = bachelier_parts(-a)
                nd = tail if w * d < 0.0 else 1.0 - tail
            else:
                otm = bachelier_otm(-a)
                n = norm_pdf(d)
                nd = norm_cdf(w * d)
            price = dr * (intrinsic + s * otm)
        else:
            d = 0.0
            price = dr * intrinsic
            n = INV_SQRT_2PI if m == 0.0 else 0.0
            nd = 0.5 if m == 0.0 else (1.0 if intrinsic > 0.0 else 0.0)
        if not finite(price):
            return OVERFLOW
        delta = w * dr * nd
        if n == 0.0:
            store(out, i, size, price, delta, 0.0, 0.0, r * price, -t * price, nan, 0.0, 0.0,
                  r * delta, 0.0, 0.0, 0.0, 0.0)
        elif s > 0.0:
            gamma = dr * n / s
            vega = dr * sqt * n
            store(out, i, size, price, delta, gamma, vega,
                  r * price - 0.5 * dr * n * sigma / sqt, -t * price, nan,
                  -dr * n * d / sigma, vega * d * d / sigma, r * delta + 0.5 * dr * n * d / t,
                  -gamma * d / s, gamma * (d * d - 1.0) / sigma,
                  r * gamma - 0.5 * gamma * (d * d - 1.0) / t,
                  r * vega - 0.5 * vega * (1.0 + d * d) / t)
        else:
            bachelier_singular(out, i, size, price, delta, t, sigma, r, dr, sqt, n)
        return OK

    @cold
    def bachelier_singular(out: Any, i: int, size: int, price: float, delta: float, t: float,
                           sigma: float, r: float, dr: float, sqt: float, n: float) -> None:
        """At the money with sigma*sqrt(t) = 0: one-sided limits (d = 0 exactly)."""
        vega = dr * sqt * n
        theta = r * price - rate(0.5 * dr * n * sigma, sqt)
        color = math.inf if t == 0.0 else rate(r + 0.5 / t, 0.0)
        veta = -math.inf if t == 0.0 else vega * (r - 0.5 / t)
        store(out, i, size, price, delta, math.inf, vega, theta, -t * price, math.nan, 0.0, 0.0,
              r * delta, 0.0, -math.inf, color, veta)

    @jit
    def finite(v: float) -> bool:
        return v - v == 0.0

    @jit
    def check(lognormal: bool, otype: int, und: float, k: float, t: float,
              sigma: float, r: float, q: float) -> int:
        """The row's error code (0 when it can be priced): one branch-free
        test passes a good row (a sum of finite inputs can only overflow to
        a false alarm, which `check_reason` then clears); otherwise the rules
        one by one."""
        good = ((otype >= 0) & finite(und + k + t + sigma + r + q) & (sigma >= 0.0)
                & (t >= 0.0) & ((not lognormal) | ((und > 0.0) & (k > 0.0))))
        if good:
            return OK
        return check_reason(lognormal, otype, und, k, t, sigma, r, q)

    @cold
    def check_reason(lognormal: bool, otype: int, und: float, k: float, t: float,
                     sigma: float, r: float, q: float) -> int:
        """The row's error code: the first rule it breaks, in order."""
        if otype < 0:
            return BAD_TYPE
        if not (finite(und) and finite(k) and finite(t) and finite(sigma)
                and finite(r) and finite(q)):
            return NON_FINITE
        if sigma < 0.0:
            return NEG_SIGMA
        if t < 0.0:
            return NEG_T
        if lognormal:
            if und <= 0.0:
                return BAD_UNDERLYING
            if k <= 0.0:
                return BAD_STRIKE
        return OK

    @jit
    def any_nan(out: Any, i: int, size: int, skip: int) -> bool:
        """Whether a value code 0..size-1 of row i other than `skip` (-1 for
        none) is NaN."""
        nan_seen = False
        for c in range(size):
            v = out[c, i]
            nan_seen |= math.isnan(v) & (c != skip)
        return nan_seen

    # the row functions' `skip` (a compile-time constant each)
    undefined_bsm, undefined_black76, undefined_normal = (
        UNDEFINED_VALUE[BSM], UNDEFINED_VALUE[BLACK76], UNDEFINED_VALUE[BACHELIER])

    @jit
    def finish(out: Any, i: int, size: int, err: int, skip: int) -> int:
        """A priced row with a NaN among its values (`skip`: the value that is
        NaN by definition, -1 for none) becomes OVERFLOW: an intermediate
        past the double range (e^(-r t) for r t < -700 and inf - inf in
        theta, say) is never a silent NaN.  A row with a non-zero code is
        NaN in every value."""
        if err == OK and any_nan(out, i, size, skip):
            err = OVERFLOW
        if err != OK:
            store_nan(out, i, size)
        return err

    @jit
    def bsm_row(out: Any, i: int, size: int, otype: int, und: float, k: float, t: float,
                sigma: float, r: float, q: float) -> int:
        """Check and price bsm row i into out[0..size-1, i] (NaN for a bad
        row); returns the row's error code."""
        err = check(True, otype, und, k, t, sigma, r, q)
        if err == OK:
            err = lognormal_row(out, i, size, 1.0 if otype == 1 else -1.0, und, k, t, sigma, r,
                                r - q, False)
        return finish(out, i, size, err, undefined_bsm)

    @jit
    def black76_row(out: Any, i: int, size: int, otype: int, und: float, k: float, t: float,
                    sigma: float, r: float, q: float) -> int:
        """The same for black76 (q is 0: the forward has no carry)."""
        err = check(True, otype, und, k, t, sigma, r, q)
        if err == OK:
            err = lognormal_row(out, i, size, 1.0 if otype == 1 else -1.0, und, k, t, sigma, r,
                                0.0, True)
        return finish(out, i, size, err, undefined_black76)

    @jit
    def normal_row(out: Any, i: int, size: int, otype: int, und: float, k: float, t: float,
                   sigma: float, r: float, q: float) -> int:
        """The same for bachelier."""
        err = check(False, otype, und, k, t, sigma, r, q)
        if err == OK:
            err = bachelier_row(out, i, size, 1.0 if otype == 1 else -1.0, und, k, t, sigma, r)
        return finish(out, i, size, err, undefined_normal)

    return SimpleNamespace(
        rho1=rho1,  # exported for its table's test
        black_parts=black_parts,  # for its test, and the implied-vol solver's Black function
        rows={BSM: bsm_row, BLACK76: black76_row, BACHELIER: normal_row},
        # the parts the implied-vol solver builds on (`kernels.implied`)
        norm_cdf=norm_cdf,
        norm_pdf=norm_pdf,
        finite=finite,
        normal=normal,
        log_ratio=log_ratio,
        taylor_sums=taylor_sums,
        taylor_terms=taylor_terms,
        gauss_small=gauss_small,
        bachelier_otm=bachelier_otm,
    )
