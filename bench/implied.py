"""Implied-volatility solves per second against the peers, with accuracy.

What is measured: solves per second for the implied vol of N
Black-Scholes-Merton options (default 1,000,000; the book of `bench.core`,
priced by gpu_pricer first, outside the timing), every method on the same
prices, in one run:

1. ``gpu_pricer.implied_vol(..., backend="auto")`` and each backend by name
   (plain calls, input checks and output allocation included; a backend
   not usable here is "not measured" with its reason).
2. vollib's ``black_scholes_merton.implied_volatility``, one call per option
   (Jaeckel's algorithm in Python), timed on a sample (default 5,000) and
   labelled as extrapolated.
3. The vectorized peers where they install and run: py_vollib_vectorized,
   fast_vollib and fastvol (its CPU build at a 1e-12 tolerance; it is not a
   project dependency, as it needs PyTorch and builds from source: README
   gives the commands); one that is missing or fails at first use is listed
   with the error, never estimated.

Timing rules are `bench.core`'s: a warm-up round (compilation) excluded,
then ``--repeat`` rounds on fresh books, methods interleaved in a rotated
order; medians reported.

Accuracy: every method's vols from the last round are compared with the
sigma the book was priced with, on the rows whose price determines sigma
(elasticity ``vega sigma / price > 1e-3``, price above 1e-300): the largest
relative error, and the count of such rows the method refused (NaN, an
exception, or an error code).  gpu_pricer must recover every one of them
to 1e-10 (tests/test_implied_vol.py holds it to the price's conditioning)
or the run fails.

Run: ``python -m bench.implied [--size N] [--repeat R] [--sample M] [--tiny]``.
Prints a Markdown table and the issue's targets (auto >= 100x vollib; auto
faster than the fastest vectorized peer that ran), and writes
``<out>/<date>-<host>-implied.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numba
import numpy as np

# Bound here, before anything imports py_vollib_vectorized: that package
# replaces vollib's functions with its own when it is imported.
from vollib.black_scholes_merton.implied_volatility import (
    implied_volatility as vollib_implied_volatility,
)

import gpu_pricer as gp

from . import core

DEFAULT_SIZE = 1_000_000
DEFAULT_REPEAT = 5
DEFAULT_SAMPLE = 5_000
TINY_SIZE = 2_000
TINY_REPEAT = 2
TINY_SAMPLE = 100
#: Relative error gpu_pricer must reach on every informative row.
OUR_RTOL = 1e-10
#: A row is informative when its price's elasticity in sigma exceeds this.
MIN_ELASTICITY = 1e-3
TINY_PRICE = 1e-300
VOLLIB_TARGET = 100.0

Book = dict[str, np.ndarray[Any, Any]]
Outputs = dict[str, np.ndarray[Any, Any]]


def priced_book(book: Book) -> Book:
    """The book with its prices and the elasticity of each price in sigma."""
    out = gp.price(model="bsm", option_type=book["option_type"], spot=book["spot"],
                   strike=book["strike"], t=book["t"], sigma=book["sigma"], r=book["r"],
                   q=book["q"], greeks=["vega"], backend="numba")
    with np.errstate(divide="ignore", invalid="ignore"):
        elasticity = out["vega"] * book["sigma"] / out["price"]
    return {**book, "price": out["price"], "elasticity": elasticity}


def solve_gpu_pricer(book: Book, backend: str) -> Outputs:
    out = gp.implied_vol(price=book["price"], option_type=book["option_type"],
                         spot=book["spot"], strike=book["strike"], t=book["t"], r=book["r"],
                         q=book["q"], backend=backend)
    return {"implied_vol": np.where(out["error"] == 0, out["implied_vol"], np.nan)}


def solve_vollib(book: Book, m: int) -> Outputs:
    """vollib, one call per option, on the first `m` rows."""
    implied_volatility = vollib_implied_volatility
    cols = [book[x][:m].tolist() for x in ("price", "spot", "strike", "t", "r", "q",
                                          "option_type")]
    res = []
    for p, s, k, t, r, q, call in zip(*cols, strict=True):
        try:
            res.append(implied_volatility(p, s, k, t, r, q, "c" if call else "p"))
        except Exception:  # vollib raises for prices it does not invert
            res.append(math.nan)
    return {"implied_vol": np.array(res)}


def solve_py_vollib_vectorized(book: Book) -> Outputs:
    import py_vollib_vectorized as pvv

    flag = np.where(book["option_type"], "c", "p")
    iv = pvv.vectorized_implied_volatility(
        book["price"], book["spot"], book["strike"], book["t"], book["r"], flag, q=book["q"],
        model="black_scholes_merton", return_as="numpy")
    return {"implied_vol": np.asarray(iv, dtype=np.float64)}


def solve_fast_vollib(book: Book) -> Outputs:
    import fast_vollib

    flag = np.where(book["option_type"], "c", "p")
    iv = fast_vollib.fast_implied_volatility(
        book["price"], book["spot"], book["strike"], book["t"], book["r"], flag, book["q"],
        model="black_scholes_merton", return_as="numpy", on_error="ignore")
    return {"implied_vol": np.asarray(iv, dtype=np.float64)}


#: fastvol's stopping tolerance here: the issue quotes its CPU build at 1e-12.
FASTVOL_TOL = 1e-12


def solve_fastvol(book: Book) -> Outputs:
    """fastvol's CPU batch solver (fp64, tolerance FASTVOL_TOL, its default
    iteration cap)."""
    from fastvol.european import bsm

    iv = bsm.iv(book["price"], book["spot"], book["strike"], book["option_type"], book["t"],
                book["r"], book["q"], tol=FASTVOL_TOL, precision="fp64")
    return {"implied_vol": np.asarray(iv, dtype=np.float64)}


PEERS: dict[str, tuple[str, Callable[[Book], Outputs]]] = {
    "py_vollib_vectorized": ("py_vollib_vectorized.vectorized_implied_volatility",
                             solve_py_vollib_vectorized),
    "fast_vollib": ("fast_vollib.fast_implied_volatility (its default backend)",
                    solve_fast_vollib),
    "fastvol": (f"fastvol.european.bsm.iv, CPU build, fp64, tol {FASTVOL_TOL:g}",
                solve_fastvol),
}


def _first_use_error(fn: Callable[[Book], Outputs], book: Book) -> str | None:
    try:
        fn({k: v[:16] for k, v in book.items()})
    except Exception as exc:
        text = str(exc).strip().splitlines()
        first = text[0] if text else ""
        return f"failed at first use: {type(exc).__name__}: {first[:160]}"
    return None


_PEER_CHECK = """
import sys, numpy as np
from bench import core, implied
book = implied.priced_book(core.make_books(16, 1)[0])
out = implied.PEERS[sys.argv[1]][1](book)["implied_vol"]
assert out.shape == (16,)
"""


def _peer_error(key: str) -> str | None:
    """Why peer `key` cannot run, checked in a child process: importing a peer
    may patch other packages (py_vollib_vectorized replaces vollib's functions)."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", _PEER_CHECK, key], capture_output=True,
                          text=True, cwd=root, timeout=600, check=False)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if "Error" in ln or "error" in ln]
    last = lines[-1] if lines else f"exit code {proc.returncode}"
    return f"failed at first use: {last[:200]}"


