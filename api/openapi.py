"""The OpenAPI description of the routes that read their own bodies.

POST /v1/price and POST /v1/implied-vol take a JSON body (validated by
`api.jsonio.parse` against PriceRequest or ImpliedVolRequest) or an Arrow
IPC stream, and an optional X-Deadline-Ms header; they declare none of these
as FastAPI parameters (see `api.jsonio`), so their documentation is given
here: `PRICE_DOC` and `IV_DOC` go to the routes' ``openapi_extra`` and
`schema` adds the request models to the schema's components.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import Route

from .arrow_io import ARROW_STREAM
from .schemas import ImpliedVolRequest, PriceRequest

JSON = "application/json"
REF = "#/components/schemas/{model}"

DEADLINE_HEADER = {
    "name": "x-deadline-ms", "in": "header", "required": False,
    "schema": {"type": "integer", "exclusiveMinimum": 0, "title": "X-Deadline-Ms"},
    "description": "Deadline in milliseconds (default: the service's default_deadline_ms); "
                   "504 when it cannot be met.",
}
_PRICE_ARROW = {
    "type": "string", "format": "binary",
    "description": "Arrow IPC stream; columns are the library's keywords (option_type, "
    "spot or forward, strike, t, sigma, r, q, optional id; units as in OptionIn). model and "
    "greeks come as query parameters; the answer is an Arrow IPC stream of price, the Greeks, "
    "error (and id) in row order."}
_IV_ARROW = {
    "type": "string", "format": "binary",
    "description": "Arrow IPC stream; columns are gpu_pricer.implied_vol's keywords "
    "(option_type, spot or forward, strike, t, price, r, q, optional id; units as in "
    "ImpliedVolOptionIn: price is the present value in the underlying's price units). model "
    "comes as a query parameter; the answer is an Arrow IPC stream of implied_vol (per "
    "sqrt(year): lognormal for bsm and black76, absolute (normal) for bachelier), error "
    "(and id) in row order."}


def _doc(model: str, arrow: dict[str, Any]) -> dict[str, Any]:
    return {
        "parameters": [DEADLINE_HEADER],
        "requestBody": {"required": True, "content": {
            JSON: {"schema": {"$ref": REF.format(model=model)}},
            ARROW_STREAM: {"schema": arrow}}},
    }


PRICE_DOC = _doc("PriceRequest", _PRICE_ARROW)
IV_DOC = _doc("ImpliedVolRequest", _IV_ARROW)


@dataclass(frozen=True)
class LeanRoute:
    """A POST route served by Starlette directly (`route`) and documented as
    the FastAPI route it would be (`documented`), with its body, header and
    response in `doc` and `response_model`."""

    path: str
    endpoint: Callable[[Request], Awaitable[Response]]
    response_model: type[BaseModel]
    doc: dict[str, Any]

    def route(self) -> Route:
        return Route(self.path, self.endpoint, methods=["POST"])

    def documented(self) -> APIRoute:
        return APIRoute(self.path, self.endpoint, methods=["POST"],
                        response_model=self.response_model, openapi_extra=self.doc)


def schema(app: FastAPI, lean: Sequence[LeanRoute]) -> dict[str, Any]:
    """The app's OpenAPI schema, its lean routes and their request models
    included (built once, then cached on the app as FastAPI does)."""
    if app.openapi_schema is None:
        routes = [*app.routes, *(r.documented() for r in lean)]
        spec = get_openapi(title=app.title, version=app.version, routes=routes,
                           description=app.description)
        _, defs = models_json_schema([(PriceRequest, "validation"),
                                      (ImpliedVolRequest, "validation")], ref_template=REF)
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = spec
    return app.openapi_schema
