"""``python -m api``: start the service, refusing an open non-loopback bind.

Listening beyond loopback without API keys is refused unless
``GPU_PRICER_ALLOW_OPEN=true`` says so explicitly.  On SIGTERM the service
drains (`api.drain`): /readyz answers 503, it serves on for
``GPU_PRICER_DRAIN_DELAY_S`` seconds, then stops accepting and answers every
request it accepted before it exits.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .drain import DrainingServer
from .security import is_loopback, load_hashes
from .settings import get_service_settings


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the service's loggers (access lines are JSON)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plain"] = {"format": "%(message)s"}
    config["handlers"]["plain"] = {"class": "logging.StreamHandler", "formatter": "plain",
                                   "stream": "ext://sys.stdout"}
    config["loggers"]["gpu_pricer"] = {"handlers": ["default"], "level": "INFO",
                                       "propagate": False}
    config["loggers"]["gpu_pricer.access"] = {"handlers": ["plain"], "level": "INFO",
                                              "propagate": False}
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"  # ours replaces it
    return config


def main() -> int:
    # writable scratch directories named by the environment (a tmpfs in containers)
    for var in ("PROMETHEUS_MULTIPROC_DIR", "NUMBA_CACHE_DIR"):
        if os.environ.get(var):
            os.makedirs(os.environ[var], exist_ok=True)
    settings = get_service_settings()
    keys = load_hashes(settings.api_key_hashes, settings.api_key_hashes_file)
    if not keys and not is_loopback(settings.host) and not settings.allow_open:
        print(f"refusing to listen on {settings.host} without API keys: set "
              "GPU_PRICER_API_KEY_HASHES or GPU_PRICER_API_KEY_HASHES_FILE, or "
              "GPU_PRICER_ALLOW_OPEN=true to run open on purpose", file=sys.stderr)
        return 2
    from .main import app  # noqa: PLC0415 - after the checks: it imports the library

    def drain() -> None:
        app.state.draining = True  # /readyz: 503

    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_config=log_config())
    server = DrainingServer(config, on_drain=drain, delay_s=settings.drain_delay_s)
    server.run()
    return 0 if server.started else 3  # uvicorn's code for a failed start


if __name__ == "__main__":
    sys.exit(main())
