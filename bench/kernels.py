"""Kernel throughput: options/s per backend x N x output tier x dtype, against
the machine's memory bandwidth.

Run: ``python -m bench.kernels [--max-size N] [--repeat R] [--tiny]``.  For each
available backend (GPU backends are listed as "not measured" with the
reason), N from 1e3 up to --max-size, price only / price + first-order Greeks
/ all Greeks, float64 and float32: the median of R timed runs after a
warm-up, inputs rotated between two independent books so no run reprices
the data of the previous one.  A STREAM-style triad (a = b + s*c, Numba,
all cores) measures the memory bandwidth; each result is also given as a
fraction of the bandwidth-bound rate its bytes per option imply.  Writes
bench/results/<date>-<host>-kernels.json, .md and .png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

import gpu_pricer as gp

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TIERS = {"price": [], "first-order": ["delta", "gamma", "vega", "theta", "rho"], "all": "all"}


@njit(parallel=True, nogil=True, cache=False)
def _triad(a: Any, b: Any, c: Any, s: float) -> None:  # pragma: no cover - compiled
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


def stream_triad(n: int, repeat: int) -> float:
    """Memory bandwidth in bytes/s (best of `repeat`; 24 bytes moved per element)."""
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    _triad(a, b, c, 3.0)
    best = min(_timed(lambda: _triad(a, b, c, 3.0)) for _ in range(repeat))
    return 24.0 * n / best


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def book(n: int, seed: int, dtype: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    spot = rng.uniform(50.0, 150.0, n)
    return {
        "option_type": rng.random(n) < 0.5,
        "spot": spot.astype(dtype),
        "strike": (spot * np.exp(rng.normal(0.0, 0.25, n))).astype(dtype),
        "t": np.exp(rng.uniform(np.log(1 / 365), np.log(3.0), n)).astype(dtype),
        "sigma": rng.uniform(0.05, 0.8, n).astype(dtype),
        "r": 0.03,
        "q": 0.01,
    }


def bytes_per_option(dtype: str, outputs: int) -> int:
    width = np.dtype(dtype).itemsize
    return 4 * width + 1 + outputs * width + 1  # inputs, option type, outputs, error code


def measure(max_size: int, repeat: int,
            dtypes: tuple[str, ...] = ("float64", "float32")) -> dict[str, Any]:
    bandwidth = stream_triad(min(max_size * 4, 50_000_000), max(repeat, 3))
    status = gp.backends()
    rows: list[dict[str, Any]] = []
    compiles: list[dict[str, Any]] = []
    sizes = [n for n in (1_000, 10_000, 100_000, 1_000_000, 10_000_000) if n <= max_size]
    for name, st in status.items():
        if not st.available or (name == "numba-cuda" and "simulator" in st.reason):
            rows.append({"backend": name, "measured": False, "reason": st.reason})
            continue
        for dtype in dtypes:
            for n in sizes:
                if name == "numpy" and n > 1_000_000:
                    continue  # the reference path: seconds per run at 1e7
                books = [book(n, seed, dtype) for seed in (1, 2)]
                for tier, greeks in TIERS.items():
                    # warm-up; the first call of a kernel includes its compilation
                    first = _timed(lambda g=greeks, be=name, d=dtype, b=books[0]: gp.price(
                        greeks=g, backend=be, dtype=d, **b))
                    if n == sizes[0]:
                        compiles.append({"backend": name, "dtype": dtype, "tier": tier,
                                         "first_call_s": first})
                    times = [_timed(lambda b=books[i % 2], g=greeks, be=name, d=dtype: gp.price(
                        greeks=g, backend=be, dtype=d, **b)) for i in range(repeat)]
                    median = float(np.median(times))
                    outputs = 1 + (len(greeks) if isinstance(greeks, list) else 13)
                    bound = bandwidth / bytes_per_option(dtype, outputs)
                    rows.append({"backend": name, "measured": True, "dtype": dtype, "n": n,
                                 "tier": tier, "median_s": median, "options_per_s": n / median,
                                 "fraction_of_bandwidth_bound": n / median / bound})
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"hostname": socket.gethostname(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "memory_bandwidth_bytes_per_s": bandwidth,
        "repeat": repeat,
        "rows": rows,
        "first_calls": compiles,
    }


def table(report: dict[str, Any]) -> str:
    bw = report["memory_bandwidth_bytes_per_s"]
    lines = [f"Memory bandwidth (STREAM-style triad): {bw / 1e9:.1f} GB/s", "",
             "| backend | dtype | N | outputs | options/s (median) | of bandwidth bound |",
             "|---|---|--:|---|--:|--:|"]
    for r in report["rows"]:
        if not r["measured"]:
            lines.append(f"| {r['backend']} | | | | not measured: {r['reason']} | |")
            continue
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['n']:,} | {r['tier']} | "
                     f"{r['options_per_s']:,.0f} | {r['fraction_of_bandwidth_bound']:.1%} |")
    lines += ["", "First call of each kernel (bsm; includes Numba's compilation, which is "
              "cached for the process):", "", "| backend | dtype | outputs | first call (s) |",
              "|---|---|---|--:|"]
    lines += [f"| {c['backend']} | {c['dtype']} | {c['tier']} | {c['first_call_s']:.1f} |"
              for c in report.get("first_calls", [])]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    measured = [r for r in report["rows"] if r["measured"] and r["dtype"] == "float64"]
    for backend in sorted({r["backend"] for r in measured}):
        for tier, style in zip(TIERS, ("-", "--", ":"), strict=True):
            pts = sorted((r["n"], r["options_per_s"]) for r in measured
                         if r["backend"] == backend and r["tier"] == tier)
            if pts:
                ax.plot(*zip(*pts, strict=True), style, marker="o",
                        label=f"{backend}, {tier}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("options per call (N)")
    ax.set_ylabel("options per second")
    ax.set_title("gpu_pricer kernel throughput, float64 (bench.kernels)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-size", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tiny", action="store_true",
                        help="N up to 10,000, 2 repeats, float64 only (for the test suite)")
    args = parser.parse_args(argv)
    dtypes: tuple[str, ...] = ("float64", "float32")
    if args.tiny:
        args.max_size, args.repeat, dtypes = 10_000, 2, ("float64",)
    report = measure(args.max_size, args.repeat, dtypes)
    text = table(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    label = "-tiny" if args.tiny else ("" if args.max_size == 10_000_000 else
                                        f"-n{args.max_size}")
    stem = args.out / f"{dt.date.today().isoformat()}-{report['machine']['hostname']}-kernels"
    stem = stem.with_name(stem.name + label)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text + "\n")
    plot(report, stem.with_suffix(".png"))
    report["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md", ".png")]
    return report


if __name__ == "__main__":
    main()
