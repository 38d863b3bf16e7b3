"""Kernel throughput: options/s per backend x N x output tier x dtype, against
the machine's memory bandwidth, with implied-vol solves and the peers.

Run: ``python -m bench.kernels [--max-size N] [--repeat R] [--tiny]``.  For each
available backend (GPU backends are listed as "not measured" with the
reason), N from 1e3 up to --max-size, price only / price + first-order Greeks
/ all Greeks, float64 and float32: the median of R timed runs after a
warm-up, inputs rotated between two independent books so no run reprices
the data of the previous one.  A STREAM-style triad (a = b + s*c, Numba,
all cores) measures the memory bandwidth; each result is also given as a
fraction of the bandwidth-bound rate its bytes per option imply.

Every model (bsm, black76, bachelier), each output tier and implied vol, per
backend, float64, at N = 1,000,000 (or --max-size): the same book, black76
on a forward of the spot's value, bachelier with sigma times that forward
as its normal vol.

Also per N (float64): implied-vol solves/s per backend (tier "implied_vol"),
and the peers on the same books: the tutorial style (NumPy +
scipy.stats.norm, price + first-order Greeks), a QuantLib per-option loop
and vollib's per-option implied vol (both timed on a sample of at most
2,000 options and labelled extrapolated).

GPU: where numba-cuda has a device, `gpu_pricer.price` on host data through
the pinned two-stream stages and through synchronous copies, in the same
run (`host_paths`); the host-to-device copy, the kernel and
the device-to-host copy are timed separately with CUDA events (synchronised,
after a warm-up), and the kernel's resident-data rate is compared with the
device's bandwidth measured by a device triad.  Without a device these rows
say "not measured" and why; under the CUDA simulator the code runs (the
tests use it) but its timings mean nothing and are labelled so.

Writes bench/results/<date>-<host>-kernels.json, .md and .png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

try:  # a module global, so that the CUDA simulator can swap it inside kernels
    from numba import cuda
except ImportError:  # pragma: no cover - numba-cuda is in the dev extra
    cuda = None

import gpu_pricer as gp

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Options in the per-option peers' timed samples (QuantLib, vollib).
PEER_SAMPLE = 2_000
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


def _iv_inputs(b: dict[str, Any], backend: str = "numpy") -> dict[str, Any]:
    """implied_vol keywords for a book: its prices (computed outside any timing)."""
    p = gp.price(backend=backend, **b)["price"]
    return {k: v for k, v in b.items() if k != "sigma"} | {"price": p}


#: Rows per call of the every-model table (at most --max-size).
MODELS_N = 1_000_000


def model_book(model: str, n: int, seed: int) -> dict[str, Any]:
    """`book`'s options for `model`: bsm as they are; black76 on a forward of
    the spot's value (no dividend yield); bachelier on that forward with the
    absolute normal vol sigma * forward (the same order of time value)."""
    b = book(n, seed, "float64")
    if model == "bsm":
        return b
    fwd = b.pop("spot")
    b.pop("q")
    if model == "bachelier":
        b["sigma"] = b["sigma"] * fwd
    return {**b, "forward": fwd}


def model_rows(n: int, repeat: int, backends: list[str]) -> list[dict[str, Any]]:
    """Options/s of every model, output tier and implied vol, float64, at N = n,
    for each backend given (measured the same way as the main table)."""
    rows: list[dict[str, Any]] = []

    def median(fn: Any, books: list[dict[str, Any]]) -> float:
        fn(**books[0])  # warm-up: compilation
        return float(np.median([_timed(lambda b=books[i % 2]: fn(**b)) for i in range(repeat)]))

    for name in backends:
        for model in gp.MODELS:
            books = [model_book(model, n, seed) for seed in (1, 2)]
            calls = {tier: partial(gp.price, model=model, backend=name, greeks=greeks)
                     for tier, greeks in TIERS.items()}
            times = {tier: median(fn, books) for tier, fn in calls.items()}
            ivs = [{**{k: v for k, v in b.items() if k != "sigma"},
                    "price": calls["price"](**b)["price"]} for b in books]
            times["implied_vol"] = median(partial(gp.implied_vol, model=model, backend=name),
                                          ivs)
            rows += [{"backend": name, "model": model, "n": n, "tier": tier, "median_s": t,
                      "options_per_s": n / t} for tier, t in times.items()]
    return rows


def _peer_rows(n: int, books: list[dict[str, Any]], repeat: int) -> list[dict[str, Any]]:
    """The peers at size n (float64): tutorial, QuantLib loop, vollib implied vol;
    a peer that is not installed is a row that says so."""
    from . import core

    try:
        from . import implied
    except ImportError as exc:  # vollib (dev extra) missing
        implied = None
        missing = f"not installed ({exc})"
    rows: list[dict[str, Any]] = []
    full = [{**b, "r": np.full(n, b["r"]), "q": np.full(n, b["q"])} for b in books]
    m = min(n, PEER_SAMPLE)
    iv_books = [{**f, "price": _iv_inputs(b, "numba")["price"]} for f, b in zip(full, books,
                                                                                  strict=True)]
    peers: list[tuple[str, str, int, Any, Any]] = [
        ("tutorial", "first-order", n, core.price_tutorial, full),
        ("quantlib loop", "first-order", m, lambda b: core.price_quantlib(b, m), full)]
    if implied is None:
        rows.append({"backend": "peer: vollib", "measured": False, "reason": missing})
    else:
        peers.append(("vollib", "implied_vol", m, lambda b: implied.solve_vollib(b, m),
                      iv_books))
    for name, tier, count, fn, data in peers:
        fn(data[0])
        times = [_timed(lambda d=data[i % 2], f=fn: f(d)) for i in range(repeat)]
        median = float(np.median(times))
        rows.append({"backend": f"peer: {name}", "measured": True, "dtype": "float64", "n": n,
                     "tier": tier, "median_s": median, "options_per_s": count / median,
                     "extrapolated_from": count if count < n else None,
                     "fraction_of_bandwidth_bound": None})
    return rows


def gpu_split(n: int, repeat: int) -> dict[str, Any]:
    """Host-to-device, kernel and device-to-host times of the numba-cuda bsm
    kernel with all outputs, by CUDA events; the device triad's bandwidth."""
    status = gp.backends()["numba-cuda"]
    if not status.available:
        return {"measured": False, "reason": status.reason}
    from gpu_pricer.inputs import build_request
    from gpu_pricer.kernels import cuda as kcuda

    simulated = "simulator" in status.reason
    b = book(n, 3, "float64")
    req = build_request(model="bsm", greeks="all", forward=None, dtype="float64", **b)
    host = [np.ascontiguousarray(a) for a in (req.otype, *req.values)]
    out = np.empty((req.size, n))
    err = np.empty(n, dtype=np.int8)
    kern = kcuda.kernel(req.model, req.size)
    tpb = kcuda.THREADS_PER_BLOCK
    blocks = max(1, min((n + tpb - 1) // tpb, 65535))
    steps = cuda.to_device(req.steps)

    def events() -> tuple[Any, Any]:
        return cuda.event(), cuda.event()

    def once() -> tuple[float, float, float]:
        e0, e1 = events()
        e0.record()
        dev = [cuda.to_device(a) for a in host]
        d_out = cuda.device_array(out.shape)
        d_err = cuda.device_array(n, dtype=np.int8)
        e1.record()
        e1.synchronize()
        k0, k1 = events()
        k0.record()
        kern[blocks, tpb](*dev, steps, d_out, d_err)
        k1.record()
        k1.synchronize()
        c0, c1 = events()
        c0.record()
        d_out.copy_to_host(out)
        d_err.copy_to_host(err)
        c1.record()
        c1.synchronize()
        return (e0.elapsed_time(e1) / 1e3, k0.elapsed_time(k1) / 1e3, c0.elapsed_time(c1) / 1e3)

    once()
    h2d, kernel, d2h = (float(np.median(x)) for x in zip(*(once() for _ in range(repeat)),
                                                        strict=True))
    bandwidth = _device_triad(min(n * 4, 100_000_000), repeat)
    moved = bytes_per_option("float64", 14) * n
    return {"measured": True, "simulated": simulated, "n": n, "h2d_s": h2d, "kernel_s": kernel,
            "d2h_s": d2h, "resident_options_per_s": n / kernel if kernel > 0 else None,
            "device_bandwidth_bytes_per_s": bandwidth,
            "fraction_of_device_bandwidth": (moved / kernel / bandwidth
                                             if kernel > 0 and bandwidth else None),
            "note": "CUDA simulator: timings meaningless" if simulated else ""}


def host_paths(n: int, repeat: int) -> dict[str, Any]:
    """`gpu_pricer.price(backend="numba-cuda")` on host (NumPy) data, bsm with
    all outputs, through the pinned two-stream stages (GPU_PRICER_CUDA_STAGING
    true, the default) and through synchronous pageable copies (false), in
    the same run: rounds interleaved, the order alternating, each path warmed
    up first (compilation, the stages' pinned memory)."""
    status = gp.backends()["numba-cuda"]
    if not status.available:
        return {"measured": False, "reason": status.reason}
    from gpu_pricer.settings import get_settings

    simulated = "simulator" in status.reason
    books = [book(n, seed, "float64") for seed in (7, 8)]
    before = os.environ.get("GPU_PRICER_CUDA_STAGING")
    times: dict[str, list[float]] = {"staged": [], "synchronous": []}

    def call(path: str, b: dict[str, Any]) -> float:
        os.environ["GPU_PRICER_CUDA_STAGING"] = "true" if path == "staged" else "false"
        get_settings.cache_clear()
        return _timed(lambda: gp.price(greeks="all", backend="numba-cuda", **b))

    try:
        for path in times:
            call(path, books[1])
        for i in range(repeat):
            order = list(times) if i % 2 == 0 else list(times)[::-1]
            for path in order:
                times[path].append(call(path, books[i % 2]))
    finally:
        if before is None:
            os.environ.pop("GPU_PRICER_CUDA_STAGING", None)
        else:
            os.environ["GPU_PRICER_CUDA_STAGING"] = before
        get_settings.cache_clear()
    staged, sync = (float(np.median(times[p])) for p in ("staged", "synchronous"))
    return {"measured": True, "simulated": simulated, "n": n, "staged_s": staged,
            "synchronous_s": sync, "speedup": sync / staged,
            "note": "CUDA simulator: timings meaningless" if simulated else ""}


def gpu_resident(n: int, repeat: int,
                 dtypes: tuple[str, ...] = ("float64", "float32")) -> dict[str, Any]:
    """`gpu_pricer.price` on device-resident CuPy arrays (the outputs stay on the
    device), per GPU backend x output tier x dtype: the median wall time of the
    call, synchronised before and after, and the fraction of the device's
    measured bandwidth (device triad) the bytes it must move imply."""
    status = gp.backends()
    usable = [b for b in ("numba-cuda", "cupy")
              if status[b].available and "simulator" not in status[b].reason]
    if not usable or not status["cupy"].available:
        return {"measured": False,
                "reason": "; ".join(f"{b}: {status[b].reason}" for b in ("numba-cuda", "cupy"))}
    import cupy

    sync = cupy.cuda.Device().synchronize
    bandwidth = _device_triad(min(n * 4, 100_000_000), repeat)
    rows: list[dict[str, Any]] = []
    for dtype in dtypes:
        books = [{k: cupy.asarray(v) if isinstance(v, np.ndarray) else v
                  for k, v in book(n, seed, dtype).items()} for seed in (5, 6)]
        for name in usable:
            for tier, greeks in TIERS.items():
                median = _synced_median(
                    lambda b, g=greeks, be=name, d=dtype: gp.price(greeks=g, backend=be,
                                                                    dtype=d, **b),
                    books, repeat, sync)
                outputs = 1 + (len(greeks) if isinstance(greeks, list) else 13)
                moved = bytes_per_option(dtype, outputs) * n
                rows.append({"backend": name, "dtype": dtype, "n": n, "tier": tier,
                             "median_s": median, "options_per_s": n / median,
                             "fraction_of_device_bandwidth": (moved / median / bandwidth
                                                              if bandwidth else None)})
        if dtype == "float64" and "numba-cuda" in usable:
            rows.append(_sorted_row(n, repeat, bandwidth, sync))
        books.clear()
        cupy.get_default_memory_pool().free_all_blocks()
    return {"measured": True, "n": n, "device": status["cupy"].reason,
            "device_bandwidth_bytes_per_s": bandwidth, "rows": rows}


def _synced_median(fn: Any, books: list[dict[str, Any]], repeat: int, sync: Any) -> float:
    """Median wall time of fn(book), the device synchronised after each call,
    books rotated, after one warm-up call (compilation, memory pool)."""
    def call(b: dict[str, Any]) -> None:
        fn(b)
        sync()

    call(books[-1])
    return float(np.median([_timed(lambda i=i: call(books[i % len(books)]))
                            for i in range(repeat)]))


def _sorted_row(n: int, repeat: int, bandwidth: float | None, sync: Any) -> dict[str, Any]:
    """numba-cuda, first-order Greeks, on the same kind of book sorted by
    moneyness ln(K/S)/(sigma sqrt t): a warp's rows then take the same branches
    of the kernel, so the gap to the unsorted row is the cost of divergence."""
    import cupy

    greeks = TIERS["first-order"]
    b = book(n, 5, "float64")
    order = np.argsort(np.log(b["strike"] / b["spot"]) / (b["sigma"] * np.sqrt(b["t"])))
    dev = {k: cupy.asarray(v[order]) if isinstance(v, np.ndarray) else v for k, v in b.items()}
    median = _synced_median(lambda d: gp.price(greeks=greeks, backend="numba-cuda", **d),
                            [dev], repeat, sync)
    moved = bytes_per_option("float64", 1 + len(greeks)) * n
    return {"backend": "numba-cuda", "dtype": "float64", "n": n,
            "tier": "first-order, rows sorted by moneyness", "median_s": median,
            "options_per_s": n / median,
            "fraction_of_device_bandwidth": moved / median / bandwidth if bandwidth else None}


def _device_triad(n: int, repeat: int) -> float | None:
    @cuda.jit
    def triad(a: Any, b: Any, c: Any, s: float) -> None:  # pragma: no cover - device
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = b[i] + s * c[i]

    a = cuda.device_array(n)
    b = cuda.to_device(np.ones(n))
    c = cuda.to_device(np.full(n, 2.0))
    blocks = (n + 255) // 256
    triad[blocks, 256](a, b, c, 3.0)
    best = None
    for _ in range(repeat):
        e0, e1 = cuda.event(), cuda.event()
        e0.record()
        triad[blocks, 256](a, b, c, 3.0)
        e1.record()
        e1.synchronize()
        dt_s = e0.elapsed_time(e1) / 1e3
        if dt_s > 0 and (best is None or dt_s < best):
            best = dt_s
    return 24.0 * n / best if best else None


def measure(max_size: int, repeat: int,
            dtypes: tuple[str, ...] = ("float64", "float32"), peers: bool = True,
            gpu_n: int = 10_000_000, only: tuple[str, ...] = ()) -> dict[str, Any]:
    bandwidth = stream_triad(min(max_size * 4, 50_000_000), max(repeat, 3))
    status = gp.backends()
    rows: list[dict[str, Any]] = []
    compiles: list[dict[str, Any]] = []
    sizes = [n for n in (1_000, 10_000, 100_000, 1_000_000, 10_000_000) if n <= max_size]
    for name, st in status.items():
        if only and name not in only:
            rows.append({"backend": name, "measured": False, "reason": "not asked for"})
            continue
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
                if dtype != "float64":
                    continue
                ivs = [_iv_inputs(b, name) for b in books]
                gp.implied_vol(backend=name, **ivs[0])
                times = [_timed(lambda b=ivs[i % 2], be=name: gp.implied_vol(backend=be, **b))
                         for i in range(repeat)]
                median = float(np.median(times))
                bound = bandwidth / (5 * 8 + 1 + 8 + 1)
                rows.append({"backend": name, "measured": True, "dtype": dtype, "n": n,
                             "tier": "implied_vol", "median_s": median,
                             "options_per_s": n / median,
                             "fraction_of_bandwidth_bound": n / median / bound})
    if peers:
        for n in sizes:
            rows += _peer_rows(n, [book(n, seed, "float64") for seed in (1, 2)], repeat)
    timed = list(dict.fromkeys(r["backend"] for r in rows
                               if r["measured"] and not r["backend"].startswith("peer")))
    return {
        **_stamp(),
        "memory_bandwidth_bytes_per_s": bandwidth,
        "repeat": repeat,
        "rows": rows,
        "first_calls": compiles,
        "models": model_rows(min(MODELS_N, max_size), repeat, timed),
        "gpu_split": gpu_split(min(gpu_n, max_size), repeat),
        "gpu_host_paths": host_paths(min(gpu_n, max_size), repeat),
        "gpu_resident": gpu_resident(min(gpu_n, max_size), repeat, dtypes),
    }


def _stamp() -> dict[str, Any]:
    """When and where a report was measured."""
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {"hostname": socket.gethostname(), "processor": platform.processor(),
                        "python": platform.python_version()}}


def _write(out: Path, label: str, report: dict[str, Any], text: str) -> Path:
    """The report as <date>-<host>-kernels<label>.json and .md under `out`; the stem."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{dt.date.today().isoformat()}-{report['machine']['hostname']}-kernels{label}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text + "\n")
    return stem


def table(report: dict[str, Any]) -> str:
    bw = report["memory_bandwidth_bytes_per_s"]
    lines = [f"Memory bandwidth (STREAM-style triad): {bw / 1e9:.1f} GB/s", "",
             "| backend | dtype | N | outputs | options/s (median) | of bandwidth bound |",
             "|---|---|--:|---|--:|--:|"]
    for r in report["rows"]:
        if not r["measured"]:
            lines.append(f"| {r['backend']} | | | | not measured: {r['reason']} | |")
            continue
        frac = r["fraction_of_bandwidth_bound"]
        rate = f"{r['options_per_s']:,.0f}"
        if r.get("extrapolated_from"):
            rate += f" (extrapolated from {r['extrapolated_from']:,})"
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['n']:,} | {r['tier']} | "
                     f"{rate} | {'' if frac is None else f'{frac:.1%}'} |")
    g = report.get("gpu_split", {})
    lines += ["", "GPU transfers and kernel (numba-cuda, bsm, all outputs):", ""]
    if not g.get("measured"):
        lines.append(f"not measured: {g.get('reason', 'no GPU')}")
    else:
        frac = g["fraction_of_device_bandwidth"]
        lines.append(f"N = {g['n']:,}: host-to-device {g['h2d_s'] * 1e3:.3f} ms, kernel "
                     f"{g['kernel_s'] * 1e3:.3f} ms, device-to-host {g['d2h_s'] * 1e3:.3f} ms; "
                     f"resident {g['resident_options_per_s'] or 0:,.0f} options/s"
                     + ("" if frac is None else f", {frac:.1%} of the device bandwidth")
                     + (f" ({g['note']})" if g["note"] else ""))
    h = report.get("gpu_host_paths", {})
    lines += ["", "Host (NumPy) data through numba-cuda (gpu_pricer.price, bsm, all outputs): "
              "pinned two-stream stages vs synchronous pageable copies, same run:", ""]
    if not h.get("measured"):
        lines.append(f"not measured: {h.get('reason', 'no GPU')}")
    else:
        lines.append(f"N = {h['n']:,}: staged {h['staged_s'] * 1e3:.3f} ms, synchronous "
                     f"{h['synchronous_s'] * 1e3:.3f} ms: the stages {h['speedup']:.2f}x as "
                     "fast" + (f" ({h['note']})" if h["note"] else ""))
    lines += ["", resident_table(report.get("gpu_resident", {}))]
    models = report.get("models", [])
    if models:
        lines += ["", f"Every model, float64, N = {models[0]['n']:,} (bachelier's sigma is the "
                  "bsm book's times the forward; options or implied vols per second, "
                  "median):", "", "| backend | model | " + " | ".join(
                      (*TIERS, "implied_vol")) + " |", "|---|---|--:|--:|--:|--:|"]
        for backend in dict.fromkeys(r["backend"] for r in models):
            for model in gp.MODELS:
                rates = {r["tier"]: r["options_per_s"] for r in models
                         if r["backend"] == backend and r["model"] == model}
                lines.append(f"| {backend} | {model} | " + " | ".join(
                    f"{rates[t]:,.0f}" for t in (*TIERS, "implied_vol")) + " |")
    lines += ["", "First call of each kernel (bsm; includes Numba's compilation, which is "
              "cached for the process):", "", "| backend | dtype | outputs | first call (s) |",
              "|---|---|---|--:|"]
    lines += [f"| {c['backend']} | {c['dtype']} | {c['tier']} | {c['first_call_s']:.1f} |"
              for c in report.get("first_calls", [])]
    return "\n".join(lines)


def resident_table(res: dict[str, Any]) -> str:
    """The device-resident table of `gpu_resident`, or why it was not measured."""
    lines = ["GPU, device-resident CuPy input and output (gpu_pricer.price, synchronised "
             "wall time):", ""]
    if not res.get("measured"):
        lines.append(f"not measured: {res.get('reason', 'no GPU')}")
        return "\n".join(lines)
    bw = res["device_bandwidth_bytes_per_s"]
    lines += [f"{res['device']}; device triad {0 if bw is None else bw / 1e9:,.0f} GB/s", "",
              "| backend | dtype | N | outputs | options/s (median) | of device bandwidth |",
              "|---|---|--:|---|--:|--:|"]
    for r in res["rows"]:
        frac = r["fraction_of_device_bandwidth"]
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['n']:,} | {r['tier']} | "
                     f"{r['options_per_s']:,.0f} | {'' if frac is None else f'{frac:.1%}'} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    measured = [r for r in report["rows"] if r["measured"] and r["dtype"] == "float64"]
    for backend in sorted({r["backend"] for r in measured}):
        for tier, style in zip((*TIERS, "implied_vol"), ("-", "--", ":", "-."), strict=True):
            pts = sorted((r["n"], r["options_per_s"]) for r in measured
                         if r["backend"] == backend and r["tier"] == tier)
            if pts:
                ax.plot(*zip(*pts, strict=True), style, marker="o",
                        label=f"{backend}, {tier}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("options per call (N)")
    ax.set_ylabel("options per second")
    ax.set_title("throughput vs N, float64: gpu_pricer backends and peers (bench.kernels)")
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
    parser.add_argument("--backends", default="",
                        help="comma-separated backends to time (default: all); the GPU "
                        "split and resident tables run whenever a device is usable")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' rows")
    parser.add_argument("--resident-only", action="store_true",
                        help="only the GPU table on device-resident data, float64, "
                        "N = --max-size (a short run on a GPU machine)")
    parser.add_argument("--tiny", action="store_true",
                        help="N up to 10,000, 2 repeats, float64 only (for the test suite)")
    args = parser.parse_args(argv)
    dtypes: tuple[str, ...] = ("float64", "float32")
    if args.tiny:
        args.max_size, args.repeat, dtypes = 10_000, 2, ("float64",)
    only = tuple(b for b in args.backends.split(",") if b)
    if args.resident_only:
        report = {**_stamp(), "repeat": args.repeat,
                  "gpu_resident": gpu_resident(args.max_size, args.repeat, ("float64",))}
        text = resident_table(report["gpu_resident"])
        print(text)
        stem = _write(args.out, "-resident", report, text)
        report["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md")]
        return report
    report = measure(args.max_size, args.repeat, dtypes, peers=not args.no_peers, only=only)
    text = table(report)
    print(text)
    label = "-tiny" if args.tiny else ("" if args.max_size == 10_000_000 else
                                        f"-n{args.max_size}")
    stem = _write(args.out, label, report, text)
    plot(report, stem.with_suffix(".png"))
    report["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md", ".png")]
    return report


if __name__ == "__main__":
    main()
