"""The four backends, their availability, and the automatic choice.

========== ============================================ =====================
name       what runs                                    where
========== ============================================ =====================
numpy      `gpu_pricer.reference` with ``xp = numpy``   CPU, chunked
numba      fused parallel nogil kernel (`kernels.cpu`)  CPU, all cores
cupy       `gpu_pricer.reference` with ``xp = cupy``    GPU, chunked
numba-cuda fused CUDA kernel (`kernels.cuda`)           GPU, chunked
========== ============================================ =====================

``"auto"`` takes the first usable of numba-cuda, cupy, numba, numpy (the
GPU ones only for device input), and moves down the list when a backend
fails: not installed, cupy installed but no driver or device, or an error
at first use.  The reasons are kept and reported by `backends()`.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from . import reference, reference_iv
from .inputs import Request
from .settings import get_settings

log = logging.getLogger("gpu_pricer")

NAMES = ("numpy", "numba", "cupy", "numba-cuda")
AUTO_ORDER = ("numba-cuda", "cupy", "numba", "numpy")
GPU = frozenset({"cupy", "numba-cuda"})


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and why (not)."""

    name: str
    available: bool
    reason: str


Runner = Callable[[Request, Any, Any], None]

# Backends that failed at use in this process, with the reason.
_failed: dict[str, str] = {}


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _driver_loadable() -> bool:
    """Whether the CUDA driver library loads, as numba-cuda loads it."""
    if os.environ.get("NUMBA_CUDA_DRIVER"):
        return True  # numba-cuda's own setting: a path it will try
    for lib in ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so"):
        try:
            ctypes.CDLL(lib)
        except OSError:
            continue
        return True
    return False


