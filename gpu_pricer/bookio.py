"""Book files: read and write Parquet, Arrow IPC and CSV batch by batch, and
the overlapped read -> price -> write pipeline the CLI runs.

The format follows the file name: ``.parquet``/``.pq``, ``.arrow``/``.feather``/
``.ipc`` (the Arrow IPC file format; an IPC stream is read too) or ``.csv``.
Reading never loads a whole file: Parquet row group by row group, IPC
record batch by record batch, CSV block by block, each cut into batches of
at most ``batch_rows`` rows.  Writers write each batch as it comes (a
Parquet row group per batch) into ``NAME.partial`` and rename it to NAME
when closed, so a failed run leaves no half-written output behind.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .book import INPUTS, POSITION

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc",
           ".ipc": "ipc", ".csv": "csv"}
#: Rows per batch when none is asked for.
DEFAULT_BATCH_ROWS = 1 << 15
#: CSV columns read as text and converted to float64 here (a cell that is not
#: a number becomes a null, i.e. a row error, instead of failing the file).
CSV_NUMERIC = (*INPUTS, *POSITION)


class BookFileError(ValueError):
    """A file that cannot be read or written as a book: says which and why."""


def file_format(path: str | os.PathLike[str]) -> str:
    """"parquet", "ipc" or "csv" from the file name's extension."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise BookFileError(f"{os.fspath(path)}: unknown extension {suffix!r}; use one of "
                            f"{', '.join(FORMATS)}") from None


# --- reading ----------------------------------------------------------------------------


@dataclass
class BookReader:
    """The batches of a book file, read lazily; `rows` when the file says (None for CSV)."""

    path: Path
    schema: pa.Schema
    rows: int | None
    batches: Iterator[pa.RecordBatch]


