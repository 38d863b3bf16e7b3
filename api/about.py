"""What GET /v1/info says of the machine and the software: the device a
backend computes on, and the versions of Python and the packages."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata
from typing import Any

import numba

from gpu_pricer import dispatch


def device(backend: str, reason: str) -> dict[str, Any]:
    """What `backend` computes on: the GPU its status names, or this host's CPUs."""
    if backend in dispatch.GPU:
        return {"kind": "gpu", "description": reason}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"kind": "cpu", "model": cpu_model(), "cpus_usable": cpus,
            "threads": numba.get_num_threads() if backend == "numba" else 1}


@cache
def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def versions() -> dict[str, str]:
    """The versions of Python and of the packages the service runs on (the
    installed ones of the GPU extra's too)."""
    out = {"python": platform.python_version()}
    for dist in ("gpu-pricer", "numpy", "scipy", "numba", "pyarrow", "fastapi", "uvicorn",
                 "pydantic", "msgspec", "cupy-cuda12x", "cupy-cuda13x", "numba-cuda"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
