"""Arrow IPC bodies: columns in, result columns out (pyarrow).

Columns are the library's keywords.  Float columns without nulls are read
zero-copy over the request body; a null in a numeric column becomes NaN, so
that row gets a per-row error rather than the whole request failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gpu_pricer import book
from gpu_pricer.inputs import option_type_of

ARROW_STREAM = "application/vnd.apache.arrow.stream"
NUMERIC = ("spot", "forward", "strike", "t", "sigma", "price", "r", "q")


class ArrowBodyError(ValueError):
    """A body that is not a readable Arrow stream, or lacks a column: names what."""

    def __init__(self, detail: list[dict[str, Any]] | str, status: int = 422) -> None:
        super().__init__(str(detail))
        self.detail = detail
        self.status = status


def read_table(body: bytes | np.ndarray[Any, Any]) -> pa.Table:
    """The Arrow IPC stream in `body` (any bytes-like object), its columns over
    the body's own memory; 400 when it is not one."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ArrowBodyError(f"body is not an Arrow IPC stream: {exc}", status=400) from None


def _column(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise ArrowBodyError([{"loc": ["body", name], "msg": f"expected numbers, got {col.type}"}])
    col = col.cast(pa.float64()) if col.type != pa.float64() else col
    if col.null_count:
        col = pc.fill_null(col, np.nan)
    out: np.ndarray[Any, Any] = col.to_numpy()  # zero-copy for one chunk without nulls
    return out


def option_type(table: pa.Table) -> np.ndarray[Any, Any]:
    """The option_type argument of the column: its codes (the library's
    reading of booleans or strings), handed on as a boolean view when every
    row is call or put, else as one-letter strings (a null, or any other
    word, is a per-row INVALID_OPTION_TYPE)."""
    col = table.column("option_type")
    if not book.is_option_type_column(col.type):
        raise ArrowBodyError([{"loc": ["body", "option_type"],
                               "msg": f"expected strings or booleans, got {col.type}"}])
    return option_type_of(book.arrow_option_codes(col))


def columns(table: pa.Table, model: str, value: str = "sigma") -> dict[str, Any]:
    """Keyword columns for `model` from the table: gpu_pricer.price's with
    value="sigma", gpu_pricer.implied_vol's with value="price"."""
    und = "spot" if model == "bsm" else "forward"
    other = "forward" if model == "bsm" else "spot"
    names = set(table.column_names)
    required = ["option_type", und, "strike", "t", value]
    missing = [c for c in required if c not in names]
    if missing:
        raise ArrowBodyError([{"loc": ["body", c], "msg": "column missing"} for c in missing])
    if other in names:
        raise ArrowBodyError([{"loc": ["body", other],
                               "msg": f"model {model!r} takes {und}, not {other}"}])
    cols: dict[str, Any] = {"option_type": option_type(table)}
    for name in (und, "strike", "t", value, "r"):
        if name in names:
            cols[name] = _column(table, name)
    n = table.num_rows
    cols.setdefault("r", np.zeros(n))
    if model == "bsm":
        cols["q"] = _column(table, "q") if "q" in names else np.zeros(n)
    elif "q" in names and np.any(_column(table, "q") != 0):
        raise ArrowBodyError([{"loc": ["body", "q"], "msg": "q applies to model 'bsm' only"}])
    return cols


def answer_table(out: Mapping[str, Any], names: list[str],
                 ids: pa.ChunkedArray | None) -> pa.Table:
    """The result columns `names` and ``error`` (and ``id`` first, when
    given) as a table over the outputs' own memory (no copy)."""
    arrays = {name: pa.array(out[name]) for name in [*names, "error"]}  # zero-copy from NumPy
    if ids is not None:
        arrays = {"id": ids, **arrays}
    return pa.table(arrays)


#: A column buffer at least this large is sent from its own memory; smaller
#: ones are copied in with the framing around them (one send, not many).
MIN_PIECE_BYTES = 1 << 16


class _Pieces:
    """A write-only file for `pa.PythonFile`: keeps what the IPC writer
    writes as pieces, each large column buffer by reference (pyarrow hands
    those over as Buffers), everything between them joined into bytes."""

    def __init__(self) -> None:
        self.pieces: list[memoryview] = []
        self._framing = bytearray()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if isinstance(data, pa.Buffer) and view.nbytes >= MIN_PIECE_BYTES:
            self._cut()
            self.pieces.append(view)
        else:
            self._framing += view
        return view.nbytes

    def _cut(self) -> None:
        if self._framing:
            self.pieces.append(memoryview(bytes(self._framing)))
            self._framing.clear()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._cut()
        self.closed = True


def stream_pieces(table: pa.Table) -> list[memoryview]:
    """The table as an Arrow IPC stream, in pieces to send one after the
    other: each large column buffer a view of the column's own memory, so
    that a bulk answer is never copied into a buffer of its own (for a
    million rows with five Greeks that copy was 52 MB, and milliseconds);
    the stream's framing (a few hundred bytes per record batch) and the
    small buffers joined between them (a small answer is one piece)."""
    sink = _Pieces()
    with pa.PythonFile(sink, mode="w") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)
    return sink.pieces


class ArrowStreamResponse(Response):
    """An Arrow IPC stream answer sent as its pieces (`stream_pieces`), with
    its Content-Length: no copy of the columns into one body."""

    media_type = ARROW_STREAM

    def __init__(self, table: pa.Table) -> None:
        self.pieces = stream_pieces(table)
        super().__init__(media_type=ARROW_STREAM)
        self.headers["content-length"] = str(sum(p.nbytes for p in self.pieces))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        last = len(self.pieces) - 1
        for i, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < last})
        if self.background is not None:
            await self.background()