def accuracy(vols: np.ndarray[Any, Any], book: Book, m: int | None = None) -> dict[str, Any]:
    """Largest relative error against the book's sigma on the informative rows,
    and how many of those rows the method refused."""
    sl = slice(0, m)
    sigma, el, p = book["sigma"][sl], book["elasticity"][sl], book["price"][sl]
    informative = (el > MIN_ELASTICITY) & (p > TINY_PRICE)
    v = vols[informative]
    solved = np.isfinite(v) & (v > 0)
    rel = np.abs(v[solved] - sigma[informative][solved]) / sigma[informative][solved]
    return {
        "informative_rows": int(informative.sum()),
        "refused_rows": int((~solved).sum()),
        "max_rel_err": float(rel.max()) if rel.size else math.nan,
        "median_rel_err": float(np.median(rel)) if rel.size else math.nan,
    }


def run(size: int, repeat: int, sample: int, log: Callable[[str], None],
        tiny: bool = False) -> dict[str, Any]:
    m = min(sample, size)
    load_before = core._loadavg()
    log(f"drawing and pricing {repeat + 1} books of {size:,} options (seed {core.SEED})")
    books = [priced_book(b) for b in core.make_books(size, repeat + 1)]
    statuses = gp.backends()
    usable = [name for name, st in statuses.items() if st.available and _first_use_error(
        partial(solve_gpu_pricer, backend=name), books[0]) is None]
    methods: dict[str, Callable[[Book], Outputs]] = {
        "auto": partial(solve_gpu_pricer, backend="auto"),
        **{f"backend:{name}": partial(solve_gpu_pricer, backend=name) for name in usable},
        "vollib": partial(solve_vollib, m=m),
    }
    peer_reasons: dict[str, str] = {}
    for key, (_, fn) in PEERS.items():
        reason = _peer_error(key)
        if reason is None:
            methods[key] = fn
        else:
            peer_reasons[key] = reason
    log(f"timing {len(methods)} methods: a warm-up round and {repeat} timed rounds")
    times, outs = core.time_methods(methods, books)
    last = books[-1]
    chosen = core.auto_choice()
    rows: list[dict[str, Any]] = []
    auto_rate = size / float(np.median(times["auto"]))

    def add(key: str, method: str, backend: str, n: int, extrapolated: bool = False) -> None:
        med = float(np.median(times[key]))
        rate = n / med
        acc = accuracy(outs[key]["implied_vol"], last, n if n < size else None)
        rows.append({"key": key, "method": method, "backend": backend, "measured": True,
                     "options_per_call": n, "extrapolated": extrapolated,
                     "times_s": times[key], "median_s": med, "min_s": min(times[key]),
                     "solves_per_s_median": rate, "solves_per_s_best": n / min(times[key]),
                     "auto_vs_this": auto_rate / rate, "accuracy": acc})

    add("auto", "gpu_pricer.implied_vol (plain call)", f"auto -> {chosen}", size)
    for name, st in statuses.items():
        key = f"backend:{name}"
        if key in times:
            add(key, "gpu_pricer.implied_vol (plain call)", name, size)
        else:
            rows.append({"key": key, "method": "gpu_pricer.implied_vol (plain call)",
                         "backend": name, "measured": False, "reason": st.reason})
    add("vollib", f"vollib per-option loop (rate extrapolated from a {m:,}-option sample)",
        "vollib (Python)", m, extrapolated=True)
    for key, (label, _) in PEERS.items():
        if key in times:
            add(key, label, key, size)
        else:
            rows.append({"key": key, "method": label, "backend": key, "measured": False,
                         "reason": peer_reasons[key]})
    for row in rows:
        if row["measured"] and row["key"].startswith(("auto", "backend:")):
            acc = row["accuracy"]
            if acc["refused_rows"] or not acc["max_rel_err"] <= OUR_RTOL:
                raise AssertionError(f"gpu_pricer {row['backend']}: {acc} on informative rows")
    by_key = {r["key"]: r for r in rows}
    vectorized = [by_key[k] for k in PEERS if by_key[k]["measured"]]
    targets = [{"name": "auto vs vollib per-option loop", "ratio": by_key["vollib"][
        "solves_per_s_median"] and auto_rate / by_key["vollib"]["solves_per_s_median"],
        "target": VOLLIB_TARGET}]
    targets[0]["pass"] = targets[0]["ratio"] >= VOLLIB_TARGET
    if vectorized:
        best = max(vectorized, key=lambda r: r["solves_per_s_median"])
        ratio = auto_rate / best["solves_per_s_median"]
        targets.append({"name": f"auto vs the fastest vectorized peer ({best['key']})",
                        "ratio": ratio, "target": 1.0, "pass": ratio > 1.0})
    else:
        targets.append({"name": "auto vs the fastest vectorized peer", "ratio": None,
                        "target": 1.0, "pass": None,
                        "note": "no vectorized peer ran here: " + "; ".join(
                            f"{k}: {v}" for k, v in peer_reasons.items())})
    return {
        "benchmark": "implied",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {**core.machine_info(), "loadavg_1min_before": load_before,
                    "loadavg_1min_after": core._loadavg()},
        "versions": {**core.versions(), **_peer_versions()},
        "config": {"size": size, "tiny": tiny, "repeat": repeat, "vollib_sample": m,
                   "seed": core.SEED, "model": "bsm", "numba_threads": numba.get_num_threads(),
                   "min_elasticity": MIN_ELASTICITY},
        "backends": {k: {"available": v.available, "reason": v.reason}
                     for k, v in statuses.items()},
        "auto_backend": chosen,
        "methods": rows,
        "targets": targets,
    }


