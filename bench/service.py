"""The service over HTTP: requests/s and latency under load, against a bare-FastAPI
ceiling, with coalescing on and off, and one large Arrow request against the
library in process.

What runs: the service as real uvicorn processes on 127.0.0.1 (free ports),
started here the way it is deployed (``python -m api``, warm-up on, no API keys
on loopback, no rate limit) and stopped with SIGTERM at the end -- one with the
micro-batcher's default GPU_PRICER_MAX_DELAY_US (coalescing on) and one with 0
(coalescing off) -- and the ceiling (`bench.ceiling_app`): a bare FastAPI app in
its own uvicorn process, under the same `uvicorn.run` keywords and logging, that
parses the same body with the same pydantic model and answers the bytes the
service answered for it (captured once).  The load comes from wrk, a separate
HTTP load generator in C, with a Lua script that POSTs a fixed body and counts
every response outside 2xx.

Scenarios (bsm, price + delta, gamma, vega, theta, rho): one option per JSON
request (service on, service off, ceiling) and 1,000 options per JSON request
(service on and off), each at 1, 16, 64 and 256 open connections (closed loop:
each connection sends its next request when the last is answered, so the offered
load is the connection count).  wrk runs 2 threads (fewer when there are fewer
connections); on a small machine the client and the server share the CPUs, and
the output says so.  Each point: a warm-up run (excluded), then a timed run of
``--duration`` seconds; reported: requests/s, options/s, latency p50, p75, p90
and p99 from wrk's ``--latency`` output, and every socket error and non-2xx
response, which fail the run's checks; for the service, also p50 and p99 of
its own time for the same requests, from its access log (`app_latency`: the
request's time in the app, without the wait before it and the transfer after
it).  Points are taken connection count by
connection count, the scenarios in an order rotated from one count to the next.

Arrow: one request of 1,000,000 rows (``Content-Type:
application/vnd.apache.arrow.stream``, POST /v1/price, columns the library's
keywords) timed end to end from Python -- the standard library's http.client
on a kept-alive connection (httpx, used for everything else here, took
tens of milliseconds of its own reading the 49 MB answer), the body built
before timing, the answer read back into NumPy arrays inside the timing --
against ``gpu_pricer.price`` in this process on the same arrays with the same
Greeks; the median of ``--arrow-repeat`` rounds, each on a fresh book, the
measurements interleaved in a rotating order after a warm-up round (whose
service request, the first of its size since the service was ready, is
reported on its own).  The service's answers must equal the library's
(relative 1e-9).  This process
keeps freed memory as the service does (`api.memory`), so that the client's
own page faults on the 49 MB answer are not counted as the service's.  The
same rounds time the bare transfer: the same body posted to the ceiling
process, which reads it and answers as many bytes as the service's answer,
with no pricing (the floor any service on this HTTP stack and machine starts
from).

Targets of the issue, printed PASS/FAIL with their figures: one option per JSON
request over 64 connections, the service (default settings) at >= 0.8x the
ceiling's requests/s and <= 2x its p99; the Arrow request at >= 0.5x the
library's options/s in process.  1,000 options over 64 connections with
coalescing on and off: reported.

Run: ``python -m bench.service [--duration S] [--warmup S] [--connections
1,16,64,256] [--arrow-rows N] [--arrow-repeat R] [--out DIR] [--tiny]``.  Needs
wrk on PATH (Debian/Ubuntu: ``apt-get install wrk``); exits with a message when
it is missing.  Writes ``<out>/<YYYY-MM-DD>-<host>-service.json`` (every figure,
the machine, versions, settings, wrk's version, the command line), the table as
``.md`` and two plots (``-latency.png``: p50 and p99 against achieved
throughput; ``-batching.png``: coalescing on against off); ``--tiny`` (1 s
points at 1 and 16 connections, a 20,000-row Arrow request, and the NumPy
backend in the services and in process, so that nothing compiles and it takes
seconds) writes ``-service-tiny`` files.  A run with other settings than the defaults
gets its own file names.  Exit status 1 when a check failed (an error
response, a socket error, a wrong answer); a missed target is reported, not an
error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import http.client
import importlib.util
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pyarrow as pa

import gpu_pricer as gp
from api.memory import keep_freed_memory
from api.settings import ServiceSettings

from . import core
from .ceiling_app import ANSWER_BYTES_HEADER, TRANSFER_PATH

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = core.RESULTS_DIR
JSON_TYPE = "application/json"
ARROW_TYPE = "application/vnd.apache.arrow.stream"

DEFAULT_CONNECTIONS = (1, 16, 64, 256)
TINY_CONNECTIONS = (1, 16)
DEFAULT_DURATION_S = 10
DEFAULT_WARMUP_S = 2
TINY_DURATION_S = 1
TINY_WARMUP_S = 1
DEFAULT_ARROW_ROWS = 1_000_000
TINY_ARROW_ROWS = 20_000
DEFAULT_ARROW_REPEAT = 5
TINY_ARROW_REPEAT = 3
#: Options per request of the batch scenario.
BATCH_OPTIONS = 1_000
GREEKS = core.GREEKS
SEED = 20_241_124
#: wrk's threads (fewer when there are fewer connections: wrk needs one per thread).
WRK_THREADS = 2
#: A response slower than this is a wrk timeout error (wrk's default is 2 s).
WRK_TIMEOUT_S = 30
#: Bounds on everything the bench waits for.
READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 300
MAX_DURATION_S = 300
#: The service's answers to the Arrow request against the library's.
ARROW_RTOL = 1e-9

WRK_MISSING = ("wrk (the HTTP load generator this benchmark drives) is not on PATH: install "
               "it (Debian/Ubuntu: apt-get install wrk) and run again")

#: The servers measured: key -> what the table calls it.
SERVERS = {
    "coalescing-on": "service, coalescing on",
    "coalescing-off": "service, coalescing off",
    "ceiling": "bare FastAPI ceiling",
}
#: The scenarios: key -> (options per request, label).
SCENARIOS = {"single": (1, "1 option (JSON)"), "batch": (BATCH_OPTIONS, "1,000 options (JSON)")}
#: The (scenario, server) pairs measured at every connection count.
JOBS = (("single", "ceiling"), ("single", "coalescing-on"), ("single", "coalescing-off"),
        ("batch", "coalescing-on"), ("batch", "coalescing-off"))
#: The issue's targets.
TARGET_CONNECTIONS = 64
MIN_THROUGHPUT_VS_CEILING = 0.8
MAX_P99_VS_CEILING = 2.0
MIN_ARROW_VS_LIBRARY = 0.5

#: The wrk script: POST the body in file args[1] with Content-Type args[2], count
#: every response outside 2xx, and print wrk's exact figures as one JSON line.
WRK_SCRIPT = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[2]
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total = 0
  for _, t in ipairs(threads) do
    non2xx_total = non2xx_total + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"latency_us": {"min": %d, "max": %d, "mean": %.3f, "stdev": %.3f, "p50": %d, ' ..
    '"p75": %d, "p90": %d, "p99": %d, "p99.9": %d}}\n',
    summary.requests, summary.duration, summary.bytes, non2xx_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, latency:percentile(50),
    latency:percentile(75), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""

Log = Callable[[str], None]


# --- wrk ----------------------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds
_LATENCY = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),\s*([\d.]+)([KMGT]?B) read",
                    re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_EXACT = re.compile(r"^WRK_JSON (\{.*\})\s*$", re.M)


def wrk_path() -> str:
    """wrk's path; SystemExit with a clear message when it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(WRK_MISSING)
    return path


