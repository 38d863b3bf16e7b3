"""The bulk CLI (``gpu-pricer price``) on a large Parquet book: its wall time
against the serial floor, and its peak memory.

What is measured, in one run:

1. A book of N options (default 5,000,000; 12 columns: id, book, underlying,
   option_type, spot, strike, t, sigma, r, q, quantity, multiplier) is
   generated once into a temporary directory as Parquet, in row groups of
   250,000 rows, outside every timing (it is deleted afterwards, never
   committed).
2. The CLI, in a child process as a user runs it: ``python -m gpu_pricer.cli
   price BOOK -o OUT --greeks all --aggregate-by book --aggregate-output AGG``
   (default backend auto, default batch size), streaming the book through
   its overlapped read -> price -> write pipeline.
3. The serial floor, in another child process: read the whole Parquet file
   (``pyarrow.parquet.read_table``), price it in-process
   (`gpu_pricer.book.price_book`, all Greeks), aggregate it by book, write
   the Parquet file (``pyarrow.parquet.write_table``), one after the other,
   each phase timed.

Both children pay the same start-up (imports, backend probing, kernel
compilation); each reports the time of its work after the kernels are
compiled (the CLI compiles them on one row before its clock starts, the
floor likewise), and the ratio of those two times is the target (<= 1.5).
The children's whole wall times are reported too.  Each child reports its
own peak RSS (VmHWM, `gpu_pricer.cli.peak_rss`: getrusage's ru_maxrss would
include this process's peak, inherited through vfork and exec); the CLI's
target is < 0.5 GB (500,000,000 bytes).  The two outputs are compared column by column
(bit for bit) and the two aggregates to 1e-9, or the run fails.

Each child runs ``--repeat`` times (default 3), the two alternating so that
other load on the machine falls on both; medians are reported, and the
largest peak RSS.

Run: ``python -m bench.book [--size N] [--repeat R] [--out DIR] [--tiny]``.  It prints a
Markdown table and the targets and writes ``<out>/<date>-<host>-book.json``
and ``.md`` (``-book-tiny`` for ``--tiny``, 50,000 rows; ``-book-n<N>`` for
another size).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import gpu_pricer as gp

DEFAULT_SIZE = 5_000_000
DEFAULT_REPEAT = 3
TINY_SIZE = 50_000
ROW_GROUP = 250_000
SEED = 20_241_124
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The issue's targets.
MAX_RATIO = 1.5
MAX_RSS_BYTES = 500_000_000
#: Aggregates of the CLI and the floor sum in different orders.
AGG_RTOL = 1e-9


# --- the book ---------------------------------------------------------------------------


def make_batch(lo: int, n: int, rng: np.random.Generator) -> pa.Table:
    """Rows lo..lo+n-1 of the bench book: 20 books, 200 underlyings, spots
    50..150, strikes log-normal around the spot, expiries one day to three
    years (log-uniform), vols 5%..80%, rates 0..5%, yields 0..3%, half calls;
    signed quantities -50..50, multiplier 100."""
    spot = rng.uniform(50.0, 150.0, n)
    under = rng.integers(0, 200, n)
    return pa.table({
        "id": pa.array(np.arange(lo, lo + n, dtype=np.int64)),
        "book": pa.array(np.char.add("book-", (under % 20).astype(str))),
        "underlying": pa.array(np.char.add("U", under.astype(str))),
        "option_type": pa.array(np.where(rng.random(n) < 0.5, "call", "put")),
        "spot": spot,
        "strike": spot * np.clip(np.exp(rng.normal(0.0, 0.25, n)), 0.25, 4.0),
        "t": np.exp(rng.uniform(np.log(1.0 / 365.0), np.log(3.0), n)),
        "sigma": rng.uniform(0.05, 0.8, n),
        "r": rng.uniform(0.0, 0.05, n),
        "q": rng.uniform(0.0, 0.03, n),
        "quantity": rng.integers(-50, 51, n).astype(np.float64),
        "multiplier": np.full(n, 100.0),
    })


def write_book(path: Path, size: int, seed: int = SEED) -> None:
    """The bench book as Parquet, generated a row group at a time."""
    rng = np.random.default_rng(seed)
    writer = None
    for lo in range(0, size, ROW_GROUP):
        table = make_batch(lo, min(ROW_GROUP, size - lo), rng)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


# --- the two children -------------------------------------------------------------------


def run_child(argv: list[str]) -> dict[str, Any]:
    """Run a child process; its wall time and output.  Both children get the
    OpenMP setting the CLI makes for itself (workers sleep between kernel
    calls), so the comparison is not of that setting."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n"
                           f"{proc.stderr}")
    return {"wall_s": wall, "stdout": proc.stdout}


