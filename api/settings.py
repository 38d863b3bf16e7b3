"""Service settings: the library's, plus the HTTP knobs; read once from GPU_PRICER_*."""

from __future__ import annotations

from functools import cache

from pydantic import Field

from gpu_pricer.settings import PricerSettings


class ServiceSettings(PricerSettings):
    """Every knob of the service, with its unit and default."""

    max_options_per_request: int = Field(
        100_000, gt=0, description="Most options one JSON request may carry (413 above)."
    )
    warmup: bool = Field(True, description="Compile the kernels before reporting ready.")


@cache
def get_service_settings() -> ServiceSettings:
    """The settings, read from the environment on first call."""
    return ServiceSettings()
