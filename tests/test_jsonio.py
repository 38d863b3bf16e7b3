"""The JSON routes validate bodies into plain dicts (`api.jsonio.parse`, through
TypedDicts derived from the documented models): the same rules, values and
errors as validating the models themselves."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from api import jsonio
from api.schemas import ImpliedVolRequest, PriceRequest

MODELS = (PriceRequest, ImpliedVolRequest)
ROW_FIELDS = ("option_type", "spot", "forward", "strike", "t", "r", "q", "id", "sigma", "price")


def _norm(x: Any) -> Any:
    """Comparable: NaN equal to NaN, dicts by keys."""
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return x


def _by_model(model: type[BaseModel], body: bytes) -> tuple[Any, Any]:
    """(the model's values, None) or (None, its errors), as the dicts' path gives them."""
    try:
        data = model.model_validate_json(body).model_dump()
    except ValidationError as exc:
        errors = [(("body", *e["loc"]), e["msg"],
                   "dict_type" if e["type"] == "model_type" else e["type"])
                  for e in exc.errors(include_url=False)]
        return None, errors
    return _norm(data), None


def _by_dicts(model: type[BaseModel], body: bytes) -> tuple[Any, Any]:
    try:
        data = jsonio.parse(model, body)
    except RequestValidationError as exc:
        return None, [(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
    # a row's dict holds the fields the body gave: the model's defaults for the rest
    data["options"] = [{**jsonio.ROW_DEFAULTS, **row} for row in data["options"]]
    return _norm(data), None


BODIES = [
    b'{"options": [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2,'
    b' "price": 7.5}]}',
    b'{"model": "black76", "greeks": "all", "strict": true, "options": [{"option_type": "P",'
    b' "forward": 1e3, "strike": 95, "t": 0.5, "sigma": 0.2, "price": 3, "r": -0.01,'
    b' "id": "a-1"}]}',
    b'{"options": [{"option_type": "cal", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]}',
    b'{"options": [{"option_type": "call", "spot": "x", "strike": 95, "t": 0.5, "zz": 1}]}',
    b'{"options": [{"option_type": "call", "t": 0.5, "id": "' + b"a" * 300 + b'"}]}',
    b'{"model": "foo", "greeks": ["delta", "bad"], "strict": "maybe", "options": [{}]}',
    b'{"greeks": "al", "options": 3}',
    b"[]",
    b"{",
    b'{"options": [1, null, []]}',
    b'{"options": [{"option_type": "call", "spot": NaN, "strike": Infinity, "t": 1e999,'
    b' "sigma": true, "price": "0.1", "r": "0.1"}]}',
    b'{"options": [{"option_type": "call", "spot": null, "forward": 3, "strike": 1, "t": 1,'
    b' "sigma": 1, "price": 1, "id": 5}]}',
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("body", BODIES)
def test_dicts_validate_as_the_model(model: type[BaseModel], body: bytes) -> None:
    values, errors = _by_model(model, body)
    assert _by_dicts(model, body) == (values, errors)
    assert (values is None) == (errors is not None)


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(),
    st.sampled_from(["call", "put", "C", "p", "Put", "x", "1.5", "", "nan"]),
    st.text(max_size=300), st.lists(st.integers(), max_size=2),
)
_NUMBERS = st.one_of(st.floats(), st.integers(-10**6, 10**6))


def _good_rows(value: str) -> Any:
    """Rows of the right shape for the model whose rows give `value` (sigma or
    price), but for an id now and then too long."""
    return st.fixed_dictionaries(
        {"option_type": st.sampled_from(["call", "put", "c", "P", "Call", "PUT"]),
         "strike": _NUMBERS, "t": _NUMBERS, value: _NUMBERS},
        optional={"spot": st.one_of(_NUMBERS, st.none()),
                  "forward": st.one_of(_NUMBERS, st.none()), "r": _NUMBERS, "q": _NUMBERS,
                  "id": st.one_of(st.text(max_size=8), st.none(),
                                  st.text(min_size=250, max_size=260))})


_GOOD_ROWS = st.one_of(_good_rows("sigma"), _good_rows("price"))
_ROWS = st.one_of(
    _GOOD_ROWS,
    st.dictionaries(st.sampled_from((*ROW_FIELDS, "zz")), _VALUES, max_size=len(ROW_FIELDS)),
    _VALUES,
)
_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"options": st.sampled_from(["sigma", "price"]).flatmap(
            lambda value: st.lists(_good_rows(value), max_size=4))},
        optional={"model": st.sampled_from(["bsm", "black76", "bachelier"]),
                  "greeks": st.one_of(st.just("all"), st.lists(
                      st.sampled_from(["delta", "vega", "veta", "dividend_rho"]), max_size=3)),
                  "strict": st.booleans()}),
    st.fixed_dictionaries(
        {"options": st.one_of(st.lists(_ROWS, max_size=4), _VALUES)},
        optional={
            "model": st.sampled_from(["bsm", "black76", "bachelier", "sabr", None]),
            "greeks": st.one_of(st.just("all"), st.lists(
                st.sampled_from(["delta", "vega", "veta", "dividend_rho", "bad", 3]),
                max_size=3), _VALUES),
            "strict": st.one_of(st.booleans(), _VALUES),
            "extra": _VALUES,
        }),
    _VALUES,
)


@settings(max_examples=300, deadline=None)
@given(data=_BODIES)
def test_dicts_validate_as_the_model_on_any_body(data: Any) -> None:
    body = json.dumps(data).encode()  # NaN and infinities as JSON5-style tokens too
    for model in MODELS:
        assert _by_dicts(model, body) == _by_model(model, body)


def _shape(schema: Any) -> Any:
    """A JSON schema without its words (titles, descriptions, defaults) and with
    the TypedDicts' names as the models'."""
    if isinstance(schema, dict):
        return {k.removesuffix("Dict"): _shape(v) for k, v in schema.items()
                if k not in ("title", "description", "default")}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    if isinstance(schema, str) and schema.startswith("#/$defs/"):
        return schema.removesuffix("Dict")
    return schema


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_typed_dicts_have_the_models_fields_types_and_rules(model: type[BaseModel]) -> None:
    derived = TypeAdapter(jsonio.typed_dict(model)).json_schema()
    assert _shape(derived) == _shape(model.model_json_schema())
    row = derived["$defs"][derived["properties"]["options"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert row["additionalProperties"] is False
    assert set(jsonio.ROW_DEFAULTS) == set(row["properties"]) - set(row["required"])
