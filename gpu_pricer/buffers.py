"""Reuse of large buffers between calls.

Writing into freshly allocated memory costs a page fault per page; for a
million options with their Greeks that is about as long as pricing them.
The pool keeps large buffers as flat bytes and hands out the start of the
smallest free one that holds a request (so a call of any size or shape
reuses memory an earlier, larger one already mapped), viewed as the shape
and dtype asked for.  A buffer is free when nothing outside the pool
refers to it any more: every array `price` returns is a view that keeps
its buffer alive, so a buffer still in use is never handed out twice.
Otherwise it allocates.  Small buffers are not pooled.
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
    """A small most-recently-used pool of byte buffers, safe across threads."""

    def __init__(self, max_bytes: int = MAX_POOL_BYTES) -> None:
        self._max_bytes = max_bytes
        self._buffers: list[np.ndarray[Any, Any]] = []  # flat uint8, each its own owner
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """An uninitialised C-contiguous array, over a free pooled buffer when
        there is one large enough."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_POOLED_BYTES or nbytes > self._max_bytes:
            return np.empty(shape, dtype)
        return self._take(nbytes).view(dtype).reshape(shape)

    def bytes(self, nbytes: int) -> np.ndarray[Any, Any]:
        """An uninitialised uint8 array of `nbytes` (a request body),
        over a free pooled buffer when there is one large enough."""
        if nbytes < MIN_POOLED_BYTES or nbytes > self._max_bytes:
            return np.empty(nbytes, np.uint8)
        return self._take(nbytes)

    def _take(self, nbytes: int) -> np.ndarray[Any, Any]:
        """The first `nbytes` of the smallest free pooled buffer that holds them,
        else of a new pooled one (the least recently used dropped over budget)."""
        with self._lock:
            best = -1
            for i in range(len(self._buffers)):
                buf = self._buffers[i]
                # 3 references: the pool's list, `buf`, and getrefcount's argument
                if (buf.size >= nbytes and (best < 0 or buf.size < self._buffers[best].size)
                        and sys.getrefcount(buf) == 3):
                    best = i
            if best >= 0:
                buf = self._buffers.pop(best)
            else:
                buf = np.empty(nbytes, np.uint8)
            self._buffers.append(buf)
            while sum(b.nbytes for b in self._buffers) > self._max_bytes:
                self._buffers.pop(0)  # its holders, if any, keep it alive
            return buf[:nbytes]

    def free(self) -> list[int]:
        """The sizes in bytes of the pooled buffers nothing else holds."""
        with self._lock:
            return [self._buffers[i].nbytes for i in range(len(self._buffers))
                    if sys.getrefcount(self._buffers[i]) == 2]  # the list, the argument

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()


#: The pool `price` uses for its host outputs.
OUTPUTS = BufferPool()
