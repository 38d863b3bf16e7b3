"""Arrow IPC bodies: columns in, result columns out (pyarrow).

Columns are the library's keywords.  Float columns without nulls are read
zero-copy over the request body; a null in a numeric column becomes NaN, so
that row gets a per-row error rather than the whole request failing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gpu_pricer import buffers

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


def _option_type(table: pa.Table) -> np.ndarray[Any, Any]:
    col = table.column("option_type")
    if pa.types.is_boolean(col.type) and col.null_count == 0:
        booleans: np.ndarray[Any, Any] = col.to_numpy()
        return booleans
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise ArrowBodyError([{"loc": ["body", "option_type"],
                               "msg": f"expected strings or booleans, got {col.type}"}])
    low = pc.utf8_lower(col)
    is_call = pc.fill_null(pc.is_in(low, pa.array(["call", "c"])), False).to_numpy(
        zero_copy_only=False)
    is_put = pc.fill_null(pc.is_in(low, pa.array(["put", "p"])), False).to_numpy(
        zero_copy_only=False)
    # anything else (a null too) is a per-row INVALID_OPTION_TYPE
    return np.where(is_call, "call", np.where(is_put, "put", "?"))


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
    cols: dict[str, Any] = {"option_type": _option_type(table)}
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


def write_table(out: dict[str, Any], names: list[str],
                ids: pa.ChunkedArray | None) -> memoryview:
    """The result columns (and id, when given) as an Arrow IPC stream, written
    once into a buffer of its exact size (measured by a first, data-free pass):
    no growing buffer, no copy to bytes."""
    arrays = {name: pa.array(out[name]) for name in names}  # zero-copy from NumPy
    arrays["error"] = pa.array(out["error"])
    if ids is not None:
        arrays = {"id": ids, **arrays}
    table = pa.table(arrays)

    def write(sink: Any) -> None:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 20)

    mock = pa.MockOutputStream()
    write(mock)
    # from the library's buffer pool (NumPy, the process heap), not Arrow's own
    # allocator: a bulk answer reuses memory the last one (or the warm-up's
    # full-size batch) already mapped, rather than faulting in fresh pages
    buf = buffers.OUTPUTS.bytes(mock.size())
    write(pa.FixedSizeBufferWriter(pa.py_buffer(buf)))
    return buf.data