def wrk_version(wrk: str) -> str:
    """The first line wrk prints for -v, e.g. 'wrk 4.2.0 [epoll] ...'."""
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10,
                          check=False)
    line = (proc.stdout or proc.stderr).strip().splitlines()
    return line[0].split(" Copyright")[0].strip() if line else "unknown"


def app_latency(log_path: Path, offset: int) -> dict[str, Any] | None:
    """The service's own time for the POST /v1/price requests it answered 200
    in the access lines written past byte `offset` of its log (each line's
    duration_ms: from the request reaching the app to the end of its answer;
    wrk's latency adds the wait before that, the transfer after it, and its
    own turn on the shared CPUs): their count and p50/p90/p99 in ms.  None
    where there are none (the ceiling writes no access lines)."""
    with log_path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", errors="replace")
    durations = []
    for line in text.splitlines():
        if not line.startswith("{") or '"duration_ms"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (entry.get("endpoint") == "/v1/price" and entry.get("method") == "POST"
                and entry.get("status") == 200):
            durations.append(float(entry["duration_ms"]))
    if not durations:
        return None
    p50, p90, p99 = np.percentile(durations, [50, 90, 99]).tolist()
    return {"requests": len(durations), "p50": p50, "p90": p90, "p99": p99}


def parse_wrk(text: str) -> dict[str, Any]:
    """The figures of wrk's ``--latency`` output (and of the script's exact JSON
    line when present); `errors` is the sum of socket errors and responses
    outside 2xx."""
    latency = {f"p{m.group(1)}": float(m.group(2)) * _TIME_UNITS[m.group(3)]
               for m in _LATENCY.finditer(text)}
    total, rate = _TOTAL.search(text), _RATE.search(text)
    if total is None or rate is None or set(latency) != {"p50", "p75", "p90", "p99"}:
        raise ValueError(f"unexpected wrk output:\n{text}")
    sock = _SOCKET.search(text)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                             (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0),
                             strict=True))
    bad = _NON2XX.search(text)
    wrk_status_errors = int(bad.group(1)) if bad else 0
    exact_match = _EXACT.search(text)
    exact: dict[str, Any] | None = json.loads(exact_match.group(1)) if exact_match else None
    # wrk's own line counts statuses above 399; the script counts everything outside 2xx
    non2xx = max(wrk_status_errors, exact["non2xx"] if exact else 0)
    requests = int(total.group(1))
    if exact is not None and exact["requests"] != requests:
        raise ValueError(f"wrk's text and its summary disagree on the request count:\n{text}")
    return {
        "requests": requests,
        "elapsed_s": float(total.group(2)) * _TIME_UNITS[total.group(3)] / 1e3,
        "requests_per_s": float(rate.group(1)),
        "latency_ms": latency,
        "socket_errors": socket_errors,
        "wrk_non_2xx_3xx": wrk_status_errors,
        "non2xx": non2xx,
        "errors": sum(socket_errors.values()) + non2xx,
        "exact": exact,
    }


@contextmanager
def _own_group(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """A child in its own process group, killed with its group if still running
    when the block is left (an exception, an interrupt, a timeout)."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_wrk(wrk: str, url: str, connections: int, duration_s: int, script: Path,
            body: Path, content_type: str, pids: list[int]) -> dict[str, Any]:
    """One wrk run against `url`; its parsed figures, with the command."""
    threads = min(WRK_THREADS, connections)
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
           "--timeout", f"{WRK_TIMEOUT_S}s", "--latency", "-s", str(script), url, "--",
           str(body), content_type]
    with _own_group(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        pids.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=duration_s + WRK_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise RuntimeError(f"wrk did not finish: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {err.strip() or out.strip()}")
    return {"wrk_threads": threads, **parse_wrk(out)}


# --- the servers --------------------------------------------------------------------------


def proc_usage(pid: int) -> dict[str, float | None]:
    """A process's CPU time so far (user + system, s) and its resident memory now
    and at its peak (VmRSS, VmHWM, MiB), read from /proc; None where /proc has
    no such process (not Linux, or gone)."""
    out: dict[str, float | None] = {"cpu_s": None, "rss_mib": None, "peak_rss_mib": None}
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return out
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):  # "  123456 kB"
            out["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def child_env(**settings: str) -> dict[str, str]:
    """This environment without any GPU_PRICER_* setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_PRICER_")}
    env.update(settings)
    return env


@dataclass
class Server:
    """A uvicorn process of the benchmark, in its own process group."""

    key: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped_by: str = ""
    started_s: float = 0.0
    ready_after_s: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.started_s = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, client: httpx.Client, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until GET /readyz answers 200 (the service after its warm-up)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.key} exited with {self.proc.returncode} before it "
                                   f"was ready:\n{self.log_tail()}")
            try:
                if client.get(f"{self.base}/readyz", timeout=2.0).status_code == 200:
                    self.ready_after_s = time.perf_counter() - self.started_s
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.key} not ready after {timeout_s:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and a graceful exit; SIGKILL to its group if it does not exit."""
        if self.proc is not None and not self.stopped_by:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                    self.stopped_by = "SIGTERM"
                except subprocess.TimeoutExpired:
                    self.stopped_by = f"SIGKILL (no exit {STOP_TIMEOUT_S} s after SIGTERM)"
            else:
                self.stopped_by = "exited by itself"
            _kill_group(self.proc)  # whatever else is left in its group
        if self._log is not None:
            self._log.close()
            self._log = None

    def record(self) -> dict[str, Any]:
        assert self.proc is not None
        return {"key": self.key, "pid": self.proc.pid, "port": self.port,
                "command": " ".join(["python", *self.argv[1:]]).replace(
                    str(self.log_path.parent), "<tmpdir>"),
                "ready_after_s": self.ready_after_s, "stopped_by": self.stopped_by,
                "returncode": self.proc.returncode}


def service_server(key: str, tmp: Path, max_delay_us: int | None,
                   backend: str | None = None) -> Server:
    """The service as deployed (python -m api) on a free loopback port, warm-up on,
    no rate limit; coalescing at the default delay when `max_delay_us` is None;
    its default backend when `backend` is None."""
    port = free_port()
    env = child_env(GPU_PRICER_HOST=HOST, GPU_PRICER_PORT=str(port), GPU_PRICER_WARMUP="true",
                    GPU_PRICER_RATE_LIMIT="")
    if max_delay_us is not None:
        env["GPU_PRICER_MAX_DELAY_US"] = str(max_delay_us)
    if backend is not None:
        env["GPU_PRICER_BACKEND"] = backend
    return Server(key, [sys.executable, "-m", "api"], env, port, tmp / f"{key}.log")


def ceiling_server(tmp: Path, response: Path) -> Server:
    port = free_port()
    return Server("ceiling", [sys.executable, "-m", "bench.ceiling_app", "--port", str(port),
                              "--response", str(response)], child_env(), port,
                  tmp / "ceiling.log")


def uvicorn_settings() -> dict[str, Any]:
    """What both kinds of process run under: api/__main__.py's uvicorn.run keywords,
    loop and http at "auto", resolved as uvicorn resolves them."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {"workers": 1, "loop": f"auto -> {loop}", "http": f"auto -> {http}",
            "log_config": "api.__main__.log_config (uvicorn at INFO, uvicorn.access at "
                          "WARNING; the service logs one JSON access line per request)",
            "interface": "asgi3", "host": HOST}


