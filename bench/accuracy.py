"""Accuracy of dtype="float32" against float64, on a realistic book.

With dtype="float32" the inputs and outputs are float32 and the arithmetic
is float64, so the error is the rounding of the inputs to float32
(amplified by each value's condition number) plus the rounding of the
result.  Run: ``python -m bench.accuracy [--size N] [--tiny]``; prints a
Markdown table of relative errors (median, 99th percentile, max) per
output, over rows where the float64 value is not tiny.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import gpu_pricer as gp

OUTPUTS = ("price", "delta", "gamma", "vega", "theta", "rho")


def book(n: int, seed: int = 7) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    spot = rng.uniform(50.0, 150.0, n)
    return {
        "option_type": rng.random(n) < 0.5,
        "spot": spot,
        "strike": spot * np.exp(rng.normal(0.0, 0.25, n)),
        "t": np.exp(rng.uniform(np.log(1 / 365), np.log(3.0), n)),
        "sigma": rng.uniform(0.05, 0.8, n),
        "r": rng.uniform(0.0, 0.05, n),
        "q": rng.uniform(0.0, 0.03, n),
    }


def measure(n: int, backend: str = "numba") -> dict[str, dict[str, float]]:
    data = book(n)
    f64 = gp.price(greeks=list(OUTPUTS[1:]), backend=backend, **data)
    f32 = gp.price(greeks=list(OUTPUTS[1:]), backend=backend, dtype="float32", **data)
    out: dict[str, dict[str, float]] = {}
    for name in OUTPUTS:
        ref = f64[name]
        scale = np.max(np.abs(ref))
        keep = np.abs(ref) > 1e-6 * scale
        rel = np.abs(f32[name][keep].astype(np.float64) - ref[keep]) / np.abs(ref[keep])
        out[name] = {
            "median": float(np.median(rel)),
            "p99": float(np.quantile(rel, 0.99)),
            "max": float(np.max(rel)),
        }
    return out


def table(result: dict[str, dict[str, float]]) -> str:
    lines = ["| output | median rel. error | p99 | max |", "|---|---|---|---|"]
    for name, r in result.items():
        lines.append(f"| {name} | {r['median']:.1e} | {r['p99']:.1e} | {r['max']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--tiny", action="store_true", help="2,000 rows (for the test suite)")
    args = parser.parse_args(argv)
    n = 2_000 if args.tiny else args.size
    result = measure(n)
    print(f"float32 vs float64, {n:,} bsm options (rows with |value| > 1e-6 of the largest):")
    print(table(result))
    return result


if __name__ == "__main__":
    main()
