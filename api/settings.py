"""Service settings: the library's, plus the HTTP knobs; read once from GPU_PRICER_*."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field

from gpu_pricer.settings import PricerSettings


class ServiceSettings(PricerSettings):
    """Every knob of the service, with its unit and default."""

    host: str = Field("127.0.0.1", description="Address to listen on (python -m api).")
    port: int = Field(8000, gt=0, lt=65536, description="TCP port (python -m api).")
    api_key_hashes: str = Field(
        "", description="Comma-separated SHA-256 hex digests of accepted API keys, each "
        "'digest' or 'id:digest'. Empty (and no file): no authentication."
    )
    api_key_hashes_file: Path | None = Field(
        None, description="File of API key digests, one per line (a mounted secret)."
    )
    allow_open: bool = Field(
        False, description="Allow listening beyond loopback without API keys."
    )
    rate_limit: str = Field(
        "", description="Limits per API key (or client address), e.g. '100/second;5000/minute'; "
        "empty: none."
    )
    rate_limit_storage_url: str = Field(
        "memory://", description="Where limits are counted: memory:// (this process) or "
        "redis://host:port (shared by replicas)."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS; empty: CORS closed."
    )
    max_body_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Largest request body in bytes (413 above)."
    )
    max_arrow_rows: int = Field(
        10_000_000, gt=0, description="Most rows in one Arrow request (413 above)."
    )
    max_options_per_request: int = Field(
        100_000, gt=0, description="Most options one JSON request may carry (413 above)."
    )
    warmup: bool = Field(True, description="Compile the kernels before reporting ready.")
    drain_delay_s: float = Field(
        0.0, ge=0, le=600, description="Seconds python -m api keeps serving after SIGTERM "
        "(or SIGINT) with /readyz answering 503, before it stops accepting and drains: time "
        "for load balancers that poll readiness to stop routing to it. 0: stop accepting at "
        "once (Kubernetes stops routing on its own; the manifests' preStop covers the gap)."
    )
    keep_freed_memory: bool = Field(
        True, description="Set glibc malloc to keep freed memory mapped between requests "
        "(large buffers from its heap, no trimming): bulk requests stop paying a page fault "
        "per 4 KiB; the resident size stays near its peak. Ignored off glibc."
    )
    max_batch_options: int = Field(
        1_048_576, gt=0, description="Most options priced in one kernel call (a batch); a "
        "larger request is priced in slices of this size, each copied into its answer."
    )
    max_delay_us: int = Field(
        500, ge=0, description="Microseconds a batch waits for more requests after the first "
        "queued one; 0 turns coalescing off."
    )
    max_queue_options: int = Field(
        2_000_000, gt=0, description="Most options waiting in the queue; beyond it, 503."
    )
    default_deadline_ms: int = Field(
        10_000, gt=0, description="Deadline of a request without an X-Deadline-Ms header; "
        "504 when it cannot be met."
    )


@cache
def get_service_settings() -> ServiceSettings:
    """The settings, read from the environment on first call."""
    return ServiceSettings()