# --- bodies -------------------------------------------------------------------------------


def json_body(n: int, seed: int = SEED) -> bytes:
    """A PriceRequest of `n` bsm options with the benchmark's Greeks (one option:
    a fixed one; more: a realistic random book)."""
    if n == 1:
        options = [{"option_type": "call", "spot": 100.0, "strike": 105.0, "t": 0.5,
                    "sigma": 0.2, "r": 0.03, "q": 0.01}]
    else:
        book = core.make_book(n, np.random.default_rng(seed))
        cols = {k: v.tolist() for k, v in book.items()}
        options = [{"option_type": "call" if cols["option_type"][i] else "put",
                    **{k: cols[k][i] for k in ("spot", "strike", "t", "sigma", "r", "q")}}
                   for i in range(n)]
    return json.dumps({"model": "bsm", "greeks": list(GREEKS), "options": options},
                      separators=(",", ":")).encode()


def arrow_body(book: core.Book) -> bytes:
    """The book as an Arrow IPC stream, columns named as the library's keywords."""
    table = pa.table({k: book[k] for k in ("option_type", "spot", "strike", "t", "sigma", "r",
                                           "q")})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def server_timing(header: str) -> dict[str, float]:
    """The durations (ms) of a Server-Timing header, by name."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


def read_arrow(content: bytes) -> dict[str, np.ndarray[Any, Any]]:
    table = pa.ipc.open_stream(pa.py_buffer(content)).read_all()
    return {name: table.column(name).to_numpy() for name in table.column_names}


# --- the run ------------------------------------------------------------------------------


def post(client: httpx.Client, url: str, body: bytes, ctype: str) -> httpx.Response:
    return client.post(url, content=body, headers={"Content-Type": ctype},
                       timeout=REQUEST_TIMEOUT_S)


class BulkClient:
    """The Arrow request's client: http.client on one kept-alive connection,
    the body sent as it is and the answer read in one piece."""

    def __init__(self, server: Server) -> None:
        self._conn = http.client.HTTPConnection(HOST, server.port, timeout=REQUEST_TIMEOUT_S)

    def post(self, path: str, body: bytes, ctype: str,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers by lower-case name, body) of a POST to `path`."""
        self._conn.request("POST", path, body=body, headers={"Content-Type": ctype,
                                                             **(headers or {})})
        resp = self._conn.getresponse()
        content = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, content

    def close(self) -> None:
        self._conn.close()


def prime(client: httpx.Client, server: Server, bodies: dict[str, bytes],
          arrow: bytes) -> dict[str, Any]:
    """One request of every body to `server` (compiles what the warm-up did not);
    their status codes and times."""
    out: dict[str, Any] = {}
    requests = [(k, f"{server.base}/v1/price", b, JSON_TYPE) for k, b in bodies.items()]
    requests.append(("arrow", f"{server.base}/v1/price?model=bsm&greeks={','.join(GREEKS)}",
                     arrow, ARROW_TYPE))
    for key, url, body, ctype in requests:
        start = time.perf_counter()
        resp = post(client, url, body, ctype)
        out[key] = {"status": resp.status_code, "seconds": time.perf_counter() - start}
        if resp.status_code != 200:
            raise RuntimeError(f"{server.key} answered {resp.status_code} to the {key} body: "
                               f"{resp.text[:300]}")
    return out


