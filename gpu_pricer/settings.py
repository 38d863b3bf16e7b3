"""The library's settings, read once from ``GPU_PRICER_*`` environment variables."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

BackendName = Literal["auto", "numpy", "numba", "cupy", "numba-cuda"]


class PricerSettings(BaseSettings):
    """Library knobs; the service's settings extend this class."""

    model_config = SettingsConfigDict(env_prefix="GPU_PRICER_", extra="ignore", frozen=True)

    backend: BackendName = Field(
        "auto", description="Default backend of gpu_pricer.price when backend='auto' is passed."
    )
    chunk_rows: int = Field(
        1 << 20,
        gt=0,
        description="Rows per chunk for the NumPy/CuPy paths and host-to-device transfers "
        "(bounds temporaries and device memory; numba-cuda's pinned stages take at most "
        "262,144 rows).",
    )
    cuda_staging: bool = Field(
        True,
        description="numba-cuda on host (NumPy) data: chunks through pooled pinned staging "
        "buffers on two CUDA streams, so copies and kernel overlap (false: synchronous "
        "copies from pageable memory, one chunk after another).",
    )


@cache
def get_settings() -> PricerSettings:
    """The settings, read from the environment on first call."""
    return PricerSettings()
