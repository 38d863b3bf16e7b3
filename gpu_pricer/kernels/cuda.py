"""The fused Numba-CUDA kernels, built from the same scalar formulas as the
CPU kernels and specialised the same way (model x tier of outputs).
Importing this module needs numba-cuda; the kernels run on a device or
under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""

from __future__ import annotations

from functools import cache
from typing import Any

from numba import cuda

from . import formulas, implied

_COLD = cuda.jit(device=True)
_F = formulas.build(cuda.jit(device=True, inline="always"), cold=_COLD)
# as on the CPU, the solver's functions are left to the compiler to inline
_IV = implied.build(_COLD, _F)

THREADS_PER_BLOCK = 256


@cache
def kernel(model: int, size: int, kind: str = "price") -> Any:
    """The CUDA kernel for `model` computing value codes 0..size-1; same
    arguments as `gpu_pricer.kernels.cpu.kernel`, launched as
    ``kernel(model, size, kind)[blocks, THREADS_PER_BLOCK](...)``."""
    price_row = _IV.rows[model] if kind == "implied_vol" else _F.rows[model]

    @cuda.jit
    def run(otype: Any, und: Any, strike: Any, t: Any, sigma: Any, r: Any, q: Any,
            steps: Any, out: Any, err: Any) -> None:  # pragma: no cover
        n = err.shape[0]
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, n, stride):
            err[i] = price_row(
                out,
                i,
                size,
                otype[i * steps[0]],
                float(und[i * steps[1]]),
                float(strike[i * steps[2]]),
                float(t[i * steps[3]]),
                float(sigma[i * steps[4]]),
                float(r[i * steps[5]]),
                float(q[i * steps[6]]),
            )

    return run  # type: ignore[no-any-return]
