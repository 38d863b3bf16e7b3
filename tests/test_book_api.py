"""POST /v1/book/revalue: an Arrow book in; the priced book, its aggregate or
its scenario PnL out, every pricing pass through the micro-batcher."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from gpu_pricer import book as bk

from .conftest import service
from .test_book import GREEKS, make_table, same

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with service() as c:
        yield c


def body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=500)
    return bytes(sink.getvalue())


def post(client: TestClient, table: pa.Table, **params: str) -> pa.Table:
    r = client.post("/v1/book/revalue", params=params, content=body(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == ARROW
    return pa.ipc.open_stream(pa.py_buffer(r.content)).read_all()


def test_priced_book_row_for_row(client: TestClient) -> None:
    table = make_table(3000, seed=21)
    got = post(client, table, greeks=",".join(GREEKS))
    ref = bk.price_book(table, greeks=GREEKS)
    assert got.column_names == ref.column_names
    for name in got.column_names:
        assert same(got.column(name), ref.column(name)), name
    batcher = client.app.state.batcher  # type: ignore[attr-defined]
    assert batcher.stats.batches >= 1


def test_aggregate_by_desk(client: TestClient) -> None:
    table = make_table(2000, seed=22)
    got = post(client, table, greeks="delta,vega", output="aggregate", aggregate_by="desk")
    ref = bk.aggregate(bk.price_book(table, greeks=["delta", "vega"]), by=["desk"])
    assert got.column_names == ref.column_names
    for name in ("desk", "rows", "errors"):
        assert got.column(name).to_pylist() == ref.column(name).to_pylist()
    for name in ("value", "delta", "vega"):
        np.testing.assert_allclose(got.column(name).to_numpy(), ref.column(name).to_numpy(),
                                   rtol=1e-12, atol=1e-9)


def test_scenarios_through_the_batcher(client: TestClient) -> None:
    table = make_table(1500, seed=23)
    batcher = client.app.state.batcher  # type: ignore[attr-defined]
    before = batcher.stats.options
    spec = "spot=-10%:+10%:3,vol=-5:+5:3"
    got = post(client, table, output="scenarios", scenarios=spec, aggregate_by="desk,underlying")
    assert batcher.stats.options - before == 10 * table.num_rows  # the base and 9 points
    ref = bk.scenario_pnl(table, spec, by=["desk", "underlying"])
    assert got.column_names == ref.column_names
    assert got.column("scenario").equals(ref.column("scenario"))
    assert got.column("errors").equals(ref.column("errors"))
    np.testing.assert_array_equal(got.column("pnl").to_numpy(), ref.column("pnl").to_numpy())
    zero = [p for p, s, v in zip(got.column("pnl").to_pylist(),
                                 got.column("spot_pct").to_pylist(),
                                 got.column("vol_points").to_pylist(), strict=True)
            if s == 0.0 and v == 0.0]
    assert zero and all(p == 0.0 for p in zero)


@pytest.mark.parametrize(("params", "loc", "message"), [
    ({"output": "scenarios", "scenarios": "spot=-200%"}, ["query", "scenarios"], "above -100%"),
    ({"output": "scenarios"}, ["query", "scenarios"], "empty scenario"),
    ({"output": "everything"}, ["query", "output"], "output must be one of"),
    ({"output": "aggregate", "aggregate_by": "region"}, ["query", "aggregate_by"], "region"),
    ({"greeks": "omega"}, ["query", "greeks"], "unknown Greek"),
    ({"model": "heston"}, ["query", "model"], "model must be one of"),
])
def test_bad_queries_are_422_naming_the_parameter(client: TestClient, params: dict[str, str],
                                                  loc: list[str], message: str) -> None:
    r = client.post("/v1/book/revalue", params=params, content=body(make_table(20)),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == loc and message in detail["msg"]


def test_bad_bodies(client: TestClient) -> None:
    r = client.post("/v1/book/revalue", json={"options": []})
    assert r.status_code == 415
    r = client.post("/v1/book/revalue", content=b"garbage", headers={"Content-Type": ARROW})
    assert r.status_code == 400
    r = client.post("/v1/book/revalue", content=body(make_table(20).drop_columns(["strike"])),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "strike"]
    empty = post(client, make_table(20).slice(0, 0), greeks="delta")
    assert empty.num_rows == 0 and empty.column_names[-3:] == ["price", "delta", "error"]
