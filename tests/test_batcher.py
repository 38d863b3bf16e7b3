"""The micro-batcher's front end and executor, with an instrumented pricer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import gpu_pricer as gp
from api.batcher import DeadlineExceeded, EngineStopped, MicroBatcher, QueueFull


class Recorder:
    """gpu_pricer.price (numpy backend) that records batch sizes and backends,
    can be held, and can fail like a device."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.backends: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on: set[str] = set()

    def __call__(self, **kw: Any) -> Mapping[str, Any]:
        self.release.wait(5)
        self.backends.append(kw["backend"])
        if kw["backend"] in self.fail_on:
            raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED")
        self.sizes.append(len(kw["strike"]))
        kw["backend"] = "numpy"
        return gp.price(**kw)


def _columns(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "option_type": np.where(rng.random(n) < 0.5, "call", "put"),
        "spot": rng.uniform(50, 150, n),
        "strike": rng.uniform(50, 150, n),
        "t": rng.uniform(0.1, 2, n),
        "sigma": np.where(rng.random(n) < 0.1, -0.2, rng.uniform(0.1, 0.5, n)),
        "r": np.full(n, 0.02),
        "q": np.zeros(n),
    }


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_coalesce_and_get_their_own_rows() -> None:
    rec = Recorder()

    async def main() -> list[dict[str, Any]]:
        b = MicroBatcher(max_batch_options=1000, max_delay_s=0.05, max_queue_options=10_000,
                         price=rec)
        await b.start()
        greeks = [("delta",), ("vega", "gamma"), ()]
        outs = await asyncio.gather(*(
            b.submit(model="bsm", greeks=greeks[i % 3], columns=_columns(5 + i, i), n=5 + i,
                     timeout_s=5) for i in range(12)))
        await b.stop()
        assert b.stats.batches == len(rec.sizes)
        return outs

    outs = _run(main())
    assert len(rec.sizes) < 12  # coalesced
    assert sum(rec.sizes) == sum(5 + i for i in range(12))
    for i, out in enumerate(outs):
        cols = _columns(5 + i, i)
        want = ("delta",), ("vega", "gamma"), ()
        ref = gp.price(greeks=want[i % 3], backend="numpy", **cols)
        assert list(out) == ["price", *want[i % 3], "error"]
        for name in ref:
            np.testing.assert_array_equal(out[name], ref[name])


def test_large_request_is_priced_in_slices_in_order() -> None:
    rec = Recorder()

    async def main() -> dict[str, Any]:
        b = MicroBatcher(max_batch_options=64, max_delay_s=0.0, max_queue_options=100,
                         price=rec)
        await b.start()
        out = await b.submit(model="bsm", greeks=("delta",), columns=_columns(300, 1), n=300,
                             timeout_s=5)
        await b.stop()
        return out

    out = _run(main())
    assert rec.sizes == [64, 64, 64, 64, 44]
    ref = gp.price(greeks=["delta"], backend="numpy", **_columns(300, 1))
    np.testing.assert_array_equal(out["price"], ref["price"])
    np.testing.assert_array_equal(out["error"], ref["error"])


def test_bulk_outputs_reuse_memory_only_once_released() -> None:
    """A request over several batches gets its outputs in one block from the
    library's buffer pool: a later request reuses it once the first request's
    arrays are gone, and never while they are held."""
    n = 300_000  # price + delta: 2 x 300,000 x 8 bytes, above the pool's minimum

    async def main() -> None:
        b = MicroBatcher(max_batch_options=100_000, max_delay_s=0.0,
                         max_queue_options=10 * n, backend="numba")
        await b.start()

        async def bulk(seed: int) -> dict[str, Any]:
            return await b.submit(model="bsm", greeks=("delta",), columns=_columns(n, seed),
                                  n=n, timeout_s=30)

        first = await bulk(1)
        second = await bulk(2)  # the first still held: fresh memory
        assert not np.shares_memory(first["price"], second["price"])
        for seed, out in ((1, first), (2, second)):
            ref = gp.price(greeks=["delta"], backend="numba", **_columns(n, seed))
            for name in ("price", "delta", "error"):
                np.testing.assert_array_equal(out[name], ref[name])
        address = first["price"].__array_interface__["data"][0]
        del first
        third = await bulk(3)  # the first's block is free again: reused
        assert third["price"].__array_interface__["data"][0] == address
        ref = gp.price(greeks=["delta"], backend="numba", **_columns(n, 3))
        np.testing.assert_array_equal(third["delta"], ref["delta"])
        await b.stop()

    _run(main())


def test_queue_full_and_deadline() -> None:
    rec = Recorder()

    async def main() -> None:
        b = MicroBatcher(max_batch_options=10, max_delay_s=0.0, max_queue_options=20,
                         price=rec)
        await b.start()
        rec.release.clear()  # hold the first batch in the worker
        first = asyncio.create_task(b.submit(model="bsm", greeks=(), columns=_columns(10, 1),
                                             n=10, timeout_s=5))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(b.submit(model="bsm", greeks=(),
                                               columns=_columns(20, 2), n=20, timeout_s=0.1))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit(model="bsm", greeks=(), columns=_columns(5, 3), n=5, timeout_s=5)
        with pytest.raises(DeadlineExceeded):
            await waiting
        rec.release.set()
        out = await first
        assert out["price"].shape == (10,)
        await b.stop()

    _run(main())


