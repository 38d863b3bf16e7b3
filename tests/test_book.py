"""gpu_pricer.book: pricing Arrow books row for row, position-weighted
aggregation against direct NumPy sums, and scenario PnL against pricing
shocked copies of the book directly."""

from __future__ import annotations

import doctest
import tracemalloc
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import gpu_pricer as gp
from gpu_pricer import book as bk

from .conftest import random_book

GREEKS = ("delta", "gamma", "vega", "theta")


def make_table(n: int, seed: int = 0, bad: bool = True) -> pa.Table:
    """A bsm book with desks, underlyings, signed quantities, multipliers and
    (with `bad`) rows of every kind of problem, at known positions."""
    rng = np.random.default_rng(seed)
    b = random_book(n, seed)
    types = np.where(b["option_type"], "call", "PUT").astype(object)
    spot_mask = np.zeros(n, dtype=bool)
    quantity_mask = np.zeros(n, dtype=bool)
    if bad:
        b["sigma"][7::97] = np.nan  # NaN: code 1
        b["sigma"][11::89] = -0.1  # negative vol: code 2
        spot_mask[13::83] = True  # null cell: code 1
        types[17::79] = "straddle"  # unknown type: code 6
        types[19::73] = None  # null type: code 6
        quantity_mask[23::71] = True  # null quantity: code 1
    return pa.table({
        "id": pa.array([f"pos-{i}" for i in range(n)]),
        "desk": pa.array(rng.choice(["rates", "equity", "fx"], n)),
        "underlying": pa.array(rng.choice(["A", "B", "C", "D"], n)),
        "option_type": pa.array(types, pa.string()),
        "spot": pa.array(b["spot"], mask=spot_mask),
        "strike": b["strike"],
        "t": b["t"],
        "sigma": b["sigma"],
        "r": b["r"],
        "q": b["q"],
        "quantity": pa.array(rng.integers(-20, 21, n).astype(np.float64), mask=quantity_mask),
        "multiplier": rng.choice([1.0, 100.0], n),
    })


def direct(table: pa.Table, greeks: Any = GREEKS, backend: str = "numpy",
           **shock: Any) -> dict[str, np.ndarray]:
    """gpu_pricer.price on the table's columns (nulls as NaN), with `shock`
    replacing columns: the independent path the book functions must match."""
    def col(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    types = np.array([x if x is not None else "?" for x in table.column("option_type")
                      .to_pylist()])
    kw = {name: shock.get(name, col(name)) for name in ("spot", "strike", "t", "sigma", "r",
                                                        "q")}
    return gp.price(option_type=np.where(np.isin(np.char.lower(types), ["call", "put", "c",
                                                                         "p"]), types, "?"),
                    greeks=greeks, backend=backend, **kw)


def same(a: Any, b: Any) -> bool:
    """Equal values and nulls (NaN equal to NaN, which Arrow's equals denies)."""
    if a.equals(b):
        return True
    return bool(a.type == b.type and a.is_null().equals(b.is_null()) and np.array_equal(
        a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False), equal_nan=True))


def test_price_book_keeps_every_row_and_column_in_order(backend: str) -> None:
    table = make_table(3000)
    out = bk.price_book(table, greeks=GREEKS, backend=backend)
    assert out.num_rows == table.num_rows
    assert out.column_names == [*table.column_names, "price", *GREEKS, "error"]
    for name in table.column_names:
        assert same(out.column(name), table.column(name)), name
    ref = direct(table, backend=backend)
    err = out.column("error").to_numpy()
    quantity_null = table.column("quantity").is_null().to_numpy(zero_copy_only=False)
    expected = np.where(quantity_null & (ref["error"] == 0), 1, ref["error"])
    np.testing.assert_array_equal(err, expected)
    ok = err == 0
    for name in ("price", *GREEKS):
        got = out.column(name).to_numpy()
        np.testing.assert_array_equal(got[ok], ref[name][ok])  # bit for bit
        assert np.isnan(got[~ok]).all()


