"""The OpenAPI description of the JSON pricing routes' bodies and headers.

POST /v1/price and POST /v1/implied-vol read their own bodies (`api.jsonio`)
and run on the short path (`api.lean`): a JSON body, validated against
PriceRequest or ImpliedVolRequest, or an Arrow IPC stream (with the query
parameters model and greeks), the query parameter strict, and an optional
X-Deadline-Ms header.  `PRICE_DOC` and `IV_DOC` document them (the routes'
``openapi_extra``).
"""

from __future__ import annotations

from typing import Any

import gpu_pricer as gp

from .arrow_io import ARROW_STREAM
from .middleware import JSON

DEADLINE_HEADER = {
    "name": "x-deadline-ms", "in": "header", "required": False,
    "schema": {"type": "integer", "exclusiveMinimum": 0, "title": "X-Deadline-Ms"},
    "description": "Deadline in milliseconds (default: the service's default_deadline_ms); "
                   "504 when it cannot be met.",
}
STRICT_QUERY = {
    "name": "strict", "in": "query", "required": False,
    "schema": {"type": "boolean", "default": False, "title": "Strict"},
    "description": "Reject the request (422 naming the bad rows, the first 20, and why) if "
                   "any row is out of domain; without it such a row gets its error code and no "
                   "values (null in JSON, NaN in Arrow), its neighbours priced. A JSON body's "
                   "field strict does the same.",
}
MODEL_QUERY = {
    "name": "model", "in": "query", "required": False,
    "schema": {"type": "string", "enum": list(gp.MODELS), "default": "bsm"},
    "description": "The Arrow form's model (a JSON body names its own).",
}
GREEKS_QUERY = {
    "name": "greeks", "in": "query", "required": False,
    "schema": {"type": "string", "default": ""},
    "description": "The Arrow form's Greeks: comma-separated names, or all (a JSON body names "
                   "its own). Units as in PriceRequest.",
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


def _doc(model: str, arrow: dict[str, Any], query: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "parameters": [*query, STRICT_QUERY, DEADLINE_HEADER],
        "requestBody": {"required": True, "content": {
            JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}},
            ARROW_STREAM: {"schema": arrow}}},
    }


PRICE_DOC = _doc("PriceRequest", _PRICE_ARROW, [MODEL_QUERY, GREEKS_QUERY])
IV_DOC = _doc("ImpliedVolRequest", _IV_ARROW, [MODEL_QUERY])
