"""The vectorised CPU kernels for bsm, black76 and bachelier prices and Greeks.

`gpu_pricer.kernels.cpu`'s row kernels call libm's exp, log and erfc once per
value: scalar calls that LLVM cannot vectorise here (llvmlite has no SVML).
This kernel writes them as plain arithmetic -- `vexp`, `vlog`, and N(z)
from a rational approximation of Mills' ratio (`vncdf`, `rho1_parts`) where
the row kernels read a table -- and splits each block of rows
into loops simple enough to vectorise: the row's log, discount factors and
total volatility for every row; then the rows of the textbook region, and
those of the short series (`formulas`, module docstring), each as its own
loop over the block's rows of that region (picked without a branch per row,
moved into columns of their own unless the whole block is of that region:
by AVX-512 compress and expand where the CPU has them, `simd`, else by
index gathers); the first-order Greeks as one more loop, and the higher orders,
when asked for, as another; then every other row (a bad row,
a limit, the far tails, the asymptotic branch) through the scalar row
function of `formulas`, so each row has exactly the value and error code the
row kernel defines, to within the few ulps in which vexp/vlog and libm
differ.

Accuracy: vexp and vlog are within 1 ulp of libm, vncdf within a few ulps of
N(z) for |z| <= 37, and `vrho1` within 5 ulps of I_1/I_0 (the row kernels'
table: within about 1.3; tests/test_vector.py, tests/test_mills_table.py);
the regions' formulas are the row kernel's, except that a textbook row takes
n(d2) as n(d1) S e^(-qt) / (K e^(-rt)) (the same number: d1^2 - d2^2 =
2 ln(F/K)) rather than from a second exp.  The rational, not the table,
because a vectorised loop reads a table's coefficients with a gather each
(twelve per N(z)), which took longer than all the arithmetic of N(z).

The bachelier kernel (`normal_kernel`) needs no regions: every good row
with sigma sqrt(t) > 0 and |d| <= MAX_Z takes its price, N(w d) and n(d)
from one evaluation of the same rational (as `formulas.bachelier_parts`
from the table), in one
loop over the whole block, and its Greeks in the loops after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic

from . import formulas, simd
from .mills_rational import P as RHO1_P
from .mills_rational import Q as RHO1_Q

#: Most scratch columns of float64 a block uses (the bsm/black76 kernel's,
#: whose column layout `kernel` unpacks against it).
SCRATCH_COLUMNS = 26
#: The fewest rows per block, and the blocks per thread a call aims at.
MIN_BLOCK, BLOCKS_PER_THREAD = 512, 4


def l2_bytes() -> int | None:
    """The size of CPU 0's level-2 cache from Linux's sysfs (None elsewhere)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(root.glob("index*")):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        return None
    return None


