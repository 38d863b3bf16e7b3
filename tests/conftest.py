"""Shared test helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

# CI (CI=true) runs every property test on the same examples each time, so a
# submission is judged on what its author ran; elsewhere hypothesis explores.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

#: CPU backends every test runs on (the GPU ones need a device or the simulator).
CPU_BACKENDS = ("numpy", "numba")

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@cache
def gpu_device() -> bool:
    """Whether a real CUDA device is usable by both GPU backends here."""
    if SIMULATED:
        return False
    from gpu_pricer import dispatch

    return all(dispatch.status(name).available for name in ("cupy", "numba-cuda"))


@pytest.fixture(params=CPU_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def random_book(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A realistic mix of options (bsm inputs)."""
    rng = np.random.default_rng(seed)
    spot = rng.uniform(20.0, 200.0, n)
    return {
        "spot": spot,
        "strike": spot * np.exp(rng.normal(0.0, 0.3, n)),
        "t": np.exp(rng.uniform(np.log(1 / 365), np.log(10.0), n)),
        "sigma": rng.uniform(0.02, 1.0, n),
        "r": rng.uniform(-0.02, 0.1, n),
        "q": rng.uniform(0.0, 0.06, n),
        "option_type": rng.random(n) < 0.5,
    }


def model_kwargs(model: str, book: dict[str, np.ndarray]) -> dict[str, Any]:
    """gpu_pricer.price keywords for `model` from a `random_book` (all Greeks);
    bachelier gets rate-like forwards and strikes around zero and normal vols."""
    kw: dict[str, Any] = {"option_type": book["option_type"], "strike": book["strike"],
                          "t": book["t"], "sigma": book["sigma"], "r": book["r"],
                          "greeks": "all"}
    if model == "bsm":
        kw.update(spot=book["spot"], q=book["q"])
    elif model == "black76":
        kw.update(forward=book["spot"])
    else:
        kw.update(forward=book["spot"] / 1000 - 0.05, strike=book["strike"] / 1000 - 0.05,
                  sigma=book["sigma"] / 100)
    return kw


def assert_agree(ref: dict[str, Any], got: dict[str, Any], rtol: float) -> None:
    """`got` equals `ref` (gpu_pricer outputs): same keys, error codes and NaN
    pattern; finite values within `rtol`, or within rtol * 1e-3 of the output's
    largest magnitude (a Greek that is zero in exact arithmetic comes out as
    rounding noise)."""
    assert list(ref) == list(got)
    np.testing.assert_array_equal(got["error"], ref["error"])
    for name in ref:
        if name == "error":
            continue
        x, y = ref[name], got[name]
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        ok = np.isfinite(x)
        scale = float(np.max(np.abs(x[ok])))
        np.testing.assert_allclose(y[ok], x[ok], rtol=rtol, atol=rtol * 1e-3 * scale,
                                   err_msg=name)


def assert_float32_is_float64_arithmetic(backend: str, reference: str, n: int) -> None:
    """dtype="float32" on `backend` equals float64 arithmetic (on `reference`) on
    the float32-rounded inputs, rounded to float32 (to 1 float32 ulp)."""
    import gpu_pricer as gp

    book = random_book(n, seed=8)
    kw = {k: v for k, v in book.items() if k != "option_type"}
    f32 = gp.price(option_type=book["option_type"], greeks=["delta", "vega"], dtype="float32",
                   backend=backend, **kw)
    rounded = {k: v.astype(np.float32).astype(np.float64) for k, v in kw.items()}
    f64 = gp.price(option_type=book["option_type"], greeks=["delta", "vega"],
                   backend=reference, **rounded)
    for name in ("price", "delta", "vega"):
        assert f32[name].dtype == np.float32
        np.testing.assert_allclose(f32[name], f64[name].astype(np.float32), rtol=1.2e-7,
                                   atol=1e-30, err_msg=name)


@contextmanager
def service(**env: str) -> Iterator[Any]:
    """A TestClient of the service with GPU_PRICER_* settings from `env`; kernels
    compile on first use, so the full warm-up is skipped to keep tests fast,
    and the default deadline covers a first request's compilation."""
    from fastapi.testclient import TestClient

    from api.main import app
    from api.settings import get_service_settings

    get_service_settings.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPU_PRICER_WARMUP", "false")
        mp.setenv("GPU_PRICER_DEFAULT_DEADLINE_MS", "120000")
        for key, value in env.items():
            mp.setenv(f"GPU_PRICER_{key.upper()}", value)
        with TestClient(app) as client:
            yield client
    get_service_settings.cache_clear()
