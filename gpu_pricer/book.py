"""Bulk revaluation of option books held in Arrow record batches (pure computation, no I/O).

A *book* is a `pyarrow.RecordBatch` or `pyarrow.Table` whose columns are
`gpu_pricer.price`'s keywords: ``option_type`` (strings call/put/c/p in any
case, or booleans, True = call), ``spot`` (bsm) or ``forward`` (black76,
bachelier), ``strike``, ``t``, ``sigma``, and optionally ``r`` and ``q``
(default 0).  Optional position columns: ``quantity`` (signed number of
contracts, default 1) and ``multiplier`` (units of the underlying per
contract, default 1).  Any other column (an ``id``, a desk, an underlying
name) is carried through untouched and may serve as a grouping key.

- `price_book`: the book with ``price``, the Greeks and ``error`` appended,
  rows in order; a bad row (NaN, negative vol, a null cell, an unknown
  option type, a null quantity) gets its code in ``error`` and NaN values,
  and is never dropped.
- `Aggregator` / `aggregate`: position-weighted value and Greeks
  (quantity x multiplier x output) summed per group, batch by batch; partial
  aggregates merge, so a book can be aggregated as it streams past or in
  pieces on several workers.
- `parse_scenarios` / `ScenarioPnL` / `scenario_pnl`: each group's PnL under
  a grid of spot, vol and time shocks, repriced in the kernel scenario by
  scenario into one reused buffer (the book is never copied per scenario).

Units are `gpu_pricer.price`'s (README, "The library").
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ErrorCode
from .inputs import GREEKS, Request, build_request, greek_names, option_type_of
from .kernels import text
from .pricing import compute

Array = np.ndarray[Any, Any]
#: A pyarrow RecordBatch or Table (pyarrow has no type annotations).
Book: TypeAlias = Any

#: Numeric keyword columns of a book (the pricing inputs).
INPUTS = ("spot", "forward", "strike", "t", "sigma", "r", "q")
#: Position columns: signed quantity and contract multiplier, both default 1.
POSITION = ("quantity", "multiplier")
#: Columns of an aggregate besides the group keys and the summed outputs.
COUNTS = ("rows", "errors")
#: Days per year of a time roll (calendar days, like theta's convention).
DAYS_PER_YEAR = 365.0
#: Most points a scenario grid may have.
MAX_POINTS = 10_000


class BookError(ValueError):
    """A whole-book mistake (a missing or mistyped column); names the column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"column {column!r}: {message}")
        self.column = column


# --- reading the columns ----------------------------------------------------------------


def _batches(book: Book) -> Iterator[pa.RecordBatch]:
    if isinstance(book, pa.RecordBatch):
        yield book
    else:
        yield from book.to_batches()


def _float_column(batch: pa.RecordBatch, name: str, default: float | None = None) -> Any:
    """Column `name` as float64 NumPy (zero-copy when it is float64 without nulls);
    a null becomes NaN, so that row is marked, not the book refused.  A missing
    column is `default` (a scalar) or a BookError."""
    if name not in batch.schema.names:
        if default is None:
            raise BookError(name, "missing")
        return default
    col = batch.column(name)
    kind = col.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind)):
        raise BookError(name, f"expected numbers, got {kind}")
    if kind != pa.float64():
        col = col.cast(pa.float64())
    if col.null_count:
        col = pc.fill_null(col, np.nan)
    return col.to_numpy(zero_copy_only=False)


def _option_codes(batch: pa.RecordBatch) -> Array:
    """1 for call, 0 for put, -1 (a per-row error) for anything else, a null too."""
    if "option_type" not in batch.schema.names:
        raise BookError("option_type", "missing")
    col = batch.column("option_type")
    if not is_option_type_column(col.type):
        raise BookError("option_type", f"expected strings or booleans, got {col.type}")
    return arrow_option_codes(col)


