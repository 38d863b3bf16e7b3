"""Option types read from text (NumPy string arrays, Arrow string columns)
agree with Python's own lowercasing and comparison, row for row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_pricer as gp
from gpu_pricer.book import arrow_option_codes
from gpu_pricer.inputs import option_codes, option_type_of

WORDS = {"call": 1, "c": 1, "put": 0, "p": 0}
TRICKY = ["call", "CALL", "Call", "cAlL", "c", "C", "p", "P", "put", "PUT", "Put", "pUt", "calls",
          "cal", "pu", "putt", "", " call", "call ", "ca ll", "cäll", "ÇALL", "\uff23", "@ALL",
          "cALl", "\x00c", "p\x00t", "callcall", "K", "c\u0301", "PUT\u0130", "\uff50", "`all",
          "CAL\x00", "pu\x00", "\uff30ut", "\u212a", "ca", "pt", "cl", "x", "1", "☃"]


def oracle(values: list[str | None]) -> list[int]:
    """Python's str.lower and a dict: the meaning the fast loops must keep."""
    return [-1 if v is None else WORDS.get(v.lower(), -1) for v in values]


def test_numpy_unicode_arrays_of_every_width() -> None:
    for width in (1, 3, 4, 5, 12):
        values = [v for v in TRICKY if len(v) <= width]
        arr = np.array(values, dtype=f"<U{width}")
        expected = oracle(arr.tolist())  # NumPy's own strings (trailing NULs dropped)
        assert option_codes(np, arr).tolist() == expected, width
    assert oracle(TRICKY).count(1) == 7 and oracle(TRICKY).count(0) == 6  # the rest: -1


def test_numpy_shapes_strides_bytes_and_objects() -> None:
    arr = np.array(TRICKY * 3)
    expected = np.array(oracle(arr.tolist()), dtype=np.int8)
    np.testing.assert_array_equal(option_codes(np, arr[::3]), expected[::3])  # strided
    grid = arr[:42].reshape(6, 7)
    np.testing.assert_array_equal(option_codes(np, grid), expected[:42].reshape(6, 7))
    encoded = [v.encode() for v in TRICKY]
    as_bytes = np.array(encoded)  # non-ASCII bytes: invalid, as their text is
    assert option_codes(np, as_bytes).tolist() == oracle(
        [b.decode("ascii", errors="replace") for b in as_bytes.tolist()])
    objects = np.array(TRICKY, dtype=object)
    assert option_codes(np, objects).tolist() == oracle(TRICKY)
    assert option_codes(np, np.array([], dtype=str)).shape == (0,)


def _arrow_forms(values: list[str | None]) -> list[Any]:
    plain = pa.array(values, pa.string())
    forms: list[Any] = [plain, pa.array(values, pa.large_string()),
                        pa.array(values, pa.string_view()), plain.dictionary_encode()]
    if len(values) > 2:
        # a slice (a non-zero offset into the buffers) and several chunks
        forms.append(pa.concat_arrays([pa.array(["put"]), plain]).slice(1))
        forms.append(pa.chunked_array([plain.slice(0, 2), plain.slice(2)]))
    return forms


def test_arrow_string_columns_of_every_type() -> None:
    values: list[str | None] = [*TRICKY, None, "call", None]
    for form in _arrow_forms(values):
        assert arrow_option_codes(form).tolist() == oracle(values), form.type
    empties: list[str | None] = ["", "", None]  # a data buffer of no bytes
    for form in _arrow_forms(empties):
        assert arrow_option_codes(form).tolist() == [-1, -1, -1]
    assert arrow_option_codes(pa.array([], pa.string())).shape == (0,)
    booleans = pa.array([True, None, False])
    assert arrow_option_codes(booleans).tolist() == [1, -1, 0]
    assert arrow_option_codes(pa.array(["c\x00", "p"])).tolist() == [-1, 0]  # a NUL inside


_TEXT = st.lists(st.one_of(st.none(), st.text(alphabet="cCaAlLpPuUtT \x00äK@`\u0130", max_size=6)),
                 max_size=40)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_any_text_agrees_with_python(values: list[str | None]) -> None:
    assert arrow_option_codes(pa.array(values, pa.string())).tolist() == oracle(values)
    texts = [v for v in values if v is not None]
    arr = np.array(texts, dtype=str)
    assert option_codes(np, arr).tolist() == oracle(arr.tolist())


def test_codes_as_an_option_type_argument() -> None:
    """option_type_of: a boolean view (no copy) when every row is valid,
    else one-letter strings; either prices as the words themselves."""
    codes = np.array([1, 0, 0, 1], dtype=np.int8)
    view = option_type_of(codes)
    assert view.dtype == np.bool_ and np.shares_memory(view, codes)
    with_bad = np.array([1, -1, 0, 1], dtype=np.int8)
    letters = option_type_of(with_bad)
    assert letters.tolist() == ["c", "?", "p", "c"]
    np.testing.assert_array_equal(option_codes(np, letters), with_bad)
    words = np.array(["call", "bogus", "put", "call"])
    kw: dict[str, Any] = {"spot": 100.0, "strike": np.array([90.0, 95.0, 100.0, 110.0]),
                          "t": 0.5, "sigma": 0.25, "greeks": ("delta",)}
    want = gp.price(option_type=words, **kw)
    got = gp.price(option_type=letters, **kw)
    for name in ("price", "delta", "error"):
        np.testing.assert_array_equal(got[name], want[name])
    assert option_type_of(np.empty(0, np.int8)).dtype == np.bool_


@pytest.mark.parametrize("n", [1_000, 65_537])
def test_large_random_columns(n: int) -> None:
    rng = np.random.default_rng(n)
    pool = np.array(TRICKY)
    values = pool[rng.integers(0, len(pool), n)]
    expected = oracle(values.tolist())
    assert option_codes(np, values).tolist() == expected
    assert arrow_option_codes(pa.array(values.tolist())).tolist() == expected
