"""POST /v1/implied-vol: JSON and Arrow, through the micro-batcher, never mixed
with pricing in one kernel call."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import api.main
import gpu_pricer as gp
from api.batcher import DeadlineExceeded, MicroBatcher, QueueFull
from gpu_pricer import buffers

from .conftest import service

ARROW = "application/vnd.apache.arrow.stream"
E = gp.ErrorCode


@pytest.fixture
def client() -> Iterator[TestClient]:
    # one app object: a service per test, since the other tests start their own
    with service() as c:
        yield c


class Recorder:
    """The library's price and implied_vol (numba backend) behind one recorder:
    every call's kind, size and backend; can be held, and can fail like a device."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on: set[str] = set()

    def _call(self, kind: str, kw: dict[str, Any]) -> Mapping[str, Any]:
        self.release.wait(5)
        # a price call carries sigma, an implied-vol call carries price: never both
        assert ("sigma" in kw) is (kind == "price") and ("price" in kw) is (kind != "price")
        self.calls.append((kind, len(kw["strike"]), kw["backend"]))
        if kw["backend"] in self.fail_on:
            raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED")
        kw["backend"] = "numba"
        return gp.price(**kw) if kind == "price" else gp.implied_vol(**kw)

    def price(self, **kw: Any) -> Mapping[str, Any]:
        return self._call("price", kw)

    def implied_vol(self, **kw: Any) -> Mapping[str, Any]:
        return self._call("implied_vol", kw)

    def kinds(self) -> set[str]:
        return {k for k, _, _ in self.calls}


@contextmanager
def recorded_service(rec: Recorder, backend: str | None = None,
                     **env: str) -> Iterator[TestClient]:
    """A service whose batcher calls `rec` (and starts on `backend` if given)."""
    real = api.main.MicroBatcher
    inject: dict[str, Any] = {"price": rec.price, "implied_vol": rec.implied_vol}
    if backend is not None:
        inject["backend"] = backend
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api.main, "MicroBatcher", lambda **kw: real(**{**kw, **inject}))
        with service(**env) as c:
            yield c


def _priced_book(n: int, seed: int) -> list[dict[str, Any]]:
    """Well-conditioned bsm options with their sigma (to be priced, then solved)."""
    rng = np.random.default_rng(seed)
    return [{"option_type": "call" if rng.random() < 0.5 else "put",
             "spot": float(rng.uniform(80, 120)), "strike": float(rng.uniform(80, 120)),
             "t": float(rng.uniform(0.25, 2)), "r": float(rng.uniform(0, 0.05)),
             "q": float(rng.uniform(0, 0.03)), "sigma": float(rng.uniform(0.1, 0.5)),
             "id": f"s{seed}-{i}"} for i in range(n)]


def _as_iv_rows(options: list[dict[str, Any]], prices: list[float]) -> list[dict[str, Any]]:
    rows = []
    for o, p in zip(options, prices, strict=True):
        row = {k: v for k, v in o.items() if k != "sigma"}
        row["price"] = p
        rows.append(row)
    return rows


def _priced_labels(exposition: str) -> list[dict[str, str]]:
    """The label sets of gpu_pricer_options_priced_total in a /metrics text."""
    return [s.labels for f in text_string_to_metric_families(exposition) for s in f.samples
            if s.name == "gpu_pricer_options_priced_total"]


def _solve(client: TestClient, options: list[dict[str, Any]], model: str = "bsm",
           **kw: Any) -> Any:
    return client.post("/v1/implied-vol", json={"model": model, "options": options}, **kw)


# --- JSON --------------------------------------------------------------------------------


