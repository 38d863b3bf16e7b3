"""``gpu-pricer``: the command line.

``gpu-pricer price BOOK -o OUT`` prices a book file (Parquet, Arrow IPC or
CSV, by extension) and writes every input column plus price, the Greeks and
error, row for row, streaming: batches are read, priced and written with
the three stages overlapped (`gpu_pricer.bookio.run_pipeline`), so memory
stays bounded whatever the book's size.  Optionally it aggregates the
position-weighted value and Greeks per group and revalues the book under a
grid of scenarios (`gpu_pricer.book`).  A progress bar (rows/s, ETA) is shown
on a terminal; a summary is printed at the end.

Exit status: 0 when the book was priced (rows with errors included: they
are marked in the output and counted in the summary), 1 when a file or
column is unusable, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# mimalloc, Arrow's default allocator, still serves part of what the Parquet
# reader allocates (`_memory_pool` makes jemalloc the default only once
# pyarrow has loaded), and reads its settings when pyarrow loads, so they are
# set here: return freed pages at once, and commit its arenas as they are
# used rather than whole.  With its defaults about 90 MB of huge pages
# stayed resident while a book streamed through.  A value set by the user
# wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

import numpy as np
import pyarrow as pa

from . import __version__, book, bookio, dispatch
from .errors import ERRORS
from .inputs import MODELS, greek_names
from .pricing import price as price_fn


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-pricer", description="Option pricing from the "
                                     "command line (gpu_pricer).")
    parser.add_argument("--version", action="version", version=f"gpu-pricer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "price", help="price a book file: every row, with its Greeks and error code",
        description="Price every row of BOOK (columns: option_type, spot or forward, strike, "
        "t, sigma, optional r, q, quantity, multiplier, id and any others) and write OUT with "
        "every input column plus price, the Greeks and error. Formats by extension: "
        f"{', '.join(bookio.FORMATS)}.")
    p.add_argument("book", type=Path, metavar="BOOK", help="the book file")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="the priced book (overwritten if it exists)")
    p.add_argument("--model", default="bsm", choices=list(MODELS),
                   help="pricing model (default bsm)")
    p.add_argument("--greeks", default="all", metavar="all|none|NAME[,NAME...]",
                   help="Greeks to compute (default all)")
    p.add_argument("--backend", default="auto", choices=["auto", *dispatch.NAMES],
                   help="backend (default auto: GPU when usable, else numba)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="output precision (default float64)")
    p.add_argument("--batch-rows", type=int, default=bookio.DEFAULT_BATCH_ROWS, metavar="N",
                   help=f"rows per batch (default {bookio.DEFAULT_BATCH_ROWS:,}); memory grows "
                   "with it, not with the book")
    p.add_argument("--aggregate-by", default="", metavar="COL[,COL...]",
                   help="group columns for --aggregate-output and --scenario-output")
    p.add_argument("--aggregate-output", type=Path, metavar="AGG",
                   help="write position-weighted value and Greeks per group (sum of quantity x "
                   "multiplier x output; error rows counted, not summed)")
    p.add_argument("--scenarios", metavar="SPEC",
                   help="scenario grid, e.g. 'spot=-20%%:+20%%:9,vol=-10:+10:5,roll=1d' "
                   "(spot relative with %% or absolute, vol in points or relative with %%, "
                   "roll in d/w/y)")
    p.add_argument("--scenario-output", type=Path, metavar="FILE",
                   help="write each group's value and PnL at each scenario point (tidy table)")
    p.add_argument("--heatmap", type=Path, metavar="PNG",
                   help="draw the total PnL on the spot x vol grid (needs matplotlib)")
    p.add_argument("--summary-json", type=Path, metavar="FILE",
                   help="also write the summary as JSON")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stdout")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit status 2) before any file is opened."""
    try:
        args.greek_names = (() if args.greeks == "none" else greek_names(
            "all" if args.greeks == "all" else [g.strip() for g in args.greeks.split(",")
                                                if g.strip()], args.model))
    except ValueError as exc:
        parser.error(f"--greeks: {exc}")
    args.by = [c.strip() for c in args.aggregate_by.split(",") if c.strip()]
    if args.batch_rows < 1:
        parser.error("--batch-rows must be positive")
    if args.by and not (args.aggregate_output or args.scenario_output):
        parser.error("--aggregate-by needs --aggregate-output or --scenario-output")
    if bool(args.scenarios) != bool(args.scenario_output):
        parser.error("--scenarios and --scenario-output go together")
    if args.heatmap and not args.scenarios:
        parser.error("--heatmap needs --scenarios")
    args.grid = None
    if args.scenarios:
        try:
            args.grid = book.parse_scenarios(args.scenarios)
        except ValueError as exc:
            parser.error(f"--scenarios: {exc}")
    paths = [args.output, args.aggregate_output, args.scenario_output]
    for path in (args.book, *paths):
        if path is not None:
            try:
                bookio.file_format(path)
            except ValueError as exc:
                parser.error(str(exc))
    named = [p.resolve() for p in (args.book, *paths) if p is not None]
    if len(set(named)) != len(named):
        parser.error("BOOK, OUT, AGG and the scenario file must be different files")


