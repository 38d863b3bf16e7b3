"""bench/implied.py runs end to end at --tiny size: gpu_pricer's backends and
vollib measured and checked for accuracy, every peer measured or listed with
the reason it could not run, the targets computed, the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import implied


def test_implied_bench_tiny_writes_results(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    report = implied.main(["--tiny", "--out", str(tmp_path)])
    data = json.loads(Path(report["files"]["json"]).read_text(encoding="utf-8"))
    assert Path(report["files"]["md"]).is_file()
    assert data["config"]["size"] == implied.TINY_SIZE
    assert {"vollib", "py_lets_be_rational", "fast-vollib"} <= data["versions"].keys()
    methods = {m["key"]: m for m in data["methods"]}
    for key in ("auto", "backend:numpy", "backend:numba", "vollib"):
        m = methods[key]
        assert m["measured"], key
        assert len(m["times_s"]) == implied.TINY_REPEAT
        assert m["solves_per_s_median"] > 0
        assert m["accuracy"]["informative_rows"] > 0
    for key in ("auto", "backend:numpy", "backend:numba"):
        acc = methods[key]["accuracy"]
        assert acc["refused_rows"] == 0 and acc["max_rel_err"] <= implied.OUR_RTOL
    # vollib solves the same problem: it agrees where it succeeds
    assert methods["vollib"]["accuracy"]["max_rel_err"] < 1e-8
    for key in implied.PEERS:
        assert methods[key]["measured"] or methods[key]["reason"].startswith("failed")
    assert data["targets"][0]["ratio"] > 0
    out = capsys.readouterr().out
    assert "| method |" in out and "auto vs vollib" in out
