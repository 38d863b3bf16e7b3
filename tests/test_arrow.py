"""The Arrow IPC form of POST /v1/price."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

import gpu_pricer as gp
from api import arrow_io

from .conftest import service

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with service() as c:
        yield c


def _stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=700)  # several record batches
    return bytes(sink.getvalue())


def _read(content: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(content)).read_all()


def test_arrow_round_trip_in_order_with_ids_and_bad_rows(client: TestClient) -> None:
    n = 200_000
    rng = np.random.default_rng(5)
    types = rng.choice(np.array(["call", "PUT", "c", "p", "bogus"]), n)
    sigma = rng.uniform(0.1, 0.5, n)
    sigma[::1000] = -1.0
    spot = pa.array(rng.uniform(50, 150, n), mask=np.arange(n) % 5000 == 3)  # nulls
    table = pa.table({
        "id": pa.array([f"pos-{i}" for i in range(n)]),
        "option_type": pa.array(types),
        "spot": spot,
        "strike": rng.uniform(50, 150, n),
        "t": rng.uniform(0.1, 2, n),
        "sigma": sigma,
        "r": np.full(n, 0.02),
    })
    r = client.post("/v1/price?greeks=delta,vega", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"] == ARROW
    res = _read(r.content)
    assert res.column_names == ["id", "price", "delta", "vega", "error"]
    assert res.column("id").to_pylist()[:3] == ["pos-0", "pos-1", "pos-2"]
    spot_np = spot.to_numpy(zero_copy_only=False)
    ref = gp.price(option_type=np.where(types == "bogus", "x", types), spot=spot_np,
                   strike=table.column("strike").to_numpy(), t=table.column("t").to_numpy(),
                   sigma=sigma, r=0.02, greeks=["delta", "vega"], backend="numba")
    for name in ("price", "delta", "vega", "error"):
        np.testing.assert_array_equal(res.column(name).to_numpy(), ref[name])
    err = res.column("error").to_numpy()
    assert (err[types == "bogus"] == gp.ErrorCode.INVALID_OPTION_TYPE).all()
    null_spot = (np.arange(n) % 5000 == 3) & (types != "bogus")
    assert (err[null_spot] == gp.ErrorCode.NON_FINITE_INPUT).all()  # a null is a row error
    assert (err == 0).sum() > 0.7 * n


def test_arrow_errors_name_the_column(client: TestClient) -> None:
    table = pa.table({"option_type": ["call"], "spot": [100.0], "t": [1.0], "sigma": [0.2]})
    r = client.post("/v1/price", content=_stream(table), headers={"Content-Type": ARROW})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "strike"], "msg": "column missing"}]
    table = pa.table({"option_type": ["call"], "spot": ["100"], "strike": [1.0], "t": [1.0],
                      "sigma": [0.2]})
    r = client.post("/v1/price", content=_stream(table), headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "spot"]
    r = client.post("/v1/price?greeks=gamma,rhoo", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422 and "rhoo" in r.text
    r = client.post("/v1/price", content=b"\x00garbage\xff" * 10,
                    headers={"Content-Type": ARROW})
    assert r.status_code == 400 and "not an Arrow IPC stream" in r.text
    assert "Traceback" not in r.text


def test_arrow_forward_model_and_empty_table(client: TestClient) -> None:
    table = pa.table({"option_type": pa.array([True, False]), "forward": [0.01, -0.005],
                      "strike": [0.0, 0.0], "t": [1.0, 1.0], "sigma": [0.01, 0.01]})
    r = client.post("/v1/price?model=bachelier&greeks=all", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200
    res = _read(r.content)
    assert "dividend_rho" not in res.column_names
    assert (res.column("price").to_numpy() > 0).all()
    empty = pa.table({"option_type": pa.array([], pa.string()), "spot": pa.array([], pa.float64()),
                      "strike": pa.array([], pa.float64()), "t": pa.array([], pa.float64()),
                      "sigma": pa.array([], pa.float64())})
    r = client.post("/v1/price", content=_stream(empty), headers={"Content-Type": ARROW})
    assert r.status_code == 200 and _read(r.content).num_rows == 0


def test_openapi_documents_both_bodies(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    op = paths["/v1/price"]["post"]
    assert set(op["requestBody"]["content"]) == {"application/json", ARROW}
    assert [p["name"] for p in op["parameters"]] == ["model", "greeks", "strict",
                                                     "x-deadline-ms"]
    iv = paths["/v1/implied-vol"]["post"]
    assert [p["name"] for p in iv["parameters"]] == ["model", "strict", "x-deadline-ms"]


def test_arrow_option_type_in_every_string_form(client: TestClient) -> None:
    """option_type as string, large_string, string_view or a dictionary (a
    pandas categorical's Arrow form) prices as the booleans it stands for,
    an unknown word or a null marked in its row."""
    n = 3000
    rng = np.random.default_rng(8)
    words = rng.choice(np.array(["call", "Put", "C", "p", "bogus"]), n)
    strike = rng.uniform(60.0, 140.0, n)
    mask = np.arange(n) % 700 == 5
    lower = np.char.lower(words)
    want = gp.price(option_type=np.where(mask, "?", words), spot=100.0, strike=strike, t=0.5,
                    sigma=0.3, greeks=["delta"])
    assert ((lower == "bogus") | mask).sum() == (want["error"] != 0).sum() > 0
    plain = pa.array(words, mask=mask)
    for column in (plain, plain.cast(pa.large_string()), plain.cast(pa.string_view()),
                   plain.dictionary_encode()):
        table = pa.table({"option_type": column, "spot": np.full(n, 100.0), "strike": strike,
                          "t": np.full(n, 0.5), "sigma": np.full(n, 0.3)})
        r = client.post("/v1/price?greeks=delta", content=_stream(table),
                        headers={"Content-Type": ARROW})
        assert r.status_code == 200, (column.type, r.text)
        got = _read(r.content)
        for name in ("price", "delta", "error"):
            np.testing.assert_array_equal(got.column(name).to_numpy(), want[name],
                                          err_msg=f"{column.type} {name}")


def test_arrow_strict_names_the_bad_rows(client: TestClient) -> None:
    """?strict=true: a 422 naming the bad rows by their index in the stream
    (across record batches) and why; without it, per-row errors and the
    neighbours priced; a non-boolean strict is a 422 naming it."""
    n = 2000
    sigma = np.full(n, 0.2)
    sigma[[5, 1500]] = -1.0
    table = pa.table({"option_type": pa.array(np.arange(n) % 2 == 0), "spot": np.full(n, 100.0),
                      "strike": np.linspace(80.0, 120.0, n), "t": np.full(n, 0.5),
                      "sigma": sigma})
    r = client.post("/v1/price?strict=true&greeks=delta", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "rows", 5], "msg": "sigma < 0"},
                                  {"loc": ["body", "rows", 1500], "msg": "sigma < 0"}]
    r = client.post("/v1/price?greeks=delta", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200
    assert np.flatnonzero(_read(r.content).column("error").to_numpy()).tolist() == [5, 1500]
    r = client.post("/v1/price?strict=perhaps", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "strict"]
    good = table.slice(0, 5)
    r = client.post("/v1/price?strict=true", content=_stream(good),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200 and not _read(r.content).column("error").to_numpy().any()
    iv = pa.table({"option_type": pa.array([True, True]), "spot": [100.0, 100.0],
                   "strike": [95.0, 95.0], "t": [0.5, 0.5], "price": [10.0, 200.0]})
    r = client.post("/v1/implied-vol?strict=true", content=_stream(iv),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rows", 1]
    r = client.post("/v1/implied-vol?greeks=delta", content=_stream(iv),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "greeks"]


def _book_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    spot = rng.uniform(50.0, 150.0, n)
    sigma = rng.uniform(0.05, 0.6, n)
    sigma[::97] = -1.0  # bad rows: per-row errors, neighbours priced
    return pa.table({"id": [f"row-{i}" for i in range(n)],
                     "option_type": np.where(rng.random(n) < 0.5, "call", "put"),
                     "spot": spot, "strike": spot * np.exp(rng.normal(0, 0.2, n)),
                     "t": rng.uniform(0.01, 2.0, n), "sigma": sigma, "r": np.full(n, 0.03),
                     "q": np.full(n, 0.01)})


def test_arrow_answer_carries_its_length(client: TestClient) -> None:
    """The answer sent in pieces says its Content-Length (no chunked encoding),
    the body's length, and reads back as the library's results."""
    n = 3001
    strike = np.linspace(60.0, 140.0, n)
    table = pa.table({"option_type": pa.array(strike > 100.0), "spot": np.full(n, 100.0),
                      "strike": strike, "t": np.full(n, 0.7), "sigma": np.full(n, 0.25)})
    r = client.post("/v1/price?greeks=all", content=_stream(table),
                    headers={"Content-Type": ARROW})
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    assert "transfer-encoding" not in r.headers
    small = arrow_io.stream_pieces(_read(r.content))  # 3,001 rows: every buffer small
    assert len(small) == 1 and bytes(small[0]) == r.content
    back = _read(r.content)
    want = gp.price(option_type=strike > 100.0, spot=100.0, strike=strike, t=0.7, sigma=0.25,
                    greeks="all")
    assert back.column_names == ["price", *gp.GREEKS, "error"]
    for name in back.column_names:
        np.testing.assert_array_equal(back.column(name).to_numpy(), want[name])


def test_a_request_over_several_batches_answers_in_order() -> None:
    """5,500 rows in batches of 1,000 (coalescing nothing else): the answer
    has every row, in order, with its id, and equals a direct library call
    row for row."""
    table = _book_table(5_500, seed=4)
    with service(max_batch_options="1000") as c:
        r = c.post("/v1/price?greeks=delta,gamma", content=_stream(table),
                   headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    got = _read(r.content)
    assert got.column_names == ["id", "price", "delta", "gamma", "error"]
    assert got.column("id").to_pylist() == table.column("id").to_pylist()
    ref = gp.price(option_type=table.column("option_type").to_numpy(zero_copy_only=False),
                   spot=table.column("spot").to_numpy(), strike=table.column("strike").to_numpy(),
                   t=table.column("t").to_numpy(), sigma=table.column("sigma").to_numpy(),
                   r=0.03, q=0.01, greeks=["delta", "gamma"])
    for name in ("price", "delta", "gamma", "error"):
        np.testing.assert_array_equal(got.column(name).to_numpy(), ref[name], err_msg=name)
    assert (ref["error"] != 0).sum() == 57


def test_a_deadline_passing_after_the_first_batch_is_still_a_504() -> None:
    """Every row is computed before the answer starts, so a deadline that
    passes while the second of three batches runs gives a clean 504 (its
    first batch's rows are dropped), never a partial answer."""
    import time

    table = _book_table(3_000, seed=5)
    with service(max_batch_options="1000") as c:
        warm = c.post("/v1/price", content=_stream(table), headers={"Content-Type": ARROW})
        assert warm.status_code == 200  # the kernel is compiled: batches take the sleep
        batcher = c.app.state.batcher  # type: ignore[attr-defined]

        def slow(**kw: object) -> object:
            time.sleep(0.3)
            return gp.price(**kw)  # type: ignore[arg-type]

        batcher._functions["price"] = slow
        for deadline in ("500", "100"):
            r = c.post("/v1/price", content=_stream(table),
                       headers={"Content-Type": ARROW, "X-Deadline-Ms": deadline})
            assert r.status_code == 504 and f"within {deadline} ms" in r.text
            assert r.headers["content-type"] == "application/json"


def test_answers_are_sent_from_the_outputs_own_memory() -> None:
    """A bulk answer is the outputs' own memory between the stream's framing
    (no copy of the columns into one body), and its pieces joined are the
    bytes pyarrow's own writer produces: ids first, several record batches,
    a column whose length needs padding."""
    rng = np.random.default_rng(4)
    for n in (100_003, (1 << 20) + 5):  # the second: two record batches
        names = ["price", "delta", "vega"]
        out = {name: rng.random(n) for name in names}
        out["error"] = rng.integers(0, 3, n).astype(np.int8)
        ids = pa.chunked_array([pa.array(np.arange(n).astype(str))])
        table = arrow_io.answer_table(out, names, ids)
        assert table.column_names == ["id", *names, "error"]
        pieces = arrow_io.stream_pieces(table)
        for name in [*names, "error"]:
            assert any(np.shares_memory(np.frombuffer(p, np.uint8), out[name]) for p in pieces)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 20)
        joined = b"".join(pieces)
        assert joined == sink.getvalue().to_pybytes()
        assert len(pieces) <= 2 * (len(names) + 1) * -(-n // (1 << 20)) + 2
        back = pa.ipc.open_stream(joined).read_all()
        assert back.num_rows == n and back.column("id").equals(ids)
        for name in [*names, "error"]:
            np.testing.assert_array_equal(back.column(name).to_numpy(), out[name])