def serial_floor(book: Path, out: Path, agg: Path) -> dict[str, float]:
    """Read, price (all Greeks), aggregate by book and write, one after the other
    (runs in the child process; the kernel compiled first, outside the timing)."""
    from gpu_pricer import book as bk
    from gpu_pricer.cli import peak_rss

    started = time.perf_counter()
    gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2, greeks="all")
    warm = time.perf_counter() - started
    phases: dict[str, float] = {"warmup_s": warm}
    t0 = time.perf_counter()
    table = pq.read_table(book)
    t1 = time.perf_counter()
    priced = bk.price_book(table, greeks="all")
    t2 = time.perf_counter()
    aggregate = bk.aggregate(priced, by=["book"])
    t3 = time.perf_counter()
    # the CLI's writer settings (no dictionary pages for float columns), so the
    # comparison measures the streaming, not a setting
    pq.write_table(priced, out, use_dictionary=[f.name for f in priced.schema
                                                if not pa.types.is_floating(f.type)])
    pq.write_table(aggregate, agg)
    t4 = time.perf_counter()
    phases.update(read_s=t1 - t0, price_s=t2 - t1, aggregate_s=t3 - t2, write_s=t4 - t3,
                  seconds=t4 - t0, peak_rss_bytes=peak_rss())
    return phases


def compare_outputs(a: Path, b: Path) -> int:
    """Rows of two priced books, after checking them equal column by column."""
    fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
    if fa.schema_arrow.names != fb.schema_arrow.names:
        raise AssertionError(f"columns differ: {fa.schema_arrow.names} vs {fb.schema_arrow.names}")
    if fa.metadata.num_rows != fb.metadata.num_rows:
        raise AssertionError(f"rows differ: {fa.metadata.num_rows} vs {fb.metadata.num_rows}")
    for name in fa.schema_arrow.names:
        ca = pq.read_table(a, columns=[name]).column(0)
        cb = pq.read_table(b, columns=[name]).column(0)
        if not ca.equals(cb):
            x, y = ca.to_numpy(), cb.to_numpy()
            if not (x.dtype.kind == "f" and np.array_equal(x, y, equal_nan=True)):
                raise AssertionError(f"column {name!r} of the CLI's output differs from the "
                                     "floor's")
    return int(fa.metadata.num_rows)


def compare_aggregates(a: Path, b: Path) -> float:
    """Largest relative difference of two aggregates (by book); raises beyond AGG_RTOL."""
    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.column("book").to_pylist() != tb.column("book").to_pylist():
        raise AssertionError("the aggregates have different groups")
    worst = 0.0
    for name in ta.column_names[1:]:
        x = ta.column(name).to_numpy().astype(np.float64)
        y = tb.column(name).to_numpy().astype(np.float64)
        scale = np.maximum(np.abs(y), 1e-300)
        err = float(np.max(np.abs(x - y) / scale)) if len(x) else 0.0
        if not err <= AGG_RTOL:
            raise AssertionError(f"aggregate column {name!r} differs by {err:.3g} relative")
        worst = max(worst, err)
    return worst


# --- the run ----------------------------------------------------------------------------


def _cli_run(argv: list[str], summary_path: Path, d: Path) -> dict[str, Any]:
    child = run_child(argv)
    # file names only: the temporary directory means nothing in the results
    summary = json.loads(summary_path.read_text(encoding="utf-8").replace(
        json.dumps(f"{d}{os.sep}")[1:-1], ""))
    return {"wall_s": child["wall_s"], "seconds": summary["total_seconds"],
            "peak_rss_bytes": summary["peak_rss_bytes"], "summary": summary}