def measure_arrow(server: Server, floor: Server, rows: int, repeat: int,
                  backend: str, log: Log) -> dict[str, Any]:
    """The Arrow request end to end against gpu_pricer.price in process and
    against the bare transfer (`floor`: the ceiling app's transfer route),
    median of `repeat` rounds on fresh books after a warm-up round."""
    path = f"/v1/price?model=bsm&greeks={','.join(GREEKS)}"
    client, bare = BulkClient(server), BulkClient(floor)
    rng = np.random.default_rng(SEED + 1)
    times: dict[str, list[float]] = {"service": [], "library": [], "transfer": []}
    # CPU time (user + system, s) of this process (the client, or the library in
    # process) and of the server, in each timed round
    cpu: dict[str, dict[str, list[float]]] = {key: {"client": [], "server": []}
                                              for key in times}
    servers = {"service": server.pid, "transfer": floor.pid}
    timings: dict[str, list[float]] = {"recv": [], "app": []}  # its Server-Timing, in s
    worst, bitwise = 0.0, True
    first = math.nan  # the service's first round: its first bulk request
    outputs = ("price", *GREEKS)
    body_bytes = answer_bytes = 0
    for rnd in range(repeat + 1):
        book = core.make_book(rows, rng)
        body = arrow_body(book)
        body_bytes = len(body)
        got: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
        status: list[int] = []

        def via_service(body: bytes = body, status: list[int] = status,
                        rnd: int = rnd) -> dict[str, Any]:
            nonlocal answer_bytes
            code, headers, content = client.post(path, body, ARROW_TYPE)
            status.append(code)
            answer_bytes = len(content)
            if rnd:
                timing = server_timing(headers.get("server-timing", ""))
                for name in ("recv", "app"):
                    timings[name].append(timing.get(name, math.nan) / 1e3)
            return read_arrow(content) if code == 200 else {}

        def in_process(book: core.Book = book) -> dict[str, Any]:
            return dict(gp.price(model="bsm", greeks=GREEKS, backend=backend, **book))

        def transfer(body: bytes = body) -> dict[str, Any]:
            # as many bytes back as the service answered (its first answer sets the size)
            code, _, content = bare.post(TRANSFER_PATH, body, ARROW_TYPE,
                                         {ANSWER_BYTES_HEADER: str(answer_bytes)})
            if code != 200 or len(content) != answer_bytes:
                raise RuntimeError(f"the bare transfer answered {code}, {len(content)} bytes")
            return {}

        order = [("service", via_service), ("library", in_process), ("transfer", transfer)]
        for key, fn in order[rnd % 3:] + order[:rnd % 3]:
            gc.collect()
            pid = servers.get(key)
            server_before = proc_usage(pid)["cpu_s"] if pid else 0.0
            client_before = _own_cpu_s()
            start = time.perf_counter()
            got[key] = fn()
            elapsed = time.perf_counter() - start
            client_cpu = _own_cpu_s() - client_before
            server_after = proc_usage(pid)["cpu_s"] if pid else 0.0
            if not rnd and key == "service":
                first = elapsed
            if rnd:
                times[key].append(elapsed)
                cpu[key]["client"].append(client_cpu)
                if server_before is not None and server_after is not None:
                    cpu[key]["server"].append(server_after - server_before)
        if status != [200]:
            raise RuntimeError(f"the Arrow request was answered {status}")
        svc, lib = got["service"], got["library"]
        if not np.array_equal(svc["error"], lib["error"]):
            raise AssertionError("the service's Arrow error codes differ from the library's")
        for name in outputs:
            a, b = svc[name], np.asarray(lib[name])
            bitwise = bitwise and bool(np.array_equal(a, b, equal_nan=True))
            ok = np.isfinite(b)
            if not np.array_equal(ok, np.isfinite(a)):
                raise AssertionError(f"the service's Arrow {name} is finite where the "
                                     f"library's is not")
            if ok.any():
                err = np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)
                worst = max(worst, float(err.max()))
        del got, svc, lib, body, book
        log(f"Arrow round {rnd}/{repeat}{' (warm-up)' if rnd == 0 else ''} done")
    client.close()
    bare.close()

    def figures(ts: list[float]) -> dict[str, Any]:
        return {"times_s": ts, "median_s": statistics.median(ts), "min_s": min(ts),
                "options_per_s": rows / statistics.median(ts)}

    service, library = figures(times["service"]), figures(times["library"])
    floor_figures = figures(times["transfer"])
    for key, figs in (("service", service), ("library", library), ("transfer", floor_figures)):
        client, server = cpu[key]["client"], cpu[key]["server"] or [0.0] * repeat
        figs["cpu_s"] = {"client": statistics.fmean(client), "server": statistics.fmean(server)}
        # the least of any round, both sides together (the server's /proc figure
        # counts whole clock ticks, so this errs low)
        figs["least_cpu_s"] = min(c + v for c, v in zip(client, server, strict=True))
    # the service's own account: up to the last byte of the body, up to the answer's start
    service["server_recv_median_s"] = statistics.median(timings["recv"])
    service["server_answer_median_s"] = statistics.median(timings["app"])
    service["first_s"] = first
    return {"rows": rows, "repeat": repeat, "greeks": list(GREEKS), "body_bytes": body_bytes,
            "answer_bytes": answer_bytes, "client": "http.client, one kept-alive connection",
            "service": service, "library": library, "transfer": floor_figures,
            "ratio": service["options_per_s"] / library["options_per_s"],
            "max_rel_diff": worst, "bitwise_equal": bitwise,
            "agrees": worst <= ARROW_RTOL}


def _own_cpu_s() -> float:
    """This process's CPU time so far, every thread, user + system (s)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def overlap_bound(arrow: dict[str, Any], cores: int) -> dict[str, float]:
    """The best ratio to the library any service could reach on `cores` CPUs
    shared by client and server, with the transfer and the pricing perfectly
    overlapped: the bare transfer's CPU time (client and server) plus the
    library's, spread over every core, is the least wall time it can take.
    Each CPU time is the least of any round, so the bound errs in the
    service's favour."""
    transfer = arrow["transfer"]["least_cpu_s"]
    library = arrow["library"]["least_cpu_s"]
    least = max(arrow["library"]["median_s"], (transfer + library) / cores)
    return {"transfer_cpu_s": transfer, "library_cpu_s": library, "cores": cores,
            "least_s": least, "ratio": arrow["library"]["median_s"] / least}


