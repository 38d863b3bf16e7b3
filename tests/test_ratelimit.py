"""Rate limits: 429 with Retry-After in memory; shared through a real Redis."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from api.ratelimit import RateLimiter

from .conftest import service

BODY = {"options": [{"option_type": "call", "spot": 100, "strike": 95, "t": 0.5, "sigma": 0.2}]}


def test_over_the_limit_gets_429_with_retry_after() -> None:
    with service(rate_limit="3/minute") as c:
        codes = [c.post("/v1/price", json=BODY).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.post("/v1/price", json=BODY)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.get("/healthz").status_code == 200  # probes are not limited


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not installed (.ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_replicas_share_limits_through_redis(redis_url: str) -> None:
    async def main() -> list[float | None]:
        replica_a = RateLimiter("3/minute", redis_url)
        replica_b = RateLimiter("3/minute", redis_url)
        results = [await replica_a.retry_after("desk-7"), await replica_b.retry_after("desk-7"),
                   await replica_a.retry_after("desk-7"), await replica_b.retry_after("desk-7"),
                   await replica_b.retry_after("desk-8")]
        return results

    a1, b1, a2, b2, other = asyncio.run(main())
    assert a1 is None and b1 is None and a2 is None  # three hits, counted together
    assert b2 is not None and 0 < b2 <= 60  # the fourth, on the other replica, is refused
    assert other is None  # another key has its own limit
