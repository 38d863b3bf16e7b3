"""A measured prototype for issue 2's next step, not used by the library:
how fast the textbook Black-Scholes pass runs when exp, log and N(x) are
written as plain arithmetic that LLVM can vectorise, on this machine.

Every Numba kernel in `gpu_pricer` (and the plain loop of `bench.core`) calls
libm's exp, log and erfc once per value: scalar calls that no compiler
vectorises here (llvmlite has no SVML), each of which spills every live
value around it.  This script writes them as branch-free arithmetic instead:

* ``vexp``: Cody-Waite reduction by ln 2 (split in two so k*ln2 is exact),
  the Taylor polynomial of e^r to degree 13 on |r| <= ln2/2, and 2^k put
  into the exponent bits directly (a bit cast, `_bits_to_float`);
* ``vlog``: the exponent and mantissa from the bits, m in [sqrt(1/2),
  sqrt(2)), log m = 2 atanh(s) with s = (m-1)/(m+1) by its series;
* ``vncdf``: N(z) = n(|z|)/(rho1(-|z|) + |z|) in the lower tail (and 1 minus
  that in the upper), rho1 from the kernels' own Mills-ratio table
  (`gpu_pricer.kernels.mills_table`), n(z) = e^{-z^2/2} with the rounding of
  z*z corrected (as `formulas.gauss`).

It times a prange loop (fissioned in blocks: see `textbook`) pricing price,
delta, gamma, vega, theta and rho by
the textbook formula with these functions against `bench.core`'s plain
fused Numba loop (the same formulas on libm), on the textbook rows of the
benchmark's book (t = sigma sqrt(T)/2 >= formulas.SMALL_T, where the kernels
use that formula), and prints how far each output is from
`gpu_pricer.price` there, and how far vexp and vlog are from libm in ulps.
What it leaves out, for the kernel itself: the short-series rows (61% of
that book; their Taylor loop and table are arithmetic too), the far tails
(|z| > 37, and the asymptotic branch), row checks and error codes, and the
choice between regions without branches.

Run: ``python tools/simd_prototype.py`` (about a minute, mostly compiling).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import mpmath as mp
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpu_pricer as gp
from bench import core
from gpu_pricer.kernels import cpu, formulas


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


mp.mp.dps = 40
#: ln 2 as a float with its low 28 mantissa bits cleared (k * LN2_HI is exact
#: for |k| < 2^24) and the rest.
LN2_HI = float(np.frombuffer((np.frombuffer(np.float64(math.log(2)).tobytes(), np.int64)
                              & ~np.int64((1 << 28) - 1)).tobytes(), np.float64)[0])
LN2_LO = float(mp.log(2) - mp.mpf(LN2_HI))
INV_LN2 = 1.4426950408889634
EXP_COEFFS = tuple(1.0 / math.factorial(k) for k in range(2, 14))  # r^2/2! .. r^13/13!
LOG_COEFFS = tuple(2.0 / (2 * k + 1) for k in range(1, 12))  # 2 s^(2k+1)/(2k+1), k >= 1
INV_SQRT_2PI = formulas.INV_SQRT_2PI
SPLIT = formulas.SPLIT
#: rho1(h) = I_1/I_0 from the kernels' Mills-ratio table (plain arithmetic: it vectorises).
rho1 = cpu._F.rho1

jit = njit(inline="always", fastmath={"contract"}, error_model="numpy")


@jit
def vexp(x: float) -> float:
    """e^x for -708 <= x <= 709 (clamped to that range)."""
    x = min(max(x, -708.0), 709.0)
    k = math.floor(x * INV_LN2 + 0.5)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_COEFFS[11]
    for i in range(10, -1, -1):
        p = p * r + EXP_COEFFS[i]
    return (1.0 + (r + r * r * p)) * _bits_to_float((np.int64(k) + 1023) << 52)


@jit
def vlog(x: float) -> float:
    """log x for a positive normal x."""
    bits = _float_to_bits(x)
    e = (bits >> 52) - 1023
    m = _bits_to_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # [1, 2)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    p = LOG_COEFFS[10]
    for i in range(9, -1, -1):
        p = p * z + LOG_COEFFS[i]
    dk = np.float64(e)
    # log m = 2s + s z p = f - (f - 2s) + s z p, with f - 2s = s f exactly enough
    return dk * LN2_HI + ((dk * LN2_LO + s * z * p) - s * f + f)


@jit
def vgauss(z: float) -> float:
    """e^{-z^2/2} with the rounding of z*z corrected (Veltkamp's split)."""
    zz = z * z
    c = SPLIT * z
    hi = c - (c - z)
    lo = z - hi
    err = ((hi * hi - zz) + 2.0 * hi * lo) + lo * lo
    return vexp(-0.5 * zz) * (1.0 - 0.5 * err)


@jit
def vncdf(z: float) -> Any:
    """(N(z), n(z)) for |z| <= 37 (beyond, e^{-z^2/2} is below vexp's range:
    the kernel's far tails stay on the scalar path)."""
    a = min(abs(z), 40.0)
    n = INV_SQRT_2PI * vgauss(a)
    tail = n / (rho1(-a) + a)
    return (tail if z < 0.0 else 1.0 - tail), n


#: Rows per block of the fissioned loop (its temporaries stay in cache).
BLOCK = 1024


@njit(parallel=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def textbook(is_call: Any, spot: Any, strike: Any, t: Any, sigma: Any, r: Any, q: Any,
             out: Any) -> None:  # pragma: no cover - compiled
    """The textbook pass, fissioned into four loops per block of rows: written
    as one loop, it ran at scalar speed here (LLVM did not vectorise the whole
    body well); each part alone vectorises."""
    n = spot.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        m = min(BLOCK, n - lo)
        z1 = np.empty(m)
        z2 = np.empty(m)
        dqs = np.empty(m)
        drs = np.empty(m)
        nd1s = np.empty(m)
        nd2s = np.empty(m)
        pdfs = np.empty(m)
        for j in range(m):
            i = lo + j
            tt = t[i]
            w = 1.0 if is_call[i] else -1.0
            x = vlog(spot[i] / strike[i]) + (r[i] - q[i]) * tt
            sd = sigma[i] * math.sqrt(tt)
            d1 = x / sd + 0.5 * sd
            z1[j] = w * d1
            z2[j] = w * (d1 - sd)
            dqs[j] = vexp(-q[i] * tt)
            drs[j] = vexp(-r[i] * tt)
        for j in range(m):
            nd1s[j], pdfs[j] = vncdf(z1[j])
        for j in range(m):
            nd2s[j], _ = vncdf(z2[j])
        for j in range(m):
            i = lo + j
            s0 = spot[i]
            k = strike[i]
            tt = t[i]
            v = sigma[i]
            sqt = math.sqrt(tt)
            w = 1.0 if is_call[i] else -1.0
            dq = dqs[j]
            dr = drs[j]
            nd1 = nd1s[j]
            nd2 = nd2s[j]
            pdf = pdfs[j]
            out[0, i] = w * (s0 * dq * nd1 - k * dr * nd2)
            out[1, i] = w * dq * nd1
            out[2, i] = dq * pdf / (s0 * v * sqt)
            out[3, i] = s0 * dq * pdf * sqt
            out[4, i] = (-0.5 * s0 * dq * pdf * v / sqt
                         + w * (q[i] * s0 * dq * nd1 - r[i] * k * dr * nd2))
            out[5, i] = w * k * tt * dr * nd2


@njit(parallel=True)
def _apply(f: Any, x: Any, out: Any) -> None:  # pragma: no cover - compiled
    for i in prange(x.shape[0]):
        out[i] = f(x[i])


def ulps(got: np.ndarray[Any, Any], ref: np.ndarray[Any, Any]) -> float:
    return float(np.max(np.abs(got - ref) / np.spacing(np.abs(ref))))


def median_ms(fn: Any, rounds: int = 11) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-700.0, 700.0, 1_000_000)
    got = np.empty_like(x)
    _apply(vexp, x, got)
    print(f"vexp vs libm exp on [-700, 700]: max {ulps(got, np.exp(x)):.2f} ulps")
    y = np.exp(rng.uniform(-700.0, 700.0, 1_000_000))
    _apply(vlog, y, got)
    print(f"vlog vs libm log on e^[-700, 700]: max {ulps(got, np.log(y)):.2f} ulps")

    big = core.make_book(3_000_000, rng)
    s = big["sigma"] * np.sqrt(big["t"])
    rows = np.flatnonzero(0.5 * s >= formulas.SMALL_T)[:1_000_000]
    book = {k: np.ascontiguousarray(v[rows]) for k, v in big.items()}
    args = [book[k] for k in ("option_type", "spot", "strike", "t", "sigma", "r", "q")]
    n = len(rows)
    out = np.empty((6, n))
    plain = np.empty((6, n))
    ref = gp.price(model="bsm", greeks=core.GREEKS, **book)
    textbook(*args, out)
    for j, name in enumerate(("price", *core.GREEKS)):
        scale = np.maximum(np.abs(ref[name]), 1e-8 * book["spot"])
        print(f"{name:>6}: max |prototype - gpu_pricer| / max(|value|, 1e-8 spot) = "
              f"{np.max(np.abs(out[j] - ref[name]) / scale):.1e}")
    proto = median_ms(lambda: textbook(*args, out))
    loop = median_ms(lambda: core._plain_kernel(*args, plain))
    print(f"{n:,} textbook rows, price + {', '.join(core.GREEKS)}: prototype {proto:.1f} ms "
          f"({n / proto / 1e3:,.1f} M/s), plain fused Numba loop {loop:.1f} ms "
          f"({n / loop / 1e3:,.1f} M/s): {loop / proto:.2f}x")


if __name__ == "__main__":
    main()