def run(cfg: dict[str, Any], wrk: str, log: Log) -> dict[str, Any]:
    """Start the servers, measure every point and the Arrow request, stop the
    servers; the full report."""
    load_before = core._loadavg()
    # the Arrow request's client: no page faults of its own on each 50 MB answer
    client_keeps_freed_memory = keep_freed_memory()
    connections: list[int] = cfg["connections"]
    bodies = {key: json_body(n) for key, (n, _) in SCENARIOS.items()}
    pids: list[int] = []
    points: list[dict[str, Any]] = []
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        body_files = {}
        for key, body in bodies.items():
            body_files[key] = tmp / f"{key}.json"
            body_files[key].write_bytes(body)
        client = stack.enter_context(httpx.Client(trust_env=False))

        # --tiny: the NumPy backend, so that nothing compiles and the run takes seconds
        backend = "numpy" if cfg["tiny"] else None
        for key, delay in (("coalescing-on", None), ("coalescing-off", 0)):
            servers[key] = service_server(key, tmp, delay, backend)
            stack.callback(servers[key].stop)
            servers[key].start()
        log("started the service twice (coalescing on and off, warm-up on); compiling the "
            "library's kernel here meanwhile")
        library_backend = backend or "auto"
        small = core.make_book(64, np.random.default_rng(SEED + 2))
        gp.price(model="bsm", greeks=GREEKS, backend=library_backend, **small)
        info: dict[str, Any] = {}
        for key in ("coalescing-on", "coalescing-off"):
            servers[key].wait_ready(client)
            log(f"{key} ready after {servers[key].ready_after_s:.1f} s")
            info[key] = client.get(f"{servers[key].base}/v1/info", timeout=10).json()
        small_arrow = arrow_body(small)
        with ThreadPoolExecutor(2) as pool:  # both at once: each may compile a kernel
            futures = {key: pool.submit(prime, client, servers[key], bodies, small_arrow)
                       for key in ("coalescing-on", "coalescing-off")}
            primed = {key: f.result() for key, f in futures.items()}
        log("primed both services with one request per body")
        # each service's memory after its warm-up and first requests: its resting size
        resources: dict[str, dict[str, Any]] = {
            key: {"ready": proc_usage(servers[key].pid)}
            for key in ("coalescing-on", "coalescing-off")}

        # the ceiling answers what the service answered to the one-option body
        answer = post(client, f"{servers['coalescing-on'].base}/v1/price", bodies["single"],
                      JSON_TYPE)
        answer_off = post(client, f"{servers['coalescing-off'].base}/v1/price",
                          bodies["single"], JSON_TYPE)
        if answer.status_code != 200 or answer_off.content != answer.content:
            raise RuntimeError("the two services answer the one-option body differently")
        captured = tmp / "single-response.json"
        captured.write_bytes(answer.content)
        servers["ceiling"] = ceiling_server(tmp, captured)
        stack.callback(servers["ceiling"].stop)
        servers["ceiling"].start()
        servers["ceiling"].wait_ready(client)
        check = post(client, f"{servers['ceiling'].base}/v1/price", bodies["single"], JSON_TYPE)
        if check.status_code != 200 or check.content != answer.content:
            raise RuntimeError("the ceiling does not answer the service's bytes")
        log(f"ceiling ready after {servers['ceiling'].ready_after_s:.1f} s")

        for i, conns in enumerate(connections):
            jobs = list(JOBS[i % len(JOBS):] + JOBS[:i % len(JOBS)])
            for scenario, key in jobs:
                url = f"{servers[key].base}/v1/price"
                warmup = run_wrk(wrk, url, conns, cfg["warmup_s"], script, body_files[scenario],
                                 JSON_TYPE, pids)
                before = proc_usage(servers[key].pid)
                offset = servers[key].log_path.stat().st_size
                res = run_wrk(wrk, url, conns, cfg["duration_s"], script, body_files[scenario],
                              JSON_TYPE, pids)
                res["app_latency_ms"] = app_latency(servers[key].log_path, offset)
                res["server_cores"] = _cores(before, proc_usage(servers[key].pid),
                                             res["elapsed_s"])
                n = SCENARIOS[scenario][0]
                points.append({"scenario": scenario, "server": key, "connections": conns,
                               "options_per_request": n, "duration_s": cfg["duration_s"],
                               **res, "options_per_s": res["requests_per_s"] * n,
                               "warmup": {"duration_s": cfg["warmup_s"],
                                          "requests": warmup["requests"],
                                          "errors": warmup["errors"]}})
                log(f"{SCENARIOS[scenario][1]:>20} | {SERVERS[key]:<24} | {conns:>3} conn: "
                    f"{res['requests_per_s']:>9,.1f} req/s, p50 {res['latency_ms']['p50']:.2f} "
                    f"ms, p99 {res['latency_ms']['p99']:.2f} ms, errors {res['errors']}")

        log(f"Arrow: {cfg['arrow_rows']:,} rows, {cfg['arrow_repeat']} rounds and a warm-up")
        arrow = measure_arrow(servers["coalescing-on"], servers["ceiling"], cfg["arrow_rows"],
                              cfg["arrow_repeat"], library_backend, log)
        for key in ("coalescing-on", "coalescing-off"):
            resources[key]["end"] = proc_usage(servers[key].pid)
        # stop them here, in order, so the record says how each one ended
        for server in servers.values():
            server.stop()
        processes = [s.record() for s in servers.values()]

    default_delay = ServiceSettings.model_fields["max_delay_us"].default
    report: dict[str, Any] = {
        "benchmark": "service",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {**core.machine_info(), "loadavg_1min_before": load_before,
                    "loadavg_1min_after": core._loadavg()},
        "versions": versions(wrk),
        "config": {
            **{k: v for k, v in cfg.items() if k != "command"},
            "wrk_threads": WRK_THREADS,
            "wrk_timeout_s": WRK_TIMEOUT_S,
            "wrk_script": "POST a fixed body; count responses outside 2xx; print exact "
                          "figures (the script is in bench/service.py)",
            "client_and_server_share_cpus": True,
            "client_keeps_freed_memory": client_keeps_freed_memory,
            "cpus_usable": core.machine_info()["cpus_usable"],
            "model": "bsm",
            "greeks": list(GREEKS),
            "options_per_request": {k: n for k, (n, _) in SCENARIOS.items()},
            "body_bytes": {k: len(b) for k, b in bodies.items()},
            "single_response_bytes": len(answer.content),
            "uvicorn": uvicorn_settings(),
            "service_command": "python -m api",
            "service_warmup": True,
            "service_backend": info["coalescing-on"]["backend"],
            "library_backend": (f"{library_backend} -> {core.auto_choice()}"
                                if library_backend == "auto" else library_backend),
            "backend_note": ("--tiny: GPU_PRICER_BACKEND=numpy for the services and "
                             "backend='numpy' in process, so nothing compiles" if backend
                             else "the services' default backend; backend='auto' in process"),
            "service_settings": {
                "coalescing-on": {"GPU_PRICER_MAX_DELAY_US": "default",
                                  "max_delay_us_default": default_delay},
                "coalescing-off": {"GPU_PRICER_MAX_DELAY_US": "0"},
                "GPU_PRICER_RATE_LIMIT": "empty (no limit)",
                "api_keys": "none (loopback)",
            },
        },
        "servers": {key: {"label": SERVERS[key],
                          **({"info": info[key], "priming": primed[key]} if key in info
                             else {})}
                    for key in servers},
        "processes": processes,
        "wrk_pids": pids,
        "points": points,
        "arrow": arrow,
        "resources": resources_report(resources, points, arrow),
    }
    arrow["overlap_bound"] = overlap_bound(arrow, report["machine"]["cpus_usable"])
    report["targets"] = targets(report)
    report["checks"] = checks(report)
    report["ok"] = all(c["pass"] for c in report["checks"])
    return report


def _cores(before: dict[str, float | None], after: dict[str, float | None],
           wall_s: float) -> float | None:
    """CPU cores a process kept busy between two `proc_usage` readings."""
    if before["cpu_s"] is None or after["cpu_s"] is None or not wall_s > 0:
        return None
    return (after["cpu_s"] - before["cpu_s"]) / wall_s


def resources_report(resources: dict[str, dict[str, Any]], points: list[dict[str, Any]],
                     arrow: dict[str, Any]) -> dict[str, Any]:
    """What the service processes used: resident memory at rest (after warm-up)
    and at peak (VmHWM at the end: the Arrow requests of `arrow['rows']` rows
    went to coalescing-on), and the most CPU cores one kept busy at a point.
    The Kubernetes manifests are sized from these (docs/deploy.md)."""
    out: dict[str, Any] = {}
    for key, r in resources.items():
        cores = [p["server_cores"] for p in points
                 if p["server"] == key and p.get("server_cores") is not None]
        out[key] = {"rss_ready_mib": r["ready"]["rss_mib"],
                    "peak_rss_mib": r["end"]["peak_rss_mib"],
                    "max_cores": max(cores) if cores else None}
    out["arrow_rows"] = arrow["rows"]
    return out