def is_option_type_column(kind: pa.DataType) -> bool:
    """Whether `arrow_option_codes` reads a column of this type."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_boolean(kind) or pa.types.is_string(kind)
                or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def arrow_option_codes(col: pa.Array | pa.ChunkedArray) -> Array:
    """The option-type codes (int8: 1 call, 0 put, -1 for anything else, a
    null too) of an Arrow column of booleans (True = call) or strings
    (call/put/c/p in any case; string, large_string, string_view, or a
    dictionary of them); strings are read from their buffers in a compiled
    loop (`kernels.text`), not through Arrow's lowercasing and set lookups."""
    if isinstance(col, pa.ChunkedArray):
        parts = [arrow_option_codes(chunk) for chunk in col.chunks]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0, np.int8)
    n = len(col)
    if pa.types.is_dictionary(col.type):
        lut = arrow_option_codes(col.dictionary)
        indices = pc.fill_null(col.indices, 0).to_numpy(zero_copy_only=False)
        out = lut[indices] if lut.size else np.full(n, -1, np.int8)
    elif pa.types.is_boolean(col.type):
        booleans: Array = pc.fill_null(col.cast(pa.int8()), -1).to_numpy(zero_copy_only=False)
        return booleans  # nulls filled with -1 already
    else:
        if pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        out = np.empty(n, np.int8)
        if n:
            _, offsets_buf, data_buf = col.buffers()
            kind = np.int64 if pa.types.is_large_string(col.type) else np.int32
            offsets = np.frombuffer(offsets_buf, kind, count=n + 1,
                                    offset=col.offset * np.dtype(kind).itemsize)
            data = np.frombuffer(data_buf, np.uint8) if data_buf else np.empty(0, np.uint8)
            text.utf8_codes(offsets, data, out)
    if col.null_count:  # `out` is a new array here: writable
        out[col.is_null().to_numpy(zero_copy_only=False)] = -1
    codes: Array = out
    return codes


def _weight(batch: pa.RecordBatch) -> Array | float:
    """quantity x multiplier per row (NaN where either is null)."""
    quantity = _float_column(batch, "quantity", 1.0)
    multiplier = _float_column(batch, "multiplier", 1.0)
    if isinstance(quantity, float) and isinstance(multiplier, float):
        return quantity * multiplier
    weight: Array = np.multiply(quantity, multiplier, dtype=np.float64)
    return weight


def _request(batch: pa.RecordBatch, model: str, greeks: Sequence[str], dtype: str) -> Request:
    """A checked `gpu_pricer.price` request over the batch's columns."""
    und = "spot" if model == "bsm" else "forward"
    other = "forward" if model == "bsm" else "spot"
    names = batch.schema.names
    if model in ("bsm", "black76", "bachelier") and other in names:
        raise BookError(other, f"model {model!r} takes {und}, not {other}")
    n = batch.num_rows
    cols = {name: _float_column(batch, name) for name in (und, "strike", "t", "sigma")}
    r = _float_column(batch, "r", 0.0)
    q = _float_column(batch, "q", 0.0)
    if model != "bsm":
        if not isinstance(q, float) and np.any(q[~np.isnan(q)] != 0.0):
            raise BookError("q", f"applies to model 'bsm' only, not {model!r}")
        q = 0.0
    req = build_request(model=model, option_type=True, strike=cols["strike"], t=cols["t"],
                        sigma=cols["sigma"], spot=cols.get("spot"), forward=cols.get("forward"),
                        r=r, q=q, greeks=tuple(greeks), dtype=dtype)
    otype = _option_codes(batch)
    if n and req.n != n:  # pragma: no cover - every column has the batch's length
        raise AssertionError("columns of unequal length")
    return replace(req, otype=otype if n else otype[:0])


def _mark_bad_positions(out: Any, err: Array, codes: Iterable[int], weight: Array | float) -> None:
    """A row whose quantity or multiplier is null or not finite is an input error too."""
    if isinstance(weight, float):
        bad = None if math.isfinite(weight) else np.ones(err.shape, dtype=bool)
    else:
        bad = ~np.isfinite(weight)
    if bad is None or not bad.any():
        return
    bad &= err == 0
    err[bad] = ErrorCode.NON_FINITE_INPUT
    for c in codes:
        out[c, bad] = np.nan


# --- pricing ----------------------------------------------------------------------------


def output_names(model: str, greeks: str | Iterable[str]) -> tuple[str, ...]:
    """The columns `price_book` appends: "price", the Greeks in order, "error"."""
    return ("price", *greek_names(greeks, model), "error")


def output_schema(schema: pa.Schema, model: str = "bsm", greeks: str | Iterable[str] = (),
                  dtype: str = "float64") -> pa.Schema:
    """The schema of `price_book`'s result for a book of `schema`."""
    return _schema(schema, output_names(model, greeks), dtype)


def _schema(schema: pa.Schema, names: tuple[str, ...], dtype: str) -> pa.Schema:
    kept = [f for f in schema if f.name not in names]
    value = pa.from_numpy_dtype(np.dtype(dtype))
    return pa.schema([*kept, *(pa.field(n, value) for n in names[:-1]),
                      pa.field("error", pa.int8())])