def _floor_run(argv: list[str]) -> dict[str, Any]:
    child = run_child(argv)
    phases = json.loads(child["stdout"].strip().splitlines()[-1])
    return {"wall_s": child["wall_s"], "seconds": phases["seconds"],
            "peak_rss_bytes": phases["peak_rss_bytes"], "phases": phases}


def _digest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the runs' times, the largest peak RSS, every run."""
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs), "runs": runs}


def run(size: int, repeat: int, log: Callable[[str], None], tiny: bool = False
        ) -> dict[str, Any]:
    """Generate the book, run both children `repeat` times each (interleaved,
    the order alternating), check their outputs; returns the report."""
    from . import core  # QuantLib and scipy: kept out of the floor's child process

    load_before = core._loadavg()
    with tempfile.TemporaryDirectory(prefix="gpu-pricer-bench-book-") as tmp:
        d = Path(tmp)
        book = d / "book.parquet"
        log(f"writing a {size:,}-row Parquet book")
        write_book(book, size)
        book_bytes = book.stat().st_size
        summary_path = d / "cli-summary.json"
        cli_argv = [sys.executable, "-m", "gpu_pricer.cli", "price", str(book), "-o",
                    str(d / "cli.parquet"), "--greeks", "all", "--aggregate-by", "book",
                    "--aggregate-output", str(d / "cli-agg.parquet"), "--summary-json",
                    str(summary_path), "--no-progress", "-q"]
        floor_argv = [sys.executable, "-m", "bench.book", "--serial-floor", str(book),
                      str(d / "floor.parquet"), str(d / "floor-agg.parquet")]
        runs: dict[str, list[dict[str, Any]]] = {"cli": [], "floor": []}
        for i in range(repeat):
            for which in (("cli", "floor") if i % 2 == 0 else ("floor", "cli")):
                log(f"round {i + 1} of {repeat}: the {which}, in a child process")
                runs[which].append(_cli_run(cli_argv, summary_path, d) if which == "cli"
                                   else _floor_run(floor_argv))
        log("comparing the outputs")
        rows = compare_outputs(d / "cli.parquet", d / "floor.parquet")
        agg_err = compare_aggregates(d / "cli-agg.parquet", d / "floor-agg.parquet")
        out_bytes = (d / "cli.parquet").stat().st_size
        command = " ".join(["gpu-pricer", *cli_argv[3:]]).replace(f"{d}{os.sep}", "")
    cli, floor = _digest(runs["cli"]), _digest(runs["floor"])
    ratio = cli["seconds"] / floor["seconds"]
    return {
        "benchmark": "book",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {**core.machine_info(), "loadavg_1min_before": load_before,
                    "loadavg_1min_after": core._loadavg()},
        "versions": {"gpu_pricer": gp.__version__, "numpy": np.__version__,
                     "pyarrow": pa.__version__, "python": platform.python_version()},
        "config": {"size": size, "tiny": tiny, "repeat": repeat, "seed": SEED,
                   "row_group_rows": ROW_GROUP, "greeks": "all", "aggregate_by": ["book"],
                   "book_bytes": book_bytes, "output_bytes": out_bytes, "cli": command},
        "rows": rows,
        "cli": cli,
        "floor": floor,
        "aggregate_max_rel_diff": agg_err,
        "targets": [
            {"name": "CLI time / serial floor (medians of the work after compilation)",
             "value": ratio, "target": f"<= {MAX_RATIO}", "pass": ratio <= MAX_RATIO},
            {"name": "CLI peak RSS (largest of the runs)", "value": cli["peak_rss_bytes"],
             "target": f"< {MAX_RSS_BYTES:,} bytes",
             "pass": cli["peak_rss_bytes"] < MAX_RSS_BYTES},
        ],
    }


