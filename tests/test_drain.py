"""SIGTERM against a real uvicorn process: no accepted request fails."""

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

from .conftest import SIMULATED

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