def test_json_round_trip_through_price_with_ids(client: TestClient) -> None:
    options = _priced_book(40, seed=1)
    r = client.post("/v1/price", json={"options": options})
    assert r.status_code == 200
    prices = [row["price"] for row in r.json()["results"]]
    r = _solve(client, _as_iv_rows(options, prices))
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "bsm" and body["backend"] == "numba"
    res = body["results"]
    assert [row["id"] for row in res] == [o["id"] for o in options]
    for o, row in zip(options, res, strict=True):
        assert row["error"] is None
        assert abs(row["implied_vol"] - o["sigma"]) <= 1e-12, (o, row)
    # the same numbers as the library, and no id key dropped when none is given
    ref = gp.implied_vol(price=np.array(prices), option_type=[o["option_type"] for o in options],
                         spot=[o["spot"] for o in options], strike=[o["strike"] for o in options],
                         t=[o["t"] for o in options], r=[o["r"] for o in options],
                         q=[o["q"] for o in options], backend="numba")
    assert [row["implied_vol"] for row in res] == ref["implied_vol"].tolist()
    anonymous = [{k: v for k, v in row.items() if k != "id"}
                 for row in _as_iv_rows(options[:2], prices[:2])]
    assert [row["id"] for row in _solve(client, anonymous).json()["results"]] == [None, None]


def test_per_row_errors_leave_the_other_rows_solved(client: TestClient) -> None:
    good = {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "r": 0.03}
    ref = gp.price(option_type="call", spot=100.0, strike=95.0, t=0.5, r=0.03, sigma=0.25)
    good_price = float(ref["price"])
    intrinsic = 100 - 95 * math.exp(-0.03 * 0.5)
    options = [
        {**good, "price": good_price, "id": "ok-1"},
        {**good, "price": intrinsic - 0.5, "id": "below"},
        {**good, "price": 0.0, "id": "zero"},
        {**good, "price": -1.0, "id": "negative"},
        {**good, "price": 100.0, "id": "at-bound"},  # a call is worth less than the spot
        {**good, "price": 150.0, "id": "above"},
        {**good, "t": -1.0, "price": good_price, "id": "bad-t"},
        {**good, "price": good_price, "id": "ok-2"},
    ]
    r = _solve(client, options)
    assert r.status_code == 200
    res = {row["id"]: row for row in r.json()["results"]}
    for key in ("ok-1", "ok-2"):
        assert res[key]["error"] is None
        assert abs(res[key]["implied_vol"] - 0.25) <= 1e-12
    expect = {"below": E.PRICE_BELOW_INTRINSIC, "zero": E.NON_POSITIVE_PRICE,
              "negative": E.NON_POSITIVE_PRICE, "at-bound": E.PRICE_ABOVE_UPPER_BOUND,
              "above": E.PRICE_ABOVE_UPPER_BOUND, "bad-t": E.NEGATIVE_TIME}
    for key, code in expect.items():
        assert res[key]["implied_vol"] is None, key
        assert res[key]["error"] == {"code": int(code), "reason": gp.ERRORS[code]}, key


def test_strict_rejects_bad_rows(client: TestClient) -> None:
    r = client.post("/v1/implied-vol", json={"strict": True, "options": [
        {"option_type": "put", "spot": 100, "strike": 95, "t": 1, "price": 2.0},
        {"option_type": "put", "spot": 100, "strike": 95, "t": 1, "price": -2.0}]})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "options", 1],
                                   "msg": gp.ERRORS[E.NON_POSITIVE_PRICE]}]


