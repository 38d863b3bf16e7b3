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
from typing import Any
from unittest import mock

import pytest

from .conftest import SIMULATED

pytestmark = pytest.mark.skipif(SIMULATED, reason="compiles for a real device, not the simulator")


def _row_kernel_ptx(model: int, size: int, kind: str, dtype: str) -> str:
    """PTX of the row kernel for `dtype` inputs and outputs, for an sm_80 device
    (skips where the CUDA compiler libraries are not installed)."""
    from numba import cuda, types
    from numba.cuda import dispatcher

    from gpu_pricer.kernels import cuda as kcuda

    try:
        cuda.compile_ptx(lambda a: None, "void(float64[:])", cc=(8, 0))
    except Exception as exc:  # no NVVM/NVRTC: say so, loudly
        pytest.skip(f"CUDA compiler libraries not installed: {exc}")
    real = getattr(types, dtype)
    vec = types.Array(real, 1, "C")
    sig = (types.Array(types.int8, 1, "C"), *(vec,) * 6, types.Array(types.int64, 1, "C"),
           types.Array(real, 2, "C"), types.Array(types.int8, 1, "C"))
    fake_device = pytypes.SimpleNamespace(compute_capability=(8, 0))
    with mock.patch.object(dispatcher, "get_current_device", lambda: fake_device):
        kernel = kcuda.kernel(model, size, kind)
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(8, 0))
    return str(ptx)


@pytest.mark.parametrize(("model", "size", "kind"), [
    (0, 14, "price"), (1, 14, "price"), (2, 14, "price"),
    (0, 1, "implied_vol"), (1, 1, "implied_vol"), (2, 1, "implied_vol"),
])
def test_kernels_compile_to_ptx(model: int, size: int, kind: str) -> None:
    ptx = _row_kernel_ptx(model, size, kind, "float64")
    assert ".visible .entry" in ptx
    assert "sm_80" in ptx


@pytest.mark.parametrize("kind", ["price", "implied_vol"])
def test_float32_kernels_compute_in_float64(kind: str) -> None:
    """float32 inputs and outputs, float64 arithmetic: the PTX holds float32
    loads, stores, conversions and exact comparisons, but no float32 arithmetic
    (on the device target float() of a float32 stays float32, unlike the CPU)."""
    import re

    ptx = _row_kernel_ptx(0, 14 if kind == "price" else 1, kind, "float32")
    arithmetic = re.findall(r"\b(?:add|sub|mul|fma|div|rcp|sqrt|ex2|lg2)\.[a-z.]*f32\b", ptx)
    assert "cvt.f64.f32" in ptx and "st.global.f32" in ptx
    assert arithmetic == []


class _FakeDeviceTable:
    """Stands for the table's device array: compiling only embeds its pointer."""

    def __init__(self) -> None:
        from gpu_pricer.kernels import mills_table

        self.__cuda_array_interface__ = {
            "shape": mills_table.COEFFS.shape, "typestr": "<f8", "data": (1 << 32, True),
            "strides": None, "version": 3}


@pytest.mark.parametrize("on_device", [False, True])
def test_mills_table_is_read_from_global_memory_when_on_the_device(on_device: bool) -> None:
    """With the table as a device array (what `kernels.cuda.device_table` gives
    where a GPU is), the PTX holds no constant copy of it and reads it through
    its pointer; as a host array (no GPU here) it is a constant."""
    import re

    from numba import cuda

    from gpu_pricer.kernels import formulas, mills_table

    try:
        cuda.compile_ptx(lambda a: None, "void(float64[:])", cc=(8, 0))
    except Exception as exc:
        pytest.skip(f"CUDA compiler libraries not installed: {exc}")
    table = _FakeDeviceTable() if on_device else None
    f = formulas.build(cuda.jit(device=True, inline="always"), cold=cuda.jit(device=True),
                       table=table)
    rho1 = f.rho1

    def kernel(h: Any, out: Any) -> None:  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < h.shape[0]:
            out[i] = rho1(h[i])

    ptx, _ = cuda.compile_ptx(kernel, "void(float64[:], float64[:])", cc=(8, 0))
    size = mills_table.COEFFS.nbytes
    if on_device:  # loads through the embedded pointer (generic addressing: global)
        assert f"[{size}]" not in ptx and "ld.const" not in ptx
        assert str(1 << 32) in ptx
        assert len(re.findall(r"\bld\.(?:global\.)?(?:v2\.)?f64", ptx)) >= 6
    else:
        assert f"_cudapy_cmem[{size}]" in ptx and "ld.const" in ptx
