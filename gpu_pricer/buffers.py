"""Reuse of large output buffers between calls.

Writing into freshly allocated memory costs a page fault per page; for a
million options with their Greeks that is about as long as pricing them.
`BufferPool.empty` hands back a buffer of a previous call when nothing
outside the pool refers to it any more (every array `price` returns is a
view that keeps its buffer alive, so a buffer still in use is never
handed out twice); otherwise it allocates.  Small buffers are not pooled.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np

#: Buffers below this many bytes are allocated fresh (cheap enough).
MIN_POOLED_BYTES = 1 << 22
#: Most bytes the pool keeps alive between calls.
MAX_POOL_BYTES = 1 << 28


class BufferPool:
    """A small most-recently-used pool of NumPy buffers, safe across threads."""

    def __init__(self, max_bytes: int = MAX_POOL_BYTES) -> None:
        self._max_bytes = max_bytes
        self._buffers: list[np.ndarray[Any, Any]] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """An uninitialised C-contiguous array, reused when one is free."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_POOLED_BYTES or nbytes > self._max_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            for i in range(len(self._buffers)):
                buf = self._buffers[i]
                # 3 references: the pool's list, `buf`, and getrefcount's argument
                if buf.shape == shape and buf.dtype == dtype and sys.getrefcount(buf) == 3:
                    self._buffers.append(self._buffers.pop(i))
                    return buf
            buf = np.empty(shape, dtype)
            self._add(buf)
            return buf

    def bytes(self, nbytes: int) -> np.ndarray[Any, Any]:
        """An uninitialised uint8 array of `nbytes`: the start of the smallest
        free pooled byte buffer that holds them (so a request body or an
        answer of any size reuses mapped memory), else a new one of exactly
        that size (pooled, unless small)."""
        if nbytes < MIN_POOLED_BYTES or nbytes > self._max_bytes:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            best = -1
            for i in range(len(self._buffers)):
                buf = self._buffers[i]
                if (buf.dtype == np.uint8 and buf.ndim == 1 and buf.size >= nbytes
                        and (best < 0 or buf.size < self._buffers[best].size)
                        and sys.getrefcount(buf) == 3):  # as in `empty`
                    best = i
            if best >= 0:
                buf = self._buffers.pop(best)
                self._buffers.append(buf)
                return buf[:nbytes]
            buf = np.empty(nbytes, np.uint8)
            self._add(buf)
            return buf

    def _add(self, buf: np.ndarray[Any, Any]) -> None:
        """Keep `buf` (the lock held), dropping the least recently used over the budget."""
        self._buffers.append(buf)
        while sum(b.nbytes for b in self._buffers) > self._max_bytes:
            self._buffers.pop(0)  # its holders, if any, keep it alive

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()


#: The pool `price` uses for its host outputs.
OUTPUTS = BufferPool()
