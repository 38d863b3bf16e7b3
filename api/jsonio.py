"""The JSON form of the pricing routes: request bodies in, columns out, and
result rows back, with no pydantic model instance per row either way.

A body is validated straight from its bytes (`parse`) in two steps.  First
msgspec decodes it into Structs derived once from the route's pydantic model
(`fast_type`: the same fields, types, defaults, length limits and
extra-field rule): about five times as fast as the model's own validation,
for 1,000 rows or one.  msgspec is the stricter of the two (no
numbers in strings, no NaN or Infinity tokens, no 1 for true, no number
beyond a double's range), so a body it refuses goes to the model itself,
which accepts it by its own (lax) rules or answers the 422 whose ``loc``
names the field and row.  Either way the body means what the model says it
means, the error is pydantic's, and the models stay the documented schema
(OpenAPI).  The rows become the library's keyword columns (`columns`), and
the answer is built column by column (`results`: a Struct per row, made
from the columns in C), then serialised once by msgspec.  The routes call
these themselves rather than declaring a body parameter: FastAPI's parameter
machinery cost more per small request than everything else the service does
for it (profiled under `bench.service`'s single-option load).
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from typing import Annotated, Any, Union, cast, get_args, get_origin

import annotated_types
import msgspec
import numpy as np
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

import gpu_pricer as gp

from .middleware import JSON
from .schemas import OptionIn

#: A call, in every spelling the request models accept (a boolean column: True = call).
CALL_WORDS = frozenset(word for word in get_args(OptionIn.model_fields["option_type"].annotation)
                       if word.lower() in ("call", "c"))


@cache
def fast_type(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec Struct with `model`'s fields, types, defaults and
    extra-field rule, a list of a nested model becoming a list of its Struct.
    TypeError for what has no exact translation (constraints other than a
    string's max_length, a nested model elsewhere than in a list, extra
    fields kept), so that a new field fails at import (`decoder`, called by
    the routes' module) rather than being checked less than its model
    checks it."""
    extra = model.model_config.get("extra", "ignore")
    if extra == "allow":
        raise TypeError(f"{model.__name__}: extra fields kept by the model")
    fields: list[tuple[Any, ...]] = []
    for name, info in model.model_fields.items():
        ann = _translate(model, name, info.annotation, info.metadata)
        if info.is_required():
            fields.append((name, ann))
        elif info.default_factory is not None:
            if info.default_factory_takes_validated_data:
                raise TypeError(f"{model.__name__}.{name}: a default from the other fields")
            factory = cast(Callable[[], Any], info.default_factory)
            fields.append((name, ann, msgspec.field(default_factory=factory)))
        else:
            fields.append((name, ann, info.default))
    return msgspec.defstruct(f"{model.__name__}Struct", fields, kw_only=True,
                             forbid_unknown_fields=extra == "forbid")


def _translate(model: type[BaseModel], name: str, ann: Any, metadata: list[Any]) -> Any:
    (item,) = get_args(ann) if get_origin(ann) is list else (None,)
    if isinstance(item, type) and issubclass(item, BaseModel):
        ann = list[fast_type(item)]  # type: ignore[misc]
    elif any(isinstance(a, type) and issubclass(a, BaseModel) for a in (ann, *get_args(ann))):
        raise TypeError(f"{model.__name__}.{name}: a nested model outside a list")
    for rule in metadata:
        if not isinstance(rule, annotated_types.MaxLen):
            raise TypeError(f"{model.__name__}.{name}: no msgspec translation of {rule!r}")
        limited = Annotated[str, msgspec.Meta(max_length=rule.max_length)]
        if ann is str:
            ann = limited
        elif get_origin(ann) in (Union, types.UnionType) and str in get_args(ann):
            ann = Union[tuple(limited if a is str else a for a in get_args(ann))]  # noqa: UP007
        else:
            raise TypeError(f"{model.__name__}.{name}: max_length on {ann!r}")
    return ann


@cache
def decoder(model: type[BaseModel]) -> msgspec.json.Decoder[Any]:
    """msgspec's decoder of `fast_type(model)` (built once; TypeError as
    `fast_type`, or from msgspec for a type it does not support)."""
    return msgspec.json.Decoder(fast_type(model))


def parse(model: type[BaseModel], body: bytes) -> Any:
    """`body` validated as `model`: a `fast_type(model)` Struct, or where
    msgspec refuses the body, a `model` instance (the same field names and
    values either way).  RequestValidationError (422) naming every bad field
    as ``["body", ..., row, field]``."""
    try:
        return decoder(model).decode(body)
    except msgspec.DecodeError:
        pass  # the model decides: its own rules, its own errors
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


def columns(body: Any, value: str) -> dict[str, Any]:
    """The rows of a `parse`d request as keyword columns: gpu_pricer.price's
    with value="sigma", gpu_pricer.implied_vol's with value="price".  422
    naming the first row that gives the wrong underlying for the model, or q
    to a forward model."""
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
        "option_type": np.array([o.option_type in CALL_WORDS for o in rows], dtype=np.bool_),
        und_name: block[0], "strike": block[1], "t": block[2], value: block[3], "r": block[4],
    }
    if body.model == "bsm":
        cols["q"] = block[5]
    elif block[5].any():
        _refuse(int(np.flatnonzero(block[5])[0]), "q", "q applies to model 'bsm' only")
    return cols


def _refuse(row: int, field: str, msg: str) -> None:
    raise HTTPException(422, detail=[{"loc": ["body", "options", row, field], "msg": msg}])


@lru_cache(maxsize=256)
def _row_type(keys: tuple[str, ...]) -> type[msgspec.Struct]:
    """A result row with these keys, in this order (a Struct: built from the
    columns without a Python frame per row, and encoded as a JSON object)."""
    return msgspec.defstruct("ResultRow", [(key, Any) for key in keys])


def results(ids: Sequence[str | None], out: dict[str, Any],
            names: Sequence[str]) -> list[Any]:
    """One JSON row per option (a Struct `response` encodes as an object):
    id, the `names` values, error (null when solved).  A row with an error
    gets null values; so does a value that is NaN or infinite (JSON has
    neither: a Greek infinite at its singular limit, gamma at expiry at the
    money, is sent as null)."""
    codes = out["error"]
    if len(ids) != len(codes):
        raise ValueError(f"{len(ids)} ids for {len(codes)} rows")
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
    return list(map(_row_type(("id", *names, "error")), ids, *values, errors))


def _all_finite(column: np.ndarray[Any, Any], listed: list[float]) -> bool:
    # a Python loop is the cheaper check for a few rows, NumPy's for many
    if len(listed) <= 64:
        return all(map(math.isfinite, listed))
    return bool(np.isfinite(column).all())


def response(payload: dict[str, Any]) -> Response:
    """The answer, serialised once by msgspec (`results`' rows are Structs).
    The routes' response models document it in the OpenAPI schema; building
    and validating them per row cost more than pricing a small request."""
    return Response(_ENCODER.encode(payload), media_type=JSON)


_ENCODER = msgspec.json.Encoder()
