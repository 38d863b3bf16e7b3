"""The short path of the JSON routes (api.lean): the same answers, errors,
middleware and documentation as a FastAPI route."""

from __future__ import annotations

import gc

import pytest
from fastapi import HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api import jsonio
from api.lean import LeanApp

from .conftest import service


class Body(BaseModel):
    x: float


class Answer(BaseModel):
    y: float


def _app() -> LeanApp:
    app = LeanApp(title="t")

    async def double(request: Request) -> Response:
        body = jsonio.parse(Body, await request.body())
        if body.x < 0:
            raise HTTPException(409, detail="negative", headers={"X-Why": "sign"})
        if body.x == 13:
            raise RuntimeError("unlucky")
        return jsonio.response({"y": 2 * body.x})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.lean_post("/double", double, response_model=Answer, body_model=Body,
                  doc={"requestBody": {"content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/Body"}}}}})
    app.add_middleware(CORSMiddleware, allow_origins=["https://desk.example"],
                       allow_methods=["POST"])
    return app


def test_lean_route_answers_errors_and_middleware() -> None:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        r = client.post("/double", json={"x": 2.5}, headers={"Origin": "https://desk.example"})
        assert r.status_code == 200 and r.json() == {"y": 5.0}
        assert r.headers["access-control-allow-origin"] == "https://desk.example"
        r = client.post("/double", json={"x": -1})
        assert r.status_code == 409 and r.json() == {"detail": "negative"}
        assert r.headers["x-why"] == "sign"
        r = client.post("/double", json={"x": "a lot"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "x"]
        r = client.post("/double", json={"x": 13})
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        assert "Traceback" not in r.text and "unlucky" not in r.text
        # not JSON: the full stack (the mounted route) answers the same way
        r = client.post("/double", content=b'{"x": 4}', headers={"Content-Type": "text/plain"})
        assert r.status_code == 200 and r.json() == {"y": 8.0}
        assert client.get("/double").status_code == 405


def test_lean_route_is_documented_like_a_fastapi_route() -> None:
    schema = _app().openapi()
    op = schema["paths"]["/double"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Answer"}
    assert schema["components"]["schemas"]["Body"]["properties"]["x"]["type"] == "number"


def test_service_failure_inside_a_json_route_is_a_clean_500(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("columns exploded")

    with service() as client:
        monkeypatch.setattr(jsonio, "columns", broken)
        r = client.post("/v1/price", json={"options": [
            {"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]})
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        assert "exploded" not in r.text
        metrics = client.get("/metrics").text
        assert 'endpoint="/v1/price",method="POST",status="500"' in metrics


def test_collector_settings_last_only_while_the_service_runs() -> None:
    # (no other service may run in this process meanwhile: they share the app)
    before = gc.get_threshold()
    with service() as client:
        assert client.get("/readyz").status_code == 200
        assert gc.get_threshold()[0] > before[0] and gc.get_freeze_count() > 0
        # and, on glibc, malloc keeps freed buffers for the next bulk request
        from api.main import app
        from api.memory import keep_freed_memory

        assert app.state.keeps_freed_memory is keep_freed_memory()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

