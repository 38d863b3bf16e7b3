"""The short path of the hot routes through the ASGI stack.

`LeanApp` is the FastAPI app with one addition: routes registered with
`lean_post` (the JSON forms of POST /v1/price and /v1/implied-vol) are
answered by their handlers directly, inside the app's own middleware (body
limits, access log and metrics, CORS when configured) but outside FastAPI's
per-request machinery (its native telemetry, its error and body-limit
layers, routing, parameter solving).  For a one-option request that machinery cost more than
everything else the service does (`bench.service` measures the service
against a bare FastAPI endpoint).  Every other request, an Arrow body to the
same paths included, takes the full FastAPI stack.

A lean handler takes a Starlette `Request` and returns a `Response`; what it
raises is answered by the app's exception handlers, as on any route
(HTTPException, RequestValidationError: the same JSON bodies; anything else:
the app's 500 handler).  Lean routes are documented in the OpenAPI schema as
the FastAPI routes they would be (`LeanRoute.documented`), and are mounted in
the router too, so that the app answers them the same way without the short
path.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Route

from .middleware import JSON, ASGIApp, Receive, Scope, Send, content_type

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class LeanRoute:
    """A POST route with a JSON body, answered on the short path; `doc` (its
    body, header parameters) and `response_model` document it."""

    path: str
    handler: Handler
    response_model: type[BaseModel]
    doc: dict[str, Any]

    def documented(self) -> APIRoute:
        return APIRoute(self.path, self.handler, methods=["POST"],
                        response_model=self.response_model, openapi_extra=self.doc)


class LeanApp(FastAPI):
    """FastAPI with a short path for the routes given to `lean_post`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lean_routes: dict[str, LeanRoute] = {}
        self._lean_stack: ASGIApp | None = None
        self.extra_schemas: list[type[BaseModel]] = []

    def lean_post(self, path: str, handler: Handler, *, response_model: type[BaseModel],
                  body_model: type[BaseModel], doc: dict[str, Any]) -> None:
        """Serve JSON POSTs to `path` with `handler` on the short path;
        `body_model` is the body it validates, for the schema's components."""
        self.lean_routes[path] = LeanRoute(path, handler, response_model, doc)
        self.extra_schemas.append(body_model)
        self.router.routes.append(Route(path, handler, methods=["POST"]))
        self._lean_stack = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in self.lean_routes and content_type(scope) == JSON):
            if self._lean_stack is None:
                self._lean_stack = self._build_lean_stack()
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            scope["endpoint"] = self.lean_routes[scope["path"]].handler
            await self._lean_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _build_lean_stack(self) -> ASGIApp:
        """The app's own middleware around the lean handlers."""
        app: ASGIApp = self._serve_lean
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def _serve_lean(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await scope["endpoint"](request)
        except Exception as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The response the app's exception handlers give for `exc` (the most
        specific handler by class; the app's 500 handler catches the rest)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                return response
        raise exc

    def openapi(self) -> dict[str, Any]:
        """The schema of every route, the lean ones included with their body
        models (built once, then cached as FastAPI does)."""
        if self.openapi_schema is None:
            from pydantic.json_schema import models_json_schema  # noqa: PLC0415

            # (get_openapi documents FastAPI routes only: not the mounted Starlette ones)
            routes: Sequence[Any] = [*self.routes,
                                     *(r.documented() for r in self.lean_routes.values())]
            spec = get_openapi(title=self.title, version=self.version, routes=routes,
                               description=self.description)
            _, defs = models_json_schema([(m, "validation") for m in self.extra_schemas],
                                         ref_template="#/components/schemas/{model}")
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            self.openapi_schema = spec
        return self.openapi_schema

