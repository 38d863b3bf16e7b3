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
            self._buffers.append(buf)
            while sum(b.nbytes for b in self._buffers) > self._max_bytes:
                self._buffers.pop(0)  # its holders, if any, keep it alive
            return buf

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()


#: The pool `price` uses for its host outputs.
OUTPUTS = BufferPool()