def summary(report: dict[str, Any]) -> str:
    """The Markdown table and targets, as printed and written to the .md."""
    from . import core

    cfg, mach = report["config"], report["machine"]
    cli, floor = report["cli"], report["floor"]
    s = cli["runs"][-1]["summary"]
    phase = {k: statistics.median(r["phases"][k] for r in floor["runs"])
             for k in ("read_s", "price_s", "aggregate_s", "write_s")}
    head = (
        f"gpu_pricer bulk CLI benchmark, {report['timestamp']}: a {cfg['size']:,}-row Parquet "
        f"book ({cfg['book_bytes'] / 1e6:,.0f} MB, row groups of {cfg['row_group_rows']:,}), "
        f"all Greeks, aggregated by book; output {cfg['output_bytes'] / 1e6:,.0f} MB; "
        f"medians of {cfg['repeat']} runs each, interleaved.\n"
        f"Machine: {mach['cpu_model']}, {mach['cpus_usable']} usable of {mach['cpu_count']} "
        f"CPUs, {mach['hostname']}; load average {core._fmt_load(mach['loadavg_1min_before'])} "
        f"before, {core._fmt_load(mach['loadavg_1min_after'])} after.  CLI backend: "
        f"{s['backend']}, batches of {s['batch_rows']:,} rows.\nCLI: `{cfg['cli']}`"
    )
    if cfg["tiny"]:
        head += "\nSmoke run (--tiny): at this size the figures mean nothing."
    rows = report["rows"]

    def times(runs: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['seconds']:.2f}" for r in runs)

    table = "\n".join([
        "| run | work time after compilation: median (each run) | rows/s | whole process "
        "(start-up, compilation) | peak RSS (largest) |",
        "|---|--:|--:|--:|--:|",
        f"| CLI, streaming (read, price, aggregate, write overlapped) | {cli['seconds']:.2f} s "
        f"({times(cli['runs'])}) | {rows / cli['seconds']:,.0f} | {cli['wall_s']:.2f} s "
        f"| {cli['peak_rss_bytes'] / 2**20:,.0f} MiB |",
        f"| serial floor: read {phase['read_s']:.2f} s, price {phase['price_s']:.2f} s, "
        f"aggregate {phase['aggregate_s']:.2f} s, write {phase['write_s']:.2f} s "
        f"| {floor['seconds']:.2f} s ({times(floor['runs'])}) | {rows / floor['seconds']:,.0f} "
        f"| {floor['wall_s']:.2f} s | {floor['peak_rss_bytes'] / 2**20:,.0f} MiB |",
    ])
    targets = ["Issue targets:"]
    for tgt in report["targets"]:
        value = (f"{tgt['value']:.3g}x" if "time" in tgt["name"]
                 else f"{tgt['value']:,} bytes ({tgt['value'] / 2**20:,.0f} MiB)")
        targets.append(f"- {tgt['name']}: {value} (target {tgt['target']}) "
                       f"{'PASS' if tgt['pass'] else 'FAIL'}")
    check = (f"Outputs equal column by column ({rows:,} rows); aggregates within "
             f"{report['aggregate_max_rel_diff']:.2g} relative.")
    return "\n\n".join([head, table, "\n".join(targets), check]) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, tiny: bool, size: int
                 ) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    host = report["machine"]["hostname"].replace(os.sep, "_")
    label = "-tiny" if tiny else ("" if size == DEFAULT_SIZE else f"-n{size}")
    stem = f"{dt.date.today().isoformat()}-{host}-book{label}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(summary(report), encoding="utf-8")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and targets, write the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serial-floor"]:  # the floor's child process
        print(json.dumps(serial_floor(*(Path(a) for a in argv[1:4]))))
        return {}
    parser = argparse.ArgumentParser(prog="python -m bench.book",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"rows of the book (default {DEFAULT_SIZE:,})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="directory for the JSON and Markdown results (default "
                             "bench/results)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"runs of each child, interleaved (default {DEFAULT_REPEAT})")
    parser.add_argument("--tiny", action="store_true",
                        help=f"smoke run: {TINY_SIZE:,} rows, one run each")
    args = parser.parse_args(argv)
    size = TINY_SIZE if args.tiny else args.size
    repeat = 1 if args.tiny else args.repeat
    if size < 1 or repeat < 1:
        parser.error("--size and --repeat must be positive")
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench.book {time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr,
              flush=True)

    report = {"command": " ".join(["python -m bench.book", *argv]),
              **run(size, repeat, log, args.tiny)}
    json_path, md_path = write_report(report, args.out, args.tiny, size)
    print(summary(report))
    print(f"Written: {json_path}\n         {md_path}")
    report["files"] = {"json": str(json_path), "md": str(md_path)}
    return report


if __name__ == "__main__":
    main()