def versions(wrk: str) -> dict[str, str]:
    out = {"gpu_pricer": gp.__version__, "python": sys.version.split()[0], "numpy": np.__version__,
           "pyarrow": pa.__version__, "wrk": wrk_version(wrk)}
    for dist in ("fastapi", "starlette", "uvicorn", "pydantic", "httpx", "numba", "h11",
                 "uvloop", "httptools"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _point(report: dict[str, Any], scenario: str, server: str,
           conns: int) -> dict[str, Any] | None:
    for p in report["points"]:
        if (p["scenario"], p["server"], p["connections"]) == (scenario, server, conns):
            return p
    return None


def target_connections(connections: Sequence[int]) -> int:
    """64, or the largest measured count below it (--tiny measures 1 and 16)."""
    if TARGET_CONNECTIONS in connections:
        return TARGET_CONNECTIONS
    below = [c for c in connections if c <= TARGET_CONNECTIONS]
    return max(below or connections)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its figures and verdict (None: reported only)."""
    conns = target_connections(report["config"]["connections"])
    svc = _point(report, "single", "coalescing-on", conns)
    ceil = _point(report, "single", "ceiling", conns)
    assert svc is not None and ceil is not None
    arrow = report["arrow"]
    out: list[dict[str, Any]] = [
        {"name": f"1 option per JSON request over {conns} connections: service throughput "
                 "vs the bare FastAPI ceiling",
         "connections": conns, "service": svc["requests_per_s"],
         "ceiling": ceil["requests_per_s"], "unit": "requests/s",
         "ratio": svc["requests_per_s"] / ceil["requests_per_s"],
         "target": f">= {MIN_THROUGHPUT_VS_CEILING:g}x",
         "pass": svc["requests_per_s"] >= MIN_THROUGHPUT_VS_CEILING * ceil["requests_per_s"]},
        {"name": f"1 option per JSON request over {conns} connections: service p99 vs the "
                 "ceiling's p99",
         "connections": conns, "service": svc["latency_ms"]["p99"],
         "ceiling": ceil["latency_ms"]["p99"], "unit": "ms",
         "ratio": svc["latency_ms"]["p99"] / ceil["latency_ms"]["p99"],
         "target": f"<= {MAX_P99_VS_CEILING:g}x",
         "pass": svc["latency_ms"]["p99"] <= MAX_P99_VS_CEILING * ceil["latency_ms"]["p99"]},
        {"name": f"{arrow['rows']:,}-row Arrow request vs gpu_pricer.price in process",
         "service": arrow["service"]["options_per_s"],
         "library": arrow["library"]["options_per_s"], "unit": "options/s",
         "ratio": arrow["ratio"], "target": f">= {MIN_ARROW_VS_LIBRARY:g}x",
         "pass": arrow["ratio"] >= MIN_ARROW_VS_LIBRARY,
         "bound": arrow["overlap_bound"]["ratio"]},
    ]
    on = _point(report, "batch", "coalescing-on", conns)
    off = _point(report, "batch", "coalescing-off", conns)
    assert on is not None and off is not None
    out.append({"name": f"1,000 options per JSON request over {conns} connections: "
                        "coalescing on vs off",
                "connections": conns, "unit": "options/s",
                "on": {"options_per_s": on["options_per_s"], "p99_ms": on["latency_ms"]["p99"]},
                "off": {"options_per_s": off["options_per_s"],
                        "p99_ms": off["latency_ms"]["p99"]},
                "ratio": on["options_per_s"] / off["options_per_s"], "target": "reported",
                "pass": None})
    return out


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """What must hold for the figures to mean anything: no error anywhere, a
    positive throughput everywhere, the right answers, the processes gone."""
    out = []
    for p in report["points"]:
        name = f"{p['scenario']} / {p['server']} / {p['connections']} connections"
        detail = (f"{p['requests']} requests, socket errors {p['socket_errors']}, "
                  f"non-2xx {p['non2xx']}, warm-up errors {p['warmup']['errors']}")
        out.append({"name": name, "detail": detail,
                    "pass": p["requests"] > 0 and p["requests_per_s"] > 0 and p["errors"] == 0
                    and p["warmup"]["errors"] == 0})
    arrow = report["arrow"]
    out.append({"name": "Arrow answers equal the library's",
                "detail": f"max relative difference {arrow['max_rel_diff']:.3g}, bitwise "
                          f"{arrow['bitwise_equal']}", "pass": arrow["agrees"]})
    for proc in report["processes"]:
        out.append({"name": f"{proc['key']} stopped", "detail": proc["stopped_by"],
                    "pass": proc["returncode"] is not None and _gone(proc["pid"])})
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --- output -------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    lines = ["| request | server | connections | wrk threads | requests/s | options/s "
             "| p50 ms | p75 ms | p90 ms | p99 ms | errors | in the app: p50 ms | p99 ms |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    order = {key: i for i, key in enumerate(SERVERS)}
    for p in sorted(report["points"], key=lambda p: (list(SCENARIOS).index(p["scenario"]),
                                                    order[p["server"]], p["connections"])):
        lat = p["latency_ms"]
        app = p.get("app_latency_ms")
        inside = f"{app['p50']:.2f} | {app['p99']:.2f}" if app else "- | -"
        lines.append(f"| {SCENARIOS[p['scenario']][1]} | {SERVERS[p['server']]} "
                     f"| {p['connections']} | {p['wrk_threads']} | {p['requests_per_s']:,.1f} "
                     f"| {p['options_per_s']:,.0f} | {lat['p50']:.2f} | {lat['p75']:.2f} "
                     f"| {lat['p90']:.2f} | {lat['p99']:.2f} | {p['errors']} | {inside} |")
    return "\n".join(lines)


def arrow_table(report: dict[str, Any]) -> str:
    a = report["arrow"]
    lines = ["| Arrow request | options/s (median) | median time | min time |",
             "|---|--:|--:|--:|"]
    rows = [("service", f"service, POST /v1/price, {a['rows']:,} rows end to end"),
            ("library", "gpu_pricer.price in process, same arrays")]
    if "transfer" in a:
        rows.append(("transfer", "bare transfer: the same body to the ceiling process, as "
                                 "many bytes back, no pricing"))
    for key, label in rows:
        f = a[key]
        lines.append(f"| {label} | {f['options_per_s']:,.0f} | {f['median_s'] * 1e3:.1f} ms "
                     f"| {f['min_s'] * 1e3:.1f} ms |")
    s = a["service"]
    if "server_answer_median_s" in s:
        lines += ["", f"Of the service's {s['median_s'] * 1e3:.1f} ms (medians, its Server-Timing "
                  f"header): {s['server_recv_median_s'] * 1e3:.1f} ms until the last byte of the "
                  f"request body arrived, {s['server_answer_median_s'] * 1e3:.1f} ms until its "
                  f"answer started; the rest is the answer's transfer to the client and reading "
                  f"it back."]
    if "first_s" in s:
        lines += ["", f"The service's first request of this size after it was ready (the "
                  f"warm-up round, not in the figures above) took {s['first_s'] * 1e3:.1f} ms."]
    if "transfer" in a:
        floor, lib = a["transfer"]["median_s"], a["library"]["median_s"]
        lines += ["", f"The bare transfer alone takes {floor * 1e3:.1f} ms; with it and the "
                  f"pricing done one after the other, the service could reach at best "
                  f"{lib / (floor + lib):.3g}x the library in process here "
                  f"({lib * 1e3:.1f} / ({floor * 1e3:.1f} + {lib * 1e3:.1f}) ms); the service "
                  f"spent {(s['median_s'] - floor) * 1e3:.1f} ms beyond the bare transfer."]
    if "overlap_bound" in a:
        bound = a["overlap_bound"]
        cores = bound["cores"]
        t_cpu, s_cpu = a["transfer"]["cpu_s"], a["service"]["cpu_s"]
        l_cpu = a["library"]["cpu_s"]["client"]
        lines += ["", f"CPU time per request (user + system, mean of the timed rounds): the "
                  f"bare transfer {t_cpu['client'] * 1e3:.1f} ms in the client and "
                  f"{t_cpu['server'] * 1e3:.1f} ms in the ceiling process; the library in "
                  f"process {l_cpu * 1e3:.1f} ms; the service request "
                  f"{s_cpu['client'] * 1e3:.1f} ms in the client and "
                  f"{s_cpu['server'] * 1e3:.1f} ms in the service.  With the transfer and "
                  f"the pricing perfectly overlapped on these {cores} CPUs, which client and "
                  f"server share, no service could take less than "
                  f"{bound['least_s'] * 1e3:.1f} ms (the least CPU time of any round: "
                  f"transfer {bound['transfer_cpu_s'] * 1e3:.1f} ms + library "
                  f"{bound['library_cpu_s'] * 1e3:.1f} ms, over {cores} CPUs): at best "
                  f"{bound['ratio']:.3g}x the library in process here."]
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> str:
    cfg, mach, ver = report["config"], report["machine"], report["versions"]
    info = report["servers"]["coalescing-on"]["info"]
    head = (
        f"gpu_pricer service benchmark, {report['timestamp']}: bsm, price + "
        f"{', '.join(GREEKS)}; wrk closed loop, {cfg['duration_s']} s per point after a "
        f"{cfg['warmup_s']} s warm-up run (excluded), connections "
        f"{', '.join(map(str, cfg['connections']))}, wrk threads min({WRK_THREADS}, "
        f"connections), timeout {WRK_TIMEOUT_S} s.\n"
        f"Machine: {mach['cpu_model']}, {mach['cpus_usable']} usable of {mach['cpu_count']} "
        f"CPUs, {mach['hostname']}: the load generator (wrk) and the servers share these "
        f"CPUs.  Load average {core._fmt_load(mach['loadavg_1min_before'])} before, "
        f"{core._fmt_load(mach['loadavg_1min_after'])} after.\n"
        f"{ver['wrk']}; Python {ver['python']}, uvicorn {ver['uvicorn']} (1 worker, loop "
        f"{cfg['uvicorn']['loop']}, http {cfg['uvicorn']['http']}), FastAPI {ver['fastapi']}, "
        f"pydantic {ver['pydantic']}, numba {ver['numba']}, pyarrow {ver['pyarrow']}.\n"
        f"Service: python -m api on 127.0.0.1, backend {info['backend']} (in process: "
        f"{cfg['library_backend']}), warm-up on, no rate limit; coalescing on = "
        f"GPU_PRICER_MAX_DELAY_US default "
        f"({info['batcher']['max_delay_us']} us), off = 0.  Ceiling: bare FastAPI, same "
        f"pydantic model, same uvicorn settings, answers the service's bytes."
    )
    if cfg["tiny"]:
        head += "\nSmoke run (--tiny): at these durations the figures mean little."
    verdicts = ["Issue targets:"]
    for t in report["targets"]:
        if t["pass"] is None:
            verdicts.append(
                f"- {t['name']}: on {t['on']['options_per_s']:,.0f} options/s, p99 "
                f"{t['on']['p99_ms']:.1f} ms; off {t['off']['options_per_s']:,.0f} options/s, "
                f"p99 {t['off']['p99_ms']:.1f} ms; on/off {t['ratio']:.3g}x (reported, no "
                "target)")
            continue
        other = "ceiling" if "ceiling" in t else "library"
        fmt = ",.1f" if t["unit"] == "requests/s" else (".2f" if t["unit"] == "ms" else ",.0f")
        verdicts.append(
            f"- {t['name']}: {format(t['service'], fmt)} vs {format(t[other], fmt)} "
            f"{t['unit']} = {t['ratio']:.3g}x (target {t['target']}) "
            f"{'PASS' if t['pass'] else 'FAIL'}"
            + (f" (no service could pass {t['bound']:.3g}x on these CPUs: see the Arrow "
               "section)" if t.get("bound") else ""))
    failed = [c for c in report["checks"] if not c["pass"]]
    verdicts.append("Checks: all passed (no socket error, no non-2xx response, Arrow answers "
                    "equal the library's, every process stopped)." if not failed else
                    "Checks FAILED:\n" + "\n".join(f"  - {c['name']}: {c['detail']}"
                                                   for c in failed))
    arrow = report["arrow"]
    arrow_note = (f"Arrow body {arrow['body_bytes'] / 1e6:.1f} MB; median of {arrow['repeat']} "
                  f"rounds on fresh books; answers equal the library's to "
                  f"{arrow['max_rel_diff']:.1g} relative (bitwise: {arrow['bitwise_equal']}).")
    return "\n\n".join([head, table(report), arrow_table(report), arrow_note,
                        resources_note(report), "\n".join(verdicts)]) + "\n"


def resources_note(report: dict[str, Any]) -> str:
    res = report.get("resources")
    if not res:
        return "Service processes' memory and CPU: not recorded."
    parts = []
    for key in ("coalescing-on", "coalescing-off"):
        r = res[key]
        if r["peak_rss_mib"] is None:
            parts.append(f"{SERVERS[key]}: not measured (no /proc)")
            continue
        cores = "n/a" if r["max_cores"] is None else f"{r['max_cores']:.2f}"
        parts.append(f"{SERVERS[key]}: RSS {r['rss_ready_mib']:,.0f} MiB after warm-up, peak "
                     f"{r['peak_rss_mib']:,.0f} MiB, at most {cores} CPU cores busy at a point")
    return (f"Service processes (from /proc; the peak of coalescing on includes the "
            f"{res['arrow_rows']:,}-row Arrow requests): " + "; ".join(parts) + ".")


def plot(report: dict[str, Any], latency_path: Path, batching_path: Path) -> None:
    """Latency (p50, p99) against achieved throughput, per scenario; and coalescing
    on against off (throughput and p99 per connection count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ceiling": "tab:gray", "coalescing-on": "tab:blue", "coalescing-off": "tab:orange"}
    tag = " (--tiny)" if report["config"]["tiny"] else ""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, scenario in zip(axes, SCENARIOS, strict=True):
        for key, label in SERVERS.items():
            pts = sorted((p for p in report["points"]
                          if p["scenario"] == scenario and p["server"] == key),
                         key=lambda p: p["connections"])
            if not pts:
                continue
            x = [p["requests_per_s"] for p in pts]
            for q, style in (("p50", "-"), ("p99", "--")):
                ax.plot(x, [p["latency_ms"][q] for p in pts], style, marker="o",
                        color=colors[key], label=f"{label}, {q}")
            for p in pts:
                ax.annotate(f"{p['connections']}c", (p["requests_per_s"], p["latency_ms"]["p99"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("achieved requests/s")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{SCENARIOS[scenario][1]}: offered load = connections (labels)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"gpu-pricer service under wrk, latency vs throughput{tag}")
    fig.tight_layout()
    fig.savefig(latency_path, dpi=110)
    plt.close(fig)

    conns = report["config"]["connections"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    width = 0.38
    xs = np.arange(len(conns))
    for row, scenario in enumerate(SCENARIOS):
        for col, (what, label) in enumerate((("options_per_s", "options/s"),
                                             ("p99", "p99 latency (ms)"))):
            ax = axes[row][col]
            for j, key in enumerate(("coalescing-on", "coalescing-off")):
                vals = []
                for c in conns:
                    p = _point(report, scenario, key, c)
                    v = (p["latency_ms"]["p99"] if what == "p99" else p[what]) if p else 0.0
                    vals.append(v)
                ax.bar(xs + (j - 0.5) * width, vals, width, color=colors[key],
                       label=SERVERS[key])
            if what == "p99":
                ax.set_yscale("log")
            ax.set_xticks(xs, [str(c) for c in conns])
            ax.set_xlabel("connections")
            ax.set_ylabel(label)
            ax.set_title(f"{SCENARIOS[scenario][1]}: {label}", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Micro-batcher coalescing on (default delay) vs off{tag}")
    fig.tight_layout()
    fig.savefig(batching_path, dpi=110)
    plt.close(fig)


def file_stem(report: dict[str, Any]) -> str:
    cfg = report["config"]
    host = report["machine"]["hostname"].replace(os.sep, "_")
    if cfg["tiny"]:
        label = "-tiny"
    else:
        parts = []
        if cfg["duration_s"] != DEFAULT_DURATION_S or cfg["warmup_s"] != DEFAULT_WARMUP_S:
            parts.append(f"d{cfg['duration_s']}s")
        if tuple(cfg["connections"]) != DEFAULT_CONNECTIONS:
            parts.append("c" + "-".join(map(str, cfg["connections"])))
        if cfg["arrow_rows"] != DEFAULT_ARROW_ROWS or cfg["arrow_repeat"] != DEFAULT_ARROW_REPEAT:
            parts.append(f"n{cfg['arrow_rows']}")
        label = "".join(f"-{p}" for p in parts)
    return f"{dt.date.today().isoformat()}-{host}-service{label}"


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / file_stem(report)
    files = {"json": f"{stem}.json", "md": f"{stem}.md", "latency_png": f"{stem}-latency.png",
             "batching_png": f"{stem}-batching.png"}
    Path(files["json"]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    Path(files["md"]).write_text(summary(report), encoding="utf-8")
    plot(report, Path(files["latency_png"]), Path(files["batching_png"]))
    return files


def _connections(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1 or values[-1] > 10_000:
        raise argparse.ArgumentTypeError("connections: positive integers up to 10,000")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.service",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=DEFAULT_DURATION_S,
                        help=f"seconds per timed point (default {DEFAULT_DURATION_S})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP_S,
                        help=f"seconds of the excluded warm-up run before each point "
                             f"(default {DEFAULT_WARMUP_S})")
    parser.add_argument("--connections", type=_connections,
                        default=list(DEFAULT_CONNECTIONS),
                        help="comma-separated connection counts (default "
                             f"{','.join(map(str, DEFAULT_CONNECTIONS))})")
    parser.add_argument("--arrow-rows", type=int, default=DEFAULT_ARROW_ROWS,
                        help=f"rows of the Arrow request (default {DEFAULT_ARROW_ROWS:,})")
    parser.add_argument("--arrow-repeat", type=int, default=DEFAULT_ARROW_REPEAT,
                        help=f"timed Arrow rounds (default {DEFAULT_ARROW_REPEAT})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="directory for the results (default bench/results)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"smoke run: {TINY_DURATION_S} s points at "
                             f"{','.join(map(str, TINY_CONNECTIONS))} connections, "
                             f"{TINY_ARROW_ROWS:,} Arrow rows, NumPy backend")
    args = parser.parse_args(argv)
    if args.tiny:
        args.duration, args.warmup = TINY_DURATION_S, TINY_WARMUP_S
        args.connections = list(TINY_CONNECTIONS)
        args.arrow_rows, args.arrow_repeat = TINY_ARROW_ROWS, TINY_ARROW_REPEAT
    if not 1 <= args.duration <= MAX_DURATION_S or not 1 <= args.warmup <= MAX_DURATION_S:
        parser.error(f"--duration and --warmup: 1 to {MAX_DURATION_S} seconds")
    if not 1 <= args.arrow_rows <= 10_000_000 or not 1 <= args.arrow_repeat <= 50:
        parser.error("--arrow-rows: 1 to 10,000,000; --arrow-repeat: 1 to 50")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and the targets, write the results.

    Returns the report, with the written files under "files"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    wrk = wrk_path()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench.service {time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr,
              flush=True)

    cfg = {"tiny": args.tiny, "duration_s": args.duration, "warmup_s": args.warmup,
           "connections": args.connections, "arrow_rows": args.arrow_rows,
           "arrow_repeat": args.arrow_repeat}
    # a SIGTERM to the bench unwinds it, so its servers are stopped too
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_exit) if main_thread else None
    try:
        report = {"command": " ".join(["python -m bench.service", *argv]),
                  **run(cfg, wrk, log)}
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    report["files"] = write_report(report, args.out)
    print(summary(report))
    print("Written: " + "\n         ".join(report["files"].values()))
    return report


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
