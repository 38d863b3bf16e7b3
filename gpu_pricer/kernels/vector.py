"""The vectorised CPU kernel for bsm prices and first-order Greeks.

`gpu_pricer.kernels.cpu`'s row kernels call libm's exp, log and erfc once per
value: scalar calls that LLVM cannot vectorise here (llvmlite has no SVML).
This kernel writes them as plain arithmetic -- `vexp`, `vlog`, and N(z) from
the kernels' own Mills-ratio table (`vncdf`) -- and splits each block of rows
into loops simple enough to vectorise: the row's log, discount factors and
total volatility for every row; then the rows of the textbook region, and
those of the short series (`formulas`, module docstring), each as its own
loop over the block's rows of that region; then every other row (a bad row,
a limit, the far tails, the asymptotic branch) through the scalar row
function of `formulas`, so each row has exactly the value and error code the
row kernel defines, to within the few ulps in which vexp/vlog and libm
differ.

Accuracy: vexp and vlog are within 1 ulp of libm, vncdf within a few ulps of
N(z) for |z| <= 37 (tests/test_vector.py); the regions' formulas are the row
kernel's, except that a textbook row takes n(d2) as n(d1) S e^(-qt) / (K e^(-rt))
(the same number: d1^2 - d2^2 = 2 ln(F/K)) rather than from a second exp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import formulas

#: Rows per block: the block's temporaries stay in the L1/L2 cache.
BLOCK = 512
#: How a row is priced.
TEXTBOOK, SERIES, ROW = 0, 1, 2
#: |z| up to which vncdf holds (e^{-z^2/2} stays in vexp's range).
MAX_Z = 37.0
#: Exponents vexp takes without clamping.
EXP_MIN, EXP_MAX = -708.0, 709.0
#: Vector rows have spot and strike below BIG and |r t|, |q t| below
#: MAX_RATE_T, so that no product overflows (e^200 is 7e86).
BIG = 1e200
MAX_RATE_T = 200.0

#: ln 2 with its low 28 mantissa bits cleared (k * LN2_HI is exact for
#: |k| < 2^29), and the rest (ln 2 - LN2_HI, to double precision).
LN2_HI = 0.6931471526622772
LN2_LO = 2.7897668087737545e-08
INV_LN2 = 1.4426950408889634
#: r^2/2!, ..., r^13/13!: e^r on |r| <= ln2/2 to below half an ulp.
EXP_COEFFS = tuple(1.0 / math.factorial(k) for k in range(2, 14))
#: 2/3, 2/5, ...: log m = 2 atanh(s) = 2s + s^3 sum_k 2 s^(2k-2)/(2k+1).
LOG_COEFFS = tuple(2.0 / (2 * k + 1) for k in range(1, 12))
SQRT2 = 1.4142135623730951

_jit = njit(inline="always", nogil=True, error_model="numpy", fastmath={"contract"})
#: A loop compiled as a function of its own: its arrays are arguments, which
#: the compiler vectorises over (inside the parallel loop it did not).
_loop = njit(nogil=True, error_model="numpy", fastmath={"contract"})


@intrinsic
def _float_to_bits(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_to_float(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@_jit
def vexp(x: float) -> float:
    """e^x for EXP_MIN <= x <= EXP_MAX (clamped to that range), within 1 ulp:
    Cody-Waite reduction by ln 2, the Taylor polynomial of e^r, and 2^k put
    into the exponent bits."""
    x = min(max(x, EXP_MIN), EXP_MAX)
    k = math.floor(x * INV_LN2 + 0.5)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_COEFFS[11]
    for i in range(10, -1, -1):
        p = p * r + EXP_COEFFS[i]
    scale: float = _bits_to_float((np.int64(k) + 1023) << 52)  # type: ignore[call-arg]
    return (1.0 + (r + r * r * p)) * scale


@_jit
def vlog(x: float) -> float:
    """log x for a positive normal finite x, within 1 ulp: x = m 2^e with m in
    [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1)/(m + 1)) by its series."""
    bits: int = _float_to_bits(x)  # type: ignore[call-arg]
    e = (bits >> 52) - 1023
    m = _bits_to_float(  # type: ignore[call-arg]
        (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # in [1, 2)
    big = m > SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    p = LOG_COEFFS[10]
    for i in range(9, -1, -1):
        p = p * z + LOG_COEFFS[i]
    dk = np.float64(e)
    # 2s = f - s f exactly enough; the small parts first
    return dk * LN2_HI + ((dk * LN2_LO + s * z * p) - s * f + f)


@_jit
def vgauss(z: float) -> float:
    """e^{-z^2/2} for |z| <= MAX_Z, the rounding of z*z corrected (as
    formulas.gauss, on vexp)."""
    zz = z * z
    c = formulas.SPLIT * z
    hi = c - (c - z)
    lo = z - hi
    err = ((hi * hi - zz) + 2.0 * hi * lo) + lo * lo
    return vexp(-0.5 * zz) * (1.0 - 0.5 * err)


def build_given_n(rho1: Callable[..., float]) -> Any:
    """N(z) from z and n(z), on the given (compiled, inlinable) table function."""

    @_jit
    def vncdf_n(z: float, n: float) -> Any:
        """N(z) for |z| <= MAX_Z given n = n(z): n/(rho1(-|z|) + |z|) in the
        lower tail (two non-negative terms), 1 minus that in the upper."""
        a = abs(z)
        a = a if a <= MAX_Z else MAX_Z  # NaN too: the table index stays in range
        tail = n / (rho1(-a) + a)
        return tail if z < 0.0 else 1.0 - tail

    return vncdf_n


def build(vncdf_n: Callable[..., Any]) -> Any:
    """vncdf over `build_given_n`'s function."""

    @_jit
    def vncdf(z: float) -> Any:
        """(N(z), n(z)) for |z| <= MAX_Z."""
        a = abs(z)
        a = a if a <= MAX_Z else MAX_Z  # NaN too: the table index stays in range
        n = formulas.INV_SQRT_2PI * vgauss(a)
        return vncdf_n(z, n), n

    return vncdf


