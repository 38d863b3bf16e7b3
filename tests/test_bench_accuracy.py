"""bench.accuracy runs at a tiny size, and float32 stays within its documented scale."""

from __future__ import annotations

from bench import accuracy


def test_float32_accuracy_bench_tiny() -> None:
    result = accuracy.main(["--tiny"])
    assert set(result) == set(accuracy.OUTPUTS)
    for name, r in result.items():
        assert 0 <= r["median"] <= r["p99"] <= r["max"], name
        # float32 inputs: about 6e-8 relative rounding, amplified by conditioning
        assert r["median"] < 1e-6, name