def test_malformed_rows_name_field_and_row(client: TestClient) -> None:
    ok = {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "price": 8.0}
    r = _solve(client, [ok, {k: v for k, v in ok.items() if k != "price"},
                        {**ok, "price": "cheap"}])
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert ["body", "options", 1, "price"] in locs
    assert ["body", "options", 2, "price"] in locs
    r = _solve(client, [ok, {**ok, "sigma": 0.2}])  # a pricing row is not an implied-vol row
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "options", 1, "sigma"]
    r = _solve(client, [ok], model="black76")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "options", 0, "forward"]
    r = _solve(client, [{**ok, "q": 0.01, "forward": 100, "spot": None}], model="bachelier")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "options", 0, "q"]
    r = client.post("/v1/implied-vol", json={"model": "bsm", "greeks": ["delta"],
                                             "options": [ok]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "greeks"]
    r = client.post("/v1/implied-vol", content=b'{"options": [', headers={
        "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    assert _solve(client, []).json()["results"] == []


def test_bachelier_is_the_normal_vol(client: TestClient) -> None:
    # at the money the Bachelier price is sigma_n * sqrt(t / (2 pi)), discounted
    t, r_, sigma_n = 2.0, 0.01, 7.5
    atm = sigma_n * math.sqrt(t / (2 * math.pi)) * math.exp(-r_ * t)
    options = [{"option_type": "call", "forward": 100, "strike": 100, "t": t, "r": r_,
                "price": atm, "id": "atm"}]
    # and rate-like forwards and strikes, priced by /v1/price, solved back
    book = [{"option_type": ot, "forward": 0.02, "strike": k, "t": 1.5, "sigma": 0.008}
            for ot in ("call", "put") for k in (-0.01, 0.0, 0.02, 0.05)]
    priced = client.post("/v1/price", json={"model": "bachelier", "options": book}).json()
    options += _as_iv_rows(book, [row["price"] for row in priced["results"]])
    r = _solve(client, options, model="bachelier")
    assert r.status_code == 200
    res = r.json()["results"]
    assert res[0]["implied_vol"] == pytest.approx(sigma_n, rel=1e-13)
    for row in res[1:]:
        assert row["error"] is None and abs(row["implied_vol"] - 0.008) <= 1e-12


def test_openapi_states_units_and_both_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    op = schema["paths"]["/v1/implied-vol"]["post"]
    assert set(op["requestBody"]["content"]) == {"application/json", ARROW}
    assert "/v1/implied-vol/arrow-stream" not in schema["paths"]
    comps = schema["components"]["schemas"]
    price = comps["ImpliedVolOptionIn"]["properties"]["price"]["description"]
    assert "present value" in price and "underlying's price units" in price
    assert "years" in comps["ImpliedVolOptionIn"]["properties"]["t"]["description"]
    vol = comps["ImpliedVolResult"]["properties"]["implied_vol"]["description"]
    assert "sqrt(year)" in vol and "lognormal" in vol and "normal" in vol
    assert "bachelier" in vol
    arrow = op["requestBody"]["content"][ARROW]["schema"]["description"]
    assert "price" in arrow and "implied_vol" in arrow and "sqrt(year)" in arrow


def test_metrics_count_implied_vol_by_kind(client: TestClient) -> None:
    _solve(client, [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "price": 8.0}])
    text = client.get("/metrics").text
    assert {"backend": "numba", "model": "bsm", "kind": "implied_vol"} in _priced_labels(text)
    assert 'endpoint="/v1/implied-vol",method="POST",status="200"' in text


# --- the micro-batcher -------------------------------------------------------------------


def test_concurrent_requests_coalesce_and_get_their_own_rows() -> None:
    rec = Recorder()
    books = [_priced_book(3 + 2 * i, seed=10 + i) for i in range(8)]
    with recorded_service(rec, max_delay_us="200000") as c:
        prices = [[row["price"] for row in c.post("/v1/price", json={"options": b}).json()[
            "results"]] for b in books]
        rec.calls.clear()

        def call(i: int) -> Any:
            return _solve(c, _as_iv_rows(books[i], prices[i])).json()["results"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(8)))
    assert rec.kinds() == {"implied_vol"}
    assert len(rec.calls) < 8  # coalesced into fewer kernel calls than requests
    assert sum(n for _, n, _ in rec.calls) == sum(len(b) for b in books)
    for book, res in zip(books, answers, strict=True):
        assert [row["id"] for row in res] == [o["id"] for o in book]
        for o, row in zip(book, res, strict=True):
            assert abs(row["implied_vol"] - o["sigma"]) <= 1e-12


def test_price_and_implied_vol_together_are_never_mixed() -> None:
    rec = Recorder()
    books = [_priced_book(4 + i, seed=30 + i) for i in range(10)]
    refs = [gp.price(option_type=[o["option_type"] for o in b], spot=[o["spot"] for o in b],
                     strike=[o["strike"] for o in b], t=[o["t"] for o in b],
                     r=[o["r"] for o in b], q=[o["q"] for o in b],
                     sigma=[o["sigma"] for o in b], greeks=["delta"], backend="numba")
            for b in books]
    with recorded_service(rec, max_delay_us="200000") as c:

        def call(i: int) -> tuple[str, Any]:
            b = books[i]
            if i % 2:
                rows = _as_iv_rows(b, refs[i]["price"].tolist())
                return "iv", _solve(c, rows).json()["results"]
            return "price", c.post("/v1/price", json={"greeks": ["delta"],
                                                      "options": b}).json()["results"]

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(call, range(10)))
        text = c.get("/metrics").text
    # one library call per batch, each of one kind; both kinds coalesced
    assert rec.kinds() == {"price", "implied_vol"}
    assert len(rec.calls) < 10
    for kind in ("price", "implied_vol"):
        assert sum(n for k, n, _ in rec.calls if k == kind) == sum(
            len(b) for i, b in enumerate(books) if (i % 2 == 1) == (kind == "implied_vol"))
    for i, (kind, res) in enumerate(answers):
        assert [row["id"] for row in res] == [o["id"] for o in books[i]]
        if kind == "iv":
            assert all(set(row) == {"id", "implied_vol", "error"} for row in res)
            got = np.array([row["implied_vol"] for row in res])
            np.testing.assert_allclose(got, [o["sigma"] for o in books[i]], rtol=0, atol=1e-12)
        else:
            assert [row["price"] for row in res] == refs[i]["price"].tolist()
            assert [row["delta"] for row in res] == refs[i]["delta"].tolist()
    assert {labels["kind"] for labels in _priced_labels(text)} == {"price", "implied_vol"}