def price_book(book: Book, *, model: str = "bsm", greeks: str | Iterable[str] = (),
               backend: str = "auto", dtype: str = "float64") -> Book:
    """Price every row of an Arrow book and append the results as columns.

    Example:
        >>> import pyarrow as pa
        >>> book = pa.table({"id": ["a", "b"], "option_type": ["call", "bogus"],
        ...                  "spot": [100.0, 100.0], "strike": [95.0, 95.0],
        ...                  "t": [0.5, 0.5], "sigma": [0.2, 0.2], "r": [0.03, 0.03],
        ...                  "q": [0.01, 0.01]})
        >>> out = price_book(book, greeks=["delta"])
        >>> out.column_names
        ['id', 'option_type', 'spot', 'strike', 't', 'sigma', 'r', 'q', 'price', 'delta', 'error']
        >>> [round(p, 6) for p in out["price"].to_pylist()[:1]], out["error"].to_pylist()
        ([8.902418], [0, 6])

    Args (keyword-only after the book):
        book: a RecordBatch or Table; columns as in the module docstring
            (units as in `gpu_pricer.price`).  A Table is priced chunk by
            chunk (its chunking is kept).
        model, greeks, backend, dtype: as in `gpu_pricer.price`.

    Returns:
        The same kind of object with every input column (in order), then
        ``price``, the requested Greeks and ``error`` (int8, `gpu_pricer.ERRORS`),
        in row order.  Output columns already in the book (from an earlier run)
        are replaced.  A null in a numeric column, a null or unknown
        option_type, or a null or non-finite quantity or multiplier marks its
        row (code 1 or 6; NaN values); other rows are unaffected.  Numeric
        columns that are float64 without nulls are read zero-copy, and the
        output columns are zero-copy views of the kernel's output buffer.

    Raises:
        BookError (a ValueError): a required column is missing, or a column
            has the wrong type (it names the column).
        ValueError: as `gpu_pricer.price` for a whole-call mistake.
    """
    names = output_names(model, greeks)
    if isinstance(book, pa.RecordBatch):
        return _price_batch(book, model, names, backend, dtype)
    schema = output_schema(book.schema, model, greeks, dtype)
    return pa.Table.from_batches(
        [_price_batch(b, model, names, backend, dtype) for b in book.to_batches()], schema=schema)


def _price_batch(batch: pa.RecordBatch, model: str, names: tuple[str, ...], backend: str,
                 dtype: str) -> pa.RecordBatch:
    req = _request(batch, model, names[1:-1], dtype)
    out, err = compute(req, backend)
    _mark_bad_positions(out, err, req.codes, _weight(batch))
    kept = [n for n in batch.schema.names if n not in names]
    arrays = [batch.column(n) for n in kept]
    arrays += [pa.array(out[c]) for c in req.codes]  # zero-copy views of the buffer rows
    arrays.append(pa.array(err))
    return pa.RecordBatch.from_arrays(arrays, schema=_schema(batch.schema, names, dtype))


def attach(book: Book, outputs: Mapping[str, Any]) -> pa.Table:
    """The book with outputs priced elsewhere appended, as `price_book` appends
    its own: `outputs` is `gpu_pricer.price`'s result for the book's rows in
    order ("price", Greeks, "error").  Rows whose quantity or multiplier is
    null or not finite get code 1 and NaN values, as in `price_book`."""
    table = book if isinstance(book, pa.Table) else pa.Table.from_batches([book])
    names = tuple(outputs)
    if names[-1:] != ("error",) or names[:1] != ("price",):
        raise ValueError(f"outputs must run from 'price' to 'error', got {names}")
    values = [np.array(outputs[n]) for n in names[:-1]]
    err = np.array(outputs["error"], dtype=np.int8)
    weights = [_weight(b) for b in table.to_batches()]
    weight: Array | float = (np.concatenate([np.broadcast_to(w, (b.num_rows,)) for w, b in
                                             zip(weights, table.to_batches(), strict=True)])
                             if table.num_rows else 1.0)
    stacked = np.vstack(values) if values else np.empty((0, table.num_rows))
    _mark_bad_positions(stacked, err, range(len(values)), weight)
    kept = table.drop_columns([n for n in names if n in table.column_names])
    for i, name in enumerate(names[:-1]):
        kept = kept.append_column(name, pa.array(stacked[i]))
    return kept.append_column("error", pa.array(err))


# --- groups and partial sums ------------------------------------------------------------