def block_rows(l2: int | None) -> int:
    """Rows per block: the most of 512, 1024 and 2048 whose scratch columns
    fill at most half of the L2 cache (1024 when its size is unknown).  Each
    block has fixed costs (its scratch, a dozen loop calls, the moves' setup),
    and its columns are read as longer runs; on this project's machine (1 MiB
    of L2 per core) 2048 rows took 0.86-0.90x the time of 512 at 1M rows.
    A call smaller than a few blocks per thread uses smaller ones (`blocks`)."""
    if l2 is None:
        return 2 * MIN_BLOCK
    sizes = (MIN_BLOCK, 2 * MIN_BLOCK, 4 * MIN_BLOCK)
    return max((rows for rows in sizes if SCRATCH_COLUMNS * rows * 8 <= l2 // 2),
               default=MIN_BLOCK)


#: Rows per block (`block_rows`), fixed when the module loads; a call halves
#: it, down to MIN_BLOCK, until each thread has BLOCKS_PER_THREAD blocks.
BLOCK = block_rows(l2_bytes())
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


@_jit
def rho1_parts(a: float) -> Any:
    """(P(a), Q(a)) of `mills_rational`: rho1(-a) = P(a)/Q(a) for 0 <= a <= MAX_Z.
    Every coefficient is positive (Horner adds terms of one sign), and
    nothing is looked up: a table's coefficients cost a gather each in a
    vectorised loop, which took longer than all the arithmetic of N(z)."""
    p = RHO1_P[10]
    for i in range(9, -1, -1):
        p = p * a + RHO1_P[i]
    q = RHO1_Q[11]
    for i in range(10, -1, -1):
        q = q * a + RHO1_Q[i]
    return p, q


@_jit
def vrho1(h: float) -> float:
    """rho1(h) = I_1(h)/I_0(h) for -MAX_Z <= h <= 0 (`rho1_parts`)."""
    p, q = rho1_parts(-h)
    return p / q


@_jit
def vtail(a: float, n: float) -> float:
    """N(-a) for 0 <= a <= MAX_Z given n = n(a): n/(rho1(-a) + a), both
    terms non-negative, as n Q/(P + a Q) (`rho1_parts`)."""
    p, q = rho1_parts(a)
    return n * q / (p + a * q)


@_jit
def vncdf_n(z: float, n: float) -> float:
    """N(z) for |z| <= MAX_Z given n = n(z): the lower tail `vtail`, or 1
    minus it in the upper."""
    a = abs(z)
    a = a if a <= MAX_Z else MAX_Z  # NaN too: a number in the fit's range
    tail = vtail(a, n)
    return tail if z < 0.0 else 1.0 - tail


@_jit
def vncdf(z: float) -> Any:
    """(N(z), n(z)) for |z| <= MAX_Z."""
    a = abs(z)
    a = a if a <= MAX_Z else MAX_Z  # NaN too: a number in the fit's range
    n = formulas.INV_SQRT_2PI * vgauss(a)
    return vncdf_n(z, n), n


@_loop
def load(src: Any, lo: int, step: int, m: int, dst: Any) -> None:  # pragma: no cover - compiled
    """dst[:m] = an input's rows lo..lo+m-1 (step 1), or its one value (step 0)."""
    if step == 1:
        rows = src[lo:lo + m]  # indexed from 0 by the loop: no wraparound test
        for j in range(m):
            dst[j] = rows[j]
    else:
        value = src[0]
        for j in range(m):
            dst[j] = value


@_loop
def pick(m: int, region: Any, code: int, picked: Any) -> int:  # pragma: no cover - compiled
    """picked[:c] = the block's rows in `code`'s region, in order; returns c.
    Branch-free: in a mixed book the regions alternate at random, and a
    mispredicted branch per row cost more than the rest of the row."""
    c = 0
    for j in range(m):
        picked[c] = j
        c += int(region[j] == code)
    return c


@_loop
def gather(c: int, picked: Any, src: Any, dst: Any) -> None:  # pragma: no cover - compiled
    """dst[:c] = src at the picked rows."""
    for a in range(c):
        dst[a] = src[picked[a]]


@_loop
def scatter(c: int, picked: Any, src: Any, dst: Any) -> None:  # pragma: no cover - compiled
    """dst at the picked rows = src[:c]."""
    for a in range(c):
        dst[picked[a]] = src[a]


@_loop
def gather_rows(m: int, c: int, region: Any, code: int, picked: Any, f: Any, srcs: Any,
                dsts: Any) -> None:  # pragma: no cover - compiled
    """f[dsts[i], :c] = f[srcs[i]] at the picked rows, for every i: `gather`
    under the signature of `simd.compress_rows`."""
    for i in range(len(srcs)):
        gather(c, picked, f[srcs[i]], f[dsts[i]])


@_loop
def scatter_rows(m: int, c: int, region: Any, code: int, picked: Any, f: Any, srcs: Any,
                 dsts: Any) -> None:  # pragma: no cover - compiled
    """`gather_rows` undone, under the signature of `simd.expand_rows`."""
    for i in range(len(srcs)):
        scatter(c, picked, f[srcs[i]], f[dsts[i]])


@_loop
def copy(m: int, src: Any, dst: Any) -> None:  # pragma: no cover - compiled
    """dst[:m] = src[:m] (the prices into their output row, of any float type)."""
    for j in range(m):
        dst[j] = src[j]


@_loop
def load_types(otype: Any, lo: int, step: int, m: int, ots: Any,
               ws: Any) -> None:  # pragma: no cover - compiled
    """A block's option types into `ots` (`load`), and each row's sign w: 1 for
    a call, -1 otherwise."""
    load(otype, lo, step, m, ots)
    for j in range(m):
        ws[j] = 1.0 if ots[j] == 1 else -1.0


@_jit
def take_row(j: int, su: Any, sk: Any, st: Any, ssg: Any, sr: Any, sq: Any, us: Any,
             ks: Any, ts: Any, sgs: Any, rs: Any, qs: Any) -> Any:  # pragma: no cover
    """Row j of a block's six float inputs (`source`), widened to float64,
    stored in its columns and returned: the preludes' first step."""
    u = np.float64(su[j])
    k = np.float64(sk[j])
    tt = np.float64(st[j])
    sg = np.float64(ssg[j])
    rr = np.float64(sr[j])
    qq = np.float64(sq[j])
    us[j] = u
    ks[j] = k
    ts[j] = tt
    sgs[j] = sg
    rs[j] = rr
    qs[j] = qq
    return u, k, tt, sg, rr, qq


@_jit
def source(src: Any, lo: int, step: int, m: int, spare: Any) -> Any:  # pragma: no cover
    """A block's rows lo..lo+m-1 of an input, indexed from 0: a slice of it
    (step 1), or `spare` filled with its one value (step 0)."""
    if step == 1:
        return src[lo:lo + m]
    load(src, lo, step, m, spare)
    return spare[:m]


@cache
def row_pass(row: Callable[..., int], skip: int) -> Any:
    """The last loop of both kernels' blocks over the given (compiled) row
    function: every row of the block OK, then each row the vector loops left
    (region ROW: a bad row, a limit, a far tail) or gave a NaN value (other
    than `skip`, the value NaN by definition; -1 for none) priced by the row
    function, which writes its values and returns its code (OVERFLOW for a
    NaN it gets too: `formulas` finish).  Cached per row function."""
    ok = formulas.OK

    @_loop
    def rest(m: int, lo: int, size: int, region: Any, ots: Any, us: Any, ks: Any, ts: Any,
             sgs: Any, rs: Any, qs: Any, out: Any, err: Any) -> None:  # pragma: no cover
        for c in range(size):
            if c != skip:
                values = out[c, lo:lo + m]
                for j in range(m):
                    v = values[j]
                    region[j] = ROW if math.isnan(v) else region[j]
        errs = err[lo:lo + m]  # indexed from 0 by the loop: no wraparound test
        for j in range(m):
            errs[j] = ok
        for j in range(m):
            if region[j] == ROW:
                i = lo + j
                err[i] = row(out, i, size, ots[j], us[j], ks[j], ts[j], sgs[j], rs[j], qs[j])

    return rest


#: The block's scratch columns both kernels share, by row of its scratch
#: array: the seven inputs (a scalar broadcast to its rows, float32 widened)
#: and each row's sign w; each kernel's own columns follow them.
U, K, T, SIGMA, R, Q, W = range(7)


def blocks(columns: int, price_column: int, price_block: Any, first_block: Any,
           higher_block: Any, rest: Any) -> Any:
    """The parallel loop over blocks of BLOCK rows (fewer in a small call)
    that both vectorised kernels run, with the arguments and results of
    `cpu.kernel`'s: each block gets a scratch array of `columns` columns, its
    option types and signs loaded (`load_types`), then

    - ``price_block(m, f, ots, region, su, sk, st, ssg, sr, sq)``, given the
      block's rows of the six float inputs (`source`: slices of the inputs,
      not copies): their values, widened to float64, into the first six
      columns -- in the model's prelude, whose arithmetic overlaps the reads
      from memory (a copy loop of its own before the prelude waited on them:
      10-15% of the kernel's time at a million rows) -- the rows' prices
      into column `price_column` and every row's region (ROW for the row
      function);
    - ``first_block(m, f, out, lo, hi)`` and ``higher_block(...)``, when the
      output's tier asks for them: the first-order Greeks (value codes 1-6)
      and the higher orders (7-13) into the block's slices of the output;
    - `rest` (`row_pass`): the error codes, and the rows the loops left.

    The value codes are numbered as formulas.PRICE..VETA (price 0,
    delta..dividend_rho 1..6, vanna..veta 7..13)."""
    first, higher = formulas.DELTA, formulas.VANNA

    @njit(parallel=True, nogil=True, error_model="numpy", fastmath={"contract"})
    def run(otype: Any, und: Any, strike: Any, t: Any, sigma: Any, r: Any, q: Any,
            steps: Any, out: Any, err: Any) -> None:  # pragma: no cover - compiled
        n = err.shape[0]
        size = out.shape[0]
        # smaller blocks for a call too small to give each thread a few
        rows = BLOCK
        while rows > MIN_BLOCK and n < rows * BLOCKS_PER_THREAD * get_num_threads():
            rows //= 2
        broadcast = steps[1:].min() == 0  # a scalar among the float inputs
        for b in prange((n + rows - 1) // rows):
            lo = b * rows
            m = min(rows, n - lo)
            hi = lo + m
            # (slack after the m rows for simd's 8-row loads and stores)
            f = np.empty((columns, m + simd.LANES))
            ots = np.empty(m, np.int8)
            region = np.empty(m + simd.LANES, np.int8)  # TEXTBOOK, SERIES or ROW
            # the broadcast scalars' rows (none in a book of arrays)
            spare = np.empty((6, m if broadcast else 0), und.dtype)
            load_types(otype, lo, steps[0], m, ots, f[W])
            price_block(m, f, ots, region, source(und, lo, steps[1], m, spare[0]),
                        source(strike, lo, steps[2], m, spare[1]),
                        source(t, lo, steps[3], m, spare[2]),
                        source(sigma, lo, steps[4], m, spare[3]),
                        source(r, lo, steps[5], m, spare[4]),
                        source(q, lo, steps[6], m, spare[5]))
            copy(m, f[price_column], out[0, lo:hi])
            if size > first:
                first_block(m, f, out, lo, hi)
            if size > higher:
                higher_block(m, f, out, lo, hi)
            rest(m, lo, size, region, ots, f[U], f[K], f[T], f[SIGMA], f[R], f[Q], out, err)

    return run


class RegionLoops(NamedTuple):
    """N(d1), N(d2), n(d1) and the price of one region's rows (the same for
    every model and tier: built once per pair of series functions)."""

    textbook_rows: Any
    series_rows: Any


class ModelLoops(NamedTuple):
    """The loops that differ between bsm and black76 (`forward`), the same for
    every tier: built once per model."""

    prelude: Any
    first_order: Any
    second_order: Any


@cache
def region_loops(gauss_small: Callable[..., float],
                 taylor_terms: Callable[..., Any]) -> RegionLoops:
    """The region loops over the given (compiled, inlinable) series functions
    of `formulas`.  Cached, so every kernel calls the same compiled loops
    (each kernel compiled its own copies before: about 50 MiB of resident
    memory apiece)."""
    inv_sqrt_2pi = formulas.INV_SQRT_2PI
    terms = formulas.SMALL_T_TERMS

    @_loop
    def textbook_rows(c: int, cw: Any, cfu: Any, cfk: Any, cx: Any, cs: Any,
                      c_nd1: Any, c_nd2: Any, c_n1: Any,
                      c_price: Any) -> None:  # pragma: no cover - compiled
        """N(d1), N(d2), n(d1) and the price of textbook-region rows, given
        their sign w, fu = S e^(-qt), fk = K e^(-rt), x and s."""
        for a in range(c):
            w = cw[a]
            s = cs[a]
            d1 = cx[a] / s + 0.5 * s
            nd1, n1 = vncdf(w * d1)
            # n(d2) = n(d1) e^x = n(d1) S dq / (K dr): no second exp
            nd2 = vncdf_n(w * (d1 - s), n1 * cfu[a] / cfk[a])
            c_nd1[a] = nd1
            c_nd2[a] = nd2
            c_n1[a] = n1
            c_price[a] = w * (cfu[a] * nd1 - cfk[a] * nd2)

    @_loop
    def series_rows(c: int, cw: Any, cfu: Any, cfk: Any, cx: Any, cs: Any,
                    c_nd1: Any, c_nd2: Any, c_n1: Any,
                    c_price: Any) -> None:  # pragma: no cover - compiled
        """The same for short-series rows (formulas.black_parts' series, as
        lognormal_row turns it into N(d1), N(d2), n(d1) and the price)."""
        for a in range(c):
            fu = cfu[a]
            fk = cfk[a]
            w = cw[a]
            s = cs[a]
            x = cx[a]
            half = 0.5 * s
            h = -abs(x) / s
            ratio = fu / fk
            e = math.sqrt(ratio if x > 0.0 else 1.0 / ratio)
            r1 = vrho1(h)
            even, odd = taylor_terms(h, half, r1, terms)
            pdf_g = inv_sqrt_2pi * vgauss(h) * gauss_small(half)
            cc = pdf_g / (r1 - h)
            bb = 2.0 * cc * odd
            pa = cc * e * (even + odd)
            pb = cc / e * (even - odd)
            n_a = pdf_g * e  # n(h + t), as the row kernel forms it
            up = x > 0.0
            call = w > 0.0
            intrinsic = w * (fu - fk) if w * x > 0.0 else 0.0
            c_n1[a] = n_a / (e * e) if up else n_a
            c_nd1[a] = (1.0 - pb if call else pb) if up else (pa if call else 1.0 - pa)
            c_nd2[a] = (1.0 - pa if call else pa) if up else (pb if call else 1.0 - pb)
            c_price[a] = intrinsic + (fk * e * bb if up else fk * bb / e)

    return RegionLoops(textbook_rows, series_rows)


@cache
def model_loops(forward: bool) -> ModelLoops:
    """bsm's loops (`forward`: black76's), shared by the model's three tiers."""
    small_t = formulas.SMALL_T
    asym = formulas.ASYMPTOTIC_D1

    @_loop
    def prelude(m: int, ots: Any, su: Any, sk: Any, st: Any, ssg: Any, sr: Any, sq: Any,
                us: Any, ks: Any, ts: Any, sgs: Any, rs: Any, qs: Any, xs: Any, vol: Any,
                dqs: Any, drs: Any, fus: Any, fks: Any,
                region: Any) -> None:  # pragma: no cover - compiled
        """The block's inputs (`source`) into its columns, widened to float64;
        every row's log-moneyness x, total vol s, discount factors dq and
        dr (garbage for a row the row function will price); then its region
        and the products fu = S dq and fk = K dr the region loops take (in
        the second loop: stored in the first, they cost more than they
        saved, as if that loop had stopped vectorising)."""
        for j in range(m):
            u, k, tt, sg, rr, qq = take_row(j, su, sk, st, ssg, sr, sq, us, ks, ts, sgs, rs,
                                            qs)
            dr = vexp(-rr * tt)
            if forward:  # the forward's discount factor is the strike's: one exp
                xs[j] = vlog(u / k)
                dq = dr
            else:
                xs[j] = vlog(u / k) + (rr - qq) * tt
                dq = vexp(-qq * tt)
            dqs[j] = dq
            vol[j] = sg * math.sqrt(tt)
            drs[j] = dr
        for j in range(m):
            u = us[j]
            k = ks[j]
            tt = ts[j]
            ratio = u / k
            fus[j] = u * dqs[j]
            fks[j] = k * drs[j]
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
    def first_order(m: int, ws: Any, us: Any, ks: Any, ts: Any, sgs: Any, rs: Any, qs: Any,
                    vol: Any, dqs: Any, drs: Any, nd1s: Any, nd2s: Any, n1s: Any, prices: Any,
                    o_delta: Any, o_gamma: Any, o_vega: Any, o_theta: Any,
                    o_rho: Any, o_drho: Any) -> None:  # pragma: no cover - compiled
        """The first-order Greeks of the block's rows priced with s > 0, as
        the row kernel's `lognormal_row` forms them (n1 = 0 gives its
        limits), into the block's slices of the output rows."""
        for j in range(m):
            u = us[j]
            k = ks[j]
            tt = ts[j]
            w = ws[j]
            dq = dqs[j]
            dr = drs[j]
            nd1 = nd1s[j]
            nd2 = nd2s[j]
            n1 = n1s[j]
            sqt = math.sqrt(tt)
            o_delta[j] = w * dq * nd1
            o_gamma[j] = dq * n1 / (u * vol[j])
            o_vega[j] = u * dq * n1 * sqt
            qe = rs[j] if forward else qs[j]  # the underlying's own rate
            o_theta[j] = (w * (qe * u * dq * nd1 - rs[j] * k * dr * nd2)
                          - 0.5 * u * dq * n1 * sgs[j] / sqt)
            if forward:
                o_rho[j] = -tt * prices[j]
                o_drho[j] = math.nan
            else:
                o_rho[j] = w * k * tt * dr * nd2
                o_drho[j] = -w * u * tt * dq * nd1

    @_loop
    def second_order(m: int, ws: Any, us: Any, ts: Any, sgs: Any, rs: Any, qs: Any, xs: Any,
                     vol: Any, dqs: Any, nd1s: Any, n1s: Any, o_vanna: Any, o_volga: Any,
                     o_charm: Any, o_speed: Any, o_zomma: Any, o_color: Any,
                     o_veta: Any) -> None:  # pragma: no cover - compiled
        """The second- and third-order Greeks of the same rows, as `lognormal_row`
        forms them from d1 = x/s + s/2, d2 = d1 - s (its n1 = 0 branch: 0, and
        charm's carry term alone)."""
        for j in range(m):
            u = us[j]
            tt = ts[j]
            sg = sgs[j]
            q = rs[j] if forward else qs[j]  # the underlying's own rate
            carry = 0.0 if forward else rs[j] - q
            s = vol[j]
            dq = dqs[j]
            n1 = n1s[j]
            sqt = math.sqrt(tt)
            d1 = xs[j] / s + 0.5 * s
            d2 = d1 - s
            gamma = dq * n1 / (u * s)
            vega = u * dq * n1 * sqt
            dd1 = carry / s - 0.5 * d2 / tt
            live = n1 != 0.0
            o_vanna[j] = -dq * n1 * d2 / sg if live else 0.0
            o_volga[j] = vega * d1 * d2 / sg if live else 0.0
            charm0 = q * (ws[j] * dq * nd1s[j])
            o_charm[j] = charm0 - dq * n1 * dd1 if live else charm0
            o_speed[j] = -gamma / u * (d1 / s + 1.0) if live else 0.0
            o_zomma[j] = gamma * (d1 * d2 - 1.0) / sg if live else 0.0
            o_color[j] = gamma * (q + 0.5 / tt + d1 * dd1) if live else 0.0
            o_veta[j] = vega * (q - 0.5 / tt + d1 * dd1) if live else 0.0

    return ModelLoops(prelude, first_order, second_order)


def kernel(row: Callable[..., int], gauss_small: Callable[..., float],
           taylor_terms: Callable[..., Any], forward: bool = False,
           compress: bool = simd.AVAILABLE) -> Any:
    """The bsm kernel (`forward`: the black76 kernel), with the arguments and
    results of `cpu.kernel`'s; it computes the value codes 0..size-1 of its
    output's tier, size = out.shape[0] (1: the price; 7: and the first-order
    Greeks; 14: every Greek), so one compiled kernel serves every tier.
    `row` is the model's scalar row function, for the rows the vector loops
    leave.

    black76 is bsm on the forward with no carry: its q is r (the forward's
    discount factor is the strike's) and x = ln(F/K); its rho holds the
    forward fixed (-t times the price) and it has no dividend rho (NaN),
    as `formulas.lognormal_row` forms them.  The loops are the shared ones
    of `region_loops` and `model_loops`, run over each block by `blocks`,
    the driver both vectorised kernels share.  (A tier fixed at compile time, as
    the row kernels have, gained nothing here -- the tiers differ only in
    which loops a block calls -- and cost about 30 MiB of resident memory
    and seconds of compile time per tier.)  `compress`: move a region's rows
    by AVX-512 compress and expand (`simd`; the default where the CPU has
    them) rather than by index gathers and scatters -- the same values."""
    textbook_rows, series_rows = region_loops(gauss_small, taylor_terms)
    prelude, first_order, second_order = model_loops(forward)
    # a region's rows moved out and back by AVX-512 compress and expand, or
    # by index gathers and scatters (`simd`)
    select, move_out, move_back = ((simd.count, simd.compress_rows, simd.expand_rows)
                                   if compress else (pick, gather_rows, scatter_rows))
    # its own columns, after the shared ones: the rows' parts, their normal
    # integrals and prices, and one region's rows moved out
    x, vol, dq, dr, nd1, nd2, n1, price = range(7, 15)
    g_w, g_fu, g_fk, g_x, g_s, fu, fk, g_nd1, g_nd2, g_n1, g_price = range(15, SCRATCH_COLUMNS)
    # a region's inputs out to its columns (five: S e^(-qt) and K e^(-rt)
    # rather than their four factors, each an AVX-512 compress or a gather
    # per row), its results back
    outward = (W, fu, fk, x, vol), (g_w, g_fu, g_fk, g_x, g_s)
    back = (g_nd1, g_nd2, g_n1, g_price), (nd1, nd2, n1, price)

    @_loop
    def price_block(m: int, f: Any, ots: Any, region: Any, su: Any, sk: Any, st: Any,
                    ssg: Any, sr: Any, sq: Any) -> None:  # pragma: no cover
        """The block's inputs, regions and prices (`blocks`): each region's
        rows moved into unit-stride columns (unless the whole block is of
        that region), priced by a loop of its own that the compiler
        vectorises, and moved back."""
        prelude(m, ots, su, sk, st, ssg, sr, sq, f[U], f[K], f[T], f[SIGMA], f[R], f[Q],
                f[x], f[vol], f[dq], f[dr], f[fu], f[fk], region)
        # the index path's picked rows (unsigned: no wraparound test); the
        # compress needs none
        picked = np.empty(0 if compress else m, np.uint64)
        for code in (TEXTBOOK, SERIES):
            c = select(m, region, code, picked)
            if c == 0:
                continue
            whole = c == m
            if not whole:
                move_out(m, c, region, code, picked, f, outward[0], outward[1])
            # the rows' columns: in place, or the moved ones
            cw, cfu, cfk, cx, cs, cnd1, cnd2, cn1, cprice = (
                (f[W], f[fu], f[fk], f[x], f[vol], f[nd1], f[nd2], f[n1], f[price])
                if whole else
                (f[g_w], f[g_fu], f[g_fk], f[g_x], f[g_s], f[g_nd1], f[g_nd2], f[g_n1],
                 f[g_price]))
            if code == TEXTBOOK:
                textbook_rows(c, cw, cfu, cfk, cx, cs, cnd1, cnd2, cn1, cprice)
            else:
                series_rows(c, cw, cfu, cfk, cx, cs, cnd1, cnd2, cn1, cprice)
            if not whole:
                move_back(m, c, region, code, picked, f, back[0], back[1])

    @_loop
    def first_block(m: int, f: Any, out: Any, lo: int, hi: int) -> None:  # pragma: no cover
        first_order(m, f[W], f[U], f[K], f[T], f[SIGMA], f[R], f[Q], f[vol], f[dq], f[dr],
                    f[nd1], f[nd2], f[n1], f[price], out[1, lo:hi], out[2, lo:hi],
                    out[3, lo:hi], out[4, lo:hi], out[5, lo:hi], out[6, lo:hi])

    @_loop
    def higher_block(m: int, f: Any, out: Any, lo: int, hi: int) -> None:  # pragma: no cover
        second_order(m, f[W], f[U], f[T], f[SIGMA], f[R], f[Q], f[x], f[vol], f[dq], f[nd1],
                     f[n1], out[7, lo:hi], out[8, lo:hi], out[9, lo:hi], out[10, lo:hi],
                     out[11, lo:hi], out[12, lo:hi], out[13, lo:hi])

    return blocks(SCRATCH_COLUMNS, price, price_block, first_block, higher_block,
                  row_pass(row, formulas.UNDEFINED_VALUE[formulas.BLACK76 if forward
                                                         else formulas.BSM]))


class NormalLoops(NamedTuple):
    """The bachelier kernel's loops (the same for every tier)."""

    prelude: Any
    prices: Any
    first_order: Any
    second_order: Any


@cache
def normal_loops() -> NormalLoops:
    """The bachelier loops."""
    inv_sqrt_2pi = formulas.INV_SQRT_2PI

    @_loop
    def prelude(m: int, ots: Any, sf: Any, sk: Any, st: Any, ssg: Any, sr: Any, sq: Any,
                fs: Any, ks: Any, ts: Any, sgs: Any, rs: Any, qs: Any, ds: Any, vol: Any,
                drs: Any, region: Any) -> None:  # pragma: no cover
        """The block's inputs (`source`) into its columns, widened to float64;
        every row's d = (F - K)/s, total vol s = sigma sqrt(t) and discount
        factor (garbage for a row the row function will price), then its
        region: TEXTBOOK for a good row with s > 0 and |d| <= MAX_Z (so n(d)
        is a normal number), ROW otherwise."""
        for j in range(m):
            fw, k, tt, sg, rr, _ = take_row(j, sf, sk, st, ssg, sr, sq, fs, ks, ts, sgs, rs,
                                            qs)
            s = sg * math.sqrt(tt)
            vol[j] = s
            ds[j] = (fw - k) / s
            drs[j] = vexp(-rr * tt)
        for j in range(m):
            usable = ((ots[j] >= 0) & (abs(fs[j]) < BIG) & (abs(ks[j]) < BIG) & (vol[j] > 0.0)
                      & (vol[j] < BIG) & (abs(rs[j] * ts[j]) < MAX_RATE_T) & (qs[j] == 0.0)
                      & (abs(ds[j]) <= MAX_Z))
            region[j] = TEXTBOOK if usable else ROW

    @_loop
    def prices(m: int, ws: Any, fs: Any, ks: Any, ds: Any, vol: Any, drs: Any, nds: Any,
               ns: Any, ps: Any) -> None:  # pragma: no cover - compiled
        """The price, N(w d) and n(d) of the block's rows, as `bachelier_row`
        forms them: z N(z) + n(z) = n(z) rho1(z) M(z), N(z) = n(z) M(z) and
        n(z) at z = -|d|, M = 1/(rho1 + |z|) (`formulas.bachelier_parts`),
        rho1 from `rho1_parts`."""
        for j in range(m):
            w = ws[j]
            d = ds[j]
            a = abs(d)
            a = a if a <= MAX_Z else MAX_Z  # NaN too: a number in the fit's range
            p, q = rho1_parts(a)
            n = inv_sqrt_2pi * vgauss(a)
            mills = n / (p + a * q)  # n M / Q
            tail = mills * q
            mm = fs[j] - ks[j]
            intrinsic = abs(mm) if w * mm > 0.0 else 0.0
            nds[j] = tail if w * d < 0.0 else 1.0 - tail
            ns[j] = n
            ps[j] = drs[j] * (intrinsic + vol[j] * (mills * p))

    @_loop
    def first_order(m: int, ws: Any, ts: Any, sgs: Any, rs: Any, vol: Any, drs: Any,
                    nds: Any, ns: Any, ps: Any, o_delta: Any, o_gamma: Any, o_vega: Any,
                    o_theta: Any, o_rho: Any, o_drho: Any) -> None:  # pragma: no cover
        """The first-order Greeks, as `bachelier_row` forms them (the forward
        held fixed: rho = -t price; no dividend rho)."""
        for j in range(m):
            dr = drs[j]
            n = ns[j]
            tt = ts[j]
            sqt = math.sqrt(tt)
            price = ps[j]
            o_delta[j] = ws[j] * dr * nds[j]
            o_gamma[j] = dr * n / vol[j]
            o_vega[j] = dr * sqt * n
            o_theta[j] = rs[j] * price - 0.5 * dr * n * sgs[j] / sqt
            o_rho[j] = -tt * price
            o_drho[j] = math.nan

    @_loop
    def second_order(m: int, ws: Any, ts: Any, sgs: Any, rs: Any, ds: Any, vol: Any,
                     drs: Any, nds: Any, ns: Any, o_vanna: Any, o_volga: Any, o_charm: Any,
                     o_speed: Any, o_zomma: Any, o_color: Any,
                     o_veta: Any) -> None:  # pragma: no cover - compiled
        """The second- and third-order Greeks, as `bachelier_row` forms them."""
        for j in range(m):
            dr = drs[j]
            n = ns[j]
            d = ds[j]
            tt = ts[j]
            sg = sgs[j]
            r = rs[j]
            gamma = dr * n / vol[j]
            vega = dr * math.sqrt(tt) * n
            o_vanna[j] = -dr * n * d / sg
            o_volga[j] = vega * d * d / sg
            o_charm[j] = r * (ws[j] * dr * nds[j]) + 0.5 * dr * n * d / tt
            o_speed[j] = -gamma * d / vol[j]
            o_zomma[j] = gamma * (d * d - 1.0) / sg
            o_color[j] = r * gamma - 0.5 * gamma * (d * d - 1.0) / tt
            o_veta[j] = r * vega - 0.5 * vega * (1.0 + d * d) / tt

    return NormalLoops(prelude, prices, first_order, second_order)


def normal_kernel(row: Callable[..., int]) -> Any:
    """The bachelier kernel, with the arguments and results of `kernel`'s:
    one pass of vectorised loops over each block (no regions to gather: a
    row is priced by the loops, or by the row function `row` when it is
    bad, at a limit (s = 0) or in the far tail, |d| > MAX_Z)."""
    prelude, prices, first_order, second_order = normal_loops()
    d, vol, dr, nd, n, price = range(7, 13)  # its own columns, after the shared ones

    @_loop
    def price_block(m: int, f: Any, ots: Any, region: Any, sf: Any, sk: Any, st: Any,
                    ssg: Any, sr: Any, sq: Any) -> None:  # pragma: no cover
        prelude(m, ots, sf, sk, st, ssg, sr, sq, f[U], f[K], f[T], f[SIGMA], f[R], f[Q],
                f[d], f[vol], f[dr], region)
        prices(m, f[W], f[U], f[K], f[d], f[vol], f[dr], f[nd], f[n], f[price])

    @_loop
    def first_block(m: int, f: Any, out: Any, lo: int, hi: int) -> None:  # pragma: no cover
        first_order(m, f[W], f[T], f[SIGMA], f[R], f[vol], f[dr], f[nd], f[n], f[price],
                    out[1, lo:hi], out[2, lo:hi], out[3, lo:hi], out[4, lo:hi],
                    out[5, lo:hi], out[6, lo:hi])

    @_loop
    def higher_block(m: int, f: Any, out: Any, lo: int, hi: int) -> None:  # pragma: no cover
        second_order(m, f[W], f[T], f[SIGMA], f[R], f[d], f[vol], f[dr], f[nd], f[n],
                     out[7, lo:hi], out[8, lo:hi], out[9, lo:hi], out[10, lo:hi],
                     out[11, lo:hi], out[12, lo:hi], out[13, lo:hi])

    return blocks(13, price, price_block, first_block, higher_block,
                  row_pass(row, formulas.UNDEFINED_VALUE[formulas.BACHELIER]))
