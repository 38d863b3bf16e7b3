"""The Numba-CUDA kernel under Numba's CUDA simulator.

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 pytest -m cudasim``
(``make test`` does).  The simulator executes the kernel's Python source
thread by thread, so the sizes are small; the source is the one compiled
for a real device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import gpu_pricer as gp
from gpu_pricer import dispatch

from .conftest import SIMULATED, model_kwargs, random_book

pytestmark = [
    pytest.mark.cudasim,
    pytest.mark.skipif(not SIMULATED, reason="needs NUMBA_ENABLE_CUDASIM=1 (own process)"),
]


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_cuda_kernel_agrees_with_reference(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # small chunks, so the chunked host<->device path is exercised too
    monkeypatch.setenv("GPU_PRICER_CHUNK_ROWS", "48")
    from gpu_pricer.settings import get_settings

    get_settings.cache_clear()
    book: dict[str, Any] = random_book(120, seed=31)
    book["sigma"][::17] = -0.2
    book["t"][3::19] = 0.0
    book["spot"][4::23] = np.inf
    kw = model_kwargs(model, book)
    ref = gp.price(model=model, backend="numpy", **kw)
    sim = gp.price(model=model, backend="numba-cuda", **kw)
    get_settings.cache_clear()
    np.testing.assert_array_equal(sim["error"], ref["error"])
    assert (ref["error"] != 0).sum() >= 10
    for name in ref:
        x, y = ref[name], sim[name]
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        ok = np.isfinite(x)
        np.testing.assert_allclose(y[ok], x[ok], rtol=1e-11,
                                   atol=1e-14 * np.max(np.abs(x[ok])), err_msg=name)


def test_cuda_kernel_float32_and_broadcast_scalars() -> None:
    strikes = np.linspace(80.0, 120.0, 40)
    sim = gp.price(option_type="put", spot=100.0, strike=strikes, t=0.5, sigma=0.25, r=0.02,
                   greeks=["delta", "gamma"], dtype="float32", backend="numba-cuda")
    ref = gp.price(option_type="put", spot=100.0, strike=strikes, t=0.5, sigma=0.25, r=0.02,
                   greeks=["delta", "gamma"], dtype="float32", backend="numba")
    for name in ("price", "delta", "gamma"):
        assert sim[name].dtype == np.float32
        np.testing.assert_array_equal(sim[name], ref[name])


def test_auto_never_picks_the_simulator() -> None:
    dispatch.reset()
    assert gp.backends()["numba-cuda"].available
    assert "numba-cuda" not in dispatch.candidates("auto", on_device=False)


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_cuda_implied_vol_agrees_with_reference(model: str) -> None:
    book: dict[str, Any] = random_book(60, seed=5)
    kw = model_kwargs(model, book)
    sigma = kw.pop("sigma")
    kw.pop("greeks")
    p = gp.price(model=model, sigma=sigma, backend="numpy", **kw)["price"]
    p[::13] = -1.0
    p[5] = np.nan
    ref = gp.implied_vol(model=model, price=p, backend="numpy", **kw)
    sim = gp.implied_vol(model=model, price=p, backend="numba-cuda", **kw)
    np.testing.assert_array_equal(sim["error"], ref["error"])
    assert (ref["error"] != 0).sum() >= 5
    ok = ref["error"] == 0
    assert np.array_equal(np.isnan(sim["implied_vol"]), np.isnan(ref["implied_vol"]))
    informative = ok & (ref["implied_vol"] > 0)
    np.testing.assert_allclose(sim["implied_vol"][informative], ref["implied_vol"][informative],
                               rtol=1e-11)


def test_gpu_split_of_the_kernel_bench_runs() -> None:
    """bench.kernels times transfers and kernel with CUDA events on a device;
    here the same code runs under the simulator (its timings mean nothing)."""
    from bench import kernels

    split = kernels.gpu_split(64, 2)
    assert split["measured"] and split["simulated"]
    assert "meaningless" in split["note"]
    assert {"h2d_s", "kernel_s", "d2h_s", "device_bandwidth_bytes_per_s"} <= split.keys()
    paths = kernels.host_paths(64, 2)  # staged vs synchronous host data, same run
    assert paths["measured"] and paths["simulated"] and "meaningless" in paths["note"]
    assert paths["staged_s"] > 0 and paths["synchronous_s"] > 0
    from gpu_pricer.settings import get_settings

    assert get_settings().cuda_staging  # the setting as it was


def test_host_data_goes_through_pooled_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host columns go through two pooled stages of pinned buffers: in chunks
    of 32 rows (5 chunks, the last one partial, each stage used two or three
    times) they give bitwise the values of one chunk; the stages go back to
    the pool and the next call takes the same ones; a call that fails leaves
    its stages out of the pool."""
    from gpu_pricer import staging
    from gpu_pricer.settings import get_settings

    book: dict[str, Any] = random_book(150, seed=7)
    book["sigma"][::11] = -0.2
    kw = model_kwargs("bsm", book)
    staging.clear()
    whole = gp.price(backend="numba-cuda", **kw)  # one chunk (STAGE_ROWS >> 150)
    monkeypatch.setenv("GPU_PRICER_CHUNK_ROWS", "32")
    get_settings.cache_clear()
    try:
        staging.clear()
        chunked = gp.price(backend="numba-cuda", **kw)
        (key, pairs), = staging._pool.items()
        assert key[2] == 32 and len(pairs) == 1
        pair = pairs[0]
        again = gp.price(backend="numba-cuda", **kw)
        assert staging._pool[key] == [pair]  # taken and returned, not rebuilt
        for name in whole:
            np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)
            np.testing.assert_array_equal(again[name], whole[name], err_msg=name)
        assert (whole["error"] != 0).sum() >= 10
        monkeypatch.setenv("GPU_PRICER_CUDA_STAGING", "false")  # the synchronous path
        get_settings.cache_clear()
        synchronous = gp.price(backend="numba-cuda", **kw)
        for name in whole:
            np.testing.assert_array_equal(synchronous[name], whole[name], err_msg=name)
        monkeypatch.delenv("GPU_PRICER_CUDA_STAGING")
        get_settings.cache_clear()

        def fail(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("device lost")

        monkeypatch.setattr(staging.Stage, "collect", fail)
        with pytest.raises(RuntimeError, match="device lost"):
            gp.price(backend="numba-cuda", **kw)
        assert staging._pool[key] == []  # the failed call's stages were dropped
    finally:
        get_settings.cache_clear()
        staging.clear()
