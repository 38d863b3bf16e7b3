"""The JSON routes decode bodies with msgspec into Structs derived from the
documented pydantic models, and hand what msgspec refuses to the models
(`api.jsonio.parse`): the same rules, values and errors as validating the
models themselves, and the fast path taken by well-formed bodies."""

from __future__ import annotations

import json
import math
from typing import Any, get_args

import msgspec
import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

import gpu_pricer as gp
from api import jsonio
from api.schemas import ImpliedVolRequest, OptionIn, PriceRequest
from bench.service import json_body

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


def _values(parsed: Any) -> Any:
    """Every field's value, of a model instance or a Struct."""
    if isinstance(parsed, BaseModel):
        return _norm(parsed.model_dump())
    return _norm(msgspec.to_builtins(parsed))


def _by_model(model: type[BaseModel], body: bytes) -> tuple[Any, Any]:
    """(the model's values, None) or (None, its errors, with the 422's "body" first)."""
    try:
        return _values(model.model_validate_json(body)), None
    except ValidationError as exc:
        return None, [(("body", *e["loc"]), e["msg"], e["type"])
                      for e in exc.errors(include_url=False)]


def _by_parse(model: type[BaseModel], body: bytes) -> tuple[Any, Any]:
    try:
        return _values(jsonio.parse(model, body)), None
    except RequestValidationError as exc:
        return None, [(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]


def _fast(model: type[BaseModel], body: bytes) -> Any:
    """msgspec's values, or None where it refuses the body."""
    try:
        return _values(msgspec.json.decode(body, type=jsonio.fast_type(model)))
    except msgspec.DecodeError:
        return None


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
def test_bodies_validate_as_the_model(model: type[BaseModel], body: bytes) -> None:
    values, errors = _by_model(model, body)
    assert _by_parse(model, body) == (values, errors)
    assert (values is None) == (errors is not None)
    fast = _fast(model, body)
    assert fast is None or fast == values  # msgspec accepts no more than the model


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
def test_bodies_validate_as_the_model_on_any_body(data: Any) -> None:
    body = json.dumps(data).encode()  # NaN and infinities as JSON5-style tokens too
    for model in MODELS:
        by_model = _by_model(model, body)
        assert _by_parse(model, body) == by_model
        fast = _fast(model, body)
        assert fast is None or fast == by_model[0]


@pytest.mark.parametrize("n", [1, 1000])
def test_well_formed_bodies_take_the_fast_path(n: int) -> None:
    body = json_body(n)
    parsed = jsonio.parse(PriceRequest, body)
    assert isinstance(parsed, jsonio.fast_type(PriceRequest))
    assert _values(parsed) == _values(PriceRequest.model_validate_json(body))
    data = json.loads(body)
    data["options"][-1]["strike"] = str(data["options"][-1]["strike"])  # lax: the model's
    lax = jsonio.parse(PriceRequest, json.dumps(data).encode())
    assert isinstance(lax, PriceRequest)
    assert _values(lax) == _values(parsed)
    # both kinds of parsed body give the same columns and answers
    fast_cols, lax_cols = jsonio.columns(parsed, "sigma"), jsonio.columns(lax, "sigma")
    assert fast_cols.keys() == lax_cols.keys()
    for name, column in fast_cols.items():
        assert column.dtype == lax_cols[name].dtype and np.array_equal(column, lax_cols[name])
    out = gp.price(model="bsm", greeks=["delta"], backend="numpy", **fast_cols)
    answers = [jsonio.response({"results": jsonio.results([o.id for o in p.options], out,
                                                          ["price", "delta"])}).body
               for p in (parsed, lax)]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("model", [*MODELS, OptionIn], ids=lambda m: m.__name__)
def test_structs_have_the_models_fields_and_defaults(model: type[BaseModel]) -> None:
    struct = jsonio.fast_type(model)
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    assert list(fields) == list(model.model_fields)
    for name, info in model.model_fields.items():
        field = fields[name]
        assert field.required == info.is_required()
        if not info.is_required():
            default = (field.default_factory() if field.default is msgspec.NODEFAULT
                       else field.default)
            assert default == info.get_default(call_default_factory=True)
    assert struct.__struct_config__.forbid_unknown_fields == (
        model.model_config.get("extra") == "forbid")


def test_constraints_without_a_translation_are_refused() -> None:
    class Positive(BaseModel):
        x: float = Field(gt=0)

    class Kept(BaseModel, extra="allow"):
        x: float

    class Nested(BaseModel):
        x: Kept | None = None

    class Deeper(BaseModel):
        x: dict[str, Kept]

    for model in (Positive, Kept, Nested):
        with pytest.raises(TypeError):
            jsonio.fast_type(model)
    with pytest.raises(TypeError):  # msgspec's own refusal, when the decoder is built
        jsonio.decoder(Deeper)


def test_every_spelling_the_model_accepts_is_a_call_or_a_put() -> None:
    calls = {"call", "c", "CALL", "C", "Call"}
    spellings = set(get_args(OptionIn.model_fields["option_type"].annotation))
    assert calls < spellings
    for word in spellings:
        body = json.dumps({"options": [{"option_type": word, "spot": 100, "strike": 95,
                                        "t": 0.5, "sigma": 0.2}]}).encode()
        cols = jsonio.columns(jsonio.parse(PriceRequest, body), "sigma")
        assert cols["option_type"].tolist() == [word in calls], word


def test_answers_are_json_objects_in_row_order_with_nulls_for_what_json_lacks() -> None:
    out = {
        "price": np.array([1.5, np.nan, 2.0, 1e-300, 3.0]),
        "gamma": np.array([0.1, np.nan, np.inf, -0.0, -np.inf]),
        "error": np.array([0, 2, 0, 0, 0], dtype=np.int8),
    }
    ids = ["a", None, "c", "d", None]
    rows = jsonio.results(ids, out, ["price", "gamma"])
    body = json.loads(jsonio.response({"model": "bsm", "results": rows}).body)
    assert body["model"] == "bsm"
    assert [list(r) for r in body["results"]] == [["id", "price", "gamma", "error"]] * 5
    assert body["results"] == [
        {"id": "a", "price": 1.5, "gamma": 0.1, "error": None},
        {"id": None, "price": None, "gamma": None,
         "error": {"code": 2, "reason": gp.ERRORS[2]}},
        {"id": "c", "price": 2.0, "gamma": None, "error": None},
        {"id": "d", "price": 1e-300, "gamma": -0.0, "error": None},
        {"id": None, "price": 3.0, "gamma": None, "error": None},
    ]
    assert math.copysign(1.0, body["results"][3]["gamma"]) == -1.0
    with pytest.raises(ValueError, match="ids"):
        jsonio.results(ids[:4], out, ["price"])