def kernel(size: int, row: Callable[..., int], rho1: Callable[..., float],
           gauss_small: Callable[..., float], taylor_terms: Callable[..., Any]) -> Any:
    """The bsm kernel for value codes 0..size-1 (size <= 7: the price and the
    first-order Greeks); the arguments and results of `cpu.kernel`'s.  `row`
    is the scalar bsm row function, for the rows the vector loops leave."""
    assert size <= formulas.DIVIDEND_RHO + 1
    vncdf_n = build_given_n(rho1)
    vncdf = build(vncdf_n)
    inv_sqrt_2pi = formulas.INV_SQRT_2PI
    small_t = formulas.SMALL_T
    asym = formulas.ASYMPTOTIC_D1
    terms = formulas.SMALL_T_TERMS
    ok = formulas.OK

    @_loop
    def prelude(m: int, ots: Any, us: Any, ks: Any, ts: Any, sgs: Any, rs: Any, qs: Any,
                xs: Any, vol: Any, dqs: Any, drs: Any,
                region: Any) -> None:  # pragma: no cover - compiled
        """Every row's log-moneyness x, total vol s, discount factors (garbage
        for a row the row function will price), then its region."""
        for j in range(m):
            tt = ts[j]
            xs[j] = vlog(us[j] / ks[j]) + (rs[j] - qs[j]) * tt
            vol[j] = sgs[j] * math.sqrt(tt)
            dqs[j] = vexp(-qs[j] * tt)
            drs[j] = vexp(-rs[j] * tt)
        for j in range(m):
            u = us[j]
            k = ks[j]
            tt = ts[j]
            ratio = u / k
            s = vol[j]
            half = 0.5 * s
            h = -abs(xs[j]) / s
            # a good row with vlog, vexp and vncdf in range and no overflow
            # possible (every input finite, s > 0); the row function otherwise
            usable = ((ots[j] >= 0) & (u > 0.0) & (k > 0.0) & (u < BIG)
                      & (k < BIG) & (ratio > 1e-300) & (ratio < 1e300) & (s > 0.0)
                      & (s < BIG) & (abs(rs[j] * tt) < MAX_RATE_T)
                      & (abs(qs[j] * tt) < MAX_RATE_T) & (h - half >= -MAX_Z))
            tb = usable & (half >= small_t) & (h + half >= asym)
            sr = usable & (half < small_t)
            region[j] = TEXTBOOK if tb else (SERIES if sr else ROW)

    @_loop
    def textbook_rows(c: int, cw: Any, cu: Any, ck: Any, cx: Any, cs: Any, cdq: Any,
                      cdr: Any, c_nd1: Any, c_nd2: Any, c_n1: Any,
                      c_price: Any) -> None:  # pragma: no cover - compiled
        """N(d1), N(d2), n(d1) and the price of textbook-region rows."""
        for a in range(c):
            w = cw[a]
            s = cs[a]
            d1 = cx[a] / s + 0.5 * s
            nd1, n1 = vncdf(w * d1)
            # n(d2) = n(d1) e^x = n(d1) S dq / (K dr): no second exp
            nd2 = vncdf_n(w * (d1 - s), n1 * (cu[a] * cdq[a]) / (ck[a] * cdr[a]))
            c_nd1[a] = nd1
            c_nd2[a] = nd2
            c_n1[a] = n1
            c_price[a] = w * (cu[a] * cdq[a] * nd1 - ck[a] * cdr[a] * nd2)

    @_loop
    def series_rows(c: int, cw: Any, cu: Any, ck: Any, cx: Any, cs: Any, cdq: Any,
                    cdr: Any, c_nd1: Any, c_nd2: Any, c_n1: Any,
                    c_price: Any) -> None:  # pragma: no cover - compiled
        """The same for short-series rows (formulas.black_parts' series, as
        lognormal_row turns it into N(d1), N(d2), n(d1) and the price)."""
        for a in range(c):
            u = cu[a]
            k = ck[a]
            w = cw[a]
            s = cs[a]
            dq = cdq[a]
            dr = cdr[a]
            x = cx[a]
            half = 0.5 * s
            h = -abs(x) / s
            ratio = (u * dq) / (k * dr)
            e = math.sqrt(ratio if x > 0.0 else 1.0 / ratio)
            r1 = rho1(h)
            even, odd = taylor_terms(h, half, r1, terms)
            pdf_g = inv_sqrt_2pi * vgauss(h) * gauss_small(half)
            cc = pdf_g / (r1 - h)
            bb = 2.0 * cc * odd
            pa = cc * e * (even + odd)
            pb = cc / e * (even - odd)
            n_a = pdf_g * e  # n(h + t), as the row kernel forms it
            up = x > 0.0
            call = w > 0.0
            intrinsic = w * (u * dq - k * dr) if w * x > 0.0 else 0.0
            c_n1[a] = n_a / (e * e) if up else n_a
            c_nd1[a] = (1.0 - pb if call else pb) if up else (pa if call else 1.0 - pa)
            c_nd2[a] = (1.0 - pa if call else pa) if up else (pb if call else 1.0 - pb)
            c_price[a] = intrinsic + (dr * k * e * bb if up else dr * k * bb / e)

    @njit(parallel=True, nogil=True, error_model="numpy", fastmath={"contract"})
    def run(otype: Any, und: Any, strike: Any, t: Any, sigma: Any, r: Any, q: Any,
            steps: Any, out: Any, err: Any) -> None:  # pragma: no cover - compiled
        n = err.shape[0]
        # an input of length 1 broadcasts (step 0)
        s0, s1, s2, s3, s4, s5, s6 = (steps[0], steps[1], steps[2], steps[3], steps[4],
                                      steps[5], steps[6])
        for b in prange((n + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            m = min(BLOCK, n - lo)
            xs = np.empty(m)
            vol = np.empty(m)
            dqs = np.empty(m)
            drs = np.empty(m)
            region = np.empty(m, np.int8)  # TEXTBOOK, SERIES or ROW
            nd1s = np.empty(m)
            nd2s = np.empty(m)
            n1s = np.empty(m)
            prices = np.empty(m)
            picked = np.empty(m, np.int64)
            cw = np.empty(m)
            cu = np.empty(m)
            ck = np.empty(m)
            cx = np.empty(m)
            cs = np.empty(m)
            cdq = np.empty(m)
            cdr = np.empty(m)
            c_nd1 = np.empty(m)
            c_nd2 = np.empty(m)
            c_n1 = np.empty(m)
            c_price = np.empty(m)
            # the block's inputs as contiguous columns (a scalar broadcast to its
            # rows), so that every loop below runs on unit strides whatever the steps
            ots = np.empty(m, np.int8)
            us = np.empty(m)
            ks = np.empty(m)
            ts = np.empty(m)
            sgs = np.empty(m)
            rs = np.empty(m)
            qs = np.empty(m)
            for j in range(m):
                i = lo + j
                ots[j] = otype[i * s0]
                us[j] = und[i * s1]
                ks[j] = strike[i * s2]
                ts[j] = t[i * s3]
                sgs[j] = sigma[i * s4]
                rs[j] = r[i * s5]
                qs[j] = q[i * s6]
            prelude(m, ots, us, ks, ts, sgs, rs, qs, xs, vol, dqs, drs, region)
            # each region's rows gathered into unit-stride columns, priced by a
            # loop of its own that the compiler vectorises, and scattered back
            for code in (TEXTBOOK, SERIES):
                c = 0
                for j in range(m):
                    if region[j] == code:
                        picked[c] = j
                        c += 1
                for a in range(c):
                    j = picked[a]
                    cw[a] = 1.0 if ots[j] == 1 else -1.0
                    cu[a] = us[j]
                    ck[a] = ks[j]
                    cx[a] = xs[j]
                    cs[a] = vol[j]
                    cdq[a] = dqs[j]
                    cdr[a] = drs[j]
                if code == TEXTBOOK:
                    textbook_rows(c, cw, cu, ck, cx, cs, cdq, cdr, c_nd1, c_nd2, c_n1, c_price)
                else:
                    series_rows(c, cw, cu, ck, cx, cs, cdq, cdr, c_nd1, c_nd2, c_n1, c_price)
                for a in range(c):
                    j = picked[a]
                    nd1s[j] = c_nd1[a]
                    nd2s[j] = c_nd2[a]
                    n1s[j] = c_n1[a]
                    prices[j] = c_price[a]
            for j in range(m):
                i = lo + j
                _store(out, i, size, np.float64(us[j]), np.float64(ks[j]),
                       np.float64(ts[j]), np.float64(sgs[j]), np.float64(rs[j]),
                       np.float64(qs[j]), 1.0 if ots[j] == 1 else -1.0, vol[j], dqs[j],
                       drs[j], nd1s[j], nd2s[j], n1s[j], prices[j])
                err[i] = ok
            for j in range(m):
                if region[j] == ROW:
                    i = lo + j
                    err[i] = row(out, i, size, ots[j], np.float64(us[j]),
                                 np.float64(ks[j]), np.float64(ts[j]),
                                 np.float64(sgs[j]), np.float64(rs[j]), np.float64(qs[j]))

    @_jit
    def _store(out: Any, i: int, size: int, u: float, k: float, tt: float, sg: float,
               rr: float, qq: float, w: float, s: float, dq: float, dr: float, nd1: float,
               nd2: float, n1: float, price: float) -> None:
        """The price and first-order Greeks of a row priced with s > 0, as the
        row kernel's `lognormal_row` forms them (n1 = 0 gives its limits)."""
        out[formulas.PRICE, i] = price
        if size > formulas.DELTA:
            sqt = math.sqrt(tt)
            out[formulas.DELTA, i] = w * dq * nd1
            out[formulas.GAMMA, i] = dq * n1 / (u * s)
            out[formulas.VEGA, i] = u * dq * n1 * sqt
            out[formulas.THETA, i] = (w * (qq * u * dq * nd1 - rr * k * dr * nd2)
                                      - 0.5 * u * dq * n1 * sg / sqt)
            out[formulas.RHO, i] = w * k * tt * dr * nd2
            out[formulas.DIVIDEND_RHO, i] = -w * u * tt * dq * nd1

    return run
