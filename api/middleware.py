"""The service's two middlewares, as plain ASGI callables.

Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware) wraps every
request in task groups and memory streams; under load that cost more than
the rest of a small request (`bench.service` measured the service at a
fraction of a bare FastAPI app), so these work on the ASGI messages
directly.

* `BodyLimit` (outer): 415 for a POST body that is neither JSON nor an
  Arrow stream, 413 over ``max_body_bytes`` (by Content-Length, or by
  counting a body sent without one), and Arrow bodies posted to a public
  route rerouted to its hidden Arrow handler.
* `AccessLog` (inner): counts and times every request by its route (not its
  raw path), sets ``X-Request-Id`` and ``Server-Timing`` (receiving the body,
  and the whole time to the answer's start) and writes one JSON access line
  with the request id and the caller's key id (never the key).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from . import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"

access_log = logging.getLogger("gpu_pricer.access")


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def content_type(scope: Scope) -> str:
    """The request's media type, lower case, without parameters ("" when none)."""
    return (header(scope, b"content-type") or "").split(";")[0].strip().lower()


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON.encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """415 / 413 for unacceptable POST bodies; Arrow bodies to their handlers."""

    def __init__(self, app: ASGIApp, max_body_bytes: Callable[[], int],
                 arrow_routes: dict[str, str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.arrow_routes = arrow_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        ctype = content_type(scope)
        if ctype not in (JSON, ARROW_STREAM):
            await _send_json(send, 415, {"detail": f"unsupported content type "
                                         f"{ctype or 'none'!r}; use {JSON} or {ARROW_STREAM}"})
            return
        if ctype == ARROW_STREAM and scope["path"] in self.arrow_routes:
            scope["path"] = self.arrow_routes[scope["path"]]
        limit = self.max_body_bytes()
        length = header(scope, b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await _send_json(send, 413, {"detail": f"body over {limit} bytes"})
                return
            await self.app(scope, receive, send)
            return
        # no Content-Length: count what arrives, then replay it
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, {"detail": f"body over {limit} bytes"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AccessLog:
    """Request metrics, X-Request-Id and one JSON access line per request.

    The lines of the requests that end in one turn of the event loop go to
    the ``gpu_pricer.access`` logger as one record, one line each, at the
    loop's next turn: a micro-batch answers its requests together, and a
    logging record per request was a large share of a one-option request's
    handling (profiled under `bench.service`'s load).  Under light load that
    is one line per record, written at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lines: list[str] = []

    def _write(self, line: str) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(line)

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        access_log.info("\n".join(lines))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = (header(scope, b"x-request-id") or "")[:64] or os.urandom(16).hex()
        status = 500
        received = started  # when the last byte of the request body arrived

        async def receive_timed() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                received = time.perf_counter()
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                now = time.perf_counter()
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode("latin-1")),
                    (b"server-timing", _server_timing(received - started, now - started)),
                ]
            await send(message)

        try:
            await self.app(scope, receive_timed, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            endpoint = _endpoint(scope)
            metrics.observe_request(endpoint, scope["method"], status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                self._write(msgspec.json.encode({
                    "request_id": request_id, "key_id": state.get("key_id"),
                    "method": scope["method"], "endpoint": endpoint, "status": status,
                    "duration_ms": round(elapsed * 1e3, 3),
                }).decode())


def _server_timing(receiving_s: float, answering_s: float) -> bytes:
    """The W3C Server-Timing header: ``recv``, the time from the request's
    arrival to the last byte of its body; ``app``, to the start of the answer
    (what the client waited for beyond that is transfer), both in ms."""
    return f"recv;dur={receiving_s * 1e3:.3f}, app;dur={answering_s * 1e3:.3f}".encode()


def _endpoint(scope: Scope) -> str:
    """The matched route's path template (its raw path for a plain Starlette
    route, which has no parameters here), or "unmatched"."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    return str(scope["path"]) if "endpoint" in scope else "unmatched"