def test_large_request_is_solved_in_slices_in_order() -> None:
    rec = Recorder()
    book = _priced_book(300, seed=50)
    prices = gp.price(option_type=[o["option_type"] for o in book],
                      spot=[o["spot"] for o in book], strike=[o["strike"] for o in book],
                      t=[o["t"] for o in book], r=[o["r"] for o in book],
                      q=[o["q"] for o in book], sigma=[o["sigma"] for o in book])["price"]
    with recorded_service(rec, max_batch_options="64", max_delay_us="0") as c:
        res = _solve(c, _as_iv_rows(book, prices.tolist())).json()["results"]
    assert [n for _, n, _ in rec.calls] == [64, 64, 64, 64, 44]
    assert [row["id"] for row in res] == [o["id"] for o in book]
    np.testing.assert_allclose([row["implied_vol"] for row in res], [o["sigma"] for o in book],
                               rtol=0, atol=1e-12)


def test_deadline_is_a_504_and_the_held_request_is_answered() -> None:
    rec = Recorder()
    row = {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "price": 8.0}
    with recorded_service(rec, max_delay_us="0") as c:
        _solve(c, [row])  # compiled before the clock matters
        rec.release.clear()  # hold the next batch in the worker
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_solve, c, [row])
            time.sleep(0.2)
            late = _solve(c, [row], headers={"X-Deadline-Ms": "50"})
            rec.release.set()
            assert first.result().status_code == 200
    assert late.status_code == 504
    assert late.json() == {"detail": "not solved within 50 ms"}


