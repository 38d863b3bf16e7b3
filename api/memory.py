"""Keep freed memory in the process: glibc malloc settings for bulk requests.

A bulk request allocates tens of megabytes several times over: the request
body as it arrives and once joined, the columns Arrow cannot share, each
batch's outputs, the request's own outputs, the answer.  glibc's malloc, by
default, serves every allocation above 128 KiB (a threshold that rises with
use, to at most 32 MiB) with its own ``mmap`` and unmaps it when freed, and
hands the top of its heap back to the kernel above 128 KiB free.  The next
request then takes a page fault, and the kernel zeroes a page, for every
4 KiB it writes: for a million-option Arrow request, most of the time the
service spent on it (docs: README, "The service").

`keep_freed_memory` raises both thresholds once, at start-up, so that large
buffers come from malloc's heap and stay mapped between requests: the
process's resident size stays near its peak instead of shrinking between
bulk requests (the Kubernetes limits are sized from that peak).  Other C
libraries, and other platforms, are left alone.
"""

from __future__ import annotations

import ctypes
import platform
import sys

#: mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations up to this many bytes come from malloc's heap, not their own mmap.
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
#: Free memory at the top of the heap kept (not returned to the kernel) up to this.
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                      trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Set glibc malloc's mmap and trim thresholds (bytes) for this process;
    True when glibc accepted both, False where the C library is not glibc."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold))
