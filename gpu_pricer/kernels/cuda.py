"""The fused Numba-CUDA kernel, built from the same scalar formulas as the
CPU kernel.  Importing this module needs numba-cuda; it runs on a device
or under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""

from __future__ import annotations

from typing import Any

from numba import cuda

from . import formulas

_F = formulas.build(cuda.jit(device=True))
evaluate = _F.evaluate
value = _F.value

THREADS_PER_BLOCK = 256


@cuda.jit
def price_kernel(
    model: int,
    otype: Any,
    und: Any,
    strike: Any,
    t: Any,
    sigma: Any,
    r: Any,
    q: Any,
    steps: Any,
    codes: Any,
    out: Any,
    err: Any,
) -> None:  # pragma: no cover - compiled
    """Grid-stride loop over rows; same arguments as the CPU kernel."""
    n = err.shape[0]
    m = codes.shape[0]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        e, v = evaluate(
            model,
            otype[i * steps[0]],
            float(und[i * steps[1]]),
            float(strike[i * steps[2]]),
            float(t[i * steps[3]]),
            float(sigma[i * steps[4]]),
            float(r[i * steps[5]]),
            float(q[i * steps[6]]),
        )
        err[i] = e
        for j in range(m):
            out[j, i] = value(codes[j], e, v)
