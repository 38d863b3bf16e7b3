"""Prometheus metrics of the service (prometheus-client).

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR to a writable
directory before start: the registry then aggregates every worker's files
(prometheus-client's multiprocess mode).  Names are the contract used by
dashboards and alerts; keep them stable.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("gpu_pricer_http_requests_total", "HTTP requests by endpoint and status.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("gpu_pricer_http_request_duration_seconds",
                    "HTTP request latency by endpoint.", ["endpoint"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                             2.5, 5, 10))
BATCH_OPTIONS = Histogram("gpu_pricer_batch_options", "Options per batch (kernel call).",
                          buckets=(1, 10, 100, 1_000, 10_000, 65_536, 262_144, 1_048_576))
BATCH_REQUESTS = Histogram("gpu_pricer_batch_requests", "Requests coalesced per batch.",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
QUEUE_OPTIONS = Gauge("gpu_pricer_queue_options", "Options waiting in the batcher's queue.",
                      multiprocess_mode="livesum")
QUEUE_WAIT = Histogram("gpu_pricer_queue_wait_seconds",
                       "Time from a request's arrival to the start of its first batch.",
                       buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1, 10))
OPTIONS_PRICED = Counter("gpu_pricer_options_priced_total",
                         "Options computed, by backend, model and kind (price: priced, "
                         "implied_vol: implied vol solved).", ["backend", "model", "kind"])
FALLBACKS = Counter("gpu_pricer_backend_fallbacks_total",
                    "Batches retried on the CPU after a device fault.")
REJECTED = Counter("gpu_pricer_rejected_requests_total",
                   "Requests shed: queue full (503) or deadline missed (504).", ["reason"])
# A gauge rather than an Info metric: multiprocess mode drops Info metrics.
BACKEND = Gauge("gpu_pricer_backend_info", "1 for the backend in use (label backend) and why.",
                ["backend", "reason"], multiprocess_mode="liveall")
_backend_labels: list[tuple[str, str]] = []


def set_backend(backend: str, reason: str) -> None:
    """Mark `backend` as the one in use (the previous one drops to 0)."""
    for labels in _backend_labels:
        BACKEND.labels(*labels).set(0)
    _backend_labels[:] = [(backend, reason)]
    BACKEND.labels(backend, reason).set(1)


@cache
def _request_children(endpoint: str, method: str, status: int) -> tuple[Any, Any]:
    return REQUESTS.labels(endpoint, method, str(status)), LATENCY.labels(endpoint)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency (label children cached: a
    labels() lookup per request cost more than the update)."""
    count, latency = _request_children(endpoint, method, status)
    count.inc()
    latency.observe(seconds)


#: Every metric the service exports (manifests, alerts and dashboards use these names).
REGISTRY_METRICS = (REQUESTS, LATENCY, BATCH_OPTIONS, BATCH_REQUESTS, QUEUE_OPTIONS, QUEUE_WAIT,
                    OPTIONS_PRICED, FALLBACKS, REJECTED, BACKEND)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type (all workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
