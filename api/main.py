"""FastAPI app: ``uvicorn api.main:app``.

Pricing (POST /v1/price) and implied vol (POST /v1/implied-vol), each with a
JSON body or an Arrow IPC stream, through the micro-batcher (`api.batcher`:
concurrent requests of one kind and model coalesced into one kernel call per
batch, computed in a worker thread, never on the event loop); health,
readiness after warm-up, backend info and Prometheus metrics, behind API
keys and rate limits.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import numpy as np
import pyarrow as pa
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError

import gpu_pricer as gp
from gpu_pricer import buffers, dispatch
from gpu_pricer.inputs import text_codes

from . import about, arrow_io, jsonio, memory, metrics, openapi
from .batcher import DeadlineExceeded, EngineStopped, MicroBatcher, QueueFull
from .bodies import read_body
from .book import router as book_router
from .lean import LeanApp
from .middleware import AccessLog, BodyLimit, header
from .ratelimit import RateLimiter, enforce
from .schemas import ImpliedVolRequest, ImpliedVolResponse, PriceRequest, PriceResponse
from .security import authenticate, load_hashes
from .settings import get_service_settings

log = logging.getLogger("gpu_pricer.api")


#: The Greeks of the full-size warm-up batch (the first-order tier).
WARM_UP_GREEKS = ("delta", "gamma", "vega", "theta", "rho")


def _warm_up(batch_options: int = 0) -> None:
    """Compile every model's price kernels (no Greeks, one, all: one
    vectorised kernel serves a model's three tiers) and its
    implied-vol kernel before the service reports ready, for whole columns
    as batches pass them (a scalar reaches the kernels as a one-element
    column, of the same type), and write and read one Arrow stream.  Then
    price one bsm batch of `batch_options` rows with the first-order Greeks
    and write its Arrow answer, so that the first full batch a client sends
    finds its memory (host heap and buffer pool: the outputs, a body and an
    answer of that size; device memory pool) already mapped."""
    one = np.ones(2)
    for model in gp.MODELS:
        und = "spot" if model == "bsm" else "forward"
        columns: dict[str, Any] = {und: 100.0 * one, "strike": 100.0 * one, "t": one,
                                   "sigma": 0.2 * one, "r": 0.0 * one}
        if model == "bsm":
            columns["q"] = 0.0 * one
        for greeks in ((), ("delta",), "all"):
            gp.price(model=model, option_type=one > 0, greeks=greeks, **columns)
        underlying: dict[str, Any] = {und: 100.0}
        gp.implied_vol(model=model, option_type="call", strike=100.0, t=1.0, price=8.0,
                       **underlying)
    # option types given as text: the compiled loops that read them (Arrow's
    # string and large_string columns; NumPy strings, which a book's rows with
    # a bad option type are handed to the batcher as): a few hundred ms each
    for kind in (pa.string(), pa.large_string()):
        arrow_io.option_type(pa.table({"option_type": pa.array(["call", "?"], kind)}))
    text_codes(np.array(["c", "?"]))
    # pyarrow's IPC writer and reader start up on first use (a few hundred ms
    # here): not on the first client's Arrow request
    small = arrow_io.answer_table({"price": np.zeros(2), "error": np.zeros(2, np.int8)},
                                  ["price"], None)
    arrow_io.read_table(b"".join(arrow_io.stream_pieces(small)))
    if batch_options > 0:
        strike = np.linspace(50.0, 150.0, batch_options)
        out = gp.price(model="bsm", option_type=strike > 100.0, spot=100.0, strike=strike,
                       t=0.5, sigma=0.2, r=0.03, q=0.01, greeks=WARM_UP_GREEKS)
        pieces = arrow_io.stream_pieces(
            arrow_io.answer_table(out, ["price", *WARM_UP_GREEKS], None))
        # a body of that size is read into a pooled buffer while the outputs
        # are alive: mapped here (page faults cost ~100 ms each)
        body = buffers.OUTPUTS.bytes(sum(p.nbytes for p in pieces))
        body[:] = 0


#: The interpreter's GIL switch interval while the service runs (Python's
#: default is 5 ms).  The batcher hands each batch to a worker thread, which
#: needs the GIL for a few short stretches (argument checks, the kernel's
#: dispatch, the hand-back) while the event loop holds it parsing requests:
#: at 5 ms per hand-over a batch of small requests waited tens of
#: milliseconds for the GIL alone (`bench.service` measured this).
GIL_SWITCH_INTERVAL_S = 0.0002


#: Allocations between collections of the youngest generation, while the
#: service runs (Python's default is 700).
GC_YOUNG_THRESHOLD = 20_000


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_service_settings()
    if settings.keep_freed_memory:
        app.state.keeps_freed_memory = memory.keep_freed_memory()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    app.state.ready = False
    app.state.draining = False
    app.state.api_keys = load_hashes(settings.api_key_hashes, settings.api_key_hashes_file)
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_limit_storage_url)
    if settings.warmup:
        await anyio.to_thread.run_sync(_warm_up, settings.max_batch_options)
    app.state.batcher = MicroBatcher(
        max_batch_options=settings.max_batch_options,
        max_delay_s=settings.max_delay_us * 1e-6,
        max_queue_options=settings.max_queue_options,
        backend=_backend_in_use(),
    )
    await app.state.batcher.start()
    status = gp.backends()
    chosen = _backend_in_use()
    metrics.set_backend(chosen, status[chosen].reason)
    # Everything alive now (modules, compiled kernels, the app) lives as long as
    # the process: out of the collector's sight, a full collection no longer
    # walks it (under load such collections stalled every request in flight).
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred short-lived objects: collecting the
    # young generation every 700 allocations (Python's default) ran a
    # collection every few requests, each walking every request in flight.
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    app.state.ready = True
    log.info("ready; backend %s", _backend_in_use())
    yield
    app.state.ready = False
    app.state.draining = True
    await app.state.batcher.stop()
    gc.set_threshold(*thresholds)  # the process as it was (an app inside a larger one)
    gc.unfreeze()


app = LeanApp(title="gpu-pricer", version=gp.__version__, lifespan=lifespan)
app.include_router(book_router)  # POST /v1/book/revalue
_origins = [o.strip() for o in get_service_settings().cors_origins.split(",") if o.strip()]
if _origins:  # closed unless configured
    app.add_middleware(CORSMiddleware, allow_origins=_origins, allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type", "X-Deadline-Ms"])


def _backend_in_use() -> str:
    batcher = getattr(app.state, "batcher", None)
    if batcher is not None:
        return str(batcher.backend)  # the CPU after a device fault
    return dispatch.candidates("auto", on_device=False)[0]


#: Every /v1 route: the API key first, then the caller's rate limit.
GUARDS = [Depends(authenticate), Depends(enforce)]
ARROW_ROUTE = "/v1/price/arrow-stream"
IV_ARROW_ROUTE = "/v1/implied-vol/arrow-stream"
#: Arrow bodies posted to a public route go to its hidden Arrow handler.
ARROW_ROUTES = {"/v1/price": ARROW_ROUTE, "/v1/implied-vol": IV_ARROW_ROUTE}


# outermost first: body checks, then metrics and the access line (ASGI, not
# BaseHTTPMiddleware: see api/middleware.py)
app.add_middleware(AccessLog)
app.add_middleware(BodyLimit, max_body_bytes=lambda: get_service_settings().max_body_bytes,
                   arrow_routes=ARROW_ROUTES)


@app.get("/metrics")
async def prometheus_metrics() -> Response:
    """Prometheus exposition (all workers in multiprocess mode)."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process lives."""
    return {"status": "ok"}


