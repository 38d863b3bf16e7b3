"""Every analytic Greek against a central finite difference.

First-order Greeks are differences of the price; higher-order ones are
differences of the lower Greek they differentiate (which is itself checked
against the price here), e.g. speed = d(gamma)/dS.  Time derivatives are
taken as calendar time passes: theta = -dV/dt, charm = -d(delta)/dt, etc.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import gpu_pricer as gp

# greek -> (base quantity, input it differentiates, sign)
DERIVATIVES: dict[str, tuple[str, str, float]] = {
    "delta": ("price", "und", 1.0),
    "gamma": ("delta", "und", 1.0),
    "vega": ("price", "sigma", 1.0),
    "theta": ("price", "t", -1.0),
    "rho": ("price", "r", 1.0),
    "dividend_rho": ("price", "q", 1.0),
    "vanna": ("delta", "sigma", 1.0),
    "volga": ("vega", "sigma", 1.0),
    "charm": ("delta", "t", -1.0),
    "speed": ("gamma", "und", 1.0),
    "zomma": ("gamma", "sigma", 1.0),
    "color": ("gamma", "t", -1.0),
    "veta": ("vega", "t", -1.0),
}


def _inputs(model: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "bachelier":
        und = rng.uniform(-0.01, 0.05, n)
        sigma = rng.uniform(0.002, 0.015, n)
        t = rng.uniform(0.1, 5.0, n)
        strike = und + sigma * np.sqrt(t) * rng.normal(0, 1.0, n)
    else:
        und = rng.uniform(50.0, 150.0, n)
        sigma = rng.uniform(0.08, 0.8, n)
        t = rng.uniform(0.1, 5.0, n)
        strike = und * np.exp(sigma * np.sqrt(t) * rng.normal(0, 1.0, n))
    return {
        "und": und,
        "strike": strike,
        "t": t,
        "sigma": sigma,
        "r": rng.uniform(-0.01, 0.08, n),
        "q": rng.uniform(0.0, 0.05, n) if model == "bsm" else np.zeros(n),
        "w": rng.random(n) < 0.5,
    }


def _price(model: str, x: dict[str, np.ndarray], backend: str) -> dict[str, Any]:
    kw: dict[str, Any] = {"spot": x["und"]} if model == "bsm" else {"forward": x["und"]}
    if model == "bsm":
        kw["q"] = x["q"]
    return gp.price(model=model, option_type=x["w"], strike=x["strike"], t=x["t"],
                    sigma=x["sigma"], r=x["r"], greeks="all", backend=backend, **kw)


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_greeks_match_finite_differences(model: str, backend: str) -> None:
    x = _inputs(model, 400, seed=11)
    base = _price(model, x, backend)
    for greek, (of, var, sign) in DERIVATIVES.items():
        if greek not in base:
            continue
        if var == "q" and model != "bsm":
            continue
        scale = {"und": np.abs(x["und"]) + (0.01 if model == "bachelier" else 1.0),
                 "sigma": x["sigma"], "t": x["t"], "r": np.ones_like(x["r"]),
                 "q": np.ones_like(x["q"])}[var]
        h = 1e-4 * scale
        up = dict(x)
        dn = dict(x)
        up[var] = x[var] + h
        dn[var] = x[var] - h
        fd = sign * (_price(model, up, backend)[of] - _price(model, dn, backend)[of]) / (2 * h)
        analytic = base[greek]
        size = np.abs(base[of]) / scale + np.abs(analytic)
        # third-order Greeks: the difference's own truncation error is larger
        rtol = 1e-5 if of in ("gamma", "vega") else 2e-6
        np.testing.assert_allclose(analytic, fd, rtol=rtol, atol=1e-7 * np.max(size),
                                   err_msg=f"{model} {greek}")


def test_black76_is_bsm_with_carry_zero(backend: str) -> None:
    x = _inputs("black76", 200, seed=5)
    b76 = _price("black76", x, backend)
    bsm = gp.price(option_type=x["w"], spot=x["und"], strike=x["strike"], t=x["t"],
                   sigma=x["sigma"], r=x["r"], q=x["r"], greeks="all", backend=backend)
    for g in gp.GREEKS:
        if g in ("rho", "dividend_rho"):
            continue
        np.testing.assert_allclose(b76[g], bsm[g], rtol=1e-12, atol=1e-13, err_msg=g)
    # forward held fixed: rho = -t * price
    np.testing.assert_allclose(b76["rho"], -x["t"] * b76["price"], rtol=1e-15)


def test_theta_is_negative_for_long_options_without_carry(backend: str) -> None:
    out = gp.price(option_type=["call", "put"], spot=100.0, strike=100.0, t=0.5, sigma=0.3,
                   greeks=["theta", "vega", "rho"], backend=backend)
    assert (out["theta"] < 0).all()
    assert (out["vega"] > 0).all()
    # per 1.00 of vol, per year, per 1.00 of rate: magnitudes of that scale
    assert 20 < out["vega"][0] < 40
    assert -15 < out["theta"][0] < -3