def test_price_book_marks_each_kind_of_bad_row() -> None:
    table = make_table(2000)
    out = bk.price_book(table, greeks=(), backend="numpy")
    err = out.column("error").to_numpy()
    assert err[7] == gp.ErrorCode.NON_FINITE_INPUT  # NaN sigma
    assert err[11] == gp.ErrorCode.NEGATIVE_VOLATILITY
    assert err[13] == gp.ErrorCode.NON_FINITE_INPUT  # null spot
    assert err[17] == gp.ErrorCode.INVALID_OPTION_TYPE  # "straddle"
    assert err[19] == gp.ErrorCode.INVALID_OPTION_TYPE  # null option_type
    assert err[23] == gp.ErrorCode.NON_FINITE_INPUT  # null quantity
    assert out.column("id").to_pylist() == table.column("id").to_pylist()
    assert 0 < np.count_nonzero(err) < len(err) // 5


def test_price_book_record_batch_table_and_chunks_agree() -> None:
    table = make_table(1000)
    whole = bk.price_book(table, greeks="all", backend="numpy")
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=97))
    pieces = bk.price_book(chunked, greeks="all", backend="numpy")
    batch = bk.price_book(table.combine_chunks().to_batches()[0], greeks="all",
                          backend="numpy")
    assert isinstance(batch, pa.RecordBatch)
    for name in whole.column_names:
        assert same(pieces.column(name), whole.column(name))
        assert same(pa.Table.from_batches([batch]).column(name), whole.column(name))


def test_price_book_options_models_dtypes_and_defaults() -> None:
    n = 500
    b = random_book(n, 3)
    table = pa.table({"option_type": pa.array(b["option_type"]), "forward": b["spot"],
                      "strike": b["strike"], "t": b["t"], "sigma": b["sigma"],
                      "r": pa.array((b["r"] * 100).astype(np.int64))})  # integers accepted
    out = bk.price_book(table, model="black76", greeks=["delta"], backend="numpy",
                        dtype="float32")
    assert out.schema.field("price").type == pa.float32()
    ref = gp.price(model="black76", option_type=b["option_type"], forward=b["spot"],
                   strike=b["strike"], t=b["t"], sigma=b["sigma"],
                   r=(b["r"] * 100).astype(np.int64).astype(float), greeks=["delta"],
                   backend="numpy", dtype="float32")
    np.testing.assert_array_equal(out.column("price").to_numpy(), ref["price"])
    # an earlier run's outputs are replaced, not duplicated
    again = bk.price_book(out, model="black76", greeks=["delta", "vega"], backend="numpy")
    assert again.column_names == [*table.column_names, "price", "delta", "vega", "error"]
    assert again.schema.field("price").type == pa.float64()
    empty = bk.price_book(table.slice(0, 0), model="black76", greeks="all", backend="numpy")
    assert empty.num_rows == 0 and "veta" in empty.column_names


@pytest.mark.parametrize(("change", "column", "message"), [
    (lambda t: t.drop_columns(["strike"]), "strike", "missing"),
    (lambda t: t.drop_columns(["option_type"]), "option_type", "missing"),
    (lambda t: t.set_column(5, "strike", pa.array(["1"] * t.num_rows)), "strike",
     "expected numbers"),
    (lambda t: t.set_column(3, "option_type", pa.array([1] * t.num_rows)), "option_type",
     "expected strings or booleans"),
    (lambda t: t.append_column("forward", t.column("spot")), "forward", "takes spot"),
])
def test_whole_book_mistakes_name_the_column(change: Any, column: str, message: str) -> None:
    table = change(make_table(50, bad=False))
    with pytest.raises(bk.BookError, match=message) as info:
        bk.price_book(table, backend="numpy")
    assert info.value.column == column
    with pytest.raises(bk.BookError, match="'q'"):
        bk.price_book(pa.table({"option_type": ["c"], "forward": [1.0], "strike": [1.0],
                                "t": [1.0], "sigma": [0.2], "q": [0.01]}), model="black76")
    with pytest.raises(ValueError, match="unknown Greek"):
        bk.price_book(table, greeks=["omega"])