def test_device_fault_retries_on_the_cpu_and_stays_there() -> None:
    rec = Recorder()
    rec.fail_on = {"numba-cuda"}

    async def main() -> MicroBatcher:
        b = MicroBatcher(max_batch_options=100, max_delay_s=0.0, max_queue_options=1000,
                         price=rec, backend="numba-cuda")
        await b.start()
        cols = _columns(4, 1)
        out = await b.submit(model="bsm", greeks=(), columns=cols, n=4, timeout_s=5)
        ref = gp.price(backend="numpy", **cols)
        np.testing.assert_array_equal(out["price"], ref["price"])  # no request failed
        await b.submit(model="bsm", greeks=(), columns=_columns(3, 2), n=3, timeout_s=5)
        await b.stop()
        return b

    b = _run(main())
    assert rec.backends == ["numba-cuda", "numba", "numba"]
    assert b.backend == "numba"
    assert b.stats.fallbacks == 1
    assert b.fallback_reason == ("device fault on numba-cuda (RuntimeError: "
                                 "CUDA_ERROR_LAUNCH_FAILED); on numba since")


def test_a_fault_on_the_cpu_fails_that_batch_only() -> None:
    rec = Recorder()

    async def main() -> None:
        b = MicroBatcher(max_batch_options=100, max_delay_s=0.0, max_queue_options=1000,
                         price=rec, backend="numba")
        await b.start()
        rec.fail_on = {"numba"}
        with pytest.raises(RuntimeError, match="CUDA_ERROR_LAUNCH_FAILED"):
            await b.submit(model="bsm", greeks=(), columns=_columns(4, 1), n=4, timeout_s=5)
        rec.fail_on = set()
        out = await b.submit(model="bsm", greeks=(), columns=_columns(4, 1), n=4, timeout_s=5)
        assert out["price"].shape == (4,)
        await b.stop()

    _run(main())


def test_stop_drains_queued_requests() -> None:
    rec = Recorder()

    async def main() -> None:
        b = MicroBatcher(max_batch_options=100, max_delay_s=10.0, max_queue_options=1000,
                         price=rec)
        await b.start()
        tasks = [asyncio.create_task(b.submit(model="bsm", greeks=(), columns=_columns(3, i),
                                              n=3, timeout_s=30)) for i in range(4)]
        await asyncio.sleep(0.01)
        await b.stop()  # far before the 10 s delay: everything queued is priced now
        outs = await asyncio.gather(*tasks)
        assert all(o["price"].shape == (3,) for o in outs)
        with pytest.raises(QueueFull):
            await b.submit(model="bsm", greeks=(), columns=_columns(3, 9), n=3, timeout_s=1)

    _run(main())


def test_a_column_of_the_wrong_length_is_refused_and_the_loop_lives_on() -> None:
    rec = Recorder()

    async def main() -> dict[str, Any]:
        b = MicroBatcher(max_batch_options=1000, max_delay_s=0.001, max_queue_options=10_000,
                         price=rec)
        await b.start()
        cols = _columns(10, 3)
        cols["strike"] = cols["strike"][:7]
        with pytest.raises(ValueError, match=r"columns \['strike'\] do not have n = 10 rows"):
            await b.submit(model="bsm", columns=cols, n=10, timeout_s=5)
        good = _columns(10, 4)
        out = await b.submit(model="bsm", columns=good, n=10, timeout_s=5)
        await b.stop()
        return out

    out = _run(main())
    assert out["price"].shape == (10,)
    assert rec.sizes == [10]


def test_a_failure_outside_the_library_fails_its_batch_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()

    async def main() -> dict[str, Any]:
        b = MicroBatcher(max_batch_options=1000, max_delay_s=0.001, max_queue_options=10_000,
                         price=rec)
        await b.start()
        deliver = b._deliver

        def broken(*args: Any) -> None:
            raise KeyError("a bug while handing results back")

        monkeypatch.setattr(b, "_deliver", broken)
        with pytest.raises(KeyError, match="a bug"):
            await b.submit(model="bsm", columns=_columns(10, 5), n=10, timeout_s=5)
        monkeypatch.setattr(b, "_deliver", deliver)
        out = await b.submit(model="bsm", columns=_columns(10, 6), n=10, timeout_s=5)
        await b.stop()
        return out

    out = _run(main())
    assert out["price"].shape == (10,)
    assert rec.sizes == [10, 10]


def test_a_dead_loop_fails_waiting_requests_at_once_and_refuses_new_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug outside any batch ends the loop: the requests waiting in the
    queue fail with EngineStopped (503) now, not at their deadlines, and so
    does every later one; `alive` says so (what /readyz reads)."""
    from api.scheduler import Scheduler

    async def main() -> None:
        b = MicroBatcher(max_batch_options=1000, max_delay_s=0.05, max_queue_options=10_000,
                         price=Recorder())
        await b.start()
        assert b.alive

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug in the scheduler")

        monkeypatch.setattr(Scheduler, "next_batch", broken)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(EngineStopped, match="RuntimeError: a bug in the scheduler"):
            await b.submit(model="bsm", columns=_columns(10, 5), n=10, timeout_s=30)
        assert loop.time() - started < 5
        assert not b.alive
        with pytest.raises(EngineStopped):
            await b.submit(model="bsm", columns=_columns(10, 6), n=10, timeout_s=30)

    _run(main())