def test_device_fault_falls_back_to_the_cpu() -> None:
    rec = Recorder()
    rec.fail_on = {"numba-cuda"}
    options = _priced_book(5, seed=60)
    prices = gp.price(option_type=[o["option_type"] for o in options],
                      spot=[o["spot"] for o in options], strike=[o["strike"] for o in options],
                      t=[o["t"] for o in options], r=[o["r"] for o in options],
                      q=[o["q"] for o in options], sigma=[o["sigma"] for o in options])["price"]
    with recorded_service(rec, backend="numba-cuda") as c:
        assert c.get("/v1/info").json()["backend"] == "numba-cuda"
        r = _solve(c, _as_iv_rows(options, prices.tolist()))
        assert r.status_code == 200  # no request failed
        assert r.json()["backend"] == "numba"
        for o, row in zip(options, r.json()["results"], strict=True):
            assert abs(row["implied_vol"] - o["sigma"]) <= 1e-12
        assert c.get("/v1/info").json()["backend"] == "numba"  # and it stays there
        assert _solve(c, _as_iv_rows(options, prices.tolist())).status_code == 200
    assert [b for _, _, b in rec.calls] == ["numba-cuda", "numba", "numba"]


def test_batcher_keeps_kinds_in_separate_queues() -> None:
    rec = Recorder()
    cols = {"option_type": np.array(["call", "put"]), "spot": np.array([100.0, 100.0]),
            "strike": np.array([95.0, 105.0]), "t": np.array([0.5, 0.5]),
            "r": np.zeros(2), "q": np.zeros(2)}

    async def main() -> None:
        b = MicroBatcher(max_batch_options=100, max_delay_s=0.05, max_queue_options=4,
                         price=rec.price, implied_vol=rec.implied_vol)
        await b.start()
        priced, solved = await asyncio.gather(
            b.submit(model="bsm", greeks=("vega",), columns={**cols, "sigma": np.full(2, 0.2)},
                     n=2, timeout_s=5),
            b.submit(kind="implied_vol", model="bsm",
                     columns={**cols, "price": np.array([8.0, 9.0])}, n=2, timeout_s=5))
        assert list(priced) == ["price", "vega", "error"]
        assert list(solved) == ["implied_vol", "error"]
        back = await b.submit(kind="implied_vol", model="bsm",
                              columns={**cols, "price": priced["price"]}, n=2, timeout_s=5)
        np.testing.assert_allclose(back["implied_vol"], 0.2, rtol=1e-13)
        with pytest.raises(ValueError, match="no Greeks"):
            await b.submit(kind="implied_vol", model="bsm", greeks=("delta",), columns=cols,
                           n=2, timeout_s=5)
        with pytest.raises(ValueError, match="kind"):
            await b.submit(kind="greeks", model="bsm", columns=cols, n=2, timeout_s=5)
        # the queue limit and deadlines hold per kind as they do for pricing
        rec.release.clear()
        held = asyncio.create_task(b.submit(kind="implied_vol", model="bsm", columns={
            **cols, "price": np.array([8.0, 9.0])}, n=2, timeout_s=5))
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(b.submit(kind="implied_vol", model="bsm", columns={
            **cols, "price": np.array([8.0, 9.0])}, n=2, timeout_s=0.1))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):  # 2 queued + 3 > 4
            await b.submit(kind="implied_vol", model="bsm", columns={
                k: np.resize(v, 3) for k, v in {**cols, "price": np.full(2, 8.0)}.items()},
                n=3, timeout_s=5)
        with pytest.raises(DeadlineExceeded):
            await waiting
        rec.release.set()
        assert (await held)["implied_vol"].shape == (2,)
        await b.stop()

    asyncio.run(main())
    assert ("price", 2, "auto") in rec.calls and ("implied_vol", 2, "auto") in rec.calls


