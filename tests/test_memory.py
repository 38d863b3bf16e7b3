"""api.memory: glibc malloc keeps freed memory for the service's bulk requests."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from api import memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(ln for ln in f if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_buffers_stay_mapped() -> None:
    """After the call, a freed 64 MiB buffer stays in the process (the next
    one reuses its pages) instead of going back to the kernel."""
    assert memory.keep_freed_memory() is True
    before = _rss_mib()
    buf = np.ones(8 * 1024 * 1024)  # 64 MiB, written: resident
    held = _rss_mib()
    del buf
    after = _rss_mib()
    assert held - before > 48
    assert held - after < 16, (before, held, after)


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
