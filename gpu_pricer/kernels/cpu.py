"""The fused, parallel, nogil Numba CPU kernels.

One pass over the rows: each row is read once (scalar inputs broadcast by
a zero step, never materialised), priced with the requested Greeks by
`formulas.evaluate` and `formulas.value`, and written once.  The GIL is
released, so the service can call them from a worker thread while its
event loop runs.

A kernel is specialised for a model and a tier of outputs (price only;
price and first-order Greeks; everything), so the output index is a
compile-time constant and the compiler folds each Greek's formula into
the loop; `slots` routes each computed value to its output row, or drops
it.  Each (model, tier) compiles on first use (a few seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from numba import njit, prange

from . import formulas

_F = formulas.build(njit(cache=False, nogil=True, inline="always"),
                    cold=njit(cache=False, nogil=True))

#: Outputs computed by each tier: codes 0..size-1.
TIERS = (1, formulas.DIVIDEND_RHO + 1, formulas.N_VALUES)


def tier_for(codes: np.ndarray[Any, Any]) -> int:
    """The smallest tier size that covers every requested code."""
    top = int(codes.max()) + 1
    return next(size for size in TIERS if size >= top)


def slots_for(codes: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, Any]:
    """slots[c] = output row of value code c, or -1 when not requested."""
    slots = np.full(size, -1, dtype=np.int64)
    slots[codes] = np.arange(codes.shape[0])
    return slots


@cache
def kernel(model: int, size: int) -> Callable[..., None]:
    """The compiled kernel for `model` computing value codes 0..size-1."""

    evaluate = _F.evaluate[model]
    values = _F.values[model]
    tier = _F.tiers[size]

    @njit(parallel=True, nogil=True, cache=False)
    def run(otype: Any, und: Any, strike: Any, t: Any, sigma: Any, r: Any, q: Any,
            steps: Any, slots: Any, out: Any, err: Any) -> None:  # pragma: no cover
        n = err.shape[0]
        s0, s1, s2, s3, s4, s5, s6 = (steps[0], steps[1], steps[2], steps[3], steps[4],
                                      steps[5], steps[6])
        for i in prange(n):
            e, c = evaluate(
                otype[i * s0],
                np.float64(und[i * s1]),
                np.float64(strike[i * s2]),
                np.float64(t[i * s3]),
                np.float64(sigma[i * s4]),
                np.float64(r[i * s5]),
                np.float64(q[i * s6]),
            )
            err[i] = e
            vals = tier(values(e, c))
            for j in range(size):
                slot = slots[j]
                if slot >= 0:
                    out[slot, i] = vals[j]

    return run  # type: ignore[no-any-return]


def price_kernel(model: int, otype: Any, und: Any, strike: Any, t: Any, sigma: Any, r: Any,
                 q: Any, steps: Any, codes: Any, out: Any, err: Any) -> None:
    """Price rows 0..n-1 into out[j, i] (value codes[j]) and err[i].

    Inputs are 1-d arrays of length n or 1; steps[a] is 1 or 0 for each.
    """
    size = tier_for(codes)
    kernel(model, size)(otype, und, strike, t, sigma, r, q, steps, slots_for(codes, size),
                        out, err)
