"""The JSON service: answers in order, per-row errors, 4xx naming field and row."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import gpu_pricer as gp
from api.settings import get_service_settings

from .conftest import service

JSON_TYPE = "application/json"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with service() as c:
        yield c


def test_health_ready_info(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/info").json()
    assert info["backend"] == "numba"
    assert info["backends"]["cupy"]["available"] is False
    # why: auto's order, each GPU backend skipped with its reason
    why = info["backend_reason"]
    assert why.startswith("auto: the first usable of numba-cuda, cupy, numba, numpy")
    assert f"cupy: {info['backends']['cupy']['reason']}" in why
    device = info["device"]
    assert device["kind"] == "cpu" and device["cpus_usable"] >= 1 and device["threads"] >= 1
    assert device["model"]
    versions = info["versions"]
    assert versions["numpy"] == np.__version__ and versions["gpu-pricer"] == gp.__version__
    assert {"python", "numba", "pyarrow", "fastapi", "uvicorn", "pydantic"} <= set(versions)
    assert info["errors"] == {str(int(c)): r for c, r in gp.ERRORS.items()}
    assert info["errors"]["6"] == "option_type is not call/put/c/p"


def test_price_rows_in_order_with_ids(client: TestClient) -> None:
    options = [
        {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "r": 0.03, "q": 0.01,
         "sigma": 0.2, "id": "a"},
        {"option_type": "put", "spot": 100, "strike": 95, "t": 0.5, "sigma": -0.2, "id": "b"},
        {"option_type": "p", "spot": 100, "strike": 105, "t": 1.0, "sigma": 0.3},
    ]
    resp = client.post("/v1/price", json={"greeks": ["delta", "vega"], "options": options})
    assert resp.status_code == 200
    body = resp.json()
    res = body["results"]
    assert [r["id"] for r in res] == ["a", "b", None]
    ref = gp.price(option_type="call", spot=100.0, strike=95.0, t=0.5, r=0.03, q=0.01,
                   sigma=0.2, greeks=["delta", "vega"])
    assert res[0]["price"] == float(ref["price"])
    assert res[0]["delta"] == float(ref["delta"])
    assert res[0]["error"] is None
    assert res[1]["price"] is None
    assert res[1]["error"] == {"code": 2, "reason": "sigma < 0"}
    assert res[2]["price"] > 0


def test_malformed_rows_name_field_and_row(client: TestClient) -> None:
    resp = client.post("/v1/price", json={"options": [
        {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2},
        {"option_type": "call", "spot": 100, "strike": "abc", "t": 0.5, "sigma": 0.2},
    ]})
    assert resp.status_code == 422
    locs = [d["loc"] for d in resp.json()["detail"]]
    assert ["body", "options", 1, "strike"] in locs
    resp = client.post("/v1/price", json={"model": "black76", "options": [
        {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "options", 0, "forward"]
    resp = client.post("/v1/price", json={"greeks": ["gama"], "options": []})
    assert resp.status_code == 422
    assert "Traceback" not in resp.text


def test_strict_rejects_bad_rows(client: TestClient) -> None:
    resp = client.post("/v1/price", json={"strict": True, "options": [
        {"option_type": "call", "spot": 100, "strike": 95, "t": -1, "sigma": 0.2}]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0] == {"loc": ["body", "options", 0], "msg": "t < 0"}


def test_strict_as_a_query_parameter(client: TestClient) -> None:
    """?strict=true does what the body's field does; a non-boolean is a 422
    naming the parameter; strict with every row good prices them."""
    options = [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2},
               {"option_type": "put", "spot": 100, "strike": 95, "t": 0.5, "sigma": -0.2},
               {"option_type": "call", "spot": -1, "strike": 95, "t": 0.5, "sigma": 0.2}]
    resp = client.post("/v1/price?strict=true", json={"options": options})
    assert resp.status_code == 422
    assert resp.json()["detail"] == [{"loc": ["body", "options", 1], "msg": "sigma < 0"},
                                     {"loc": ["body", "options", 2],
                                      "msg": gp.ERRORS[gp.ErrorCode.NON_POSITIVE_UNDERLYING]}]
    for off in ("false", "0", "no"):
        resp = client.post(f"/v1/price?strict={off}", json={"options": options})
        assert resp.status_code == 200
        assert [r["error"] is None for r in resp.json()["results"]] == [True, False, False]
    resp = client.post("/v1/price?strict=maybe", json={"options": options})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "strict"]
    good = client.post("/v1/price?strict=TRUE", json={"options": options[:1]})
    assert good.status_code == 200 and good.json()["results"][0]["error"] is None
    resp = client.post("/v1/implied-vol?strict=1", json={"options": [
        {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "price": 200.0}]})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "options", 0]


def test_singular_greeks_are_null_not_invalid_json(client: TestClient) -> None:
    resp = client.post("/v1/price", json={"greeks": "all", "options": [
        {"option_type": "call", "spot": 100, "strike": 100, "t": 0, "sigma": 0.2}]})
    assert resp.status_code == 200
    row = resp.json()["results"][0]
    assert row["price"] == 0.0 and row["delta"] == 0.5 and row["gamma"] is None


def test_openapi_states_units(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["OptionIn"]["properties"]
    assert "years" in props["t"]["description"]
    assert "sqrt(year)" in props["sigma"]["description"]


def test_metrics_are_exported(client: TestClient) -> None:
    client.post("/v1/price", json={"options": [
        {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]})
    text = client.get("/metrics").text
    for name in ("gpu_pricer_http_requests_total", "gpu_pricer_http_request_duration_seconds",
                 "gpu_pricer_batch_options", "gpu_pricer_batch_requests",
                 "gpu_pricer_queue_options", "gpu_pricer_queue_wait_seconds",
                 "gpu_pricer_options_priced_total", "gpu_pricer_backend_fallbacks_total",
                 "gpu_pricer_rejected_requests_total", "gpu_pricer_backend_info"):
        assert name in text, name
    assert 'endpoint="/v1/price",method="POST",status="200"' in text
    priced = [s.labels for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "gpu_pricer_options_priced_total"]
    assert {"backend": "numba", "model": "bsm", "kind": "price"} in priced
    in_use = [(s.labels["backend"], s.value) for f in text_string_to_metric_families(text)
              for s in f.samples if s.name == "gpu_pricer_backend_info"]
    assert ("numba", 1.0) in in_use


def test_content_type_and_body_limits(client: TestClient,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    r = client.post("/v1/price", content=b"a,b\n1,2", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    monkeypatch.setenv("GPU_PRICER_MAX_BODY_BYTES", "200")
    get_service_settings.cache_clear()
    try:
        big = {"options": [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5,
                            "sigma": 0.2}] * 5}
        r = client.post("/v1/price", json=big)
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"options": ['
            yield b" " * 300
            yield b"]}"

        r = client.post("/v1/price", content=chunks(), headers={"Content-Type": JSON_TYPE})
        assert r.status_code == 413
    finally:
        get_service_settings.cache_clear()


def test_deeply_nested_json_is_a_clean_4xx(client: TestClient) -> None:
    body = "[" * 100_000 + "]" * 100_000
    r = client.post("/v1/price", content=body.encode(), headers={"Content-Type": JSON_TYPE})
    assert 400 <= r.status_code < 500
    assert "Traceback" not in r.text


def test_chunked_body_under_the_limit_is_priced(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"options": [{"option_type": "call", "spot": 100, '
        yield b'"strike": 95, "t": 0.5, "sigma": 0.2}]}'

    r = client.post("/v1/price", content=chunks(), headers={"Content-Type": JSON_TYPE})
    assert r.status_code == 200
    assert r.json()["results"][0]["price"] > 8


def test_json_routes_document_their_body_and_deadline_header(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, model in (("/v1/price", "PriceRequest"), ("/v1/implied-vol", "ImpliedVolRequest")):
        op = schema["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert model in schema["components"]["schemas"]
        header = [p for p in op["parameters"] if p["name"] == "x-deadline-ms"]
        assert header and header[0]["in"] == "header"
        assert "milliseconds" in header[0]["description"]
        assert "200" in op["responses"]


def test_bad_deadline_header_is_a_422_naming_it(client: TestClient) -> None:
    body = {"options": [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5,
                         "sigma": 0.2}]}
    for bad in ("0", "-5", "soon", "1.5", b"\xb2"):
        r = client.post("/v1/price", json=body, headers={"X-Deadline-Ms": bad})
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"] == ["header", "x-deadline-ms"]
    r = client.post("/v1/price", json=body, headers={"X-Deadline-Ms": "600000"})
    assert r.status_code == 200


def test_malformed_json_is_a_422_that_does_not_echo_the_body(client: TestClient) -> None:
    secret = "not-json-" + "x" * 1000
    r = client.post("/v1/price", content=secret.encode(), headers={"Content-Type": JSON_TYPE})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail[0]["type"] == "json_invalid" and detail[0]["loc"][0] == "body"
    assert secret not in r.text


def test_every_accepted_spelling_of_the_option_type(client: TestClient) -> None:
    spellings = ["call", "c", "CALL", "C", "Call", "put", "p", "PUT", "P", "Put"]
    options = [{"option_type": w, "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}
               for w in spellings]
    r = client.post("/v1/price", json={"options": options})
    assert r.status_code == 200
    got = [row["price"] for row in r.json()["results"]]
    call, put = (float(gp.price(option_type=w, spot=100.0, strike=95.0, t=0.5, sigma=0.2,
                                backend="numpy")["price"]) for w in ("call", "put"))
    assert got == pytest.approx([call] * 5 + [put] * 5, rel=1e-12)


def test_rows_keep_their_order_ids_and_errors(client: TestClient) -> None:
    options = [{"option_type": t, "spot": 100, "strike": k, "t": 0.5, "sigma": s, "id": f"r{i}"}
               for i, (t, k, s) in enumerate([("call", 95, 0.2), ("P", 105, -0.1),
                                              ("c", 100, 0.3), ("put", 90, 0.25)])]
    r = client.post("/v1/price", json={"greeks": ["delta"], "options": options})
    assert r.status_code == 200
    rows = r.json()["results"]
    assert [row["id"] for row in rows] == ["r0", "r1", "r2", "r3"]
    assert rows[1]["price"] is None and rows[1]["delta"] is None
    ref = gp.price(option_type=np.array(["call", "put", "call", "put"]), spot=100.0,
                   strike=np.array([95.0, 105, 100, 90]), t=0.5,
                   sigma=np.array([0.2, -0.1, 0.3, 0.25]), greeks=["delta"], backend="numpy")
    for i in (0, 2, 3):
        assert rows[i]["error"] is None
        assert abs(rows[i]["price"] - ref["price"][i]) <= 1e-12 * ref["price"][i]
        assert abs(rows[i]["delta"] - ref["delta"][i]) <= 1e-12
    assert rows[1]["error"]["code"] == int(ref["error"][1])


def test_answers_carry_server_timing(client: TestClient) -> None:
    r = client.post("/v1/price", json={"options": [
        {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]})
    assert r.status_code == 200
    parts = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
    assert set(parts) == {"recv", "app"}
    assert 0.0 <= float(parts["recv"]) <= float(parts["app"])
    assert "server-timing" in client.get("/healthz").headers
