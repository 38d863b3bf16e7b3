"""Backends agree with the NumPy reference; 'auto' chooses and falls back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import gpu_pricer as gp
from gpu_pricer import dispatch
from gpu_pricer.settings import get_settings

from .conftest import (
    SIMULATED,
    assert_agree,
    assert_float32_is_float64_arithmetic,
    gpu_device,
    model_kwargs,
    random_book,
)


@pytest.fixture(autouse=True)
def _fresh_dispatch() -> Iterator[None]:
    dispatch.reset()
    get_settings.cache_clear()
    yield
    dispatch.reset()
    get_settings.cache_clear()


def _book_with_bad_rows(n: int, seed: int) -> dict[str, Any]:
    book: dict[str, Any] = random_book(n, seed)
    book["sigma"][::97] = -0.1
    book["spot"][5::101] = np.nan
    book["t"][7::103] = 0.0
    book["sigma"][9::89] = 0.0
    return book


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_numba_agrees_with_reference(model: str) -> None:
    book = _book_with_bad_rows(5000, seed=21)
    kw = model_kwargs(model, book)
    ref = gp.price(model=model, backend="numpy", **kw)
    fast = gp.price(model=model, backend="numba", **kw)
    assert (ref["error"] != 0).sum() > 50
    assert_agree(ref, fast, rtol=1e-11)


def test_float32_is_float64_arithmetic_on_float32_inputs(backend: str) -> None:
    assert_float32_is_float64_arithmetic(backend, backend, 3_000)


def test_backends_report_here() -> None:
    status = gp.backends()
    assert set(status) == {"numpy", "numba", "cupy", "numba-cuda"}
    assert status["numpy"].available and status["numba"].available
    # how the vectorised kernels move a region's rows on this CPU, said where
    # /v1/info and the bench show the backends
    from gpu_pricer.kernels import simd
    assert ("AVX-512 compress" in status["numba"].reason) == simd.AVAILABLE
    if not SIMULATED and not gpu_device():
        # no GPU driver here (CI): the fallback a user meets with cupy installed
        assert not status["cupy"].available
        assert "driver" in status["cupy"].reason or "not importable" in status["cupy"].reason
        assert not status["numba-cuda"].available


@pytest.mark.skipif(gpu_device(), reason="a CUDA device is usable here (test_gpu covers it)")
def test_auto_falls_back_to_numba_without_a_device() -> None:
    assert dispatch.candidates("auto", on_device=False)[0] == "numba"
    out = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2)
    ref = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                   backend="numba")
    assert out["price"] == ref["price"]


def test_named_backend_that_is_unavailable_raises() -> None:
    if SIMULATED or gpu_device():
        pytest.skip("the simulator or a device makes numba-cuda available")
    with pytest.raises(RuntimeError, match="backend 'numba-cuda' is not available"):
        gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                 backend="numba-cuda")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                 backend="tpu")


def test_device_failing_at_first_use_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU that looks usable but fails when used: auto prices on the CPU,
    remembers the failure and reports it."""
    real_probe = dispatch._probe

    def probe(name: str) -> dispatch.BackendStatus:
        if name == "numba-cuda":
            return dispatch.BackendStatus(name, True, "pretend device")
        if name == "cupy":  # so that the CPU is next, on a machine with a GPU too
            return dispatch.BackendStatus(name, False, "pretend no driver")
        return real_probe(name)

    calls: list[str] = []

    def broken(req: Any, out: Any, err: Any) -> None:
        calls.append("numba-cuda")
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    monkeypatch.setattr(dispatch, "_probe", probe)
    monkeypatch.setattr(dispatch, "_simulated", lambda: False)
    monkeypatch.setitem(dispatch.RUNNERS, "numba-cuda", broken)
    book = random_book(100, seed=2)
    out = gp.price(option_type=book["option_type"], spot=book["spot"], strike=book["strike"],
                   t=book["t"], sigma=book["sigma"])
    ref = gp.price(option_type=book["option_type"], spot=book["spot"], strike=book["strike"],
                   t=book["t"], sigma=book["sigma"], backend="numba")
    np.testing.assert_array_equal(out["price"], ref["price"])
    assert calls == ["numba-cuda"]
    st = gp.backends()["numba-cuda"]
    assert not st.available and "CUDA_ERROR_ILLEGAL_ADDRESS" in st.reason
    gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2)
    assert calls == ["numba-cuda"]  # not tried again
    why = dispatch.explain()
    assert why.startswith("auto: the first usable of numba-cuda, cupy, numba, numpy (skipped ")
    assert "numba-cuda: failed at use: RuntimeError: CUDA_ERROR_ILLEGAL_ADDRESS" in why
    assert "cupy: pretend no driver" in why and "; numba: numba " in why