@cache
def _probe(name: str) -> BackendStatus:
    """Import and device checks, once per process."""
    if name == "numpy":
        return BackendStatus(name, True, f"numpy {np.__version__}")
    if name == "numba":
        try:
            import numba  # noqa: PLC0415
        except ImportError as exc:
            return BackendStatus(name, False, f"numba not installed ({exc})")
        from .kernels import simd  # noqa: PLC0415

        moves = "AVX-512 compress" if simd.AVAILABLE else "index gathers (no AVX-512)"
        return BackendStatus(name, True, f"numba {numba.__version__}, {numba.get_num_threads()} "
                             f"threads; region rows moved by {moves}")
    if name == "cupy":
        try:
            import cupy  # noqa: PLC0415
        except Exception as exc:  # ImportError, or a broken CUDA library
            return BackendStatus(name, False, f"cupy not importable ({exc})")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDARuntimeError: no driver, insufficient driver
            return BackendStatus(name, False, f"cupy {cupy.__version__} installed, no usable "
                                 f"CUDA driver ({exc})")
        if count < 1:
            return BackendStatus(name, False, "no CUDA device")
        props = cupy.cuda.runtime.getDeviceProperties(0)
        dev = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return BackendStatus(name, True, f"cupy {cupy.__version__} on {dev}")
    if name == "numba-cuda":
        if not _simulated() and not _driver_loadable():
            # importing numba.cuda costs ~50 MB and 0.2 s: not without a driver
            return BackendStatus(name, False, "no CUDA driver or device (libcuda not found)")
        try:
            from numba import cuda  # noqa: PLC0415
        except Exception as exc:
            return BackendStatus(name, False, f"numba-cuda not importable ({exc})")
        if _simulated():
            return BackendStatus(name, True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
        try:
            ok = cuda.is_available()
        except Exception as exc:
            return BackendStatus(name, False, f"CUDA driver error ({exc})")
        if not ok:
            return BackendStatus(name, False, "no CUDA driver or device")
        return BackendStatus(name, True, f"numba-cuda on {cuda.get_current_device().name!r}")
    raise ValueError(f"backend must be 'auto' or one of {NAMES}, got {name!r}")


def status(name: str) -> BackendStatus:
    """Current status of one backend, including failures at use."""
    st = _probe(name)
    if st.available and name in _failed:
        return BackendStatus(name, False, f"failed at use: {_failed[name]}")
    return st


def backends() -> dict[str, BackendStatus]:
    """Every backend with whether it is usable here and why (not)."""
    return {name: status(name) for name in NAMES}


def candidates(backend: str, on_device: bool) -> list[str]:
    """Backends to try, in order, for `backend` ("auto" or a name)."""
    if backend == "auto":
        backend = get_settings().backend
    if backend != "auto":
        st = status(backend)
        if not st.available:
            raise RuntimeError(f"backend {backend!r} is not available: {st.reason}")
        if on_device and backend not in GPU:
            raise ValueError(f"device (CuPy) input needs a GPU backend, not {backend!r}")
        return [backend]
    order = [b for b in AUTO_ORDER if not on_device or b in GPU]
    usable = [b for b in order if status(b).available and not (b == "numba-cuda" and
                                                              _simulated())]
    if not usable:
        raise RuntimeError("no usable backend: " + "; ".join(
            f"{b}: {status(b).reason}" for b in order))
    return usable


def explain(backend: str = "auto", on_device: bool = False) -> str:
    """Why `backend` ("auto" or a name) runs on the backend it does: the
    setting that named it, or auto's order with the reason each backend
    before it was skipped; the chosen backend's own status last."""
    chosen = candidates(backend, on_device)[0]
    if backend == "auto" and get_settings().backend != "auto":
        return f"GPU_PRICER_BACKEND={chosen}: {status(chosen).reason}"
    if backend != "auto":
        return f"asked for {chosen}: {status(chosen).reason}"
    order = [b for b in AUTO_ORDER if not on_device or b in GPU]
    skipped = [f"{b}: {status(b).reason}" + (", which auto never picks"
                                             if status(b).available else "")
               for b in order[:order.index(chosen)]]
    why = f"auto: the first usable of {', '.join(order)}"
    if skipped:
        why += " (skipped " + "; ".join(skipped) + ")"
    return f"{why}; {chosen}: {status(chosen).reason}"


def mark_failed(name: str, exc: BaseException) -> None:
    """Record a backend's failure at use so 'auto' skips it from now on."""
    _failed[name] = f"{type(exc).__name__}: {exc}"
    log.warning("backend %s failed, falling back: %s", name, _failed[name])


def reset() -> None:
    """Forget probes and failures (tests, or after a device comes back)."""
    _probe.cache_clear()
    _failed.clear()


# --- runners: fill out[code] for each requested code, and err, for a Request ------------


def _chunks(n: int) -> range:
    return range(0, n, get_settings().chunk_rows)


def _part(a: Any, lo: int, hi: int) -> Any:
    return a if a.shape[0] == 1 else a[lo:hi]


def run_numpy(req: Request, out: Any, err: Any, xp: Any = np) -> None:
    """The reference path, a chunk at a time (bounded temporaries)."""
    for lo in _chunks(req.n):
        hi = min(lo + get_settings().chunk_rows, req.n)
        size = hi - lo
        ins = [xp.broadcast_to(xp.asarray(_part(a, lo, hi)), (size,)) for a in
               (req.otype, *req.values)]
        vals = [a.astype(np.float64) for a in ins[1:]]
        if req.kind == "implied_vol":
            e, vol = reference_iv.implied_vol(xp, req.model, ins[0], *vals)
            values: tuple[Any, ...] = (vol,)
        else:
            e, values = reference.evaluate(xp, req.model, ins[0], *vals, size=req.size)
        to_host = xp is not np and isinstance(out, np.ndarray)
        err[lo:hi] = xp.asnumpy(e) if to_host else e
        for c in req.codes:
            out[c, lo:hi] = xp.asnumpy(values[c]) if to_host else values[c]


def run_cupy(req: Request, out: Any, err: Any) -> None:
    import cupy  # noqa: PLC0415

    run_numpy(req, out, err, xp=cupy)


def _readonly(a: Any) -> Any:
    """A read-only view: Numba compiles a kernel per argument type, and read-only
    is part of the type, so inputs are always passed read-only (zero-copy Arrow
    columns are) and one compilation serves every caller."""
    view = a.view()
    view.flags.writeable = False
    return view


#: Below this many rows the Numba kernels run on the calling thread alone.
#: There the other threads save no time when they spin between calls (OpenMP's
#: default) and burn a core doing it, and they cost time when they sleep
#: (OMP_WAIT_POLICY=PASSIVE, the service's setting, where one thread stays
#: faster up to a few thousand rows); in the service they would take a core
#: from the event loop for every micro-batch of small requests.
SERIAL_ROWS = 1024


def run_numba(req: Request, out: Any, err: Any) -> None:
    import numba  # noqa: PLC0415

    from .kernels import cpu  # noqa: PLC0415

    ins = [_readonly(a) for a in (req.otype, *req.values)]
    size = req.size
    kern = cpu.vector_kernel(req.model, size, req.kind) or cpu.kernel(req.model, size, req.kind)
    if req.n >= SERIAL_ROWS:
        kern(*ins, req.steps, out, err)
        return
    threads = numba.get_num_threads()  # this thread's setting; others keep theirs
    numba.set_num_threads(1)
    try:
        kern(*ins, req.steps, out, err)
    finally:
        numba.set_num_threads(threads)


def run_numba_cuda(req: Request, out: Any, err: Any) -> None:
    from numba import cuda  # noqa: PLC0415

    from . import staging  # noqa: PLC0415
    from .kernels import cuda as kcuda  # noqa: PLC0415

    kern = kcuda.kernel(req.model, req.size, req.kind)
    tpb = kcuda.THREADS_PER_BLOCK
    if req.xp is not np:  # device input, device output: one launch
        blocks = max(1, min((req.n + tpb - 1) // tpb, 65535))
        kern[blocks, tpb](req.otype, *req.values, cuda.to_device(req.steps), out, err)
        return
    chunk_rows = get_settings().chunk_rows
    if get_settings().cuda_staging:  # pinned, double-buffered chunks on two streams
        staging.run(kern, [req.otype, *req.values], req.steps, req.size, req.codes, out, err,
                    chunk_rows, tpb)
        return
    steps = cuda.to_device(req.steps)
    for lo in _chunks(req.n):  # synchronous copies from pageable memory
        hi = min(lo + chunk_rows, req.n)
        ins = [cuda.to_device(np.ascontiguousarray(_part(a, lo, hi))) for a in
               (req.otype, *req.values)]
        d_out = cuda.device_array((req.size, hi - lo), dtype=out.dtype)
        d_err = cuda.device_array(hi - lo, dtype=err.dtype)
        blocks = max(1, min((hi - lo + tpb - 1) // tpb, 65535))
        kern[blocks, tpb](*ins, steps, d_out, d_err)
        for c in req.codes:
            d_out[int(c)].copy_to_host(out[c, lo:hi])
        d_err.copy_to_host(err[lo:hi])
    cuda.synchronize()


RUNNERS: dict[str, Runner] = {
    "numpy": run_numpy,
    "numba": run_numba,
    "cupy": run_cupy,
    "numba-cuda": run_numba_cuda,
}
