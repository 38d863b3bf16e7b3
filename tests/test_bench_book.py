"""bench/book.py runs end to end at --tiny size: the book generated, the CLI
and the serial floor run in child processes, their outputs compared, the
targets computed, the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import book


def test_book_bench_tiny_writes_results(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    report = book.main(["--tiny", "--out", str(tmp_path)])
    data = json.loads(Path(report["files"]["json"]).read_text(encoding="utf-8"))
    assert Path(report["files"]["md"]).is_file()
    assert Path(report["files"]["json"]).name.endswith("-book-tiny.json")
    assert data["config"]["size"] == book.TINY_SIZE == data["rows"]
    summary = data["cli"]["runs"][0]["summary"]
    assert summary["rows"] == book.TINY_SIZE and summary["errors"] == 0
    assert summary["aggregate"]["groups"] == 20
    assert data["cli"]["peak_rss_bytes"] > 0 and data["floor"]["peak_rss_bytes"] > 0
    phases = data["floor"]["runs"][0]["phases"]
    assert phases["seconds"] >= phases["read_s"] + phases["price_s"] + phases["write_s"]
    assert data["aggregate_max_rel_diff"] <= book.AGG_RTOL
    names = [t["name"] for t in data["targets"]]
    assert any("floor" in n for n in names) and any("RSS" in n for n in names)
    assert all(t["value"] > 0 for t in data["targets"])
    out = capsys.readouterr().out
    assert "| run |" in out and "serial floor" in out and "Issue targets" in out
