"""bench/service.py: wrk's output is parsed, errors included; without wrk the
bench says so; and at --tiny size it runs end to end against real uvicorn
processes -- the ceiling and both coalescing modes measured at every
connection count, no error anywhere, the files written, every process gone."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from bench import service

from .conftest import SIMULATED

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:40000/v1/price
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.98ms  611.02us  13.02ms   91.20%
    Req/Sec     1.32k    55.34     1.40k    80.00%
  Latency Distribution
     50%  635.91us
     75%    5.20ms
     90%    1.04s
     99%    1.50m
  2619 requests in 1.00s, 1.02MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   2619.02
Transfer/sec:      1.02MB
WRK_JSON {"requests": 2619, "duration_us": 1000123, "bytes": 1069572, "non2xx": 7, \
"connect": 0, "read": 2, "write": 0, "status": 5, "timeout": 1, "latency_us": {"min": 300, \
"max": 13020, "mean": 5980.000, "stdev": 611.020, "p50": 636, "p75": 5200, "p90": 1040000, \
"p99": 90000000, "p99.9": 90000000}}
"""


def test_parse_wrk_reads_latencies_rates_and_every_error() -> None:
    res = service.parse_wrk(WRK_OUTPUT)
    assert res["requests"] == 2619
    assert res["requests_per_s"] == pytest.approx(2619.02)
    assert res["elapsed_s"] == pytest.approx(1.0)
    assert res["latency_ms"] == pytest.approx({"p50": 0.63591, "p75": 5.2, "p90": 1040.0,
                                               "p99": 90_000.0})
    assert res["socket_errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert res["wrk_non_2xx_3xx"] == 5
    assert res["non2xx"] == 7  # the script also counts what wrk's own line leaves out
    assert res["errors"] == 10
    assert res["exact"]["bytes"] == 1069572


def test_parse_wrk_without_errors_or_script_line() -> None:
    text = "\n".join(line for line in WRK_OUTPUT.splitlines()
                     if not line.startswith(("  Socket", "  Non-2xx", "WRK_JSON", '"')))
    res = service.parse_wrk(text)
    assert res["errors"] == 0 and res["exact"] is None
    with pytest.raises(ValueError, match="unexpected wrk output"):
        service.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_overlap_bound_spreads_transfer_and_library_cpu_over_the_cores() -> None:
    arrow = {"transfer": {"least_cpu_s": 0.070}, "library": {"least_cpu_s": 0.050,
                                                              "median_s": 0.027}}
    bound = service.overlap_bound(arrow, 2)
    assert bound["least_s"] == pytest.approx(0.060)  # (0.070 + 0.050) / 2
    assert bound["ratio"] == pytest.approx(0.027 / 0.060)
    # many cores: the library's own time is the floor
    assert service.overlap_bound(arrow, 64)["ratio"] == pytest.approx(1.0)


def test_server_timing_is_read_by_name() -> None:
    got = service.server_timing("recv;dur=12.5, app;dur=40.25, db;desc=x")
    assert got == {"recv": 12.5, "app": 40.25}
    assert service.server_timing("") == {}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_proc_usage_reads_cpu_and_memory() -> None:
    before = service.proc_usage(os.getpid())
    burn = sum(i * i for i in range(2_000_000))  # some CPU time to see
    after = service.proc_usage(os.getpid())
    assert burn > 0
    assert after["cpu_s"] is not None and before["cpu_s"] is not None
    assert after["cpu_s"] > before["cpu_s"]
    assert after["rss_mib"] is not None and after["peak_rss_mib"] is not None
    assert 1 < after["rss_mib"] <= after["peak_rss_mib"]
    # a pid that does not exist: nothing, rather than an error
    assert service.proc_usage(2**22 + 12345) == {"cpu_s": None, "rss_mib": None,
                                                 "peak_rss_mib": None}


def test_missing_wrk_exits_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        service.main(["--tiny"])
    assert exc.value.code == service.WRK_MISSING
    assert "apt-get install wrk" in service.WRK_MISSING


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((service.HOST, port)) != 0


@pytest.mark.slow
@pytest.mark.skipif(SIMULATED, reason="CPU processes only")
@pytest.mark.skipif(shutil.which("wrk") is None, reason=service.WRK_MISSING)
def test_service_bench_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = service.main(["--tiny", "--out", str(tmp_path)])

    files = report["files"]
    assert Path(files["json"]).name.endswith("-service-tiny.json")
    for path in files.values():
        assert Path(path).stat().st_size > 0, path
    data = json.loads(Path(files["json"]).read_text(encoding="utf-8"))
    expected = {"benchmark", "timestamp", "command", "machine", "versions", "config",
                "servers", "processes", "wrk_pids", "points", "arrow", "resources", "targets",
                "checks", "ok"}
    assert expected <= data.keys()
    assert data["command"].startswith("python -m bench.service --tiny")
    assert data["versions"]["wrk"].startswith("wrk")
    assert {"uvicorn", "fastapi", "pydantic", "gpu_pricer"} <= data["versions"].keys()
    cfg = data["config"]
    assert cfg["connections"] == list(service.TINY_CONNECTIONS)
    assert cfg["duration_s"] == service.TINY_DURATION_S
    assert cfg["arrow_rows"] == service.TINY_ARROW_ROWS
    assert cfg["client_and_server_share_cpus"] is True

    # every scenario on every server it is measured on, at every connection count
    measured = {(p["scenario"], p["server"], p["connections"]) for p in data["points"]}
    assert measured == {(scenario, server, c) for scenario, server in service.JOBS
                        for c in service.TINY_CONNECTIONS}
    assert len(data["points"]) == len(measured)
    for p in data["points"]:
        name = (p["scenario"], p["server"], p["connections"])
        assert p["requests"] > 0 and p["requests_per_s"] > 0, name
        assert p["options_per_s"] == pytest.approx(p["requests_per_s"]
                                                   * p["options_per_request"])
        assert p["errors"] == 0 and p["non2xx"] == 0, name
        assert not any(p["socket_errors"].values()), name
        assert p["warmup"]["requests"] > 0 and p["warmup"]["errors"] == 0, name
        lat = p["latency_ms"]
        assert 0 < lat["p50"] <= lat["p75"] <= lat["p90"] <= lat["p99"], name
        assert p["wrk_threads"] == min(service.WRK_THREADS, p["connections"])
        app = p["app_latency_ms"]
        if p["server"] == "ceiling":
            assert app is None  # it writes no access lines
        else:
            assert app["requests"] > 0 and 0 < app["p50"] <= app["p90"] <= app["p99"], name
    delays = {k: data["servers"][k]["info"]["batcher"]["max_delay_us"]
              for k in ("coalescing-on", "coalescing-off")}
    assert delays["coalescing-on"] > 0 and delays["coalescing-off"] == 0

    arrow = data["arrow"]
    assert arrow["rows"] == service.TINY_ARROW_ROWS
    assert len(arrow["service"]["times_s"]) == service.TINY_ARROW_REPEAT
    assert arrow["service"]["options_per_s"] > 0 and arrow["library"]["options_per_s"] > 0
    assert arrow["agrees"]
    svc = arrow["service"]
    assert 0 <= svc["server_recv_median_s"] <= svc["server_answer_median_s"] <= svc["median_s"]
    assert 0 < svc["first_s"] < 60  # the warm-up round's request, reported on its own
    # the bare transfer of the same bytes, timed in the same rounds
    assert len(arrow["transfer"]["times_s"]) == service.TINY_ARROW_REPEAT
    assert arrow["transfer"]["median_s"] > 0 and arrow["answer_bytes"] > arrow["body_bytes"] / 2
    assert isinstance(cfg["client_keeps_freed_memory"], bool)
    # CPU time of each side, and the bound it puts on any service here
    for key in ("service", "transfer"):
        assert arrow[key]["cpu_s"]["client"] > 0 and arrow[key]["cpu_s"]["server"] >= 0
    assert arrow["library"]["cpu_s"]["client"] > 0
    for key in ("service", "library", "transfer"):
        assert 0 < arrow[key]["least_cpu_s"] <= sum(arrow[key]["cpu_s"].values()) + 1e-9
    bound = arrow["overlap_bound"]
    assert bound["cores"] == data["machine"]["cpus_usable"]
    assert bound["least_s"] >= arrow["library"]["median_s"] and 0 < bound["ratio"] <= 1

    # the service processes' memory and CPU, which k8s/ is sized from (Linux /proc)
    res = data["resources"]
    assert res["arrow_rows"] == service.TINY_ARROW_ROWS
    for key in ("coalescing-on", "coalescing-off"):
        r = res[key]
        assert 50 < r["rss_ready_mib"] <= r["peak_rss_mib"] < 24 * 1024, (key, r)
        assert 0 < r["max_cores"] < 4 * (os.cpu_count() or 1), (key, r)
    assert "MiB after warm-up" in Path(files["md"]).read_text(encoding="utf-8")

    assert [t["pass"] is None for t in data["targets"]] == [False, False, False, True]
    assert all(t["ratio"] > 0 for t in data["targets"])
    assert data["ok"] and all(c["pass"] for c in data["checks"])

    # nothing left behind: servers stopped by SIGTERM, every pid gone, ports closed
    assert {p["key"] for p in data["processes"]} == set(service.SERVERS)
    for proc in data["processes"]:
        assert proc["stopped_by"] == "SIGTERM", proc
        assert proc["returncode"] is not None
        assert _refused(proc["port"]), proc
    for pid in [p["pid"] for p in data["processes"]] + data["wrk_pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    printed = capsys.readouterr().out
    assert "| request | server | connections" in printed
    assert "share these CPUs" in printed
    assert "until its answer started" in printed
    assert "The bare transfer alone takes" in printed
    assert "perfectly overlapped" in printed
    assert "PASS" in printed or "FAIL" in printed


def test_ceiling_transfer_reads_the_body_and_answers_the_bytes_asked_for() -> None:
    from fastapi.testclient import TestClient

    from bench import ceiling_app

    with TestClient(ceiling_app.create_app(b"{}")) as client:
        got = client.post(ceiling_app.TRANSFER_PATH, content=b"x" * 100_000,
                          headers={ceiling_app.ANSWER_BYTES_HEADER: "123457",
                                   "Content-Type": service.ARROW_TYPE})
        assert got.status_code == 200 and got.content == bytes(123_457)
        again = client.post(ceiling_app.TRANSFER_PATH, content=b"",
                            headers={ceiling_app.ANSWER_BYTES_HEADER: "5"})
        assert again.status_code == 200 and again.content == bytes(5)
        bad = client.post(ceiling_app.TRANSFER_PATH, content=b"",
                          headers={ceiling_app.ANSWER_BYTES_HEADER: "-1"})
        assert bad.status_code == 422


def test_app_latency_reads_the_services_own_answers_past_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    old = '{"method": "POST", "endpoint": "/v1/price", "status": 200, "duration_ms": 900.0}\n'
    lines = [
        'INFO:     Uvicorn running on http://127.0.0.1:1234',
        *[json.dumps({"request_id": str(i), "method": "POST", "endpoint": "/v1/price",
                      "status": 200, "duration_ms": float(i)}) for i in range(1, 101)],
        json.dumps({"method": "POST", "endpoint": "/v1/price", "status": 503,
                    "duration_ms": 5000.0}),
        json.dumps({"method": "GET", "endpoint": "/healthz", "status": 200,
                    "duration_ms": 7000.0}),
        '{"truncated": ',
    ]
    log.write_text(old + "\n".join(lines) + "\n")
    got = service.app_latency(log, len(old))
    assert got is not None
    assert got["requests"] == 100
    assert got["p50"] == pytest.approx(50.5) and got["p99"] == pytest.approx(99.01)
    assert got["p50"] <= got["p90"] <= got["p99"]
    assert service.app_latency(log, log.stat().st_size) is None