def test_explain_names_the_setting_or_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dispatch.explain("numpy") == f"asked for numpy: numpy {np.__version__}"
    monkeypatch.setenv("GPU_PRICER_BACKEND", "numpy")
    get_settings.cache_clear()
    assert dispatch.explain() == f"GPU_PRICER_BACKEND=numpy: numpy {np.__version__}"


def test_environment_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_PRICER_BACKEND", "numpy")
    get_settings.cache_clear()
    assert dispatch.candidates("auto", on_device=False) == ["numpy"]
    monkeypatch.setenv("GPU_PRICER_BACKEND", "quantum")
    get_settings.cache_clear()
    with pytest.raises(Exception, match="backend"):
        get_settings()


def test_chunked_reference_matches_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    book = random_book(1000, seed=4)
    kw = {k: v for k, v in book.items() if k != "option_type"}
    whole = gp.price(option_type=book["option_type"], backend="numpy", greeks="all", **kw)
    monkeypatch.setenv("GPU_PRICER_CHUNK_ROWS", "77")
    get_settings.cache_clear()
    chunked = gp.price(option_type=book["option_type"], backend="numpy", greeks="all", **kw)
    for name in whole:
        np.testing.assert_array_equal(chunked[name], whole[name])


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_reference_tiers_are_the_first_values_of_all(model: str) -> None:
    """The reference computes only the outputs of the tier asked for (the
    price; with the first-order Greeks; all), each bitwise what computing all
    of them gives, limits (t = 0, sigma = 0, at the money) and bad rows included."""
    book = _book_with_bad_rows(3000, seed=8)
    book["strike"][::7] = book["spot"][::7]  # at the money, with t = 0 and sigma = 0 rows
    kw = model_kwargs(model, book)  # greeks="all"
    whole = gp.price(model=model, backend="numpy", **kw)
    assert np.isinf(whole["gamma"]).any()  # the at-the-money limits are in the book
    for greeks in ((), ["delta", "gamma", "vega", "theta", "rho"]):
        tier = gp.price(model=model, backend="numpy", **{**kw, "greeks": greeks})
        assert tier.keys() == {"price", "error", *greeks}
        for name, values in tier.items():
            np.testing.assert_array_equal(values, whole[name], err_msg=name)
            assert (np.signbit(values) == np.signbit(whole[name])).all(), name


@pytest.mark.skipif(SIMULATED, reason="CPU kernels only")
def test_small_calls_run_on_the_calling_thread_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below SERIAL_ROWS the Numba kernel runs with one thread (no wake-up of
    the others), every row as it is priced in a parallel call, and the
    caller's thread count is restored, even when the kernel raises."""
    import numba

    rng = np.random.default_rng(31)
    n = dispatch.SERIAL_ROWS
    book = {"option_type": rng.random(n) < 0.5, "spot": rng.uniform(50, 150, n),
            "strike": rng.uniform(50, 150, n), "t": rng.uniform(0.01, 2, n),
            "sigma": rng.uniform(0.05, 0.8, n), "r": 0.02, "q": 0.01}
    threads = numba.get_num_threads()
    seen: list[int] = []
    original = dispatch.run_numba

    def spy(req: Any, out: Any, err: Any) -> None:
        original(req, out, err)
        seen.append(req.n)

    monkeypatch.setitem(dispatch.RUNNERS, "numba", spy)
    parallel = gp.price(model="bsm", greeks="all", backend="numba", **book)
    small = gp.price(model="bsm", greeks="all", backend="numba",
                     **{k: v[: n - 1] if np.ndim(v) else v for k, v in book.items()})
    assert seen == [n, n - 1]
    for name, values in parallel.items():
        np.testing.assert_array_equal(small[name], values[: n - 1], err_msg=name)
    assert numba.get_num_threads() == threads

    from gpu_pricer.kernels import cpu

    def broken(*args: Any, **kwargs: Any) -> Any:
        def kern(*a: Any) -> None:
            assert numba.get_num_threads() == 1
            raise RuntimeError("kernel fault")
        return kern

    monkeypatch.setattr(cpu, "vector_kernel", broken)
    with pytest.raises(RuntimeError, match="kernel fault"):
        gp.price(model="bsm", option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                 backend="numba")
    assert numba.get_num_threads() == threads


