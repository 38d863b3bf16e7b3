"""The Numba-CUDA kernels compile to PTX for a real GPU (sm_80), without one.

The CUDA simulator (tests/test_cudasim.py) runs the kernels' Python source;
this test runs the real compiler on the same source, so an unsupported
construct or a typing error on the device target fails here, on a machine
with no GPU.  NVIDIA's NVVM and NVRTC come from the nvidia-cuda-nvcc-cu12 and
nvidia-cuda-nvrtc-cu12 wheels (dev extra).  Compiling device functions asks
the driver for the current device's compute capability, so that one query is
answered with 8.0 (an A100/H100-class target).
"""

from __future__ import annotations

import types as pytypes
from unittest import mock

import pytest

from .conftest import SIMULATED

pytestmark = pytest.mark.skipif(SIMULATED, reason="compiles for a real device, not the simulator")


@pytest.mark.parametrize(("model", "size", "kind"), [
    (0, 14, "price"), (1, 14, "price"), (2, 14, "price"),
    (0, 1, "implied_vol"), (1, 1, "implied_vol"), (2, 1, "implied_vol"),
])
def test_kernels_compile_to_ptx(model: int, size: int, kind: str) -> None:
    from numba import cuda, types
    from numba.cuda import dispatcher

    from gpu_pricer.kernels import cuda as kcuda

    try:
        cuda.compile_ptx(lambda a: None, "void(float64[:])", cc=(8, 0))
    except Exception as exc:  # no NVVM/NVRTC: say so, loudly
        pytest.skip(f"CUDA compiler libraries not installed: {exc}")
    vec = types.Array(types.float64, 1, "C")
    sig = (types.Array(types.int8, 1, "C"), *(vec,) * 6, types.Array(types.int64, 1, "C"),
           types.Array(types.float64, 2, "C"), types.Array(types.int8, 1, "C"))
    fake_device = pytypes.SimpleNamespace(compute_capability=(8, 0))
    with mock.patch.object(dispatcher, "get_current_device", lambda: fake_device):
        kernel = kcuda.kernel(model, size, kind)
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(8, 0))
    assert ".visible .entry" in ptx
    assert "sm_80" in ptx