def test_the_oldest_due_queue_goes_first() -> None:
    """Two kinds due at once: the one waiting longer is served first, whichever
    queue was made first (so a stream of one kind cannot starve the other)."""
    rec = Recorder()
    cols = {"option_type": np.array(["call"]), "spot": np.array([100.0]),
            "strike": np.array([95.0]), "t": np.array([0.5])}
    price_cols = {**cols, "sigma": np.array([0.2])}
    iv_cols = {**cols, "price": np.array([8.0])}

    async def main() -> None:
        b = MicroBatcher(max_batch_options=100, max_delay_s=0.0, max_queue_options=100,
                         price=rec.price, implied_vol=rec.implied_vol)
        await b.start()
        await b.submit(model="bsm", columns=price_cols, n=1, timeout_s=5)  # its queue first
        rec.release.clear()
        held = asyncio.create_task(b.submit(model="bsm", columns=price_cols, n=1, timeout_s=5))
        await asyncio.sleep(0.1)  # in the worker
        solved = asyncio.create_task(b.submit(kind="implied_vol", model="bsm", columns=iv_cols,
                                              n=1, timeout_s=5))
        await asyncio.sleep(0.01)
        priced = asyncio.create_task(b.submit(model="bsm", columns=price_cols, n=1,
                                              timeout_s=5))
        await asyncio.sleep(0.01)
        rec.release.set()
        await asyncio.gather(held, solved, priced)
        await b.stop()

    asyncio.run(main())
    assert [k for k, _, _ in rec.calls] == ["price", "price", "implied_vol", "price"]


def test_warm_up_compiles_implied_vol_for_every_model(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(gp, "price", lambda **kw: calls.append(("price", kw["model"])))
    monkeypatch.setattr(gp, "implied_vol",
                        lambda **kw: calls.append(("implied_vol", kw["model"])))
    api.main._warm_up()
    assert {m for k, m in calls if k == "implied_vol"} == set(gp.MODELS)
    assert {m for k, m in calls if k == "price"} == set(gp.MODELS)


def test_warm_up_prices_one_batch_at_full_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """One full-size batch, and a body of its answer's size mapped in the
    buffer pool, free for the first bulk request (the answer is sent from
    the outputs' own memory, which the library's pool maps)."""
    sizes: list[tuple[str, int, tuple[str, ...]]] = []

    def price(**kw: Any) -> dict[str, Any]:
        n = np.size(kw["strike"])
        sizes.append((kw["model"], n, tuple(kw["greeks"])))
        out = {name: np.ones(n) for name in ("price", *kw["greeks"]) if name != "all"}
        return {**out, "error": np.zeros(n, np.int8)}

    n = 100_000  # an answer of 4.9 MB: pooled
    monkeypatch.setattr(gp, "price", price)
    monkeypatch.setattr(gp, "implied_vol", lambda **kw: None)
    buffers.OUTPUTS.clear()
    api.main._warm_up(n)
    assert sizes[-1] == ("bsm", n, api.main.WARM_UP_GREEKS)
    assert all(k <= 2 for _, k, _ in sizes[:-1])  # the compile calls are small
    answer = n * 8 * (1 + len(api.main.WARM_UP_GREEKS)) + n
    assert sum(size >= answer for size in buffers.OUTPUTS.free()) == 1


# --- Arrow -------------------------------------------------------------------------------


def _stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=700)  # several record batches
    return bytes(sink.getvalue())


def _read(content: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(content)).read_all()


