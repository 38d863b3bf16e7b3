"""The JSON form of the pricing routes: request bodies in, columns out, and
result rows back, with no per-row model objects on the way out.

A body is validated by its route's pydantic model straight from the bytes
(`parse`: pydantic-core's own JSON parser, the same rules as a FastAPI body
parameter, a 422 whose ``loc`` names the field and row); the rows become the
library's keyword columns (`columns`), and the answer is built column by
column (`results`), then serialised once by orjson.  The routes call these
themselves rather than declaring a body parameter: FastAPI's parameter
machinery cost more per small request than everything else the service does
for it (profiled under `bench.service`'s single-option load).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

import gpu_pricer as gp

from .middleware import JSON
from .schemas import ImpliedVolRequest, PriceRequest

#: A call, in any case the request models accept (a boolean column: True = call).
CALL_WORDS = ("call", "c")
Body = TypeVar("Body", bound=BaseModel)


def parse(model: type[Body], body: bytes) -> Body:
    """`body` validated as `model`; RequestValidationError (422) naming every
    bad field as ``["body", ..., row, field]``."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(_body_errors(exc)) from None


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors(include_url=False):
        detail: dict[str, Any] = {**error, "loc": ("body", *error["loc"])}
        if detail["type"] == "json_invalid":
            detail.pop("input", None)  # the whole body: never echoed back
        errors.append(detail)
    return errors


def columns(body: PriceRequest | ImpliedVolRequest, value: str) -> dict[str, Any]:
    """The request's rows as keyword columns: gpu_pricer.price's with
    value="sigma", gpu_pricer.implied_vol's with value="price".  422 naming
    the first row that gives the wrong underlying for the model, or q to a
    forward model."""
    rows = body.options
    und_name = "spot" if body.model == "bsm" else "forward"
    other = "forward" if body.model == "bsm" else "spot"
    und = [getattr(o, und_name) for o in rows]
    if None in und:
        _refuse(und.index(None), und_name, f"model {body.model!r} needs {und_name}")
    given = [getattr(o, other) is not None for o in rows]
    if any(given):
        _refuse(given.index(True), other, f"model {body.model!r} takes {und_name}, not {other}")
    # one (6, n) block, one conversion; its rows are the contiguous float columns
    block = np.array([und, [o.strike for o in rows], [o.t for o in rows],
                      [getattr(o, value) for o in rows], [o.r for o in rows],
                      [o.q for o in rows]], dtype=np.float64)
    cols: dict[str, Any] = {
        "option_type": np.array([o.option_type.lower() in CALL_WORDS for o in rows],
                                dtype=np.bool_),
        und_name: block[0], "strike": block[1], "t": block[2], value: block[3], "r": block[4],
    }
    if body.model == "bsm":
        cols["q"] = block[5]
    elif block[5].any():
        _refuse(int(np.flatnonzero(block[5])[0]), "q", "q applies to model 'bsm' only")
    return cols


def _refuse(row: int, field: str, msg: str) -> None:
    raise HTTPException(422, detail=[{"loc": ["body", "options", row, field], "msg": msg}])


def results(ids: Sequence[str | None], out: dict[str, Any],
            names: Sequence[str]) -> list[dict[str, Any]]:
    """One JSON row per option: id, the `names` values, error (null when
    solved).  A row with an error gets null values; so does a value that is
    NaN or infinite (JSON has neither: a Greek infinite at its singular limit,
    gamma at expiry at the money, is sent as null)."""
    codes = out["error"]
    failed = np.count_nonzero(codes) > 0
    values = []
    for name in names:
        column = out[name]
        listed = column.tolist()
        if failed or not _all_finite(column, listed):
            for i in np.flatnonzero((codes != 0) | ~np.isfinite(column)).tolist():
                listed[i] = None
        values.append(listed)
    errors: list[dict[str, Any] | None] = [None] * len(codes)
    if failed:
        for i in np.flatnonzero(codes).tolist():
            code = int(codes[i])
            errors[i] = {"code": code, "reason": gp.ERRORS[code]}
    keys = ("id", *names, "error")
    return [dict(zip(keys, row, strict=True)) for row in zip(ids, *values, errors, strict=True)]


def _all_finite(column: np.ndarray[Any, Any], listed: list[float]) -> bool:
    # a Python loop is the cheaper check for a few rows, NumPy's for many
    if len(listed) <= 64:
        return all(map(math.isfinite, listed))
    return bool(np.isfinite(column).all())


def response(payload: dict[str, Any]) -> Response:
    """The answer, serialised once by orjson.  The routes' response models
    document it in the OpenAPI schema; building and validating them per row
    cost more than pricing a small request."""
    return Response(orjson.dumps(payload), media_type=JSON)