def _warm_up(args: argparse.Namespace) -> float:
    """Compile the kernels this run uses on one row, before the clock starts."""
    started = time.perf_counter()
    kw: dict[str, Any] = {"spot": 100.0} if args.model == "bsm" else {"forward": 100.0}
    price_fn(model=args.model, option_type="call", strike=100.0, t=1.0, sigma=0.2,
             greeks=args.greek_names, backend=args.backend, dtype=args.dtype, **kw)
    if args.grid is not None:
        price_fn(model=args.model, option_type="call", strike=100.0, t=1.0, sigma=0.2,
                 backend=args.backend, dtype=args.dtype, **kw)
    return time.perf_counter() - started


class _Progress:
    """A rich progress bar (rows, rows/s, ETA) on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int | None, label: str) -> None:
        self._bar: Any = None
        if not enabled:
            return
        from rich.progress import (  # noqa: PLC0415 - only on a terminal
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TextColumn("rows"),
                             TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                             TextColumn("ETA"), TimeRemainingColumn(), transient=True,
                             console=_console())
        self._task = self._bar.add_task(label, total=total, rate="")
        self._bar.start()

    def advance(self, rows: int) -> None:
        if self._bar is None:
            return
        self._bar.advance(self._task, rows)
        speed = self._bar.tasks[0].speed
        if speed:
            self._bar.update(self._task, rate=f"{speed / 1e6:,.2f} M rows/s")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _console() -> Any:
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=True)


def _share_cores() -> None:
    """The reader and writer threads share the cores with the kernel's: Numba's
    OpenMP workers sleep between kernel calls instead of spinning (a quarter
    faster on two cores).  Read when the OpenMP runtime loads, at the first
    kernel call; a value set by the user wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _memory_pool() -> None:
    """Arrow's jemalloc pool where built in: its threads hold about 50 MB less
    than the default mimalloc's while a book streams through."""
    # freed batches go back to the system at once (read when jemalloc starts, at
    # its first allocation: here, unless the user set it)
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, AttributeError):  # pragma: no cover - a build without it
        pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Price the book as `args` says; returns the summary."""
    reader = bookio.open_book(args.book, args.batch_rows)
    warm_s = _warm_up(args)
    backend = dispatch.candidates(args.backend, on_device=False)[0]  # after any fallback
    schema = book.output_schema(reader.schema, args.model, args.greek_names, args.dtype)
    names = book.output_names(args.model, args.greek_names)
    aggregator = (book.Aggregator(args.by, args.greek_names) if args.aggregate_output
                  else None)
    scenarios = (book.ScenarioPnL(args.grid, model=args.model, by=args.by,
                                  backend=args.backend, dtype=args.dtype)
                 if args.grid is not None else None)
    errors = np.zeros(256, dtype=np.int64)

    def process(batch: pa.RecordBatch) -> pa.RecordBatch:
        priced = book.price_book(batch, model=args.model, greeks=args.greek_names,
                                 backend=args.backend, dtype=args.dtype)
        errors[:] += np.bincount(priced.column("error").to_numpy(), minlength=256)
        if aggregator is not None:
            aggregator.add_batch(priced)
        if scenarios is not None:
            scenarios.add_batch(batch)
        return priced

    show = sys.stderr.isatty() if args.progress is None else args.progress
    progress = _Progress(show, reader.rows, f"pricing {args.book.name}")
    started = time.perf_counter()
    writer = bookio.BookWriter(args.output, schema)
    try:
        bookio.run_pipeline(reader.batches, process, writer.write, done=progress.advance)
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.stop()
    writer.close()
    priced_s = time.perf_counter() - started
    summary: dict[str, Any] = {
        "book": str(args.book), "output": str(args.output), "rows": writer.rows,
        "errors": int(errors[1:].sum()),
        "errors_by_code": {ERRORS[int(c)]: int(errors[c]) for c in np.flatnonzero(errors[1:]) + 1},
        "outputs": list(names), "model": args.model, "backend": backend,
        "batch_rows": args.batch_rows, "seconds": priced_s, "warmup_seconds": warm_s,
        "rows_per_second": writer.rows / priced_s if priced_s > 0 else None,
    }
    if aggregator is not None:
        agg = aggregator.result()
        bookio.write_table(args.aggregate_output, agg)
        summary["aggregate"] = {"output": str(args.aggregate_output), "groups": agg.num_rows}
    if scenarios is not None:
        table = scenarios.result()
        bookio.write_table(args.scenario_output, table)
        summary["scenarios"] = {"output": str(args.scenario_output), "points": len(args.grid),
                                "rows": table.num_rows}
        if args.heatmap:
            bookio.heatmap(args.heatmap, table, f"PnL of {args.book.name} by scenario")
            summary["scenarios"]["heatmap"] = str(args.heatmap)
    summary["total_seconds"] = time.perf_counter() - started
    summary["peak_rss_bytes"] = peak_rss()
    return summary


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes (Linux: VmHWM; None elsewhere).

    Not getrusage's ru_maxrss: a child started by vfork and exec inherits its
    parent's peak there, so a small process started by a large one reports
    the large one's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _report(summary: dict[str, Any]) -> str:
    rate = summary["rows_per_second"]
    lines = [
        f"gpu-pricer: priced {summary['rows']:,} rows of {summary['book']} in "
        f"{summary['seconds']:.2f} s ({(rate or 0) / 1e6:,.2f} M rows/s) on "
        f"{summary['backend']} ({summary['model']}; kernels ready in "
        f"{summary['warmup_seconds']:.1f} s) -> {summary['output']}",
        f"  errors: {summary['errors']:,} rows" + (" (" + ", ".join(
            f"{reason}: {count:,}" for reason, count in summary["errors_by_code"].items()) + ")"
            if summary["errors"] else ""),
    ]
    if "aggregate" in summary:
        agg = summary["aggregate"]
        lines.append(f"  aggregate: {agg['groups']:,} groups -> {agg['output']}")
    if "scenarios" in summary:
        sc = summary["scenarios"]
        lines.append(f"  scenarios: {sc['points']:,} points, {sc['rows']:,} rows -> "
                     f"{sc['output']}" + (f", heatmap {sc['heatmap']}" if "heatmap" in sc
                                          else ""))
    peak = summary["peak_rss_bytes"]
    lines.append(f"  total {summary['total_seconds']:.2f} s" + (
        f"; peak memory {peak / 2**20:,.0f} MiB" if peak else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``gpu-pricer`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    _share_cores()
    _memory_pool()
    try:
        summary = run(args)
    except (bookio.BookFileError, book.BookError, ValueError, RuntimeError) as exc:
        print(f"gpu-pricer: error: {exc}", file=sys.stderr)
        return 1
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print(_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
