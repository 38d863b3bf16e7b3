"""Schemathesis against the service's own OpenAPI schema: requests generated
from every operation's schema, valid ones and (negative mode) ones that
break it, never get a 5xx and never leak a stack trace."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import service

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402


@schemathesis.serializer("application/vnd.apache.arrow.stream")
def _arrow_body(ctx: Any, value: Any) -> bytes:
    """An Arrow-stream body as generated: bytes that are (almost surely) not a
    valid stream, which must get a 4xx, never a 5xx."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _cases() -> list[Any]:
    """Every operation with valid inputs; those that take any input, with
    invalid ones too."""
    from api.main import app

    out = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            out.append(pytest.param(method.upper(), path, GenerationMode.POSITIVE,
                                    id=f"{method.upper()} {path} valid"))
            if op.get("requestBody") or op.get("parameters"):
                out.append(pytest.param(method.upper(), path, GenerationMode.NEGATIVE,
                                        id=f"{method.upper()} {path} invalid"))
    return out


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_no_server_errors(method: str, path: str, mode: Any) -> None:
    with service() as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        operation = schema[path][method]
        strategy = operation.as_strategy(generation_mode=mode)
        seen: list[int] = []

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            case = data.draw(strategy)
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            kwargs.pop("cookies", None)
            response = client.request(**kwargs)
            seen.append(response.status_code)
            assert response.status_code < 500, (case.as_curl_command(), response.text[:300])
            assert "Traceback" not in response.text

        check()
    assert seen