def _cut(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for lo in range(0, max(batch.num_rows, 1), batch_rows):
            yield batch.slice(lo, batch_rows)  # zero-copy


def open_book(path: str | os.PathLike[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> BookReader:
    """Open a book file for reading in batches of at most `batch_rows` rows."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    p = Path(path)
    fmt = file_format(p)
    if not p.is_file():
        raise BookFileError(f"{p}: no such file")
    try:
        if fmt == "parquet":
            return _open_parquet(p, batch_rows)
        if fmt == "ipc":
            return _open_ipc(p, batch_rows)
        return _open_csv(p, batch_rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise BookFileError(f"{p}: cannot be read as {fmt}: {exc}") from None


def _open_parquet(p: Path, batch_rows: int) -> BookReader:
    pf = pq.ParquetFile(p, buffer_size=1 << 20)  # column chunks read 1 MiB at a time

    def batches() -> Iterator[pa.RecordBatch]:
        # one row group at a time: iter_batches over the whole file reads ahead
        # and holds much of it in memory
        for group in range(pf.num_row_groups):
            yield from pf.iter_batches(batch_size=batch_rows, row_groups=[group])

    return BookReader(p, pf.schema_arrow, pf.metadata.num_rows, batches())


def _open_ipc(p: Path, batch_rows: int) -> BookReader:
    source = pa.OSFile(str(p))  # read as needed (a memory map would count in RSS)
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid:  # an IPC stream rather than a file
        source.close()
        stream = pa.ipc.open_stream(pa.OSFile(str(p)))
        return BookReader(p, stream.schema, None, _cut(iter(stream), batch_rows))
    with pa.memory_map(str(p)) as mapped:  # batch lengths from the metadata, data untouched
        counter = pa.ipc.open_file(mapped)
        rows = sum(counter.get_batch(i).num_rows for i in range(counter.num_record_batches))

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        finally:
            source.close()

    return BookReader(p, reader.schema, rows, _cut(batches(), batch_rows))


def _open_csv(p: Path, batch_rows: int) -> BookReader:
    header = pcsv.open_csv(p, read_options=pcsv.ReadOptions(block_size=1 << 16)).schema.names
    text = {c: pa.string() for c in header if c in (*CSV_NUMERIC, "option_type", "id")}
    # a block of about batch_rows rows of ~100 bytes; the schema is fixed by the first block
    reader = pcsv.open_csv(p, read_options=pcsv.ReadOptions(block_size=max(1 << 20,
                                                                            batch_rows * 128)),
                           convert_options=pcsv.ConvertOptions(column_types=text,
                                                               strings_can_be_null=True))
    numeric = [c for c in header if c in CSV_NUMERIC]
    schema = pa.schema([pa.field(f.name, pa.float64()) if f.name in numeric else f
                        for f in reader.schema])

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            cols = [_to_float(batch.column(i)) if name in numeric else batch.column(i)
                    for i, name in enumerate(batch.schema.names)]
            yield pa.RecordBatch.from_arrays(cols, schema=schema)

    return BookReader(p, schema, None, _cut(batches(), batch_rows))


def _to_float(col: pa.Array) -> pa.Array:
    """Text to float64; a cell that is not a number becomes a null (a row error)."""
    try:
        return pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = []
        for cell in col.to_pylist():
            try:
                values.append(float(cell) if cell is not None else None)
            except ValueError:
                values.append(None)
        return pa.array(values, pa.float64())


# --- writing ----------------------------------------------------------------------------


class BookWriter:
    """Writes batches of one schema to `path` (through ``path.partial``)."""

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema) -> None:
        self.path = Path(path)
        self.format = file_format(self.path)
        self.rows = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        if self.format == "csv":
            # CSV has no dictionaries: write their values
            schema = pa.schema([pa.field(f.name, f.type.value_type) if
                                pa.types.is_dictionary(f.type) else f for f in schema])
        self.schema = schema
        self._writer: Any
        if self.format == "parquet":
            # dictionary pages for all but float columns: prices and Greeks are all
            # distinct, and trying a dictionary on them doubles the writing time
            dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
            self._writer = pq.ParquetWriter(self._partial, schema, use_dictionary=dictionary)
        elif self.format == "ipc":
            self._sink = pa.OSFile(str(self._partial), "wb")
            self._writer = pa.ipc.new_file(self._sink, schema)
        else:
            self._writer = pcsv.CSVWriter(self._partial, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        if self.format == "csv" and batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        """Finish the file and move it to its name."""
        self._writer.close()
        if self.format == "ipc":
            self._sink.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Close and delete the partial file."""
        try:
            self._writer.close()
            if self.format == "ipc":
                self._sink.close()
        finally:
            self._partial.unlink(missing_ok=True)


def write_table(path: str | os.PathLike[str], table: pa.Table) -> None:
    """A whole (small) table to `path` in the format its extension names."""
    writer = BookWriter(path, table.schema)
    try:
        for batch in table.to_batches():
            writer.write(batch)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """A whole book file as a table (for small files and tests)."""
    reader = open_book(path)
    return pa.Table.from_batches(list(reader.batches), schema=reader.schema)


# --- the pipeline -----------------------------------------------------------------------

_END = object()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue
    return _END


def run_pipeline(batches: Iterator[pa.RecordBatch],
                 process: Callable[[pa.RecordBatch], pa.RecordBatch],
                 write: Callable[[pa.RecordBatch], None], *, depth: int = 1,
                 done: Callable[[int], None] | None = None) -> None:
    """Read, process and write batches with the three stages overlapped.

    A reader thread pulls `batches` and a writer thread calls `write`, each
    joined to the calling thread (which runs `process`) by a queue of `depth`
    batches, so at most 2 x depth + 3 batches are alive at once whatever the
    book's size.  Parquet and CSV decoding and encoding and the Numba kernels
    release the GIL, so the stages run in parallel.  `done(rows)` is called
    after each batch is written.  The first error in any stage stops the
    others and is raised here.
    """
    inbox: queue.Queue[Any] = queue.Queue(depth)
    outbox: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for batch in batches:
                if not _put(inbox, batch, stop):
                    return
            _put(inbox, _END, stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def drain() -> None:
        try:
            while (batch := _get(outbox, stop)) is not _END:
                write(batch)
                if done is not None:
                    done(batch.num_rows)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=read, name="book-reader", daemon=True),
               threading.Thread(target=drain, name="book-writer", daemon=True)]
    for th in threads:
        th.start()
    try:
        while (batch := _get(inbox, stop)) is not _END:
            if not _put(outbox, process(batch), stop):
                break
        _put(outbox, _END, stop)
    except BaseException as exc:
        errors.append(exc)
        stop.set()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def heatmap(path: str | os.PathLike[str], table: pa.Table, title: str) -> None:
    """A PNG of the total PnL (summed over groups) on the spot x vol grid of a
    scenario table (`gpu_pricer.book.ScenarioPnL.result`).  Needs matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise BookFileError(f"--heatmap needs matplotlib ({exc})") from None
    names = table.column_names
    spot = next((c for c in ("spot_pct", "spot_abs") if c in names), None)
    vol = next((c for c in ("vol_points", "vol_pct") if c in names), None)
    if "roll_days" in names and len(pc.unique(table.column("roll_days"))) > 1:
        raise BookFileError("--heatmap draws a spot x vol grid: give one roll value at most")
    xs = np.unique(table.column(spot).to_numpy()) if spot else np.zeros(1)
    ys = np.unique(table.column(vol).to_numpy()) if vol else np.zeros(1)
    total = np.zeros((len(ys), len(xs)))
    x_at = table.column(spot).to_numpy() if spot else np.zeros(table.num_rows)
    y_at = table.column(vol).to_numpy() if vol else np.zeros(table.num_rows)
    np.add.at(total, (np.searchsorted(ys, y_at), np.searchsorted(xs, x_at)),
              table.column("pnl").to_numpy())
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(xs), 1.4 + 0.5 * len(ys)))
    limit = float(np.max(np.abs(total))) or 1.0
    image = ax.imshow(total, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto",
                      origin="lower")
    ax.set_xticks(range(len(xs)), [f"{x:+g}{'%' if spot == 'spot_pct' else ''}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:+g}{'%' if vol == 'vol_pct' else ''}" for y in ys])
    ax.set_xlabel({"spot_pct": "spot shock (relative)", "spot_abs": "spot shock (absolute)"}
                  .get(spot or "", "spot (unshocked)"))
    ax.set_ylabel({"vol_points": "vol shock (vol points)", "vol_pct": "vol shock (relative)"}
                  .get(vol or "", "vol (unshocked)"))
    for (i, j), v in np.ndenumerate(total):
        ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="PnL")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
