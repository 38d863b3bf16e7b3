"""bench.kernels runs at a tiny size and writes its JSON, table and plot."""

from __future__ import annotations

from pathlib import Path

from bench import kernels


def test_kernel_bench_tiny(tmp_path: Path) -> None:
    report = kernels.main(["--tiny", "--out", str(tmp_path)])
    assert report["memory_bandwidth_bytes_per_s"] > 1e8
    measured = [r for r in report["rows"] if r["measured"]]
    assert {r["backend"] for r in measured} >= {"numpy", "numba"}
    assert {r["tier"] for r in measured} == set(kernels.TIERS)
    assert all(r["options_per_s"] > 0 for r in measured)
    unmeasured = [r for r in report["rows"] if not r["measured"]]
    assert all(r["reason"] for r in unmeasured)  # GPU rows say why, never a number
    for f in report["files"]:
        assert Path(f).stat().st_size > 0