# --- aggregation ------------------------------------------------------------------------


def numpy_sums(priced: pa.Table, by: list[str]) -> dict[tuple[Any, ...], dict[str, float]]:
    """Per-group sums the slow, obvious way."""
    keys = list(zip(*(priced.column(k).to_pylist() for k in by), strict=True)) if by else \
        [()] * priced.num_rows
    q = priced.column("quantity").to_numpy(zero_copy_only=False).astype(float)
    m = priced.column("multiplier").to_numpy()
    err = priced.column("error").to_numpy()
    out: dict[tuple[Any, ...], dict[str, float]] = {}
    for key in set(keys):
        rows = np.array([k == key for k in keys])
        ok = rows & (err == 0)
        sums = {"rows": float(rows.sum()), "errors": float((rows & (err != 0)).sum()),
                "value": float(np.sum(q[ok] * m[ok] * priced.column("price").to_numpy()[ok]))}
        for g in GREEKS:
            sums[g] = float(np.sum(q[ok] * m[ok] * priced.column(g).to_numpy()[ok]))
        out[key] = sums
    return out


def check_aggregate(agg: pa.Table, priced: pa.Table, by: list[str]) -> None:
    expected = numpy_sums(priced, by)
    assert agg.num_rows == len(expected)
    assert agg.column_names == [*by, "rows", "errors", "value", *GREEKS]
    scale = {c: float(np.nansum(np.abs(priced.column("price" if c == "value" else c)
                                       .to_numpy()))) * 100 for c in ("value", *GREEKS)}
    for row in agg.to_pylist():
        key = tuple(row[k] for k in by)
        want = expected[key]
        assert row["rows"] == want["rows"] and row["errors"] == want["errors"]
        for c in ("value", *GREEKS):
            assert row[c] == pytest.approx(want[c], rel=1e-12, abs=1e-13 * scale[c])


@pytest.mark.parametrize("by", [[], ["desk"], ["desk", "underlying"]])
def test_aggregate_matches_numpy_sums(by: list[str]) -> None:
    priced = bk.price_book(make_table(4000, seed=2), greeks=GREEKS, backend="numpy")
    check_aggregate(bk.aggregate(priced, by=by), priced, by)
    # streaming: batch by batch, and two halves merged, give the same
    agg = bk.Aggregator(by)
    for batch in priced.to_batches(max_chunksize=333):
        agg.add_batch(batch)
    check_aggregate(agg.result(), priced, by)
    first, second = bk.Aggregator(by), bk.Aggregator(by)
    first.add(priced.slice(0, 1234))
    second.add(priced.slice(1234))
    first.merge(second)
    check_aggregate(first.result(), priced, by)


def test_aggregate_null_keys_arrays_and_empty() -> None:
    priced = bk.price_book(make_table(600, seed=4), greeks=GREEKS, backend="numpy")
    desk = priced.column("desk").to_pylist()
    desk[::5] = [None] * len(desk[::5])
    with_nulls = priced.set_column(1, "desk", pa.array(desk))
    agg = bk.aggregate(with_nulls, by=["desk"])
    assert agg.column("desk").to_pylist()[-1] is None  # nulls: a group, sorted last
    check_aggregate(agg, with_nulls, ["desk"])
    # arrays: gpu_pricer.price's output plus quantities
    out = gp.price(option_type=["call", "put", "call"], spot=100.0, strike=[90.0, 100.0, -1.0],
                   t=1.0, sigma=0.2, greeks=["delta"])
    arrays = bk.aggregate({**out, "quantity": np.array([2.0, -3.0, 1.0]),
                           "book": np.array(["x", "y", "x"])}, by=["book"])
    assert arrays.column("errors").to_pylist() == [1, 0]
    assert arrays.column("delta").to_pylist() == [2 * out["delta"][0], -3 * out["delta"][1]]
    total = bk.Aggregator(greeks=["delta"]).result()
    assert total.to_pylist() == [{"rows": 0, "errors": 0, "value": 0.0, "delta": 0.0}]
    with pytest.raises(bk.BookError, match="'error'"):
        bk.aggregate(make_table(5, bad=False))
    with pytest.raises(bk.BookError, match="'book'"):
        bk.aggregate(priced, by=["book"])


