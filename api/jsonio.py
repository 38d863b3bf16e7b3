"""The JSON form of the pricing routes: request bodies in, columns out, and
result rows back, with no per-row model objects either way.

A body is validated straight from its bytes by pydantic-core (`parse`), with
its route's model's fields, types and constraints, into plain dicts rather
than model instances: the model is turned once into an equivalent TypedDict
(`typed_dict`), which validates the same way and answers the same errors (a
422 whose ``loc`` names the field and row) in about 60% of the time for
1,000 rows; building the model instances was the rest.  The models
themselves stay the documented schema (OpenAPI).  The rows become the library's keyword columns
(`columns`), and the answer is built column by column (`results`), then
serialised once by orjson.  The routes call these themselves rather than
declaring a body parameter: FastAPI's parameter machinery cost more per
small request than everything else the service does for it (profiled under
`bench.service`'s single-option load).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from itertools import repeat
from typing import Annotated, Any, NotRequired, get_args, get_origin

import numpy as np
import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic takes typing's only from 3.12

import gpu_pricer as gp

from .middleware import JSON
from .schemas import OptionIn

#: A call, in every spelling the request models accept (a boolean column: True = call).
CALL_WORDS = frozenset({"call", "c", "CALL", "C", "Call"})
#: A row's optional fields and their values when absent (the same for both routes).
ROW_DEFAULTS = {name: info.default for name, info in OptionIn.model_fields.items()
                if not info.is_required()}


def typed_dict(model: type[BaseModel]) -> Any:
    """A TypedDict with `model`'s fields, types, constraints and extra-field
    rule, a list of a nested model becoming a list of its TypedDict; a field
    with a default is NotRequired (absent from the validated dict when the
    body leaves it out: `parse` and `columns` supply the default)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann: Any = info.annotation
        (item,) = get_args(ann) if get_origin(ann) is list else (None,)
        if isinstance(item, type) and issubclass(item, BaseModel):
            ann = list[typed_dict(item)]  # type: ignore[misc]
        if info.metadata:
            ann = Annotated[ann, *info.metadata]
        fields[name] = ann if info.is_required() else NotRequired[ann]
    make: Any = TypedDict
    td = make(f"{model.__name__}Dict", fields)
    td.__pydantic_config__ = ConfigDict(extra=model.model_config.get("extra"))
    return td


@cache
def _validator(model: type[BaseModel]) -> tuple[TypeAdapter[Any], tuple[Any, ...]]:
    """The TypedDict's validator, and the model's optional top-level fields."""
    optional = tuple(info for info in model.model_fields.items() if not info[1].is_required())
    return TypeAdapter(typed_dict(model)), optional


def parse(model: type[BaseModel], body: bytes) -> dict[str, Any]:
    """`body` validated as `model` (its fields, types and constraints) into a
    dict, its top-level defaults filled in; the dicts of nested rows hold the
    fields the body gave.  RequestValidationError (422) naming every bad
    field as ``["body", ..., row, field]``."""
    validator, optional = _validator(model)
    try:
        data: dict[str, Any] = validator.validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(_body_errors(exc)) from None
    for name, info in optional:
        if name not in data:
            data[name] = info.get_default(call_default_factory=True)
    return data


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors(include_url=False):
        detail: dict[str, Any] = {**error, "loc": ("body", *error["loc"])}
        if detail["type"] == "json_invalid":
            detail.pop("input", None)  # the whole body: never echoed back
        errors.append(detail)
    return errors


def columns(body: dict[str, Any], value: str) -> dict[str, Any]:
    """The rows of a `parse`d request as keyword columns: gpu_pricer.price's
    with value="sigma", gpu_pricer.implied_vol's with value="price".  422
    naming the first row that gives the wrong underlying for the model, or q
    to a forward model."""
    rows: list[dict[str, Any]] = body["options"]
    model = body["model"]
    und_name = "spot" if model == "bsm" else "forward"
    other = "forward" if model == "bsm" else "spot"
    # plain comprehensions: as fast as map() for many rows, faster for a few
    und = [row.get(und_name) for row in rows]
    if None in und:
        _refuse(und.index(None), und_name, f"model {model!r} needs {und_name}")
    given = [row.get(other) for row in rows]
    if given.count(None) != len(given):
        _refuse(next(i for i, v in enumerate(given) if v is not None), other,
                f"model {model!r} takes {und_name}, not {other}")
    r0, q0 = ROW_DEFAULTS["r"], ROW_DEFAULTS["q"]
    # one (6, n) block, one conversion; its rows are the contiguous float columns
    block = np.array([und, [row["strike"] for row in rows], [row["t"] for row in rows],
                      [row[value] for row in rows], [row.get("r", r0) for row in rows],
                      [row.get("q", q0) for row in rows]], dtype=np.float64)
    calls = [row["option_type"] in CALL_WORDS for row in rows]
    cols: dict[str, Any] = {
        "option_type": np.array(calls, dtype=np.bool_),
        und_name: block[0], "strike": block[1], "t": block[2], value: block[3], "r": block[4],
    }
    if model == "bsm":
        cols["q"] = block[5]
    elif block[5].any():
        _refuse(int(np.flatnonzero(block[5])[0]), "q", "q applies to model 'bsm' only")
    return cols


def ids(body: dict[str, Any]) -> list[str | None]:
    """Every row's id (None where it gave none)."""
    default = ROW_DEFAULTS["id"]
    return [row.get("id", default) for row in body["options"]]


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
    # dict(zip(keys, row)) per row without a Python frame per row (twice as fast)
    return list(map(dict, map(zip, repeat(keys), zip(ids, *values, errors, strict=True))))


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
