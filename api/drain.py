"""Draining on SIGTERM: readiness turns 503 first, then uvicorn's graceful
shutdown (stop accepting, finish every accepted request, drain the batcher).

`DrainingServer` is uvicorn's `Server` with one step added in front of its
shutdown: the first SIGTERM or SIGINT calls `on_drain` (the app marks itself
draining, so `/readyz` answers 503) and, when `delay_s` > 0, the server goes
on serving for that long, so that load balancers that poll readiness stop
routing to it while it still answers.  Then the shutdown runs as uvicorn's
own; a second signal during the delay starts it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining as the module docstring says."""

    def __init__(self, config: uvicorn.Config, *, on_drain: Callable[[], None],
                 delay_s: float = 0.0) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._delay_s = delay_s
        self._stop_at: float | None = None  # monotonic time the delay ends

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = self._stop_at is None and not self.should_exit
        if first:
            self._on_drain()
        if first and self._delay_s > 0:
            self._stop_at = time.monotonic() + self._delay_s
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)