def test_arrow_round_trip_in_order_with_ids_and_null_rows(client: TestClient) -> None:
    n = 20_000
    rng = np.random.default_rng(7)
    types = rng.choice(np.array(["call", "PUT", "c", "p", "bogus"]), n)
    spot = rng.uniform(80, 120, n)
    strike = rng.uniform(80, 120, n)
    t = rng.uniform(0.25, 2, n)
    sigma = rng.uniform(0.1, 0.5, n)
    ok_types = np.where(types == "bogus", "call", types)
    priced = gp.price(option_type=ok_types, spot=spot, strike=strike, t=t, sigma=sigma, r=0.02,
                      q=0.01, greeks=["vega"])
    price = priced["price"].copy()
    price[::997] = -1.0
    spot_null = np.arange(n) % 1000 == 3
    price_null = np.arange(n) % 1000 == 5
    table = pa.table({
        "id": pa.array([f"pos-{i}" for i in range(n)]),
        "option_type": pa.array(types),
        "spot": pa.array(spot, mask=spot_null),
        "strike": strike,
        "t": t,
        "price": pa.array(price, mask=price_null),
        "r": np.full(n, 0.02),
        "q": np.full(n, 0.01),
    })
    r = client.post("/v1/implied-vol?model=bsm", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"] == ARROW
    res = _read(r.content)
    assert res.column_names == ["id", "implied_vol", "error"]
    assert res.column("id").to_pylist() == [f"pos-{i}" for i in range(n)]
    ref = gp.implied_vol(price=np.where(price_null, np.nan, price),
                         option_type=np.where(types == "bogus", "x", types),
                         spot=np.where(spot_null, np.nan, spot), strike=strike, t=t, r=0.02,
                         q=0.01, backend="numba")
    vol = res.column("implied_vol").to_numpy()
    err = res.column("error").to_numpy()
    np.testing.assert_array_equal(vol, ref["implied_vol"])
    np.testing.assert_array_equal(err, ref["error"])
    assert (err[types == "bogus"] == E.INVALID_OPTION_TYPE).all()
    nulls = (spot_null | price_null) & (types != "bogus")
    assert (err[nulls] == E.NON_FINITE_INPUT).all()  # a null is a row error
    negative = np.zeros(n, dtype=bool)
    negative[::997] = True
    assert (err[negative & ~nulls & (types != "bogus")] == E.NON_POSITIVE_PRICE).all()
    ok = err == 0
    assert ok.sum() > 0.7 * n
    # sigma comes back as well as the price pins it: a few ulps of the price over vega
    # (far out of the money at low vol that is more than 1e-12)
    bound = 1e-12 + 8 * np.finfo(float).eps * priced["price"] / priced["vega"]
    assert (np.abs(vol - sigma)[ok] <= bound[ok]).all()


def test_arrow_forward_models_and_errors_name_the_column(client: TestClient) -> None:
    t, sigma_n = 1.0, 0.01
    atm = sigma_n * math.sqrt(t / (2 * math.pi))
    table = pa.table({"option_type": pa.array([True, False]), "forward": [0.01, 0.01],
                      "strike": [0.01, 0.01], "t": [t, t], "price": [atm, atm]})
    r = client.post("/v1/implied-vol?model=bachelier", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200
    res = _read(r.content)
    assert res.column_names == ["implied_vol", "error"]
    np.testing.assert_allclose(res.column("implied_vol").to_numpy(), sigma_n, rtol=1e-13)
    # a pricing table (sigma, no price) names the missing column
    table = pa.table({"option_type": ["call"], "spot": [100.0], "strike": [95.0], "t": [1.0],
                      "sigma": [0.2]})
    r = client.post("/v1/implied-vol", content=_stream(table), headers={"Content-Type": ARROW})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "price"], "msg": "column missing"}]
    table = pa.table({"option_type": ["call"], "spot": [100.0], "strike": [95.0], "t": [1.0],
                      "price": ["8.0"]})
    r = client.post("/v1/implied-vol", content=_stream(table), headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "price"]
    r = client.post("/v1/implied-vol?model=sabr", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "model"]
    r = client.post("/v1/implied-vol", content=b"\x00garbage\xff" * 10,
                    headers={"Content-Type": ARROW})
    assert r.status_code == 400 and "not an Arrow IPC stream" in r.text
    assert "Traceback" not in r.text
    empty = pa.table({"option_type": pa.array([], pa.string()), "spot": pa.array([], pa.float64()),
                      "strike": pa.array([], pa.float64()), "t": pa.array([], pa.float64()),
                      "price": pa.array([], pa.float64())})
    r = client.post("/v1/implied-vol", content=_stream(empty), headers={"Content-Type": ARROW})
    assert r.status_code == 200
    assert _read(r.content).column_names == ["implied_vol", "error"]
    assert _read(r.content).num_rows == 0
