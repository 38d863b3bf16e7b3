"""api.memory: glibc malloc keeps freed memory for the service's bulk requests."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from api import memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


_CHILD = """
import numpy as np
from api import memory

def rss():
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(ln for ln in f if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

assert memory.keep_freed_memory() is True
before = rss()
buf = np.ones(8 * 1024 * 1024)  # 64 MiB, written: resident
held = rss()
del buf
after = rss()
print(before, held, after)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_buffers_stay_mapped() -> None:
    """After the call, a freed 64 MiB buffer stays in the process (the next
    one reuses its pages) instead of going back to the kernel.  In a fresh
    process: in the test run's own, the heap may already hold freed memory
    that the buffer reuses."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _CHILD], cwd=root, capture_output=True,
                          text=True, check=True, timeout=120)
    before, held, after = (float(x) for x in done.stdout.split())
    assert held - before > 48
    assert held - after < 16, (before, held, after)


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
