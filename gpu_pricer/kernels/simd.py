"""AVX-512 compress and expand for the vectorised kernels' region loops.

A block's rows of one region are moved into columns of their own before
that region's loop and back after it (`vector.kernel`).  Written as index
gathers and scatters, LLVM turns those moves into vgatherqpd/vscatterqpd,
which cost about a cycle per element on the AMD Zen 4 this project is
measured on.  AVX-512 has instructions for exactly this move:
``vcompresspd`` packs the lanes of a register that a mask selects,
``vexpandpd`` spreads packed values back to the selected lanes.  Numba has
no way to ask for them, so `compress_rows8` and `expand_rows8` emit them as
LLVM intrinsics, eight rows at a time and every column of the move with one
mask, in their register forms (the memory form of compress is microcoded
and slow on Zen 4), followed by a plain 8-lane store (compress) or a masked
store (expand).  In-process A/B on this machine, against the index path:
the bsm and black76 kernels take 3% to 9% less time by tier, every value
the same to the bit.

`AVAILABLE` says whether the host CPU has AVX-512F and Numba compiles for
it; the kernels use these functions only then, and the index gathers
otherwise (tests/test_simd.py holds both to the same values).

Every row of the 2-d scratch array and the region array passed here must
have LANES - 1 elements of slack after their `m` rows: an 8-lane load at
row j < m may read up to row j + 7, and a compress at count c < m writes
8 lanes from c.
"""

from __future__ import annotations

from typing import Any

import numba
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

#: Rows per register (eight float64 in a 512-bit register).
LANES = 8


def _available() -> bool:
    """The host has AVX-512F and Numba compiles for the host as it is (neither
    NUMBA_CPU_NAME, e.g. generic, nor NUMBA_CPU_FEATURES set)."""
    host = numba.config.CPU_NAME in (None, "", "host") and not numba.config.CPU_FEATURES
    return host and bool(binding.get_host_cpu_features().get("avx512f", False))


AVAILABLE = _available()

_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_V8F64 = ir.VectorType(ir.DoubleType(), LANES)
_MASK = ir.VectorType(_I1, LANES)


def _splat(builder: Any, value: Any, vector: ir.VectorType) -> Any:
    one = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector, None),
                                  ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _mask(context: Any, builder: Any, regty: Any, region: Any, j: Any, code: Any,
          rem: Any) -> Any:
    """The lanes l of rows j..j+7 with region[j + l] == code and l < rem."""
    bytes8 = ir.VectorType(_I8, LANES)
    data = make_array(regty)(context, builder, value=region).data
    ptr = builder.bitcast(builder.gep(data, [j]), bytes8.as_pointer())
    same = builder.icmp_signed("==", builder.load(ptr, align=1),
                               _splat(builder, builder.trunc(code, _I8), bytes8))
    lanes = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
    inside = builder.icmp_signed("<", lanes, _splat(builder, rem, ir.VectorType(_I64, LANES)))
    return builder.and_(same, inside)


def _count(builder: Any, mask: Any) -> Any:
    popcount = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8, [_I8]),
                                              "llvm.ctpop.i8")
    return builder.zext(builder.call(popcount, [builder.bitcast(mask, _I8)]), _I64)


def _row_vector(context: Any, builder: Any, fty: Any, f: Any, row: Any, col: Any) -> Any:
    """Pointer to the 8 values f[row, col:col+8] of a 2-d array (no bounds or
    wraparound check)."""
    a = make_array(fty)(context, builder, value=f)
    shape = cgutils.unpack_tuple(builder, a.shape)
    strides = cgutils.unpack_tuple(builder, a.strides)
    ptr = cgutils.get_item_pointer2(context, builder, a.data, shape, strides, fty.layout,
                                    [row, col])
    return builder.bitcast(ptr, _V8F64.as_pointer())


def _move(expand: bool) -> Any:
    """The code of `compress_rows8`, or of `expand_rows8` (`expand`): one mask
    from the region codes, then per column an 8-lane load, the register-form
    compress or expand, and a plain store (compress: the lanes past the count
    land in the slack) or a masked store (expand: the other rows untouched)."""
    which = "expand" if expand else "compress"

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fty, _, _, regt = signature.args[:4]
        f, srcs, dsts, region, j, c, code, rem = args
        mask = _mask(context, builder, regt, region, j, code, rem)
        move = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V8F64, [_V8F64, _V8F64, _MASK]),
            f"llvm.x86.avx512.mask.{which}.v8f64")
        masked_store = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [_V8F64, _V8F64.as_pointer(), _I32, _MASK]),
            "llvm.masked.store.v8f64.p0")
        read_at, write_at = (c, j) if expand else (j, c)
        for i in range(signature.args[1].count):
            src = _row_vector(context, builder, fty, f, builder.extract_value(srcs, i), read_at)
            moved = builder.call(move, [builder.load(src, align=8), ir.Constant(_V8F64, None),
                                        mask])
            dst = _row_vector(context, builder, fty, f, builder.extract_value(dsts, i), write_at)
            if expand:
                builder.call(masked_store, [moved, dst, ir.Constant(_I32, 8), mask])
            else:
                builder.store(moved, dst, align=8)
        return _count(builder, mask)

    return codegen


def _signature(f: Any, srcs: Any, dsts: Any, region: Any) -> Any:
    return types.int64(f, srcs, dsts, region, types.int64, types.int64, types.int64,
                       types.int64)


@intrinsic
def compress_rows8(typingctx: Any, f: Any, srcs: Any, dsts: Any, region: Any, j: Any, c: Any,
                   code: Any, rem: Any) -> Any:
    """For each i: f[dsts[i], c:c+k] = f[srcs[i], j + l] for the k lanes l < rem with
    region[j + l] == code, in order; returns k."""
    return _signature(f, srcs, dsts, region), _move(expand=False)


@intrinsic
def expand_rows8(typingctx: Any, f: Any, srcs: Any, dsts: Any, region: Any, j: Any, c: Any,
                 code: Any, rem: Any) -> Any:
    """`compress_rows8` undone: f[dsts[i], j + l] = the next of f[srcs[i], c:] for
    each lane l < rem with region[j + l] == code; returns how many."""
    return _signature(f, srcs, dsts, region), _move(expand=True)


_loop = njit(nogil=True, error_model="numpy")


@_loop
def count(m: int, region: Any, code: int, picked: Any) -> int:  # pragma: no cover - compiled
    """How many of the rows j < m have region[j] == code (`picked` unused: the
    signature of the index path's `vector.pick`)."""
    c = 0
    for j in range(m):
        c += int(region[j] == code)
    return c


def _rows(step8: Any) -> Any:
    """The loop over a block's rows, eight at a time, of `compress_rows8` or
    `expand_rows8`, with the signature of the index path's `vector.gather_rows`
    (`c` and `picked` unused)."""

    @_loop
    def rows(m: int, c: int, region: Any, code: int, picked: Any, f: Any, srcs: Any,
             dsts: Any) -> None:  # pragma: no cover - compiled
        done = 0
        for j in range(0, m, LANES):
            done += step8(f, srcs, dsts, region, j, done, code, m - j)

    return rows


#: f[dsts[i], :c] = f[srcs[i]]'s rows j < m with region[j] == code, for every i.
compress_rows = _rows(compress_rows8)
#: `compress_rows` undone: f[srcs[i], :c] back to f[dsts[i]]'s rows of the region.
expand_rows = _rows(expand_rows8)
