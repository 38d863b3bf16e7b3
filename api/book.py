"""POST /v1/book/revalue: an Arrow book in, the priced book, its aggregate or
its scenario PnL out (an Arrow stream), priced through the micro-batcher.

The body is an Arrow IPC stream with the columns of a book
(`gpu_pricer.book`: the pricing keywords, optional quantity, multiplier, id
and any grouping columns).  Query parameters:

- ``model``, ``greeks``: as for the Arrow form of POST /v1/price;
- ``output``: ``book`` (default: every input column plus price, the Greeks
  and error, row for row), ``aggregate`` (position-weighted value and Greeks
  per group: `gpu_pricer.book.Aggregator`) or ``scenarios`` (each group's PnL
  on the grid: `gpu_pricer.book.ScenarioPnL`);
- ``aggregate_by``: the group columns, comma-separated (none: one total);
- ``scenarios``: the grid, e.g. ``spot=-20%:+20%:9,vol=-10:+10:5,roll=1d``.

Every pricing pass (the book; with scenarios, the base and each grid point)
is one request to the micro-batcher, so it is coalesced, sliced, queued,
bounded by the deadline (per pass) and falls back to the CPU like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.from_thread
import anyio.to_thread
import pyarrow as pa
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import Response

from gpu_pricer import book

from . import arrow_io
from .bodies import read_body
from .ratelimit import enforce
from .security import authenticate
from .settings import get_service_settings

router = APIRouter()

OUTPUTS = ("book", "aggregate", "scenarios")
BOOK_BODY = {"requestBody": {"content": {arrow_io.ARROW_STREAM: {"schema": {
    "type": "string", "format": "binary",
    "description": "Arrow IPC stream of a book: option_type, spot or forward, strike, t, sigma, "
    "optional r, q, quantity (signed, default 1), multiplier (default 1), id and any grouping "
    "columns (units as in OptionIn). The answer is an Arrow IPC stream: the priced book, its "
    "aggregate or its scenario PnL (query parameter output)."}}}}}


def _query_error(name: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["query", name], "msg": msg}])


@router.post("/v1/book/revalue", dependencies=[Depends(authenticate), Depends(enforce)],
             openapi_extra=BOOK_BODY, response_class=Response)
async def revalue(
    request: Request,
    model: str = "bsm",
    greeks: str = "",
    output: str = "book",
    aggregate_by: str = "",
    scenarios: str = "",
    x_deadline_ms: int | None = Header(None, gt=0, description="Deadline in milliseconds of "
                                       "each pricing pass (default: default_deadline_ms)."),
) -> Response:
    """Revalue an Arrow book: the priced book, its aggregate or its scenario PnL."""
    from . import main as service  # noqa: PLC0415 - main includes this router

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != arrow_io.ARROW_STREAM:
        raise HTTPException(415, detail=f"POST /v1/book/revalue takes {arrow_io.ARROW_STREAM}")
    service._check_model(model)
    names = service._greeks(model, "all" if greeks == "all" else
                            [g for g in greeks.split(",") if g], ["query", "greeks"])
    if output not in OUTPUTS:
        raise _query_error("output", f"output must be one of {list(OUTPUTS)}")
    by = [c.strip() for c in aggregate_by.split(",") if c.strip()]
    grid = None
    if output == "scenarios":
        try:
            grid = book.parse_scenarios(scenarios)
        except ValueError as exc:
            raise _query_error("scenarios", str(exc)) from None
    body = await read_body(request)
    try:
        table = arrow_io.read_table(body)
        limit = get_service_settings().max_arrow_rows
        if table.num_rows > limit:
            raise HTTPException(413, detail=f"at most {limit} rows per Arrow request")
        cols = arrow_io.columns(table, model)
    except arrow_io.ArrowBodyError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    del body
    missing = [c for c in by if c not in table.column_names]
    if missing:
        raise _query_error("aggregate_by", f"no column {missing[0]!r} in the book")
    n = table.num_rows

    async def price(kw: Mapping[str, Any], with_greeks: tuple[str, ...]) -> dict[str, Any]:
        rows = len(kw["strike"])
        return await service._submit(request, model, with_greeks, dict(kw), rows, x_deadline_ms)

    try:
        if grid is not None:
            def revalue_scenarios() -> pa.Table:
                def pricer(kw: Mapping[str, Any]) -> tuple[Any, Any]:
                    out = anyio.from_thread.run(price, kw, ())
                    return out["price"], out["error"]

                pnl = book.ScenarioPnL(grid, model=model, by=by, pricer=pricer)
                pnl.add(table.combine_chunks())  # one pass per point, not per record batch
                return pnl.result()

            result = await anyio.to_thread.run_sync(revalue_scenarios)
        else:
            outputs = await price(cols, names) if n else {
                name: [] for name in ("price", *names, "error")}
            ordered = {name: outputs[name] for name in ("price", *names, "error")}
            priced = await anyio.to_thread.run_sync(book.attach, table, ordered)
            if output == "aggregate":
                agg = book.Aggregator(by, names)
                await anyio.to_thread.run_sync(agg.add, priced)
                result = agg.result()
            else:
                result = priced
    except book.BookError as exc:
        raise HTTPException(422, detail=[{"loc": ["body", exc.column], "msg": str(exc)}]) from None
    return arrow_io.ArrowStreamResponse(result)