@pytest.mark.parametrize("model", ["bsm", "black76"])
@pytest.mark.parametrize("r", [0.0, 0.03])
def test_moneyness_past_the_double_range_is_priced(model: str, r: float) -> None:
    """und/k of 1e600 or 1e-600 (past the double range, so ln(und/k) is taken
    as ln und - ln k): deep in the money, the discounted intrinsic value and a
    delta of +-1 (times the forward's discount for black76); deep out, 0.  The
    row kernel once gave such a row a NaN delta with no error code."""
    und = np.array([1e300, 1e-300, 1e300, 1e-300])
    k = np.array([1e-300, 1e300, 1e-300, 1e300])
    call = np.array([True, False, False, True])
    dr = np.exp(-r)
    kw = {"spot" if model == "bsm" else "forward": und}
    got = {b: gp.price(model=model, option_type=call, strike=k, t=1.0, sigma=0.2, r=r,
                       greeks=["delta", "gamma", "vega", "theta", "rho"], backend=b, **kw)
           for b in ("numpy", "numba")}
    carry = 1.0 if model == "bsm" else dr  # the underlying's discount factor
    for out in got.values():
        assert (out["error"] == 0).all()
        for name in ("price", "delta", "gamma", "vega", "theta", "rho"):
            assert np.isfinite(out[name]).all(), name
        np.testing.assert_allclose(out["price"], [1e300 * carry, 1e300 * dr, 0.0, 0.0],
                                   rtol=1e-15)
        np.testing.assert_allclose(out["delta"], [carry, -carry, 0.0, 0.0], rtol=1e-15)
    assert_agree(got["numpy"], got["numba"], rtol=1e-12)


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_no_priced_row_has_a_nan_value(model: str) -> None:
    """Inputs far past any market (log-uniform spot, strike, t and sigma over
    hundreds of decades, r t and q t up to +-1000): a row is priced (code 0)
    with no NaN value -- an intermediate past the double range (inf - inf in
    theta at r t = -700, say) makes it RESULT_NOT_FINITE -- or has a code and
    NaN in every value; the same on both CPU backends.  Theta and veta once
    came out NaN with code 0 at r t = -700."""
    rng = np.random.default_rng(7)
    n = 20_000

    def log_uniform(lo: float, hi: float) -> np.ndarray:
        return np.asarray(10.0 ** rng.uniform(lo, hi, n))

    t = log_uniform(-6, 3)
    book = {"option_type": rng.random(n) < 0.5, "strike": log_uniform(-150, 150), "t": t,
            "sigma": log_uniform(-6, 6), "r": rng.uniform(-1000, 1000, n) / t,
            "q": rng.uniform(-1000, 1000, n) / t}
    und = log_uniform(-150, 150)
    if model == "bachelier":
        book["strike"] = book["strike"] * np.where(rng.random(n) < 0.5, -1.0, 1.0)
        und = und * np.where(rng.random(n) < 0.5, -1.0, 1.0)
        del book["q"]
    elif model == "black76":
        del book["q"]
    book["spot" if model == "bsm" else "forward"] = und
    name = "spot" if model == "bsm" else "forward"
    if model != "bachelier":
        # 1,024 rows the vectorised loops price (|r t| small, s = 0.1) whose
        # theta is inf - inf: q S e^(-qt) and r K e^(-rt) both past the range
        extra = {"option_type": np.arange(1024) % 2 == 0, name: 1e199, "strike": 1e199,
                 "t": 1e-148, "sigma": 1e73, "r": 1e150, "q": 1e150}
        book = {k: np.concatenate([v, np.broadcast_to(extra[k], 1024)]) for k, v in book.items()}
    # and the exact case that was wrong, for calls and puts
    book = {k: np.concatenate([v, v[:2]]) for k, v in book.items()}
    book["option_type"][-2:] = [True, False]
    book["t"][-2:], book["r"][-2:], book["sigma"][-2:] = 1.0, -700.0, 0.2
    book["strike"][-2:] = book[name][-2:] = 100.0
    by_definition_nan = {"dividend_rho"} if model != "bsm" else set()
    codes = {}
    for backend in ("numpy", "numba"):
        out = gp.price(model=model, greeks="all", backend=backend, **book)
        err = out["error"]
        for name, values in out.items():
            if name == "error":
                continue
            assert np.isnan(values[err != 0]).all(), (backend, name)
            if name not in by_definition_nan:
                assert not np.isnan(values[err == 0]).any(), (backend, name)
        assert (err == 0).mean() > 0.3, backend  # most rows still priced
        codes[backend] = err
    np.testing.assert_array_equal(codes["numpy"][n:], codes["numba"][n:])  # the cases added
