"""The fused, parallel, nogil Numba CPU kernels.

One pass over the rows: each row is read once (scalar inputs broadcast by
a zero step, never materialised), priced with its Greeks by
the model's row function of `formulas`, and written once.  The GIL is
released, so the service can call them from a worker thread while its
event loop runs.

A kernel is specialised for a model and a tier of outputs (price only;
price and first-order Greeks; everything: value codes 0..size-1), so the
compiler folds each Greek's formula into the loop, shares their parts and
drops what the tier does not write; it writes out[code, i] for every code
of the tier.
Each (model, tier) compiles on first use (a few seconds).  Prices and
Greeks of every model go to the vectorised kernels of `vector` instead (see
`vector_kernel`): one per model, for every tier, compiled on first use; the
row kernels serve implied vols.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from numba import njit, prange

from . import formulas, implied, vector

_COLD = njit(cache=False, nogil=True, error_model="numpy", fastmath={"contract"})
_F = formulas.build(
    njit(cache=False, nogil=True, inline="always", error_model="numpy", fastmath={"contract"}),
    cold=_COLD,
)
# The solver calls the Black function from several places: left to LLVM to
# inline (Numba-IR inlining of all of it takes minutes to compile).
_IV = implied.build(_COLD, _F)
# The same formulas as functions that call one another instead of being
# inlined into each other: the vectorised kernels' row function for the few
# rows their loops leave (see `_called`).
_F_CALLS = formulas.build(_COLD, cold=_COLD)

@cache
def kernel(model: int, size: int, kind: str = "price") -> Callable[..., None]:
    """The compiled kernel for `model` computing value codes 0..size-1.

    Arguments: otype, underlying, strike, t, sigma, r, q (1-d arrays of
    length n or 1), steps (1 or 0 for each of those seven), out (size, n)
    and err (n).  ``kind="implied_vol"``: sigma holds prices, and out[0]
    receives the implied vols (size 1).
    """

    price_row = _IV.rows[model] if kind == "implied_vol" else _F.rows[model]

    @njit(parallel=True, nogil=True, cache=False, error_model="numpy", fastmath={"contract"})
    def run(otype: Any, und: Any, strike: Any, t: Any, sigma: Any, r: Any, q: Any,
            steps: Any, out: Any, err: Any) -> None:  # pragma: no cover
        n = err.shape[0]
        s0, s1, s2, s3, s4, s5, s6 = (steps[0], steps[1], steps[2], steps[3], steps[4],
                                      steps[5], steps[6])
        for i in prange(n):
            err[i] = price_row(
                out,
                i,
                size,
                otype[i * s0],
                np.float64(und[i * s1]),
                np.float64(strike[i * s2]),
                np.float64(t[i * s3]),
                np.float64(sigma[i * s4]),
                np.float64(r[i * s5]),
                np.float64(q[i * s6]),
            )

    return run  # type: ignore[no-any-return]


def vector_kernel(model: int, size: int, kind: str = "price") -> Callable[..., None] | None:
    """The vectorised kernel (`vector`) for a model's prices and Greeks (None
    for implied vols).  One compiled kernel per model serves every tier (it
    reads the tier from its output's shape)."""
    if kind != "price":
        return None
    assert size in (1, formulas.DIVIDEND_RHO + 1, formulas.N_VALUES)  # the tiers
    return _vector_model(model)


@cache
def _vector_model(model: int) -> Callable[..., None]:
    if model == formulas.BACHELIER:
        return vector.normal_kernel(_called(model))  # type: ignore[no-any-return]
    return vector.kernel(_called(model), _F.gauss_small,  # type: ignore[no-any-return]
                         _F.taylor_terms, forward=model == formulas.BLACK76)


def _called(model: int) -> Callable[..., int]:
    """The model's row function compiled as a function of its own, called
    rather than inlined where a kernel rarely needs it, and built from
    formulas that call one another: the vectorised kernels take it for the
    few rows their loops leave (the inlined build cost more resident memory
    and compile time, for rows that are about 1% of a book)."""
    return _F_CALLS.rows[model]  # type: ignore[no-any-return]
