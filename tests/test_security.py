"""API keys, CORS closed by default, the JSON access log, and the refusal to
listen beyond loopback without keys."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.security import hash_key, load_hashes, match, parse_hashes

from .conftest import service

BODY = {"options": [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]}


@pytest.fixture
def keyed_client() -> Iterator[TestClient]:
    with service(api_key_hashes=f"desk-7:{hash_key('s3cret-key')}") as c:
        yield c


def test_keys_are_required_and_checked(keyed_client: TestClient,
                                       caplog: pytest.LogCaptureFixture) -> None:
    r = keyed_client.post("/v1/price", json=BODY)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = keyed_client.post("/v1/price", json=BODY, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    with caplog.at_level(logging.INFO, logger="gpu_pricer.access"):
        r = keyed_client.post("/v1/price", json=BODY,
                              headers={"Authorization": "Bearer s3cret-key",
                                       "X-Request-Id": "req-42"})
        time.sleep(0.05)  # lines ending in one turn of the loop are written at the next
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42"
    lines = [json.loads(line) for m in caplog.messages for line in m.splitlines()
             if line.startswith("{")]
    line = next(x for x in lines if x["request_id"] == "req-42")
    assert line["key_id"] == "desk-7" and line["status"] == 200
    assert all("s3cret-key" not in m for m in caplog.messages)
    # probes stay open for the orchestrator
    assert keyed_client.get("/healthz").status_code == 200
    assert keyed_client.get("/v1/info").status_code == 401


def test_cors_is_closed_by_default(keyed_client: TestClient) -> None:
    r = keyed_client.options("/v1/price", headers={"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_hash_parsing_and_matching(tmp_path: Path) -> None:
    digest = hash_key("k1")
    f = tmp_path / "keys"
    f.write_text(f"# ops keys\nops:{digest}\n\n")
    keys = load_hashes(f"{hash_key('k2')}", f)
    assert [k.key_id for k in keys] == [hash_key("k2")[:8], "ops"]
    assert match(keys, "k1") == "ops"
    assert match(keys, "k2") == hash_key("k2")[:8]
    assert match(keys, "k3") is None
    with pytest.raises(ValueError, match="SHA-256"):
        parse_hashes(["abcd"])
    with pytest.raises(ValueError, match="not hex"):
        parse_hashes(["zz" * 32])


def test_refuses_open_non_loopback_bind() -> None:
    env = dict(os.environ, GPU_PRICER_HOST="0.0.0.0", GPU_PRICER_API_KEY_HASHES="")
    env.pop("GPU_PRICER_ALLOW_OPEN", None)
    proc = subprocess.run([sys.executable, "-m", "api"], env=env, capture_output=True, check=False,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in proc.stderr
