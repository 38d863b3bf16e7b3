"""The micro-batcher: an async front end (one future per request) over the
pure `Scheduler`, and an executor that runs each batch as one
`gpu_pricer.price` or one `gpu_pricer.implied_vol` call in a worker thread
(never on the event loop).

Requests of one kind (``"price"`` or ``"implied_vol"``) and one model share a
queue, so a batch never mixes kinds or models; when several queues are due,
the one whose oldest request arrived first goes first.  A price batch
computes the union of its requests' Greeks and hands each request its own
rows and Greeks back, in order; an implied-vol batch hands back
``implied_vol`` and ``error``.  A request larger than a batch is computed in
slices over several batches.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np

import gpu_pricer as gp
from gpu_pricer import buffers

from . import metrics
from .scheduler import Admission, Batch, Scheduler

log = logging.getLogger("gpu_pricer.api")

PriceFn = Callable[..., Mapping[str, Any]]

#: The kinds of work, each with a queue per model and a library function.
KINDS = ("price", "implied_vol")


class QueueFull(Exception):
    """The queue has no room: answer 503 with Retry-After."""


class EngineStopped(QueueFull):
    """The batch loop has ended (a bug outside any batch): answer 503."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before it could be priced: answer 504."""


@dataclass(slots=True)
class _Job:
    key: int
    kind: str
    model: str
    greeks: tuple[str, ...]
    columns: Mapping[str, Any]
    n: int
    future: asyncio.Future[dict[str, Any]]
    arrived: float = 0.0
    out: dict[str, Any] = field(default_factory=dict)
    done_rows: int = 0

    @property
    def outputs(self) -> tuple[str, ...]:
        """The arrays this request gets back, in order."""
        if self.kind == "implied_vol":
            return ("implied_vol", "error")
        return ("price", *self.greeks, "error")


@dataclass
class BatcherStats:
    batches: int = 0
    options: int = 0
    requests_per_batch: list[int] = field(default_factory=list)
    fallbacks: int = 0  # batches retried on the CPU after a device fault


def _allocate(job: _Job, result: Mapping[str, Any]) -> None:
    """The output arrays of a request computed over several batches: the
    outputs of each dtype as rows of one block from the library's buffer pool,
    so that a bulk request reuses the memory of the last one rather than
    faulting in fresh pages (a million rows with five Greeks: 56 MB)."""
    by_dtype: dict[np.dtype[Any], list[str]] = {}
    for name in job.outputs:
        by_dtype.setdefault(result[name].dtype, []).append(name)
    for dtype, names in by_dtype.items():
        block = buffers.OUTPUTS.empty((len(names), job.n), dtype)
        for j, name in enumerate(names):
            job.out[name] = block[j]


def _expire(future: asyncio.Future[dict[str, Any]], timeout_s: float) -> None:
    """The request's deadline passed: it ends with DeadlineExceeded; a batch
    that holds it still runs and its rows are dropped on delivery."""
    if not future.done():
        future.set_exception(DeadlineExceeded(f"not answered within {timeout_s:.3f} s"))


