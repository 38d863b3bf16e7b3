"""bench.kernels runs at a tiny size and writes its JSON, table and plot."""

from __future__ import annotations

from pathlib import Path

import gpu_pricer as gp
from bench import kernels


def test_kernel_bench_tiny(tmp_path: Path) -> None:
    report = kernels.main(["--tiny", "--out", str(tmp_path)])
    assert report["memory_bandwidth_bytes_per_s"] > 1e8
    measured = [r for r in report["rows"] if r["measured"]]
    assert {r["backend"] for r in measured} >= {"numpy", "numba", "peer: tutorial",
                                                 "peer: quantlib loop", "peer: vollib"}
    assert {r["tier"] for r in measured} == {*kernels.TIERS, "implied_vol"}
    assert {r["n"] for r in measured if r["backend"] == "numba" and r["tier"] == "implied_vol"
            } == {1_000, 10_000}
    extrapolated = [r for r in measured if r.get("extrapolated_from")]
    assert extrapolated and all(r["backend"] in ("peer: quantlib loop", "peer: vollib")
                                for r in extrapolated)
    split = report["gpu_split"]  # no device here: says why, never a number
    assert split["measured"] or split["reason"]
    resident = report["gpu_resident"]
    assert resident["measured"] or "cupy" in resident["reason"]
    assert all(r["options_per_s"] > 0 for r in measured)
    unmeasured = [r for r in report["rows"] if not r["measured"]]
    assert all(r["reason"] for r in unmeasured)  # GPU rows say why, never a number
    models = report["models"]  # every model, tier and implied vol, per timed backend
    assert {(r["backend"], r["model"], r["tier"]) for r in models} == {
        (b, m, t) for b in ("numpy", "numba") for m in gp.MODELS
        for t in (*kernels.TIERS, "implied_vol")}
    assert all(r["options_per_s"] > 0 and r["n"] == 10_000 for r in models)
    text = Path(report["files"][1]).read_text()
    assert "| numba | bachelier |" in text
    for f in report["files"]:
        assert Path(f).stat().st_size > 0