def not_ready_reason(state: Any) -> str | None:
    """Why the service should get no traffic now, or None when it is ready."""
    if getattr(state, "draining", False):
        return "draining"
    if not getattr(state, "ready", False):
        return "starting: warm-up not done"
    batcher = getattr(state, "batcher", None)
    if batcher is None or not batcher.alive:
        return "pricing engine stopped"
    return None


@app.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 once warm-up is done and while the batch loop runs; 503 with the
    reason before, while draining (after SIGTERM) and when the pricing engine
    has stopped."""
    reason = not_ready_reason(request.app.state)
    if reason is None:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": reason}, status_code=503)


@app.get("/v1/info", dependencies=GUARDS)
async def info() -> dict[str, Any]:
    """Backend in use and why, the device it runs on, every backend's status,
    batcher settings, versions, and the per-row error codes (an Arrow answer
    carries the codes only)."""
    status = gp.backends()
    settings = get_service_settings()
    backend = _backend_in_use()
    batcher = getattr(app.state, "batcher", None)
    fallback = batcher.fallback_reason if batcher is not None else None
    return {
        "version": gp.__version__,
        "backend": backend,
        "backend_reason": fallback or dispatch.explain(),
        "device": about.device(backend, status[backend].reason),
        "batcher": {"max_batch_options": settings.max_batch_options,
                    "max_delay_us": settings.max_delay_us,
                    "max_queue_options": settings.max_queue_options,
                    "default_deadline_ms": settings.default_deadline_ms},
        "backends": {k: {"available": v.available, "reason": v.reason} for k, v in
                     status.items()},
        "versions": about.versions(),
        "numpy": np.__version__,
        "errors": {str(int(code)): reason for code, reason in gp.ERRORS.items()},
    }


def _greeks(model: str, requested: Any, loc: list[str]) -> tuple[str, ...]:
    """The Greeks to return, in request order ('all': every one the model has)."""
    if requested == "all":
        return tuple(g for g in gp.GREEKS if model == "bsm" or g != "dividend_rho")
    greeks = tuple(dict.fromkeys(requested))
    unknown = [g for g in greeks if g not in gp.GREEKS]
    if unknown:
        raise HTTPException(422, detail=[{"loc": loc, "msg": f"unknown Greek {unknown[0]!r}; "
                                          f"valid: {', '.join(gp.GREEKS)}"}])
    if "dividend_rho" in greeks and model != "bsm":
        raise HTTPException(422, detail=[{"loc": loc,
                                          "msg": "dividend_rho is defined for model 'bsm' only"}])
    return greeks


async def _submit(request: Request, model: str, greeks: tuple[str, ...], cols: dict[str, Any],
                  n: int, deadline_header: int | None, kind: str = "price") -> dict[str, Any]:
    """Through the micro-batcher; 503 when its queue is full, 504 past the deadline."""
    deadline_ms = deadline_header or get_service_settings().default_deadline_ms
    try:
        out: dict[str, Any] = await request.app.state.batcher.submit(
            kind=kind, model=model, greeks=greeks, columns=cols, n=n,
            timeout_s=deadline_ms / 1000)
    except EngineStopped:
        raise HTTPException(503, detail="pricing engine stopped") from None
    except QueueFull:
        raise HTTPException(503, detail="queue full, retry later",
                            headers={"Retry-After": "1"}) from None
    except DeadlineExceeded:
        what = "solved" if kind == "implied_vol" else "priced"
        raise HTTPException(504, detail=f"not {what} within {deadline_ms} ms") from None
    return out


async def price(request: Request) -> Response:
    """Price the options through the micro-batcher; results[i] answers options[i].
    The JSON body is a PriceRequest (an Arrow stream goes to the Arrow handler)."""
    return await _json_route(request, PriceRequest, "price")


async def implied_vol(request: Request) -> Response:
    """Implied volatilities of the options' prices through the micro-batcher
    (gpu_pricer.implied_vol); results[i] answers options[i].  implied_vol is per
    sqrt(year): lognormal for bsm and black76, absolute (normal) for bachelier.
    The JSON body is an ImpliedVolRequest."""
    return await _json_route(request, ImpliedVolRequest, "implied_vol")


async def _json_route(request: Request, model: type[PriceRequest | ImpliedVolRequest],
                      kind: str) -> Response:
    """The JSON form of a pricing route: guards, deadline, body, the batcher,
    the answer (kind "price": the price and the requested Greeks; kind
    "implied_vol": the implied vol)."""
    await authenticate(request)
    await enforce(request)
    deadline_ms = _deadline_ms(request)
    body = jsonio.parse(model, await request.body())
    n = len(body.options)
    _check_count(n)
    answer: dict[str, Any] = {"model": body.model, "backend": _backend_in_use(), "results": []}
    if not n:
        return jsonio.response(answer)
    if kind == "price":
        greeks = _greeks(body.model, body.greeks, ["body", "greeks"])
        cols, names = jsonio.columns(body, "sigma"), ["price", *greeks]
    else:
        greeks = ()
        cols, names = jsonio.columns(body, "price"), ["implied_vol"]
    strict = _strict_query(request) or body.strict
    out = await _submit(request, body.model, greeks, cols, n, deadline_ms, kind=kind)
    _check_strict(strict, out["error"], ["body", "options"])
    answer["backend"] = _backend_in_use()  # the CPU, if a device fault moved the batch
    answer["results"] = jsonio.results([o.id for o in body.options], out, names)
    return jsonio.response(answer)


#: The JSON bodies' fast decoders, built at import: a field of the models that
#: msgspec cannot check as pydantic does fails here, not at the first request.
for _body in (PriceRequest, ImpliedVolRequest):
    jsonio.decoder(_body)

#: The JSON forms of the two pricing routes take the short path (`api.lean`).
app.lean_post("/v1/price", price, response_model=PriceResponse, body_model=PriceRequest,
              doc=openapi.PRICE_DOC)
app.lean_post("/v1/implied-vol", implied_vol, response_model=ImpliedVolResponse,
              body_model=ImpliedVolRequest, doc=openapi.IV_DOC)


def _deadline_ms(request: Request) -> int | None:
    """The X-Deadline-Ms header (a positive integer), or None; 422 otherwise."""
    raw = header(request.scope, b"x-deadline-ms")
    if raw is None:
        return None
    value = raw.strip()
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise HTTPException(422, detail=[{"loc": ["header", "x-deadline-ms"],
                                          "msg": "must be a positive integer (milliseconds)"}])
    return int(value)


def _check_count(n: int) -> None:
    limit = get_service_settings().max_options_per_request
    if n > limit:
        raise HTTPException(413, detail=f"at most {limit} options per request")


#: A boolean query parameter read as FastAPI reads one (pydantic's rules).
_BOOLEAN = TypeAdapter(bool)


def _strict_query(request: Request) -> bool:
    """The ``strict`` query parameter of a JSON route (the body's field of
    the same name does the same); 422 when it is not a boolean."""
    raw = request.query_params.get("strict")
    if raw is None:
        return False
    try:
        return bool(_BOOLEAN.validate_python(raw))
    except ValidationError:
        raise HTTPException(422, detail=[{"loc": ["query", "strict"],
                                          "msg": "must be a boolean (true or false)"}]) from None


def _check_strict(strict: bool, err: np.ndarray[Any, Any], loc: list[str]) -> None:
    """With strict, a 422 naming the bad rows (the first 20: their index
    after `loc`) and why."""
    if strict and err.any():
        bad = np.flatnonzero(err)
        raise HTTPException(422, detail=[
            {"loc": [*loc, int(i)], "msg": gp.ERRORS[int(err[i])]} for i in bad[:20]
        ])


@app.post(ARROW_ROUTE, include_in_schema=False, dependencies=GUARDS)
async def price_arrow(
    request: Request,
    model: str = "bsm",
    greeks: str = "",
    strict: bool = False,
    x_deadline_ms: int | None = Header(None, gt=0),
) -> Response:
    """The Arrow form of POST /v1/price (routed here by content type)."""
    _check_model(model)
    names = _greeks(model, "all" if greeks == "all" else [g for g in greeks.split(",") if g],
                    ["query", "greeks"])
    return await _arrow(request, "price", model, names, x_deadline_ms, strict)


@app.post(IV_ARROW_ROUTE, include_in_schema=False, dependencies=GUARDS)
async def implied_vol_arrow(
    request: Request,
    model: str = "bsm",
    strict: bool = False,
    greeks: str = "",
    x_deadline_ms: int | None = Header(None, gt=0),
) -> Response:
    """The Arrow form of POST /v1/implied-vol (routed here by content type);
    Greeks asked of it are a 422, as in its JSON form, not ignored."""
    _check_model(model)
    if greeks:
        raise HTTPException(422, detail=[{"loc": ["query", "greeks"],
                                          "msg": "implied vol returns no Greeks"}])
    return await _arrow(request, "implied_vol", model, (), x_deadline_ms, strict)


def _check_model(model: str) -> None:
    if model not in gp.MODELS:
        raise HTTPException(422, detail=[{"loc": ["query", "model"],
                                          "msg": f"model must be one of {list(gp.MODELS)}"}])


async def _arrow(request: Request, kind: str, model: str, greeks: tuple[str, ...],
                 deadline_header: int | None, strict: bool) -> Response:
    """Read the Arrow body (numeric columns zero-copy over it), compute it
    through the micro-batcher, answer an Arrow stream of the results (with
    strict, a 422 naming the bad rows by their index in the stream)."""
    body = await read_body(request)
    try:
        table = arrow_io.read_table(body)
        limit = get_service_settings().max_arrow_rows
        if table.num_rows > limit:
            raise HTTPException(413, detail=f"at most {limit} rows per Arrow request")
        cols = arrow_io.columns(table, model, "price" if kind == "implied_vol" else "sigma")
    except arrow_io.ArrowBodyError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    del body
    ids = table.column("id") if "id" in table.column_names else None
    names = ["implied_vol"] if kind == "implied_vol" else ["price", *greeks]
    n = table.num_rows
    if n == 0:
        out: dict[str, Any] = {k: np.empty(0) for k in names}
        out["error"] = np.empty(0, dtype=np.int8)
    else:
        out = await _submit(request, model, greeks, cols, n, deadline_header, kind=kind)
    _check_strict(strict, out["error"], ["body", "rows"])
    return arrow_io.ArrowStreamResponse(arrow_io.answer_table(out, names, ids))
