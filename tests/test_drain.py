"""SIGTERM against a real uvicorn process: no accepted request fails, and
readiness says draining; /readyz when the pricing engine has stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from api.drain import DrainingServer

from .conftest import SIMULATED, service

pytestmark = pytest.mark.skipif(SIMULATED, reason="CPU process only")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_drains_queued_requests() -> None:
    port = _free_port()
    env = dict(os.environ, GPU_PRICER_WARMUP="false", GPU_PRICER_MAX_DELAY_US="1500000",
               GPU_PRICER_BACKEND="numpy")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
         str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("service did not become ready")
        body = {"greeks": ["delta"], "options": [
            {"option_type": "call", "spot": 100, "strike": 90 + i, "t": 1, "sigma": 0.2}
            for i in range(3)]}

        def call(_: int) -> int:
            return httpx.post(f"{base}/v1/price", json=body, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(call, i) for i in range(8)]
            time.sleep(0.5)  # accepted and queued: the batch waits 1.5 s for more
            proc.send_signal(signal.SIGTERM)
            codes = [f.result() for f in futures]
        assert codes == [200] * 8
        # uvicorn re-raises the signal once its graceful shutdown is complete
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert proc.stdout is not None
        log = proc.stdout.read().decode()
        assert "Application shutdown complete" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ready(base: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("service did not become ready")


def test_sigterm_turns_readiness_off_and_serves_through_the_drain_delay() -> None:
    """python -m api with GPU_PRICER_DRAIN_DELAY_S: after SIGTERM, /readyz is a
    503 saying draining while pricing requests are still answered; after the
    delay the process shuts down gracefully."""
    port = _free_port()
    env = dict(os.environ, GPU_PRICER_WARMUP="false", GPU_PRICER_BACKEND="numpy",
               GPU_PRICER_PORT=str(port), GPU_PRICER_DRAIN_DELAY_S="3")
    proc = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    body = {"options": [{"option_type": "call", "spot": 100, "strike": 95, "t": 1,
                         "sigma": 0.2}]}
    try:
        _ready(base)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "reason": "draining"}
        priced = httpx.post(f"{base}/v1/price", json=body, timeout=30)
        assert priced.status_code == 200 and priced.json()["results"][0]["error"] is None
        assert time.monotonic() - signalled < 3  # all of it inside the delay
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled >= 3
        assert proc.stdout is not None
        assert "Application shutdown complete" in proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_draining_server_signals() -> None:
    """The first signal marks the app draining and, with a delay, leaves the
    server running until the delay ends; a second signal stops it at once;
    without a delay the first signal stops it as uvicorn's does."""
    import asyncio

    import uvicorn

    calls: list[str] = []
    config = uvicorn.Config(app=None, log_config=None)  # type: ignore[arg-type]
    server = DrainingServer(config, on_drain=lambda: calls.append("drain"), delay_s=60.0)
    server.handle_exit(signal.SIGTERM, None)
    assert calls == ["drain"] and not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert calls == ["drain"] and server.should_exit

    quick = DrainingServer(config, on_drain=lambda: calls.append("drain"), delay_s=0.01)
    quick.handle_exit(signal.SIGTERM, None)
    assert not quick.should_exit
    time.sleep(0.02)
    assert asyncio.run(quick.on_tick(1)) is True and quick.should_exit

    now = DrainingServer(config, on_drain=lambda: calls.append("now"))
    now.handle_exit(signal.SIGTERM, None)
    assert calls[-1] == "now" and now.should_exit


def test_readyz_is_503_once_the_pricing_engine_stops() -> None:
    """/readyz says why it is not ready: the batch loop has ended."""
    with service() as c:
        assert c.get("/readyz").json() == {"ready": True}
        c.portal.call(c.app.state.batcher.stop)  # type: ignore[attr-defined]
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"ready": False, "reason": "pricing engine stopped"}
        priced = c.post("/v1/price", json={"options": [
            {"option_type": "call", "spot": 100, "strike": 95, "t": 1, "sigma": 0.2}]})
        assert priced.status_code == 503  # at once, not at the deadline


def test_not_ready_reasons() -> None:
    """Each state /readyz tells apart, and the order it checks them in."""
    from types import SimpleNamespace

    from api.main import not_ready_reason

    alive = SimpleNamespace(alive=True)
    assert not_ready_reason(SimpleNamespace()) == "starting: warm-up not done"
    assert not_ready_reason(SimpleNamespace(ready=False, batcher=alive)) == (
        "starting: warm-up not done")
    assert not_ready_reason(SimpleNamespace(ready=True, batcher=alive)) is None
    assert not_ready_reason(SimpleNamespace(ready=True, batcher=SimpleNamespace(alive=False))) \
        == "pricing engine stopped"
    assert not_ready_reason(SimpleNamespace(ready=True)) == "pricing engine stopped"
    assert not_ready_reason(SimpleNamespace(ready=True, batcher=alive, draining=True)) == (
        "draining")
