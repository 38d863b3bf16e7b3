"""The GPU backends on a real CUDA device: CuPy and Numba-CUDA against the
NumPy reference, device-resident input and output, chunked transfers,
float32, implied vol and the automatic choice.

Skipped where no device is usable (CI has none: there the CuPy path is
covered through its shared source with the NumPy reference, the Numba-CUDA
kernel by the CUDA simulator, and the fallback by test_backends).  Run with
``make test-gpu`` on a machine with an NVIDIA driver and the ``gpu`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import gpu_pricer as gp
from gpu_pricer import dispatch
from gpu_pricer.settings import get_settings

from .conftest import (
    assert_agree,
    assert_float32_is_float64_arithmetic,
    gpu_device,
    model_kwargs,
    random_book,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_device(), reason="needs a CUDA device (cupy and numba-cuda)"),
]

GPU_BACKENDS = ("cupy", "numba-cuda")
MODELS = ("bsm", "black76", "bachelier")


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def limit_book(n: int, seed: int) -> dict[str, Any]:
    """`random_book` with every kind of row the kernels branch on: bad inputs,
    t = 0, sigma = 0, deep in and out of the money, tiny and huge t * sigma."""
    book: dict[str, Any] = random_book(n, seed)
    book["sigma"][::97] = -0.1
    book["spot"][5::101] = np.nan
    book["t"][6::107] = np.inf
    book["t"][7::103] = 0.0
    book["sigma"][9::89] = 0.0
    book["strike"][11::53] = book["spot"][11::53] * 40.0  # deep OTM call / ITM put
    book["strike"][13::59] = book["spot"][13::59] / 40.0  # deep ITM call / OTM put
    book["t"][15::61] = 1e-9
    book["sigma"][17::67] = 5.0
    return book


def host(result: dict[str, Any]) -> dict[str, Any]:
    import cupy

    return {k: cupy.asnumpy(v) for k, v in result.items()}


def test_both_gpu_backends_are_available_and_auto_picks_the_gpu() -> None:
    dispatch.reset()
    status = gp.backends()
    for name in GPU_BACKENDS:
        assert status[name].available, status[name].reason
    assert dispatch.candidates("auto", on_device=False)[0] == "numba-cuda"
    assert dispatch.candidates("auto", on_device=True) == ["numba-cuda", "cupy"]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_gpu_backend_agrees_with_reference(model: str, backend: str) -> None:
    book = limit_book(200_000, seed=41)
    kw = model_kwargs(model, book)
    ref = gp.price(model=model, backend="numpy", **kw)
    got = gp.price(model=model, backend=backend, **kw)
    assert (ref["error"] != 0).sum() > 1000
    assert_agree(ref, got, rtol=1e-11)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_tiny_prices_keep_their_relative_accuracy(backend: str) -> None:
    """Far out of the money the price is the difference of two nearly equal
    terms in the textbook formula; ours has no cancellation on any backend."""
    strike = np.geomspace(150.0, 5000.0, 20_000)
    kw: dict[str, Any] = dict(option_type="call", spot=100.0, strike=strike, t=0.25, sigma=0.2,
                              r=0.01, q=0.02)
    ref = gp.price(backend="numpy", **kw)["price"]
    got = gp.price(backend=backend, **kw)["price"]
    normal = ref > 1e-290  # below, subnormal numbers hold fewer digits
    assert (normal & (ref < 1e-20)).sum() > 5000 and ref[normal].min() < 1e-250
    np.testing.assert_allclose(got[normal], ref[normal], rtol=1e-12, atol=0)
    assert np.all(np.abs(got[~normal]) < 1e-289)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_device_input_gives_device_output(backend: str) -> None:
    import cupy

    book = limit_book(50_000, seed=3)
    kw = model_kwargs("bsm", book)
    on_host = gp.price(backend=backend, **kw)
    d_kw = {k: (cupy.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    on_device = gp.price(backend=backend, **d_kw)
    for name, value in on_device.items():
        assert isinstance(value, cupy.ndarray), name
    got = host(on_device)
    for name in on_host:
        np.testing.assert_array_equal(got[name], on_host[name], err_msg=name)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_device_scalars_broadcast_like_columns(backend: str) -> None:
    import cupy

    strike = np.linspace(60.0, 140.0, 4001)
    one = gp.price(option_type="put", spot=100.0, strike=cupy.asarray(strike), t=0.75,
                   sigma=0.3, r=0.02, q=0.01, greeks="all", backend=backend)
    cols = gp.price(option_type=np.zeros(strike.size, bool), spot=np.full(strike.size, 100.0),
                    strike=strike, t=np.full(strike.size, 0.75), sigma=np.full(strike.size, 0.3),
                    r=np.full(strike.size, 0.02), q=np.full(strike.size, 0.01), greeks="all",
                    backend=backend)
    got = host(one)
    for name in cols:
        np.testing.assert_array_equal(got[name], cols[name], err_msg=name)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_chunked_transfers_match_one_chunk(backend: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    book = limit_book(30_001, seed=9)
    kw = model_kwargs("black76", book)
    whole = gp.price(model="black76", backend=backend, **kw)
    monkeypatch.setenv("GPU_PRICER_CHUNK_ROWS", "4096")
    get_settings.cache_clear()
    chunked = gp.price(model="black76", backend=backend, **kw)
    for name in whole:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", ["price", "implied_vol"])
def test_staged_transfers_match_synchronous_ones(model: str, kind: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """numba-cuda on host data: the pinned two-stream stages (chunks of 4,096
    rows, so both stages are reused several times, the last chunk partial)
    give bitwise the results of the synchronous pageable path; every Greek,
    float64 and float32, and implied vols."""
    from gpu_pricer import staging

    book = limit_book(30_001, seed=12)
    kw = model_kwargs(model, book)
    if kind == "implied_vol":
        sigma, _ = kw.pop("sigma"), kw.pop("greeks")
        kw["price"] = gp.price(model=model, sigma=sigma, backend="numpy", **kw)["price"]
        calls = [lambda: gp.implied_vol(model=model, backend="numba-cuda", **kw)]
    else:
        kw["greeks"] = "all"
        calls = [lambda d=d: gp.price(model=model, backend="numba-cuda", dtype=d, **kw)
                 for d in ("float64", "float32")]
    monkeypatch.setenv("GPU_PRICER_CHUNK_ROWS", "4096")
    for call in calls:
        monkeypatch.setenv("GPU_PRICER_CUDA_STAGING", "false")
        get_settings.cache_clear()
        synchronous = call()
        monkeypatch.setenv("GPU_PRICER_CUDA_STAGING", "true")
        get_settings.cache_clear()
        staging.clear()
        staged = call()
        again = call()  # the pooled stages, reused
        for name in synchronous:
            np.testing.assert_array_equal(staged[name], synchronous[name], err_msg=name)
            np.testing.assert_array_equal(again[name], synchronous[name], err_msg=name)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_float32_is_float64_arithmetic_on_float32_inputs(backend: str) -> None:
    assert_float32_is_float64_arithmetic(backend, "numpy", 20_000)


def price_terms(model: str, kw: dict[str, Any]) -> Any:
    """The two terms whose difference is the intrinsic value, added (discounted
    forward + discounted strike): with the price itself, the scale of a
    price's rounding."""
    dr = np.exp(-kw["r"] * kw["t"])
    if model == "bsm":
        return kw["spot"] * np.exp(-kw["q"] * kw["t"]) + kw["strike"] * dr
    return dr * (np.abs(kw["forward"]) + np.abs(kw["strike"]))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_gpu_implied_vol_agrees_with_reference(model: str, backend: str) -> None:
    """Same error codes; the same vol up to what the price's rounding leaves
    undetermined (a vol whose vega is tiny against the price is set by its
    last bits, which the CPU's and the GPU's exp round differently); and the
    vols reprice the inputs to the price's rounding."""
    book: dict[str, Any] = random_book(50_000, seed=17)
    kw = model_kwargs(model, book)
    sigma = kw.pop("sigma")
    kw.pop("greeks")
    p = gp.price(model=model, sigma=sigma, backend="numpy", **kw)["price"]
    p[::131] = -1.0
    p[5::137] = np.nan
    p[7::139] *= 1e6  # above the upper bound
    ref = gp.implied_vol(model=model, price=p, backend="numpy", **kw)
    got = gp.implied_vol(model=model, price=p, backend=backend, **kw)
    np.testing.assert_array_equal(got["error"], ref["error"])
    assert (ref["error"] != 0).sum() > 500
    assert np.array_equal(np.isnan(got["implied_vol"]), np.isnan(ref["implied_vol"]))
    solved = ref["error"] == 0
    vol, ref_vol = got["implied_vol"], ref["implied_vol"]
    vega = gp.price(model=model, sigma=ref_vol, greeks=["vega"], backend="numpy", **kw)["vega"]
    eps = np.finfo(np.float64).eps
    terms = price_terms(model, kw) + np.abs(p)
    with np.errstate(divide="ignore"):
        allowed = 1e-11 * ref_vol + 64 * eps * terms / vega
    assert np.all(np.abs(vol - ref_vol)[solved] <= allowed[solved])
    assert np.mean(np.abs(vol - ref_vol)[solved] <= 1e-11 * ref_vol[solved]) > 0.98
    # backward error: the vols reprice the inputs to the price's rounding
    sub = {k: (v[solved] if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    back = gp.price(model=model, sigma=vol[solved], backend=backend, **sub)["price"]
    assert np.all(np.abs(back - p[solved]) <= 64 * eps * terms[solved])


def test_auto_result_is_the_numba_cuda_result() -> None:
    book = random_book(10_000, seed=2)
    kw = model_kwargs("bsm", book)
    auto = gp.price(backend="auto", **kw)
    named = gp.price(backend="numba-cuda", **kw)
    for name in named:
        np.testing.assert_array_equal(auto[name], named[name], err_msg=name)


def test_a_bad_row_does_not_change_its_neighbours_on_the_device() -> None:
    book = random_book(5_000, seed=12)
    kw = model_kwargs("bsm", book)
    clean = gp.price(backend="numba-cuda", **kw)
    kw["sigma"] = kw["sigma"].copy()
    kw["sigma"][::7] = np.nan
    dirty = gp.price(backend="numba-cuda", **kw)
    bad = np.zeros(5_000, bool)
    bad[::7] = True
    assert (dirty["error"][bad] != 0).all() and (dirty["error"][~bad] == 0).all()
    for name in clean:
        if name != "error":
            assert np.isnan(dirty[name][bad]).all()
            np.testing.assert_array_equal(dirty[name][~bad], clean[name][~bad], err_msg=name)