def _peer_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("vollib", "py_lets_be_rational", "py_vollib_vectorized", "fast-vollib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def table(report: dict[str, Any]) -> str:
    lines = ["| method | backend | solves/s (median) | auto vs this | max rel err | refused |",
             "|---|---|--:|--:|--:|--:|"]
    for row in report["methods"]:
        method, backend = core._cell(row["method"]), core._cell(row["backend"])
        if not row["measured"]:
            lines.append(f"| {method} | {backend} | not measured: "
                         f"{core._cell(row['reason'])} | | | |")
            continue
        acc = row["accuracy"]
        lines.append(f"| {method} | {backend} | {row['solves_per_s_median']:,.0f} "
                     f"| {row['auto_vs_this']:.3g}x | {acc['max_rel_err']:.1e} "
                     f"| {acc['refused_rows']} of {acc['informative_rows']:,} |")
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> str:
    cfg, mach, ver = report["config"], report["machine"], report["versions"]
    head = (f"gpu_pricer implied-vol benchmark, {report['timestamp']}: bsm, N = "
            f"{cfg['size']:,} prices, median of {cfg['repeat']} repeats on fresh data "
            f"(warm-up excluded); vollib sample {cfg['vollib_sample']:,}.\nMachine: "
            f"{mach['cpu_model']}, {mach['cpus_usable']} usable of {mach['cpu_count']} CPUs; "
            f"numba {ver['numba']} ({cfg['numba_threads']} threads), vollib {ver['vollib']}; "
            f"load average {core._fmt_load(mach['loadavg_1min_before'])} before, "
            f"{core._fmt_load(mach['loadavg_1min_after'])} after.\ngpu_pricer auto chose: "
            f"{report['auto_backend']}.  Errors are against the sigma the book was priced "
            f"with, on rows whose price determines it (elasticity > {cfg['min_elasticity']:g}).")
    if cfg["tiny"]:
        head += "\nSmoke run (--tiny): at this size the ratios mean nothing."
    lines = ["Issue targets (auto's median solves/s over the method's):"]
    for tgt in report["targets"]:
        if tgt["ratio"] is None:
            lines.append(f"- {tgt['name']}: not measured ({tgt['note']})")
            continue
        verdict = "PASS" if tgt["pass"] else "FAIL"
        lines.append(f"- {tgt['name']}: {tgt['ratio']:.3g}x (target > {tgt['target']:g}x) "
                     f"{verdict}")
    return "\n\n".join([head, table(report), "\n".join(lines)]) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, tiny: bool, size: int) -> tuple[Path,
                                                                                      Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    host = report["machine"]["hostname"].replace(os.sep, "_")
    label = "-tiny" if tiny else ("" if size == DEFAULT_SIZE else f"-n{size}")
    stem = f"{dt.date.today().isoformat()}-{host}-implied{label}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(summary(report), encoding="utf-8")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.implied",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                        help="options in vollib's timed sample")
    parser.add_argument("--out", type=Path, default=core.RESULTS_DIR)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.repeat, args.sample = TINY_SIZE, TINY_REPEAT, TINY_SAMPLE
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench.implied {time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr,
              flush=True)

    report = {"command": " ".join(["python -m bench.implied", *argv]),
              **run(args.size, args.repeat, args.sample, log, args.tiny)}
    json_path, md_path = write_report(report, args.out, args.tiny, args.size)
    print(summary(report))
    print(f"Written: {json_path}\n         {md_path}")
    report["files"] = {"json": str(json_path), "md": str(md_path)}
    return report


if __name__ == "__main__":
    main()
