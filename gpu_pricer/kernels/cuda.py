"""The fused Numba-CUDA kernels, built from the same scalar formulas as the
CPU kernels and specialised the same way (model x tier of outputs).
Importing this module needs numba-cuda; the kernels run on a device or
under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numba import cuda

from . import formulas, implied, mills_table

# float64 whatever the inputs' dtype: on the device target, float() of a float32
# stays float32, and so would all the arithmetic after it (np.float64 converts on
# both targets and under the simulator)
_f64 = np.float64

_COLD = cuda.jit(device=True)


def device_table() -> Any:
    """The Mills-ratio table (`mills_table.COEFFS`) as a device array, which the
    kernels read from global memory, where a device (or the simulator) is
    there; None otherwise (compiling PTX on a machine without a GPU), and the
    table is then a constant.  Constant memory serialises a warp whose threads
    read different addresses, and rows of a random book read different pieces
    of the table: on an H100 the bsm price kernel took 5.3 ms for 10,000,000
    random rows with the table in constant memory and 0.62 ms with it in
    global memory, with bitwise the same results."""
    if not cuda.is_available():
        return None
    return cuda.to_device(np.ascontiguousarray(mills_table.COEFFS))


_F = formulas.build(cuda.jit(device=True, inline="always"), cold=_COLD, table=device_table())
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
                _f64(und[i * steps[1]]),
                _f64(strike[i * steps[2]]),
                _f64(t[i * steps[3]]),
                _f64(sigma[i * steps[4]]),
                _f64(r[i * steps[5]]),
                _f64(q[i * steps[6]]),
            )

    return run  # type: ignore[no-any-return]