# --- scenarios --------------------------------------------------------------------------


def test_parse_scenarios_valid() -> None:
    grid = bk.parse_scenarios("spot=-20%:+20%:9, vol=-10:+10:5;roll=1d")
    assert [a.column for a in grid.axes] == ["spot_pct", "vol_points", "roll_days"]
    assert grid.axes[0].values == (-20.0, -15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    assert grid.axes[1].values == (-10.0, -5.0, 0.0, 5.0, 10.0)
    assert len(grid) == 45 and len(grid.points()) == 45
    assert grid.points()[0] == {"spot_pct": -20.0, "vol_points": -10.0, "roll_days": 1.0}
    assert bk.parse_scenarios("forward=-1.5:1.5:3").axes[0].values == (-1.5, 0.0, 1.5)
    assert bk.parse_scenarios("forward=-1.5:1.5:3").axes[0].column == "spot_abs"
    assert bk.parse_scenarios("sigma=-10%:10%:3").axes[0].column == "vol_pct"
    assert bk.parse_scenarios("roll=0d:2w:3").axes[0].values == (0.0, 7.0, 14.0)
    assert bk.parse_scenarios("roll=0.5y").axes[0].values == (182.5,)
    # a zero shock is exactly zero even where linspace would round
    assert 0.0 in bk.parse_scenarios("vol=-0.3:0.3:3").axes[0].values


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty scenario"),
    ("spot", "expected AXIS=LO:HI:N"),
    ("rate=-1:1:3", "unknown axis 'rate'"),
    ("spot=-20%:+20%", "expected LO:HI:N or a single value"),
    ("spot=-20%:+20%:1", "N must be at least 2"),
    ("spot=-20%:+20%:x", "N must be a whole number"),
    ("spot=-20%:+20:5", "same unit"),
    ("spot=abc", "not a number"),
    ("spot=10d", "unit 'd' does not apply to spot"),
    ("roll=1", "a roll needs a unit"),
    ("spot=+20%:-20%:5", "LO must not exceed HI"),
    ("spot=-100%:0%:2", "above -100%"),
    ("spot=1%,spot=2%", "given twice"),
    ("spot=-1%:1%:101,vol=-1:1:101", "more than 10,000"),
])
def test_parse_scenarios_invalid(spec: str, message: str) -> None:
    with pytest.raises(bk.ScenarioSpecError, match=message):
        bk.parse_scenarios(spec)


def shocked_inputs(table: pa.Table, point: dict[str, float]) -> dict[str, np.ndarray]:
    """A shocked copy of the book's inputs, as the spec documents the shocks."""
    spot = table.column("spot").to_numpy(zero_copy_only=False).astype(float)
    sigma = table.column("sigma").to_numpy()
    t = table.column("t").to_numpy()
    out: dict[str, np.ndarray] = {}
    if "spot_pct" in point:
        out["spot"] = spot * (1.0 + point["spot_pct"] / 100.0)
    if "spot_abs" in point:
        out["spot"] = spot + point["spot_abs"]
    if "vol_points" in point:
        out["sigma"] = np.maximum(sigma + point["vol_points"] / 100.0, 0.0)
    if "vol_pct" in point:
        out["sigma"] = np.maximum(sigma * (1.0 + point["vol_pct"] / 100.0), 0.0)
    if "roll_days" in point:
        out["t"] = np.maximum(t - point["roll_days"] / 365.0, 0.0)
    return out


@pytest.mark.parametrize("spec", ["spot=-20%:+20%:5,vol=-10:+10:3",
                                  "spot=-5:5:3,vol=-50%:0%:2,roll=0d:30d:2"])
