"""Host (NumPy) arrays through a Numba-CUDA kernel: pinned staging, two streams.

`cuda.to_device` on a NumPy array, and `copy_to_host` into one, copy through
the driver's own bounce buffer and return only when the copy is done, so a
call on host data ran its copies in, its kernel and its copies out one
after the other, each chunk after the last (on an H100, for 10,000,000 bsm
options with every output: 55.8 ms in, 6.95 ms of kernel, 105.7 ms out;
README, "On a GPU").

Here the rows go through the kernel in chunks, alternately on one of two
`Stage`s, each with its own CUDA stream, page-locked (pinned) host buffers
and device buffers.  For each chunk the host waits for its stage's previous
chunk, moves that chunk's results from the pinned outputs into the caller's
arrays, fills the pinned inputs with the new chunk (copies parallel over
the host's cores), and queues the copies in, the kernel and the copies out
on the stage's stream without waiting for them.  So while the device copies
and prices one chunk, the host copies the other; copies to and from the
device overlap (PCIe carries both directions at once); and copies from
pinned memory run at the bus's speed rather than through the bounce buffer.

Pinning memory is slow, so stages are pooled by input and output dtypes and
reused across calls (`release`); a call that fails leaves its stages out
of the pool.  Each stage holds `rows` rows of every input and of
`formulas.N_VALUES` outputs, in pinned host memory and on the device.
Scalar inputs (step 0) are copied to the device once per call.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numba import cuda, njit, prange

from .kernels import formulas

#: Rows per stage at most (GPU_PRICER_CHUNK_ROWS, when smaller, bounds it too).
STAGE_ROWS = 1 << 18
#: Rows per thread of the parallel host copy.
_COPY_BLOCK = 1 << 16


@njit(parallel=True, nogil=True, cache=False)
def copy(src: Any, dst: Any) -> None:  # pragma: no cover - compiled
    """dst[:] = src[:], in blocks over the host's cores (one thread moves less
    than the host's memory bandwidth)."""
    n = src.shape[0]
    for b in prange((n + _COPY_BLOCK - 1) // _COPY_BLOCK):
        lo = b * _COPY_BLOCK
        for i in range(lo, min(lo + _COPY_BLOCK, n)):
            dst[i] = src[i]


def _copy(src: Any, dst: Any) -> None:
    """dst[:] = src[:]: in parallel for a large chunk, by NumPy for a small one
    (where starting the parallel threads would cost more than the copy)."""
    if src.shape[0] >= 2 * _COPY_BLOCK:
        copy(src, dst)
    else:
        np.copyto(dst, src)


class Stage:
    """One stream with pinned host and device buffers for `rows` rows of the
    given input dtypes and of every output, and the rows it has in flight."""

    def __init__(self, in_dtypes: tuple[np.dtype[Any], ...], out_dtype: np.dtype[Any],
                 rows: int) -> None:
        self.rows = rows
        #: what the pool files it under: stages are reused for the same dtypes and rows
        self.key = (in_dtypes, out_dtype, rows)
        self.stream = cuda.stream()
        self.pin_in = [cuda.pinned_array(rows, dtype=d) for d in in_dtypes]
        self.dev_in = [cuda.device_array(rows, dtype=d) for d in in_dtypes]
        self.pin_out = cuda.pinned_array((formulas.N_VALUES, rows), dtype=out_dtype)
        self.dev_out = cuda.device_array((formulas.N_VALUES, rows), dtype=out_dtype)
        self.pin_err = cuda.pinned_array(rows, dtype=np.int8)
        self.dev_err = cuda.device_array(rows, dtype=np.int8)
        #: (lo, hi) of the chunk queued on the stream and not yet collected
        self.pending: tuple[int, int] | None = None

    def submit(self, kern: Any, inputs: list[Any], steps: Any, size: int, codes: Any,
               lo: int, hi: int, threads: int) -> None:
        """Queue rows lo..hi-1 (hi - lo <= rows): the step-1 inputs copied
        into pinned memory now, then copy in, kernel, copy out on the stream.
        `inputs` holds each column's host array (step 1) or device array
        (step 0, used as it is)."""
        m = hi - lo
        stream = self.stream
        args = []
        for j, a in enumerate(inputs):
            if isinstance(a, np.ndarray):
                _copy(a[lo:hi], self.pin_in[j][:m])
                dev = self.dev_in[j][:m]
                dev.copy_to_device(self.pin_in[j][:m], stream=stream)
                args.append(dev)
            else:
                args.append(a)
        # the kernel prices err's m rows; out passes whole rows, C-contiguous as
        # on the device path, so no other specialisation of the kernel compiles
        dev_err = self.dev_err[:m]
        blocks = max(1, min((m + threads - 1) // threads, 65535))
        kern[blocks, threads, stream](*args, steps, self.dev_out[:size], dev_err)
        for c in codes:
            self.dev_out[int(c)][:m].copy_to_host(self.pin_out[int(c)][:m], stream=stream)
        dev_err.copy_to_host(self.pin_err[:m], stream=stream)
        self.pending = (lo, hi)

    def collect(self, out: Any, err: Any, codes: Any) -> None:
        """Wait for the chunk in flight, if any, and copy its results out of
        pinned memory into rows lo..hi-1 of `out` (the requested codes) and `err`."""
        if self.pending is None:
            return
        lo, hi = self.pending
        self.stream.synchronize()  # type: ignore[no-untyped-call]
        m = hi - lo
        for c in codes:
            _copy(self.pin_out[int(c)][:m], out[int(c), lo:hi])
        _copy(self.pin_err[:m], err[lo:hi])
        self.pending = None


_pool: dict[tuple[Any, ...], list[tuple[Stage, Stage]]] = {}
_lock = threading.Lock()


def acquire(in_dtypes: tuple[np.dtype[Any], ...], out_dtype: np.dtype[Any],
            rows: int) -> tuple[Stage, Stage]:
    """Two idle stages for these dtypes and rows: pooled ones, else new ones."""
    key = (in_dtypes, out_dtype, rows)
    with _lock:
        free = _pool.get(key)
        if free:
            return free.pop()
    return Stage(in_dtypes, out_dtype, rows), Stage(in_dtypes, out_dtype, rows)


def release(stages: tuple[Stage, Stage]) -> None:
    """Return two idle stages (nothing in flight) to the pool."""
    with _lock:
        _pool.setdefault(stages[0].key, []).append(stages)


def clear() -> None:
    """Drop every pooled stage (their pinned and device memory is freed when
    nothing else holds them)."""
    with _lock:
        _pool.clear()


def run(kern: Any, columns: list[Any], steps: np.ndarray[Any, Any], size: int, codes: Any,
        out: Any, err: Any, chunk_rows: int, threads: int) -> None:
    """Price host columns (1-d NumPy arrays of n rows, step 1, or of one row
    broadcast, step 0) with `kern` into host `out` (rows `codes`) and `err`,
    in chunks of min(`chunk_rows`, STAGE_ROWS) rows on two alternating
    stages, `threads` threads per block."""
    n = err.shape[0]
    rows = max(1, min(chunk_rows, STAGE_ROWS))
    d_steps = cuda.to_device(steps)
    inputs = [a if step == 1 else cuda.to_device(np.ascontiguousarray(a))
              for a, step in zip(columns, steps.tolist(), strict=True)]
    stages = acquire(tuple(np.dtype(a.dtype) for a in columns), np.dtype(out.dtype), rows)
    for k, lo in enumerate(range(0, n, rows)):
        stage = stages[k % 2]
        stage.collect(out, err, codes)
        stage.submit(kern, inputs, d_steps, size, codes, lo, min(lo + rows, n), threads)
    for stage in stages:
        stage.collect(out, err, codes)
    release(stages)