class MicroBatcher:
    """Coalesces concurrent requests into batches (see module docstring);
    `price` and `implied_vol` are the library functions batches call."""

    def __init__(self, *, max_batch_options: int, max_delay_s: float, max_queue_options: int,
                 price: PriceFn = gp.price, implied_vol: PriceFn = gp.implied_vol,
                 backend: str = "auto", fallback_backend: str = "numba") -> None:
        self._functions = {"price": price, "implied_vol": implied_vol}
        self._backend = backend
        self._fallback = fallback_backend
        self._settings = (max_batch_options, max_delay_s, max_queue_options)
        self._queues: dict[tuple[str, str], Scheduler] = {}  # by (kind, model)
        self._jobs: dict[int, _Job] = {}
        self._keys = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = BatcherStats()
        #: Why batches left the backend they started on (None: they have not).
        self.fallback_reason: str | None = None

    # --- front end --------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="micro-batcher")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop ended: after `stop`, with nothing left; otherwise a bug
        outside any batch, logged, and every waiting request fails at once
        (503) rather than at its deadline."""
        if task.cancelled():
            reason = "the batch loop was cancelled"
        elif (exc := task.exception()) is not None:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("the batch loop ended: %s", reason, exc_info=exc)
        else:
            return
        for job in self._jobs.values():
            if not job.future.done():
                job.future.set_exception(EngineStopped(f"pricing engine stopped ({reason})"))
        self._jobs.clear()

    async def stop(self) -> None:
        """Stop accepting, price everything queued, then end the loop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    @property
    def alive(self) -> bool:
        """The batch loop runs (started, not ended: a stopped or crashed loop
        prices nothing)."""
        return self._task is not None and not self._task.done()

    @property
    def backend(self) -> str:
        """The backend batches are priced on now (the CPU after a device fault)."""
        return self._backend

    @property
    def queued_options(self) -> int:
        return sum(q.queued_options for q in self._queues.values())

    async def submit(self, *, model: str, greeks: tuple[str, ...] = (),
                     columns: Mapping[str, Any], n: int, timeout_s: float,
                     kind: str = "price") -> dict[str, Any]:
        """Compute `n` rows of `columns`: gpu_pricer.price keywords for kind
        "price", gpu_pricer.implied_vol keywords (no Greeks) for kind
        "implied_vol".  Returns the outputs in row order.  Raises QueueFull
        (EngineStopped: the loop has ended) or DeadlineExceeded; ValueError
        for an unknown kind, Greeks with implied vol, or a column whose
        length is not `n`."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if kind == "implied_vol" and greeks:
            raise ValueError("implied_vol takes no Greeks")
        short = [k for k, v in columns.items() if len(v) != n]
        if short:  # refused here: a batch cut from it would fail the loop
            raise ValueError(f"columns {short} do not have n = {n} rows")
        if self._closing:
            raise QueueFull("shutting down")
        if not self.alive:
            raise EngineStopped("pricing engine stopped")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        key = next(self._keys)
        job = _Job(key, kind, model, greeks, columns, n, loop.create_future(), arrived=now)
        queue = self._queues.get((kind, model))
        if queue is None:
            queue = self._queues[kind, model] = Scheduler(*self._settings)
        if queue.offer(key, n, now, now + timeout_s) is Admission.QUEUE_FULL:
            metrics.REJECTED.labels("queue_full").inc()
            raise QueueFull(f"{queue.queued_options} options queued")
        self._jobs[key] = job
        metrics.QUEUE_OPTIONS.set(self.queued_options)
        if queue.queued_options == n or queue.due_in(now) == 0:
            # the loop sleeps until the soonest queue is due: only a queue that
            # was empty (a new due time) or is due now changes that
            self._wake.set()
        # one timer per request (cheaper than wait_for + shield, which wrap the future twice)
        timer = loop.call_later(timeout_s, _expire, job.future, timeout_s)
        try:
            return await job.future
        except DeadlineExceeded:
            metrics.REJECTED.labels("deadline").inc()
            raise
        finally:
            timer.cancel()

    # --- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for queue in self._queues.values():
                for key in queue.expire(now):
                    job = self._jobs.pop(key)
                    if not job.future.done():
                        job.future.set_exception(DeadlineExceeded("expired in the queue"))
            due = [(q, w, q.oldest_arrival or 0.0) for q in self._queues.values()
                   if (w := q.due_in(now)) is not None]
            if not due:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # the soonest due; among those due now, the oldest (no queue starves another)
            queue, wait, _ = min(due, key=lambda qwa: (qwa[1], qwa[2]))
            if wait > 0 and not self._closing:
                self._wake.clear()
                alarm = asyncio.get_running_loop().call_later(wait, self._wake.set)
                await self._wake.wait()
                alarm.cancel()
                continue
            batch = queue.next_batch(now if not self._closing else now + 1e9)
            if batch is not None:
                try:
                    await self._execute(batch)
                except Exception as exc:  # a bug in one batch must not stop the loop
                    log.exception("batch of %d options failed outside the library",
                                  batch.size)
                    for s in batch.slices:
                        failed = self._jobs.pop(s.key) if s.key in self._jobs else None
                        if failed is not None and not failed.future.done():
                            failed.future.set_exception(exc)

    async def _execute(self, batch: Batch) -> None:
        jobs = [self._jobs[s.key] for s in batch.slices]
        started = time.monotonic()
        metrics.QUEUE_OPTIONS.set(self.queued_options)
        for s, job in zip(batch.slices, jobs, strict=True):
            if s.start == 0:
                metrics.QUEUE_WAIT.observe(started - job.arrived)
        wanted = set().union(*(j.greeks for j in jobs))
        names = [g for g in gp.GREEKS if g in wanted]
        result: Mapping[str, Any] | None
        try:
            result = await anyio.to_thread.run_sync(self._run_batch, batch, jobs, names,
                                                    self._backend)
        except Exception as exc:
            result = await self._fall_back(exc, batch, jobs, names)
        if result is not None:
            self._deliver(batch, jobs, result)

    async def _fall_back(self, exc: Exception, batch: Batch, jobs: list[_Job],
                         names: list[str]) -> Mapping[str, Any] | None:
        """A batch failed on the device: retry it on the CPU and stay there.  If
        it fails there too (or was already there), fail its requests."""
        if self._backend != self._fallback:
            log.error("device fault on %s (%s: %s); retrying the batch on %s and staying there",
                      self._backend, type(exc).__name__, exc, self._fallback)
            self.fallback_reason = (f"device fault on {self._backend} "
                                    f"({type(exc).__name__}: {exc}); on {self._fallback} since")
            self._backend = self._fallback
            self.stats.fallbacks += 1
            metrics.FALLBACKS.inc()
            metrics.set_backend(self._backend, "device fault")
            try:
                return await anyio.to_thread.run_sync(self._run_batch, batch, jobs, names,
                                                      self._backend)
            except Exception as again:
                exc = again
        # a fault on the CPU too: fail these requests only
        log.error("batch of %d options failed: %s: %s", batch.size, type(exc).__name__, exc)
        for job in jobs:
            self._jobs.pop(job.key, None)
            if not job.future.done():
                job.future.set_exception(exc)
        return None

    def _deliver(self, batch: Batch, jobs: list[_Job], result: Mapping[str, Any]) -> None:
        self.stats.batches += 1
        self.stats.options += batch.size
        self.stats.requests_per_batch.append(len(batch.slices))
        metrics.BATCH_OPTIONS.observe(batch.size)
        metrics.BATCH_REQUESTS.observe(len(batch.slices))
        metrics.OPTIONS_PRICED.labels(self._backend, jobs[0].model, jobs[0].kind).inc(batch.size)
        for s, job in zip(batch.slices, jobs, strict=True):
            whole = s.size == job.n  # the request fits in this batch: views, no copy
            if not whole and not job.out:
                _allocate(job, result)
            for name in job.outputs:
                rows = result[name][s.offset:s.offset + s.size]
                if whole:
                    job.out[name] = rows
                else:
                    job.out[name][s.start:s.stop] = rows
            job.done_rows += s.size
            if job.done_rows == job.n:
                self._jobs.pop(job.key, None)
                if not job.future.done():
                    job.future.set_result(job.out)

    def _run_batch(self, batch: Batch, jobs: list[_Job], names: list[str],
                   backend: str) -> Mapping[str, Any]:
        """One library call for the whole batch (every job has its kind and model)."""
        kind, model = jobs[0].kind, jobs[0].model
        keys = jobs[0].columns.keys()
        if len(batch.slices) == 1:  # one request: views, no copy
            s = batch.slices[0]
            cols = {k: jobs[0].columns[k][s.start:s.stop] for k in keys}
        else:
            cols = {k: np.concatenate([j.columns[k][s.start:s.stop]
                                       for s, j in zip(batch.slices, jobs, strict=True)])
                    for k in keys}
        if kind == "implied_vol":
            return self._functions[kind](model=model, backend=backend, **cols)
        return self._functions[kind](model=model, greeks=names, backend=backend, **cols)