def _encode(values: Any) -> tuple[Array, int]:
    """(index of each value in order of first appearance, number of distinct values)."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    enc = pc.dictionary_encode(values, null_encoding="encode")
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.intp), len(enc.dictionary)


def _group_codes(batch: pa.RecordBatch, by: Sequence[str]) -> tuple[Array, Array]:
    """(group index of each row, index of each group's first row) over the key
    columns `by`, groups numbered in order of first appearance (hashing, no
    sort); nulls form a group of their own.  No keys: one group."""
    n = batch.num_rows
    if not by:
        return np.zeros(n, dtype=np.intp), np.zeros(min(n, 1), dtype=np.intp)
    missing = [name for name in by if name not in batch.schema.names]
    if missing:
        raise BookError(missing[0], "missing (named as a group key)")
    code, size = _encode(batch.column(by[0]))
    for name in by[1:]:
        idx, width = _encode(batch.column(name))
        # pairs renumbered at each step, so the codes stay below n (no overflow)
        code, size = _encode(pa.array(code.astype(np.int64) * width + idx))
    # a new group's code exceeds every earlier one: it starts where the running max rises
    rise = np.diff(np.maximum.accumulate(code), prepend=-1) > 0
    first = np.flatnonzero(rise)
    if len(first) != size:  # pragma: no cover - dictionary_encode numbers by appearance
        _, first, code = np.unique(code, return_index=True, return_inverse=True)
    return code, first


def _keys(batch: pa.RecordBatch, by: Sequence[str], rows: Array) -> dict[str, Any]:
    """The key columns at `rows`, dictionaries decoded (so partials concatenate)."""
    out: dict[str, Any] = {}
    for name in by:
        col = batch.column(name).take(pa.array(rows))
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        out[name] = col
    return out


def _merge(parts: list[pa.Table], keys: Sequence[str], sums: Sequence[str]) -> pa.Table:
    """Sum the columns `sums` of the partial tables per distinct `keys`."""
    table = pa.concat_tables(parts)
    grouped = table.group_by(list(keys), use_threads=False).aggregate([(c, "sum") for c in sums])
    return grouped.rename_columns([c[:-4] if c.endswith("_sum") else c
                                   for c in grouped.column_names]).select([*keys, *sums])


class _Partials:
    """Partial tables that merge into one every so often (memory bounded by
    the number of groups, not of rows)."""

    def __init__(self, keys: Sequence[str], sums: Sequence[str]) -> None:
        self.keys = list(keys)
        self.sums = list(sums)
        self._parts: list[pa.Table] = []
        self._rows = 0
        self._merged_rows = 0

    def add(self, part: pa.Table) -> None:
        self._parts.append(part)
        self._rows += part.num_rows
        if len(self._parts) > 64 or self._rows > max(1 << 18, 4 * self._merged_rows):
            self._compact()

    def extend(self, other: _Partials) -> None:
        for part in other._parts:
            self.add(part)

    def _compact(self) -> None:
        if len(self._parts) > 1:
            self._parts = [_merge(self._parts, self.keys, self.sums)]
        self._rows = self._merged_rows = sum(p.num_rows for p in self._parts)

    def table(self) -> pa.Table | None:
        self._compact()
        return self._parts[0] if self._parts else None


def _sorted(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys]) if keys else table


# --- aggregation ------------------------------------------------------------------------


class Aggregator:
    """Position-weighted value and Greeks of a priced book, summed per group.

    Example:
        >>> import pyarrow as pa
        >>> priced = pa.table({"desk": ["x", "y", "x"], "quantity": [2.0, -1.0, 1.0],
        ...                    "price": [1.5, 2.0, 0.5], "delta": [0.5, 0.4, 0.1],
        ...                    "error": pa.array([0, 0, 0], pa.int8())})
        >>> agg = Aggregator(by=["desk"], greeks=["delta"])
        >>> agg.add(priced)
        >>> for row in agg.result().to_pylist():
        ...     print(row)
        {'desk': 'x', 'rows': 2, 'errors': 0, 'value': 3.5, 'delta': 1.1}
        {'desk': 'y', 'rows': 1, 'errors': 0, 'value': -2.0, 'delta': -0.4}

    Args:
        by: the key columns (none: one total row).
        greeks: the Greek columns to sum; None takes every Greek column of the
            first batch added.

    For each group, ``rows`` counts its rows, ``errors`` those with a non-zero
    ``error`` (excluded from every sum), ``value`` is the sum of quantity x
    multiplier x price, and each Greek column the sum of quantity x multiplier
    x that Greek (position delta, gamma, ... in the Greek's unit; README,
    "Greeks and units").  A Greek infinite at its singular limit (gamma at
    expiry at the money) makes its group's sum infinite.

    `add` takes priced batches (`price_book`'s output; ``quantity`` and
    ``multiplier`` default to 1), `merge` another Aggregator's partial sums
    (from another part of the book, another process), and `result` the table,
    sorted by the keys.  Memory grows with the number of groups, not rows.
    """

    def __init__(self, by: Sequence[str] = (), greeks: Sequence[str] | None = None) -> None:
        self.by = tuple(by)
        self.greeks = None if greeks is None else tuple(greeks)
        self._parts: _Partials | None = None

    def _sums(self) -> list[str]:
        assert self.greeks is not None
        return [*COUNTS, "value", *self.greeks]

    def add(self, priced: Book) -> None:
        """Add the partial sums of a priced batch or table."""
        for batch in _batches(priced):
            self.add_batch(batch)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Add the partial sums of one priced batch."""
        if self.greeks is None:
            self.greeks = tuple(g for g in GREEKS if g in batch.schema.names)
        if self._parts is None:
            self._parts = _Partials(self.by, self._sums())
        codes, first = _group_codes(batch, self.by)
        groups = len(first)
        if "error" not in batch.schema.names:
            raise BookError("error", "missing: aggregate a priced book (price_book's output)")
        ok = pc.fill_null(batch.column("error"), 1).to_numpy(zero_copy_only=False) == 0
        weight = _weight(batch)
        cols: dict[str, Any] = _keys(batch, self.by, first)
        cols["rows"] = np.bincount(codes, minlength=groups).astype(np.int64)
        cols["errors"] = np.bincount(codes, weights=~ok, minlength=groups).astype(np.int64)
        for name, column in (("value", "price"), *((g, g) for g in self.greeks)):
            values = _float_column(batch, column)
            contrib = np.where(ok, np.multiply(weight, values, dtype=np.float64), 0.0)
            cols[name] = np.bincount(codes, weights=contrib, minlength=groups)
        self._parts.add(pa.table(cols))

    def merge(self, other: Aggregator) -> None:
        """Add another aggregator's partial sums (same keys and Greeks)."""
        if other.by != self.by:
            raise ValueError(f"cannot merge aggregates by {other.by} into one by {self.by}")
        if other._parts is None:
            return
        if self.greeks is None:
            self.greeks = other.greeks
        if other.greeks != self.greeks:
            raise ValueError(f"cannot merge sums of {other.greeks} into sums of {self.greeks}")
        if self._parts is None:
            self._parts = _Partials(self.by, self._sums())
        self._parts.extend(other._parts)

    def result(self) -> pa.Table:
        """The aggregate: key columns, rows, errors, value, the Greeks; sorted by key."""
        table = self._parts.table() if self._parts is not None else None
        if table is None:  # nothing added: no groups (no keys: one row of zeros)
            greeks = self.greeks or ()
            empty = {k: pa.array([], pa.null()) for k in self.by}
            zeros = 0 if not self.by else None
            cols: dict[str, Any] = {**empty,
                                    **{c: pa.array([] if zeros is None else [0], pa.int64())
                                       for c in COUNTS},
                                    **{c: pa.array([] if zeros is None else [0.0], pa.float64())
                                       for c in ("value", *greeks)}}
            return pa.table(cols)
        return _sorted(table, self.by)


def aggregate(data: Book | Mapping[str, Any], *, by: Sequence[str] = (),
              greeks: Sequence[str] | None = None) -> pa.Table:
    """Position-weighted value and Greeks per group of a priced book (see `Aggregator`).

    `data` is a priced RecordBatch or Table, or a mapping of equal-length
    arrays (for instance `gpu_pricer.price`'s result plus ``quantity``,
    ``multiplier`` and key arrays).

    Example:
        >>> import numpy as np, gpu_pricer as gp
        >>> out = gp.price(option_type=["call", "put"], spot=100.0, strike=100.0, t=1.0,
        ...                sigma=0.2, greeks=["delta"])
        >>> agg = aggregate({**out, "quantity": np.array([1.0, 1.0])})
        >>> round(agg["delta"][0].as_py(), 12)   # a straddle: delta(call) + delta(put)
        0.079655674554
    """
    table = data if isinstance(data, (pa.RecordBatch, pa.Table)) else pa.table(dict(data))
    agg = Aggregator(by, greeks)
    agg.add(table)
    return agg.result()


# --- scenarios --------------------------------------------------------------------------

_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(%|d|w|y)?$")
_AXES = {"spot": "spot", "forward": "spot", "underlying": "spot", "vol": "vol", "sigma": "vol",
         "roll": "roll"}
_DAYS = {"d": 1.0, "w": 7.0, "y": DAYS_PER_YEAR}


class ScenarioSpecError(ValueError):
    """A scenario specification that cannot be read; says what and how to write it."""


@dataclass(frozen=True)
class Axis:
    """One shocked input and its values.

    ``name``: "spot" (the underlying: spot or forward), "vol" or "roll".
    ``mode``: "pct" (relative, in percent: spot x (1 + v/100), sigma x (1 + v/100)),
    "abs" (spot + v, in price units), "points" (sigma + v/100: vol points) or
    "days" (t - v/365, floored at 0: the book rolled v calendar days forward).
    """

    name: str
    mode: str
    values: tuple[float, ...]

    @property
    def column(self) -> str:
        """The column that holds this axis's value in the scenario table."""
        return f"{self.name}_{self.mode}"


@dataclass(frozen=True)
class ScenarioGrid:
    """The cartesian product of its axes (the first axis varies slowest)."""

    axes: tuple[Axis, ...]

    def __len__(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def points(self) -> list[dict[str, float]]:
        """Each point as {axis column: value}, in grid order."""
        cols = [a.column for a in self.axes]
        return [dict(zip(cols, p, strict=True))
                for p in itertools.product(*(a.values for a in self.axes))]


def _number(text: str, axis: str, item: str) -> tuple[float, str]:
    m = _NUMBER.match(text.strip())
    if m is None:
        raise ScenarioSpecError(f"scenario {item!r}: {text.strip()!r} is not a number "
                                "(write e.g. -20%, +10, 1d)")
    value, unit = float(m.group(1)), m.group(2) or ""
    if axis == "roll":
        if unit not in _DAYS:
            raise ScenarioSpecError(f"scenario {item!r}: a roll needs a unit d, w or y "
                                    "(e.g. roll=1d)")
        return value * _DAYS[unit], "days"
    if unit not in ("", "%"):
        raise ScenarioSpecError(f"scenario {item!r}: unit {unit!r} does not apply to {axis} "
                                "(use % for a relative shock, none for an absolute one)")
    if unit == "%":
        return value, "pct"
    return value, "abs" if axis == "spot" else "points"


def _axis(item: str) -> Axis:
    if "=" not in item:
        raise ScenarioSpecError(f"scenario {item!r}: expected AXIS=LO:HI:N or AXIS=VALUE, with "
                                f"AXIS one of spot, vol, roll (e.g. spot=-20%:+20%:9)")
    key, _, rng = item.partition("=")
    name = _AXES.get(key.strip().lower())
    if name is None:
        raise ScenarioSpecError(f"scenario {item!r}: unknown axis {key.strip()!r}; "
                                f"valid: spot (or forward), vol, roll")
    parts = rng.split(":")
    if len(parts) == 1:
        value, mode = _number(parts[0], name, item)
        values: tuple[float, ...] = (value,)
    elif len(parts) == 3:
        (lo, mode), (hi, mode_hi) = _number(parts[0], name, item), _number(parts[1], name, item)
        if mode != mode_hi:
            raise ScenarioSpecError(f"scenario {item!r}: LO and HI must have the same unit")
        try:
            count = int(parts[2].strip())
        except ValueError:
            raise ScenarioSpecError(f"scenario {item!r}: N must be a whole number of points, "
                                    f"got {parts[2].strip()!r}") from None
        if count < 2:
            raise ScenarioSpecError(f"scenario {item!r}: N must be at least 2 (for one point "
                                    f"write {key.strip()}=VALUE)")
        if lo > hi:
            raise ScenarioSpecError(f"scenario {item!r}: LO must not exceed HI")
        grid = np.linspace(lo, hi, count)
        grid[np.abs(grid) <= 1e-12 * max(abs(lo), abs(hi))] = 0.0  # an exact zero shock
        values = tuple(float(v) for v in grid)
    else:
        raise ScenarioSpecError(f"scenario {item!r}: expected LO:HI:N or a single value "
                                f"(e.g. {key.strip()}=-20%:+20%:9)")
    if name == "spot" and mode == "pct" and min(values) <= -100.0:
        raise ScenarioSpecError(f"scenario {item!r}: a relative spot shock must stay above "
                                "-100%")
    if name == "vol" and mode == "pct" and min(values) < -100.0:
        raise ScenarioSpecError(f"scenario {item!r}: a relative vol shock must not go below "
                                "-100%")
    return Axis(name, mode, values)


def parse_scenarios(spec: str) -> ScenarioGrid:
    """Read a scenario grid such as ``"spot=-20%:+20%:9,vol=-10:+10:5,roll=1d"``.

    Items are separated by commas, semicolons or spaces; each is
    ``AXIS=LO:HI:N`` (N evenly spaced values from LO to HI) or ``AXIS=VALUE``:

    - ``spot`` (alias ``forward``): ``-20%`` relative (the underlying times
      0.8), ``-5`` absolute (in price units);
    - ``vol`` (alias ``sigma``): ``-10`` in vol points (sigma - 0.10),
      ``-10%`` relative (sigma times 0.9); a shocked vol is floored at 0;
    - ``roll``: time passing, ``1d``, ``2w`` or ``0.5y`` (t shortened by
      days/365, floored at 0: an option that expires meanwhile is worth its
      intrinsic value).

    Example:
        >>> grid = parse_scenarios("spot=-10%:+10%:3, vol=+5")
        >>> len(grid), grid.points()[0]
        (3, {'spot_pct': -10.0, 'vol_points': 5.0})

    Raises:
        ScenarioSpecError (a ValueError) saying what is wrong and how to
        write it: an unknown or repeated axis, a bad number or unit, N < 2,
        LO > HI, a relative spot shock at or below -100%, more than
        MAX_POINTS points.
    """
    items = [s for s in re.split(r"[,;\s]+", spec.strip()) if s]
    if not items:
        raise ScenarioSpecError("empty scenario specification (e.g. spot=-20%:+20%:9,"
                                "vol=-10:+10:5)")
    axes: list[Axis] = []
    for item in items:
        axis = _axis(item)
        if any(a.name == axis.name for a in axes):
            raise ScenarioSpecError(f"scenario {item!r}: axis {axis.name} given twice")
        axes.append(axis)
    grid = ScenarioGrid(tuple(axes))
    if len(grid) > MAX_POINTS:
        raise ScenarioSpecError(f"the grid has {len(grid):,} points, more than {MAX_POINTS:,}")
    return grid


def shock(values: tuple[Any, ...], point: Mapping[str, float], scratch: dict[str, Array]
          ) -> tuple[Any, ...]:
    """The request's values (underlying, strike, t, sigma, r, q) under one grid
    point, written into the `scratch` arrays (one per shocked input, reused
    from point to point); unshocked inputs are the originals."""
    und, strike, t, sigma, r, q = values

    def buf(name: str, like: Array) -> Array:
        if name not in scratch or scratch[name].shape != like.shape:
            scratch[name] = np.empty_like(like)
        return scratch[name]

    for column, v in point.items():
        if column == "spot_pct":
            und = np.multiply(values[0], 1.0 + v / 100.0, out=buf("und", values[0]))
        elif column == "spot_abs":
            und = np.add(values[0], v, out=buf("und", values[0]))
        elif column == "vol_points":
            sigma = np.maximum(np.add(values[3], v / 100.0, out=buf("sigma", values[3])), 0.0,
                               out=buf("sigma", values[3]))
        elif column == "vol_pct":
            sigma = np.maximum(np.multiply(values[3], 1.0 + v / 100.0,
                                           out=buf("sigma", values[3])), 0.0,
                               out=buf("sigma", values[3]))
        elif column == "roll_days":
            t = np.maximum(np.subtract(values[2], v / DAYS_PER_YEAR, out=buf("t", values[2])),
                           0.0, out=buf("t", values[2]))
        else:  # pragma: no cover - parse_scenarios makes only these
            raise ValueError(f"unknown scenario column {column!r}")
    return und, strike, t, sigma, r, q


#: Prices a book's rows elsewhere (the service's batcher): called with
#: `gpu_pricer.price`'s keywords (no Greeks), returns (price, error) arrays.
Pricer = Callable[[Mapping[str, Any]], tuple[Any, Any]]


class ScenarioPnL:
    """Each group's value and PnL under every point of a scenario grid.

    Args:
        grid: from `parse_scenarios` (or a spec string).
        model, backend, dtype: as in `gpu_pricer.price`.
        by: the key columns (none: the whole book).
        pricer: prices each pass instead of the kernel (see `Pricer`).

    `add` takes book batches (priced or not: only the inputs are read).  For
    each batch it prices the base (price only) and then every grid point in
    turn: the shocked inputs are written into one scratch array per shocked
    column and the prices into one output buffer, both reused from point to
    point, so memory does not grow with the number of scenarios.  Per group
    and point it sums quantity x multiplier x price at the base and shocked,
    over the rows priced in both (the others are counted in ``errors``).
    `merge` adds another instance's partial sums; `result` gives the tidy
    table: the keys, ``scenario`` (the point's index), one column per axis
    (see `Axis`), ``rows``, ``errors``, ``base_value``, ``value`` and
    ``pnl = value - base_value``, sorted by keys and scenario.  At a zero
    shock the inputs are bit for bit the base's, so the PnL is exactly 0.
    """

    def __init__(self, grid: ScenarioGrid | str, *, model: str = "bsm", by: Sequence[str] = (),
                 backend: str = "auto", dtype: str = "float64",
                 pricer: Pricer | None = None) -> None:
        self.grid = parse_scenarios(grid) if isinstance(grid, str) else grid
        self.pricer = pricer
        self.model = model
        self.by = tuple(by)
        self.backend = backend
        self.dtype = dtype
        self._points = self.grid.points()
        self._parts = _Partials([*self.by, "scenario"], ["rows", "errors", "base_value",
                                                        "value"])
        self._scratch: dict[str, Array] = {}
        self._out: Array | None = None
        self._err: Array | None = None

    def _buffers(self, n: int) -> tuple[Array, Array]:
        if self._out is None or self._out.shape[1] != n:
            self._out = np.empty((1, n), dtype=self.dtype)
            self._err = np.empty(n, dtype=np.int8)
        assert self._err is not None
        return self._out, self._err

    def add(self, book: Book) -> None:
        """Add the scenario sums of a batch or table of the book."""
        for batch in _batches(book):
            self.add_batch(batch)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Add the scenario sums of one batch of the book."""
        n = batch.num_rows
        codes, first = _group_codes(batch, self.by)
        if n == 0:
            return
        groups = len(first)
        base = _request(batch, self.model, (), self.dtype)
        out, err = self._buffers(n)
        self._price(base, out, err)
        weight = _weight(batch)
        ok_base = err == 0
        if not isinstance(weight, float):
            ok_base &= np.isfinite(weight)
        elif not math.isfinite(weight):
            ok_base[:] = False
        base_contrib = np.multiply(weight, out[0], dtype=np.float64)
        points = len(self._points)
        sums = {c: np.empty((points, groups)) for c in ("errors", "base_value", "value")}
        for s, point in enumerate(self._points):
            req = replace(base, values=shock(base.values, point, self._scratch))
            self._price(req, out, err)
            ok = ok_base & (err == 0)
            sums["errors"][s] = np.bincount(codes, weights=~ok, minlength=groups)
            sums["base_value"][s] = np.bincount(codes, weights=np.where(ok, base_contrib, 0.0),
                                                minlength=groups)
            contrib = np.multiply(weight, out[0], dtype=np.float64)
            sums["value"][s] = np.bincount(codes, weights=np.where(ok, contrib, 0.0),
                                           minlength=groups)
        cols: dict[str, Any] = _keys(batch, self.by, np.tile(first, points))
        cols["scenario"] = np.repeat(np.arange(points, dtype=np.int32), groups)
        cols["rows"] = np.tile(np.bincount(codes, minlength=groups).astype(np.int64), points)
        cols["errors"] = sums["errors"].reshape(-1).astype(np.int64)
        cols["base_value"] = sums["base_value"].reshape(-1)
        cols["value"] = sums["value"].reshape(-1)
        self._parts.add(pa.table(cols))

    def _price(self, req: Request, out: Array, err: Array) -> None:
        """Prices into out[0] and codes into err: in the kernel, or through the pricer."""
        if self.pricer is None:
            compute(req, self.backend, out, err)
            return
        n = req.n
        types = option_type_of(np.broadcast_to(req.otype, (n,)))
        und, strike, t, sigma, r, q = (np.broadcast_to(v, (n,)) for v in req.values)
        kw: dict[str, Any] = {"option_type": types, "strike": strike, "t": t, "sigma": sigma,
                              "r": r}
        if self.model == "bsm":
            kw.update(spot=und, q=q)
        else:
            kw["forward"] = und
        price, codes = self.pricer(kw)
        out[0] = price
        err[:] = codes

    def partial(self) -> ScenarioPnL:
        """This instance without its scratch buffers (partial sums only): what to
        send to another process for `merge`."""
        self._scratch = {}
        self._out = self._err = None
        return self

    def merge(self, other: ScenarioPnL) -> None:
        """Add another instance's partial sums (same grid and keys)."""
        if other.grid != self.grid or other.by != self.by:
            raise ValueError("cannot merge scenario sums of another grid or other keys")
        self._parts.extend(other._parts)

    def result(self) -> pa.Table:
        """The tidy scenario table (see the class docstring)."""
        table = self._parts.table()
        axes = [a.column for a in self.grid.axes]
        if table is None:
            fields = [*(pa.field(k, pa.null()) for k in self.by), pa.field("scenario", pa.int32()),
                      *(pa.field(c, pa.float64()) for c in axes),
                      pa.field("rows", pa.int64()), pa.field("errors", pa.int64()),
                      *(pa.field(c, pa.float64()) for c in ("base_value", "value", "pnl"))]
            return pa.schema(fields).empty_table()
        table = _sorted(table, [*self.by, "scenario"])
        index = table.column("scenario").to_numpy()
        grid_values = {c: np.array([p[c] for p in self._points]) for c in axes}
        cols: dict[str, Any] = {k: table.column(k) for k in self.by}
        cols["scenario"] = table.column("scenario")
        for c in axes:
            cols[c] = grid_values[c][index]
        for c in ("rows", "errors", "base_value", "value"):
            cols[c] = table.column(c)
        cols["pnl"] = pc.subtract(table.column("value"), table.column("base_value"))
        return pa.table(cols)


def scenario_pnl(book: Book, scenarios: ScenarioGrid | str, *, model: str = "bsm",
                 by: Sequence[str] = (), backend: str = "auto",
                 dtype: str = "float64") -> pa.Table:
    """Each group's PnL under a scenario grid, as a tidy table (see `ScenarioPnL`).

    Example:
        >>> import pyarrow as pa
        >>> book = pa.table({"option_type": ["call"], "spot": [100.0], "strike": [100.0],
        ...                  "t": [1.0], "sigma": [0.2], "quantity": [10.0]})
        >>> table = scenario_pnl(book, "spot=-10%:+10%:3")
        >>> [round(x, 6) for x in table["pnl"].to_pylist()]
        [-43.764593, 0.0, 63.264435]
    """
    pnl = ScenarioPnL(scenarios, model=model, by=by, backend=backend, dtype=dtype)
    pnl.add(book)
    return pnl.result()
