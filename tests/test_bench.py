"""The core benchmark (bench/core.py) runs end to end at --tiny size and writes
its results: every measured method with a positive rate, the unavailable
backends with a reason, the machine and the versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import core

MEASURED = ("auto", "backend:numpy", "backend:numba", "tutorial", "tutorial_functions",
            "quantlib", "quantlib_engine", "plain_numba")


def test_core_bench_tiny_writes_results(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    report = core.main(["--tiny", "--out", str(tmp_path)])

    json_files = list(tmp_path.glob("*-core-tiny.json"))
    assert [str(p) for p in json_files] == [report["files"]["json"]]
    assert json_files[0].with_suffix(".md").is_file()
    data = json.loads(json_files[0].read_text(encoding="utf-8"))

    expected = {"benchmark", "timestamp", "command", "machine", "versions", "config",
                "backends", "auto_backend", "auto_matches_backend_bitwise", "methods",
                "targets"}
    assert expected <= data.keys()
    assert {"cpu_model", "cpu_count", "hostname", "python"} <= data["machine"].keys()
    assert {"numpy", "numba", "scipy", "QuantLib", "python"} <= data["versions"].keys()
    assert data["config"]["size"] == core.TINY_SIZE
    assert data["config"]["repeat"] == core.TINY_REPEAT
    assert data["config"]["quantlib_sample"] == core.TINY_QL_SAMPLE

    assert set(data["backends"]) == {"numpy", "numba", "cupy", "numba-cuda"}
    assert data["backends"][data["auto_backend"]]["available"]
    assert data["auto_matches_backend_bitwise"] is True

    methods = {m["key"]: m for m in data["methods"]}
    assert set(MEASURED) <= methods.keys()
    for key, m in methods.items():
        available = key not in MEASURED and data["backends"][m["backend"]]["available"]
        if key in MEASURED or available:
            assert m["measured"], key
            assert len(m["times_s"]) == core.TINY_REPEAT
            assert m["options_per_s_median"] > 0
            assert m["options_per_s_best"] >= m["options_per_s_median"]
            assert m["ratio_vs_auto"] > 0
            assert m["auto_vs_this"] > 0
            assert set(m["max_rel_err_vs_auto"]) == set(core.OUTPUTS)
            assert max(m["max_rel_err_vs_auto"].values()) <= core.RTOL
        else:
            assert not m["measured"] and m["reason"], key
    assert methods["quantlib"]["extrapolated"]
    assert methods["quantlib"]["options_per_call"] == core.TINY_QL_SAMPLE

    assert methods["quantlib_engine"]["extrapolated"]
    assert methods["quantlib_engine"]["options_per_call"] == core.TINY_QL_SAMPLE

    assert [t["method"] for t in data["targets"]] == ["tutorial", "quantlib", "plain_numba"]
    assert [t["method"] for t in data["user_style_targets"]] == ["tutorial_functions",
                                                                 "quantlib_engine"]
    for t in data["targets"] + data["user_style_targets"]:
        assert t["ratio"] > 0
        assert isinstance(t["pass"], bool)

    printed = capsys.readouterr().out
    assert "| method | backend | options/s (median)" in printed
    assert "auto vs QuantLib per-option loop" in printed


def test_user_style_baselines_equal_the_fused_ones() -> None:
    """The tutorial as one function per output gives the fused tutorial's
    values; the QuantLib engine loop gives BlackCalculator's on whole days."""
    book = core.make_book(3_000, np.random.default_rng(7))
    fused, functions = core.price_tutorial(book), core.price_tutorial_functions(book)
    ref = {k: np.asarray(v) for k, v in core.price_gpu_pricer(book, "numba").items()}
    assert core.check_agreement("functions", functions, ref, book["spot"])
    for name in core.OUTPUTS:
        np.testing.assert_allclose(functions[name], fused[name], rtol=1e-9,
                                   atol=1e-12 * book["spot"].max(), err_msg=name)
    days = core.whole_days(book, 300)
    np.testing.assert_allclose(days["t"] * 365.0, np.round(days["t"] * 365.0), rtol=1e-12)
    assert days["t"].min() * 365.0 > 0.5
    engine = core.price_quantlib_engine(book, 300)
    calculator = core.price_quantlib(days, 300)
    for name in core.OUTPUTS:
        np.testing.assert_allclose(engine[name], calculator[name], rtol=1e-9,
                                   atol=1e-12 * days["spot"].max(), err_msg=name)