def test_scenario_pnl_is_zero_at_zero_shock_and_matches_full_repricing(spec: str) -> None:
    table = make_table(1500, seed=6)
    by = ["desk"]
    result = bk.scenario_pnl(table, spec, by=by, backend="numpy")
    grid = bk.parse_scenarios(spec)
    points = grid.points()
    desks = sorted(set(table.column("desk").to_pylist()))
    assert result.num_rows == len(points) * len(desks)
    assert result.column_names == ["desk", "scenario", *(a.column for a in grid.axes), "rows",
                                   "errors", "base_value", "value", "pnl"]
    weight = (table.column("quantity").to_numpy(zero_copy_only=False).astype(float)
              * table.column("multiplier").to_numpy())
    base = direct(table, greeks=())
    desk = np.array(table.column("desk").to_pylist())
    rows = result.to_pylist()
    for row in rows:
        point = points[row["scenario"]]
        assert {c: row[c] for c in point} == point
        if all(v == 0.0 for v in point.values()):
            assert row["pnl"] == 0.0  # exactly
        shocked = direct(table, greeks=(), **shocked_inputs(table, point))
        ok = (base["error"] == 0) & (shocked["error"] == 0) & np.isfinite(weight) & \
            (desk == row["desk"])
        want = float(np.sum(weight[ok] * (shocked["price"][ok] - base["price"][ok])))
        scale = float(np.sum(np.abs(weight[ok] * base["price"][ok])))
        assert row["pnl"] == pytest.approx(want, rel=1e-12, abs=1e-13 * scale)
        assert row["rows"] == int(np.sum(desk == row["desk"]))
        assert row["errors"] == int(np.sum((desk == row["desk"]) & ~ok))


def test_scenario_pnl_streams_merges_and_uses_numba() -> None:
    table = make_table(3000, seed=8)
    spec = "spot=-10%:+10%:3,vol=+5"
    whole = bk.scenario_pnl(table, spec, by=["desk", "underlying"], backend="numba")
    ref = bk.scenario_pnl(table, spec, by=["desk", "underlying"], backend="numpy")
    np.testing.assert_allclose(whole.column("pnl").to_numpy(), ref.column("pnl").to_numpy(),
                               rtol=1e-9, atol=1e-6)
    first = bk.ScenarioPnL(spec, by=["desk", "underlying"], backend="numba")
    second = bk.ScenarioPnL(spec, by=["desk", "underlying"], backend="numba")
    for i, batch in enumerate(table.to_batches(max_chunksize=400)):
        (first if i % 2 else second).add_batch(batch)
    first.merge(second)
    merged = first.result()
    assert merged.column("scenario").equals(whole.column("scenario"))
    np.testing.assert_allclose(merged.column("pnl").to_numpy(), whole.column("pnl").to_numpy(),
                               rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="another grid"):
        first.merge(bk.ScenarioPnL("spot=+1%", by=["desk", "underlying"]))
    empty = bk.ScenarioPnL(spec, by=["desk"]).result()
    assert empty.num_rows == 0 and "pnl" in empty.column_names


def test_scenarios_do_not_copy_the_book_per_point() -> None:
    """Memory for a 2-point and a 200-point grid is the same: one scratch array
    per shocked column and one output buffer, reused from point to point."""
    table = make_table(20_000, seed=9, bad=False)
    peaks = []
    for spec in ("spot=-1%:1%:2", "spot=-1%:1%:20,vol=-1:1:10"):
        pnl = bk.ScenarioPnL(spec, backend="numpy")
        tracemalloc.start()
        pnl.add(table)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    book_bytes = 20_000 * 8
    assert peaks[1] < peaks[0] + 20 * book_bytes  # 100x the points, not 100x the memory


def test_docstring_examples() -> None:
    result = doctest.testmod(bk, verbose=False)
    assert result.attempted >= 10
    assert result.failed == 0
