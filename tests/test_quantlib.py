"""gpu_pricer against QuantLib-Python as an independent oracle, with mpmath
(50 digits) for the cases where QuantLib itself is not accurate enough.

Oracles:
    bsm       ql.BlackCalculator(payoff, F = S e^{(r-q)t}, sigma sqrt(t), e^{-rt}),
              and a handful of cases through the full AnalyticEuropeanEngine setup.
    black76   ql.BlackCalculator(payoff, F, sigma sqrt(t), e^{-rt}) with the forward
              passed as the "spot" argument of delta/gamma/theta/vanna.
    bachelier ql.BachelierCalculator and ql.bachelierBlackFormula.

Conventions (checked by finite differences on QuantLib's own values in
`test_quantlib_conventions` before anything relies on them):
    * vega(t), rho(t), dividendRho(t): per 1.00 of vol / rate / yield;
    * theta(spot, t): per YEAR, -dV/dT (thetaPerDay is theta/365); with the forward
      passed as the spot, it is the forward-fixed theta r V - (1/2) sigma^2 F^2 Gamma
      (and r V - (1/2) sigma^2 Gamma for Bachelier), which is what we return;
    * rho(t) of both calculators is the spot-fixed rho (the forward moves with r),
      while ours for black76/bachelier holds the forward fixed: rho = -t V.  That is
      checked against -t times QuantLib's price;
    * QuantLib 1.44's volga(t) is d(vega)/d(stdDev) = d(vega)/d(sigma) / sqrt(t), and
      BachelierCalculator.vanna(t) omits the discount factor; ours are d2V/dsigma2 and
      d2V/dF dsigma, so volga (all models) and Bachelier vanna go to mpmath only.

Which oracle decides a value: QuantLib's cumulative normal is accurate in absolute,
not relative, terms (about 5e-16 absolute, i.e. relative errors up to 1e-7 near
z = -5.7 where it switches to an asymptotic series), and its formulas add terms of
the size of the forward and strike that cancel for out-of-the-money options
(price = D (F N(d1) - K N(d2)); delta adds D (F n(d1) - K n(d2)) / (S sd), which is
zero exactly but not in floating point; gamma and vega likewise).
For every (case, quantity) we bound QuantLib's error a priori from its formula,
``EPS * (8 * M / |value| + 4 * kappa)``, with M the sum of the magnitudes of the
terms QuantLib adds (`_ql_error_scale`) and kappa the condition number from the
rounding of the inputs we hand it (F, stdDev, discount).  Where that bound is below
a quarter of the tolerance, QuantLib is the oracle; otherwise (deep tails, tiny
values, values below 1e-250) the case is checked against mpmath at 50 digits on the
exact float64 inputs instead.  Two further QuantLib weaknesses found on the way are
routed the same way: its theta recovers r as log(discount)/T (and the carry as
log(F/S)/T), which loses digits when r t is small (part of M); and 1.44's
BachelierCalculator takes a far out-of-the-money put (its N(d) rounded to 1) for a
call (`_bachelier_put_misread`).  No case goes unchecked, and the tests assert that
both oracles were actually used on a good share of the sample.

Tolerance of a check:  |ours - ref| <= max(rtol, ULPS * EPS * kappa) * |ref| + floor * scale
    rtol, floor: the table `TOLERANCES` below;
    kappa: our own condition number (how much the float64 rounding of log(S/K),
        sigma sqrt(t), ... moves the value), see `_kappa`; it matters only in the
        tails, for short-dated at-the-money prices and where theta's terms cancel:
        there the inputs themselves leave the value undetermined beyond 1e-12;
    scale: the natural size of a quantity that changes sign (theta: the sum of the
        magnitudes of its terms; vanna/volga: the size d2 resp. d1 d2 would have to
        have to move them by one rounding of d), see `_floor_scale`.  Quantities
        that never change sign (price, delta, gamma, vega, rho, dividend_rho) have no
        floor: tiny values must still be right to rtol relative.
Exact values below 1e-290 (float64 underflow territory) must come back below 1e-280.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import mpmath as mp
import numpy as np
import pytest
import QuantLib as ql
from scipy.special import log_ndtr

import gpu_pricer as gp

BACKENDS = ("numpy", "numba")
EPS = float(np.finfo(np.float64).eps)
#: multiplier of the condition-number term of the tolerance
ULPS = 16
#: QuantLib values below this are not compared relatively (mpmath decides)
QL_TINY = 1e-250
#: exact values below this are in float64's underflow territory
UNDERFLOW = 1e-290
mp.mp.dps = 50


@dataclass(frozen=True)
class Tol:
    """rtol: relative tolerance.  floor: absolute floor in units of the quantity's
    natural scale (`_floor_scale`), only for quantities that cross zero."""

    rtol: float
    floor: float = 0.0


# Every value here is 1e-12 relative: fp64 allows it for both oracles once the
# cases where QuantLib is known to be less accurate are routed to mpmath (see the
# module docstring).  The floors are 1e-14 (about 45 ulps) of the natural scale of
# theta, vanna and volga, which are differences (theta: carry terms minus the
# time-value decay; vanna ~ d2, volga ~ d1 d2) and so cross zero, where no
# implementation keeps relative accuracy: the rounding of d alone moves them by
# about EPS times that scale.
TOLERANCES: dict[tuple[str, str], Tol] = {
    ("bsm", "price"): Tol(1e-12),
    ("bsm", "delta"): Tol(1e-12),
    ("bsm", "gamma"): Tol(1e-12),
    ("bsm", "vega"): Tol(1e-12),
    ("bsm", "theta"): Tol(1e-12, 1e-14),
    ("bsm", "rho"): Tol(1e-12),
    ("bsm", "dividend_rho"): Tol(1e-12),
    ("bsm", "vanna"): Tol(1e-12, 1e-14),
    ("bsm", "volga"): Tol(1e-12, 1e-14),
    ("black76", "price"): Tol(1e-12),
    ("black76", "delta"): Tol(1e-12),
    ("black76", "gamma"): Tol(1e-12),
    ("black76", "vega"): Tol(1e-12),
    ("black76", "theta"): Tol(1e-12, 1e-14),
    ("black76", "rho"): Tol(1e-12),
    ("black76", "vanna"): Tol(1e-12, 1e-14),
    ("black76", "volga"): Tol(1e-12, 1e-14),
    ("bachelier", "price"): Tol(1e-12),
    ("bachelier", "delta"): Tol(1e-12),
    ("bachelier", "gamma"): Tol(1e-12),
    ("bachelier", "vega"): Tol(1e-12),
    ("bachelier", "theta"): Tol(1e-12, 1e-14),
    ("bachelier", "rho"): Tol(1e-12),
    ("bachelier", "vanna"): Tol(1e-12, 1e-14),
    ("bachelier", "volga"): Tol(1e-12, 1e-14),
}

GREEKS = {
    "bsm": ("delta", "gamma", "vega", "theta", "rho", "dividend_rho", "vanna", "volga"),
    "black76": ("delta", "gamma", "vega", "theta", "rho", "vanna", "volga"),
    "bachelier": ("delta", "gamma", "vega", "theta", "rho", "vanna", "volga"),
}
#: quantities QuantLib does not give in our convention (see the module docstring)
MPMATH_ONLY = {
    "bsm": {"volga"},
    "black76": {"volga"},
    "bachelier": {"vanna", "volga"},
}
N_CASES = {"bsm": 4000, "black76": 3000, "bachelier": 3000}
#: QuantLib must be the oracle for at least this share of the cases of every quantity
#: it offers (gamma, vega and theta cancel in QuantLib's formulas over much of the
#: domain, hence only a quarter)
MIN_QL_SHARE = 0.25


# --------------------------------------------------------------------------- cases


def _loguniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _lognormal_cases(model: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """Spot/forward and strike in 1..1000 with K/S in 0.3..3, t from one day to 30
    years, sigma 1%..200%, r -2%..15%, q 0..10% (bsm), plus the corners of that box."""
    rng = np.random.default_rng(seed)
    und = _loguniform(rng, 1.0, 1000.0, n)
    strike = und * _loguniform(rng, 0.3, 3.0, n)
    bad = (strike < 1.0) | (strike > 1000.0)
    while bad.any():
        und[bad] = _loguniform(rng, 1.0, 1000.0, int(bad.sum()))
        strike[bad] = und[bad] * _loguniform(rng, 0.3, 3.0, int(bad.sum()))
        bad = (strike < 1.0) | (strike > 1000.0)
    x = {
        "und": und,
        "strike": strike,
        "t": _loguniform(rng, 1 / 365, 30.0, n),
        "sigma": _loguniform(rng, 0.01, 2.0, n),
        "r": rng.uniform(-0.02, 0.15, n),
        "q": rng.uniform(0.0, 0.1, n) if model == "bsm" else np.zeros(n),
        "call": rng.random(n) < 0.5,
    }
    corners = [
        (s, s * m, t, v, r, q, c)
        for s in (100.0,)
        for m in (0.3, 1.0, 3.0)
        for t in (1 / 365, 30.0)
        for v in (0.01, 2.0)
        for r in (-0.02, 0.15)
        for q in ((0.0, 0.1) if model == "bsm" else (0.0,))
        for c in (True, False)
    ]
    cols = list(zip(*corners, strict=True))
    for key, col in zip(("und", "strike", "t", "sigma", "r", "q", "call"), cols, strict=True):
        x[key] = np.concatenate([x[key], np.array(col)])
    return x


def _bachelier_cases(n: int, seed: int) -> dict[str, np.ndarray]:
    """Forwards and strikes of either sign on scales from 0.01 (rates) to 1000
    (prices), normal vols from 0.5% to 100% of that scale, t one day to 30 years."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-2.0, 3.0, n)
    fwd = scale * rng.uniform(-1.0, 1.0, n)
    return {
        "und": fwd,
        "strike": fwd + scale * rng.uniform(-1.0, 1.0, n),
        "t": _loguniform(rng, 1 / 365, 30.0, n),
        "sigma": scale * _loguniform(rng, 0.005, 1.0, n),
        "r": rng.uniform(-0.02, 0.15, n),
        "q": np.zeros(n),
        "call": rng.random(n) < 0.5,
    }


@cache
def _cases(model: str) -> dict[str, np.ndarray]:
    seed = {"bsm": 20240601, "black76": 20240602, "bachelier": 20240603}[model]
    if model == "bachelier":
        return _bachelier_cases(N_CASES[model], seed)
    return _lognormal_cases(model, N_CASES[model], seed)


def _ours(model: str, x: dict[str, np.ndarray], backend: str) -> dict[str, Any]:
    kw: dict[str, Any] = {"spot": x["und"], "q": x["q"]} if model == "bsm" else {
        "forward": x["und"]}
    out = gp.price(model=model, option_type=x["call"], strike=x["strike"], t=x["t"],
                   sigma=x["sigma"], r=x["r"], greeks=GREEKS[model], backend=backend, **kw)
    assert np.all(out["error"] == 0)
    return out


# ----------------------------------------------------------------- shared features


def _features(model: str, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """d1, d2 (or d), n(d1), the discount factors and the forward, in float64."""
    t, v, r, q = x["t"], x["sigma"], x["r"], x["q"]
    sd = v * np.sqrt(t)
    disc = np.exp(-r * t)
    w = np.where(x["call"], 1.0, -1.0)
    if model == "bachelier":
        d = (x["und"] - x["strike"]) / sd
        return {"sd": sd, "disc": disc, "w": w, "d1": d, "d2": d, "n1": _npdf(d)}
    carry = r - q if model == "bsm" else np.zeros_like(r)
    fwd = x["und"] * np.exp(carry * t)
    logm = np.log(x["und"] / x["strike"])
    d1 = (logm + carry * t) / sd + 0.5 * sd
    d2 = d1 - sd
    return {"sd": sd, "disc": disc, "w": w, "d1": d1, "d2": d2, "n1": _npdf(d1),
            "fwd": fwd, "dq": np.exp(-(r - carry) * t), "carry": carry, "logm": logm}


def _npdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _hazard(z: np.ndarray) -> np.ndarray:
    """n(z) / N(z): the sensitivity of log N(z) to z (about |z| in the left tail)."""
    return np.exp(-0.5 * z * z - 0.5 * math.log(2 * math.pi) - log_ndtr(z))


def _kappa(model: str, name: str, x: dict[str, np.ndarray], f: dict[str, np.ndarray],
           refs: dict[str, np.ndarray]) -> np.ndarray:
    """Our error budget beyond rtol, to first order: the condition number of `name`
    with respect to the float64 rounding of the inputs and of what is computed from
    them.  d is off by about `dd` EPS (absolute); a normal cdf N(z) then moves
    relatively by n(z)/N(z) * dd, a density n(d) by |d| * dd.  The price moves with
    the rounding of log(F/K) by its elasticities D F N(w d1) / V and D K N(w d2) / V
    (the condition number of pricing itself: large for short-dated, far
    out-of-the-money and deep in-the-money options).  theta is r V - b S delta - A
    (A the time-value decay), each term carrying its own condition number, so kappa
    also grows where theta crosses zero.  `refs` holds the reference values."""
    d1, d2, sd, w, t, r = f["d1"], f["d2"], f["sd"], f["w"], x["t"], x["r"]
    value = np.abs(refs[name])
    if name == "rho" and model != "bsm":  # -t V
        return _kappa(model, "price", x, f, refs)
    if model == "bachelier":
        dd = (np.abs(x["und"]) + np.abs(x["strike"])) / sd + np.abs(d1)
        if name == "price":
            moves = f["disc"] * (_cdf(w * d1) * (np.abs(x["und"]) + np.abs(x["strike"]))
                                 + 2.0 * sd * f["n1"])
            return 1.0 + moves / value
        if name == "delta":
            return 1.0 + _hazard(w * d1) * dd
        if name == "theta":
            decay = 0.5 * f["disc"] * f["n1"] * x["sigma"] / np.sqrt(t)
            carry = np.abs(r * refs["price"]) * _kappa(model, "price", x, f, refs)
            return 1.0 + (carry + decay * (1.0 + np.abs(d1) * dd)) / value
        return 1.0 + (np.abs(d1) + 1.0) * dd
    und, dq = x["und"], f["dq"]
    logm = (1.0 + np.abs(f["logm"]) + np.abs(f["carry"]) * t)
    dd = logm / sd + np.abs(d1) + np.abs(d2)
    if name == "price":
        moves = (und * dq * _cdf(w * d1) + x["strike"] * f["disc"] * _cdf(w * d2)) * logm
        return 1.0 + (moves + 2.0 * und * dq * f["n1"] * sd) / value
    if name in ("delta", "dividend_rho"):
        return 1.0 + _hazard(w * d1) * dd
    if name == "rho":
        return 1.0 + _hazard(w * d2) * dd
    if name == "theta":
        decay = 0.5 * und * dq * f["n1"] * x["sigma"] / np.sqrt(t)
        carry = (np.abs(r * refs["price"]) * _kappa(model, "price", x, f, refs)
                 + np.abs(f["carry"] * und * refs["delta"]) * _kappa(model, "delta", x, f, refs))
        return 1.0 + (carry + decay * (1.0 + np.abs(d1) * dd)) / value
    return 1.0 + (np.abs(d1) + np.abs(d2) + 1.0) * dd


def _cdf(z: np.ndarray) -> np.ndarray:
    return np.exp(log_ndtr(z))


def _floor_scale(model: str, name: str, x: dict[str, np.ndarray],
                 f: dict[str, np.ndarray]) -> np.ndarray:
    """Natural size of a quantity that crosses zero (see the module docstring)."""
    t, v, r = x["t"], x["sigma"], x["r"]
    sqt = np.sqrt(t)
    d1, d2, n1, sd, w = f["d1"], f["d2"], f["n1"], f["sd"], f["w"]
    if model == "bachelier":
        vega = f["disc"] * sqt * n1
        dd = (np.abs(x["und"]) + np.abs(x["strike"]) + sd) / sd
        if name == "theta":
            price_terms = f["disc"] * (np.abs(x["und"] - x["strike"]) * _cdf(w * d1) + sd * n1)
            return np.abs(r) * price_terms + 0.5 * f["disc"] * n1 * v / sqt
        if name == "vanna":
            return f["disc"] * n1 * dd / v
        if name == "volga":
            return vega * 2.0 * (np.abs(d1) + 1.0) * dd / v
        return np.zeros_like(t)
    und, k, dq, disc = x["und"], x["strike"], f["dq"], f["disc"]
    qq = r - f["carry"]
    n_1 = _cdf(w * d1)
    n_2 = _cdf(w * d2)
    dd = (1.0 + np.abs(f["logm"]) + np.abs(f["carry"]) * t + sd * sd) / sd
    vega = und * dq * n1 * sqt
    if name == "theta":
        return (0.5 * und * dq * n1 * v / sqt + np.abs(qq) * und * dq * n_1
                + np.abs(r) * k * disc * n_2)
    if name == "vanna":
        return dq * n1 * dd / v
    if name == "volga":
        return vega * (np.abs(d1) + np.abs(d2) + 1.0) * dd / v
    return np.zeros_like(t)


# ------------------------------------------------------------------------ QuantLib


def _payoff(call: bool, strike: float) -> ql.PlainVanillaPayoff:
    return ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, float(strike))


@cache
def _quantlib(model: str) -> dict[str, np.ndarray]:
    """QuantLib's value of every quantity it offers in our convention (NaN where not)."""
    x = _cases(model)
    n = x["t"].size
    names = ("price", *GREEKS[model])
    out = {name: np.full(n, np.nan) for name in names}
    for i in range(n):
        und, k, t, v, r, q = (float(x[key][i]) for key in ("und", "strike", "t", "sigma",
                                                            "r", "q"))
        payoff = _payoff(bool(x["call"][i]), k)
        sd = v * math.sqrt(t)
        disc = math.exp(-r * t)
        if model == "bachelier":
            c = ql.BachelierCalculator(payoff, und, sd, disc)
            out["price"][i] = c.value()
            out["delta"][i] = c.deltaForward()
            out["gamma"][i] = c.gammaForward()
            out["vega"][i] = c.vega(t)
            out["theta"][i] = c.theta(und, t)
            out["rho"][i] = -t * c.value()
            continue
        if model == "bsm":
            fwd = und * math.exp((r - q) * t)
            c = ql.BlackCalculator(payoff, fwd, sd, disc)
            out["rho"][i] = c.rho(t)
            out["dividend_rho"][i] = c.dividendRho(t)
        else:
            c = ql.BlackCalculator(payoff, und, sd, disc)
            out["rho"][i] = -t * c.value()
        out["price"][i] = c.value()
        out["delta"][i] = c.delta(und)
        out["gamma"][i] = c.gamma(und)
        out["vega"][i] = c.vega(t)
        out["theta"][i] = c.theta(und, t)
        out["vanna"][i] = c.vanna(und, t)
    return out


def _ql_error_scale(model: str, name: str, x: dict[str, np.ndarray],
                    f: dict[str, np.ndarray], qlv: dict[str, np.ndarray]) -> np.ndarray:
    """M: the sum of the magnitudes of the terms QuantLib's formula for `name` adds
    (its absolute error is a few EPS times this)."""
    t, v, r = x["t"], x["sigma"], x["r"]
    d1, d2, n1, sd = f["d1"], f["d2"], f["n1"], f["sd"]
    if model == "bachelier":
        price = f["disc"] * (np.abs(x["und"] - x["strike"]) + sd * n1)
        scales = {
            "price": price,
            "delta": f["disc"],
            "gamma": np.abs(qlv["gamma"]),
            "vega": np.abs(qlv["vega"]),
            # theta = -(log(D) V + ...)/T: log(D) of the rounded D is off by ~EPS
            # absolute, i.e. relatively by EPS / (r t) when r t is small
            "theta": (np.abs(r) * price + 0.5 * f["disc"] * n1 * v / np.sqrt(t)
                      + np.abs(qlv["price"]) / t),
            "rho": t * price,
        }
        return scales[name]
    und, k, fwd, disc = x["und"], x["strike"], f["fwd"], f["disc"]
    logfk = np.log(fwd / k)
    price = disc * (fwd + k)
    delta = disc * fwd / und * (1.0 + n1 / sd)
    gamma = np.abs(qlv["gamma"]) * (1.0 + d1 * d1) + disc * fwd / und**2 * n1 / sd * (
        2.0 + (np.abs(d1) + np.abs(d2)) / sd)
    vega = np.abs(qlv["vega"]) * (1.0 + d1 * d1 + np.abs(logfk) / sd**2)
    scales = {
        "price": price,
        "delta": delta,
        "gamma": gamma,
        "vega": vega,
        # theta = -(log(D) V + log(F/S) S delta + var S^2 gamma / 2)/T: the logs of the
        # rounded D and F/S are off by ~EPS absolute, relatively a lot when r t is small
        "theta": (np.abs(r) * price + np.abs(f["carry"]) * und * delta
                  + 0.5 * v * v * und * und * gamma
                  + (np.abs(qlv["price"]) + und * np.abs(qlv["delta"])) / t),
        "rho": (t * disc * (fwd + k) * (1.0 + n1 / sd) if model == "bsm" else t * price),
        "dividend_rho": t * disc * (fwd + k) * (1.0 + n1 / sd),
        "vanna": (np.abs(d2) * vega + np.abs(qlv["vega"]) * (1.0 + np.abs(logfk) / sd + sd))
        / (und * sd),
    }
    return scales[name]


# -------------------------------------------------------------------------- mpmath


def _mp_lognormal(model: str, call: bool, und: float, k: float, t: float, v: float,
                  r: float, q: float) -> dict[str, mp.mpf]:
    s_, k_, t_, v_, r_ = (mp.mpf(a) for a in (und, k, t, v, r))
    q_ = mp.mpf(q) if model == "bsm" else r_  # black76 = bsm on F with q = r
    w = 1 if call else -1
    disc, dq, sqt = mp.exp(-r_ * t_), mp.exp(-q_ * t_), mp.sqrt(t_)
    sd = v_ * sqt
    d1 = (mp.log(s_ / k_) + (r_ - q_) * t_) / sd + sd / 2
    d2 = d1 - sd
    nd1, nd2, n1 = mp.ncdf(w * d1), mp.ncdf(w * d2), mp.npdf(d1)
    price = w * (s_ * dq * nd1 - k_ * disc * nd2)
    vega = s_ * dq * n1 * sqt
    out = {
        "price": price,
        "delta": w * dq * nd1,
        "gamma": dq * n1 / (s_ * sd),
        "vega": vega,
        # -dV/dt; for black76 (q = r) this is r V - F D n(d1) sigma / (2 sqrt t)
        "theta": -s_ * dq * n1 * v_ / (2 * sqt) + w * (q_ * s_ * dq * nd1 - r_ * k_ * disc * nd2),
        "rho": w * k_ * t_ * disc * nd2 if model == "bsm" else -t_ * price,
        "vanna": -dq * n1 * d2 / v_,
        "volga": vega * d1 * d2 / v_,
    }
    if model == "bsm":
        out["dividend_rho"] = -w * s_ * t_ * dq * nd1
    return out


def _mp_bachelier(call: bool, f: float, k: float, t: float, v: float,
                  r: float) -> dict[str, mp.mpf]:
    f_, k_, t_, v_, r_ = (mp.mpf(a) for a in (f, k, t, v, r))
    w = 1 if call else -1
    disc, sqt = mp.exp(-r_ * t_), mp.sqrt(t_)
    sd = v_ * sqt
    d = (f_ - k_) / sd
    n, nd = mp.npdf(d), mp.ncdf(w * d)
    price = disc * (w * (f_ - k_) * nd + sd * n)
    vega = disc * sqt * n
    return {
        "price": price,
        "delta": w * disc * nd,
        "gamma": disc * n / sd,
        "vega": vega,
        "theta": r_ * price - disc * n * v_ / (2 * sqt),
        "rho": -t_ * price,
        "vanna": -disc * n * d / v_,
        "volga": vega * d * d / v_,
    }


@cache
def _mpmath_case(model: str, i: int) -> dict[str, float]:
    x = _cases(model)
    args = [float(x[key][i]) for key in ("und", "strike", "t", "sigma", "r", "q")]
    call = bool(x["call"][i])
    if model == "bachelier":
        vals = _mp_bachelier(call, *args[:5])
    else:
        vals = _mp_lognormal(model, call, *args)
    return {name: float(val) for name, val in vals.items()}


# --------------------------------------------------------------------------- check


@cache
def _routes(model: str) -> dict[str, np.ndarray]:
    """True where QuantLib is the oracle for (case, quantity), False for mpmath."""
    x = _cases(model)
    f = _features(model, x)
    qlv = _quantlib(model)
    routes = {}
    for name in ("price", *GREEKS[model]):
        if name in MPMATH_ONLY[model]:
            routes[name] = np.zeros(x["t"].size, dtype=bool)
            continue
        tol = TOLERANCES[model, name]
        value = qlv[name]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            kappa = _kappa(model, name, x, f, qlv)
            est = EPS * (8.0 * _ql_error_scale(model, name, x, f, qlv) / np.abs(value)
                         + 4.0 * kappa)
        routes[name] = (np.abs(value) >= QL_TINY) & (est <= 0.25 * tol.rtol)
        if model == "bachelier":
            routes[name] &= ~_bachelier_put_misread(x)
    return routes


def _bachelier_put_misread(x: dict[str, np.ndarray]) -> np.ndarray:
    """Puts that QuantLib 1.44's BachelierCalculator prices as calls: it tells the
    type by the sign of alpha = N(d) - 1, which is 0 once its N(d) rounds to 1
    (d > 8.3, a far out-of-the-money put); value, deltaForward and theta then come
    out as the call's (ql.bachelierBlackFormula is not affected).  mpmath decides."""
    cdf = ql.CumulativeNormalDistribution()
    sd = x["sigma"] * np.sqrt(x["t"])
    d = (x["und"] - x["strike"]) / sd
    return ~x["call"] & np.array([cdf(float(di)) == 1.0 for di in d])


@cache
def _references(model: str) -> dict[str, np.ndarray]:
    """The reference value of every (case, quantity): QuantLib's where it is the
    oracle, mpmath's elsewhere."""
    qlv = _quantlib(model)
    refs = {}
    for name, route in _routes(model).items():
        ref = qlv[name].copy()
        for i in np.flatnonzero(~route):
            ref[i] = _mpmath_case(model, int(i))[name]
        refs[name] = ref
    return refs


def _check_model(model: str, backend: str) -> dict[str, tuple[int, int]]:
    """Compare every quantity of every case; return (by QuantLib, by mpmath) counts."""
    x = _cases(model)
    f = _features(model, x)
    ours = _ours(model, x, backend)
    routes = _routes(model)
    refs = _references(model)
    failures: list[str] = []
    counts: dict[str, tuple[int, int]] = {}
    for name in ("price", *GREEKS[model]):
        tol = TOLERANCES[model, name]
        route = routes[name]
        ref = refs[name]
        got = ours[name]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            kappa = _kappa(model, name, x, f, refs)
            scale = _floor_scale(model, name, x, f)
            allowed = np.maximum(tol.rtol, ULPS * EPS * kappa) * np.abs(ref) + tol.floor * scale
            ok = np.abs(got - ref) <= allowed
        tiny = np.abs(ref) < UNDERFLOW
        ok = np.where(tiny, np.abs(got) <= 1e-280, ok) & np.isfinite(got)
        counts[name] = (int(route.sum()), int((~route).sum()))
        for i in np.flatnonzero(~ok)[:5]:
            case = {key: x[key][i] for key in ("und", "strike", "t", "sigma", "r", "q", "call")}
            failures.append(
                f"{model} {name} [{'QuantLib' if route[i] else 'mpmath'}] case {i} {case}: "
                f"ours {got[i]!r} ref {ref[i]!r} rel {abs(got[i] - ref[i]) / abs(ref[i]):.3g} "
                f"allowed {allowed[i]:.3g}")
    assert not failures, "\n".join(failures)
    return counts


# --------------------------------------------------------------------------- tests


def test_quantlib_conventions() -> None:
    """The QuantLib methods used as oracles mean what the docstring says: a central
    finite difference of QuantLib's own value against each method."""
    s, k, t, v, r, q = 100.0, 110.0, 2.0, 0.25, 0.03, 0.01

    def black(s: float = s, t: float = t, v: float = v, r: float = r,
              q: float = q) -> ql.BlackCalculator:
        return ql.BlackCalculator(_payoff(True, k), s * math.exp((r - q) * t),
                                  v * math.sqrt(t), math.exp(-r * t))

    def fd(fun: Any, x0: float, h: float) -> float:
        return float((fun(x0 + h) - fun(x0 - h)) / (2 * h))

    c = black()
    h = 1e-5
    assert c.vega(t) == pytest.approx(fd(lambda u: black(v=u).value(), v, h), rel=1e-8)
    assert c.rho(t) == pytest.approx(fd(lambda u: black(r=u).value(), r, h), rel=1e-8)
    assert c.dividendRho(t) == pytest.approx(fd(lambda u: black(q=u).value(), q, h), rel=1e-8)
    # theta per year, -dV/dT at fixed spot, r, q; thetaPerDay = theta / 365
    assert c.theta(s, t) == pytest.approx(-fd(lambda u: black(t=u).value(), t, h), rel=1e-8)
    assert c.thetaPerDay(s, t) * 365 == pytest.approx(c.theta(s, t), rel=1e-14)
    assert c.delta(s) == pytest.approx(fd(lambda u: black(s=u).value(), s, 1e-3), rel=1e-8)
    assert c.gamma(s) == pytest.approx(fd(lambda u: black(s=u).delta(u), s, 1e-3), rel=1e-7)
    assert c.vanna(s, t) == pytest.approx(fd(lambda u: black(v=u).delta(s), v, h), rel=1e-7)

    # Black-76: the forward passed as the spot; theta(F, t) holds F fixed
    fwd = 105.0

    def b76(f: float = fwd, t: float = t) -> ql.BlackCalculator:
        return ql.BlackCalculator(_payoff(False, k), f, v * math.sqrt(t), math.exp(-r * t))

    c = b76()
    assert c.delta(fwd) == pytest.approx(fd(lambda u: b76(f=u).value(), fwd, 1e-3), rel=1e-8)
    assert c.delta(fwd) == pytest.approx(c.deltaForward(), rel=1e-14)
    assert c.gamma(fwd) == pytest.approx(c.gammaForward(), rel=1e-14)
    assert c.theta(fwd, t) == pytest.approx(-fd(lambda u: b76(t=u).value(), t, h), rel=1e-8)

    # Bachelier: bachelierBlackFormula(type, strike, forward, stdDev, discount)
    sig_n = 20.0

    def bach(f: float = fwd, t: float = t, v: float = sig_n) -> ql.BachelierCalculator:
        return ql.BachelierCalculator(_payoff(True, k), f, v * math.sqrt(t), math.exp(-r * t))

    c = bach()
    assert c.value() == ql.bachelierBlackFormula(ql.Option.Call, k, fwd, sig_n * math.sqrt(t),
                                                 math.exp(-r * t))
    assert c.deltaForward() == pytest.approx(fd(lambda u: bach(f=u).value(), fwd, 1e-3),
                                             rel=1e-8)
    assert c.gammaForward() == pytest.approx(
        fd(lambda u: bach(f=u).deltaForward(), fwd, 1e-3), rel=1e-7)
    assert c.vega(t) == pytest.approx(fd(lambda u: bach(v=u).value(), sig_n, 1e-4), rel=1e-8)
    assert c.theta(fwd, t) == pytest.approx(-fd(lambda u: bach(t=u).value(), t, h), rel=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bsm_against_quantlib(backend: str) -> None:
    counts = _check_model("bsm", backend)
    n = _cases("bsm")["t"].size
    for name, (by_ql, by_mp) in counts.items():
        # both oracles carry real weight (volga has no QuantLib oracle, see above)
        if name not in MPMATH_ONLY["bsm"]:
            assert by_ql > MIN_QL_SHARE * n, (name, by_ql)
        assert by_mp > 0, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_black76_against_quantlib(backend: str) -> None:
    counts = _check_model("black76", backend)
    n = _cases("black76")["t"].size
    for name, (by_ql, by_mp) in counts.items():
        if name not in MPMATH_ONLY["black76"]:
            assert by_ql > MIN_QL_SHARE * n, (name, by_ql)
        assert by_mp > 0, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_bachelier_against_quantlib(backend: str) -> None:
    x = _cases("bachelier")
    assert (x["und"] < 0).sum() > 0.3 * x["und"].size
    assert (x["strike"] < 0).sum() > 0.3 * x["und"].size
    counts = _check_model("bachelier", backend)
    for name, (by_ql, by_mp) in counts.items():
        if name not in MPMATH_ONLY["bachelier"]:
            assert by_ql > MIN_QL_SHARE * x["t"].size, (name, by_ql)
        assert by_mp > 0, name


def test_bachelier_formula_agrees_with_calculator() -> None:
    """ql.bachelierBlackFormula and BachelierCalculator.value are the same oracle."""
    x = _cases("bachelier")
    qlv = _quantlib("bachelier")
    misread = _bachelier_put_misread(x)
    assert misread.sum() > 0  # the sample does reach QuantLib's misread puts
    reliable = _routes("bachelier")["price"]  # both cancel out of the money, differently
    for i in range(0, x["t"].size, 7):
        if misread[i] or not reliable[i]:
            continue
        otype = ql.Option.Call if x["call"][i] else ql.Option.Put
        sd = float(x["sigma"][i] * math.sqrt(x["t"][i]))
        v = ql.bachelierBlackFormula(otype, float(x["strike"][i]), float(x["und"][i]), sd,
                                     math.exp(-float(x["r"][i] * x["t"][i])))
        assert v == pytest.approx(qlv["price"][i], rel=1e-13, abs=1e-300)


# ------------------------------------------------- AnalyticEuropeanEngine, full setup

ENGINE_CASES = [
    # call, spot, strike, days, sigma, r, q
    (True, 100.0, 100.0, 365, 0.20, 0.05, 0.02),
    (False, 100.0, 110.0, 182, 0.25, 0.03, 0.00),
    (True, 42.0, 40.0, 91, 0.35, -0.01, 0.04),
    (False, 900.0, 700.0, 3650, 0.15, 0.08, 0.06),
    (True, 5.0, 6.5, 30, 0.60, 0.12, 0.10),
    (False, 250.0, 240.0, 7, 0.90, 0.01, 0.03),
    (True, 1.56, 1.60, 10950, 0.12, 0.06, 0.08),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bsm_against_analytic_european_engine(backend: str) -> None:
    """QuantLib's own pricing stack: flat Actual/365 (Fixed) curves from the
    evaluation date, a European exercise `days` later, so t = days / 365 exactly."""
    today = ql.Date(15, ql.January, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    names = GREEKS["bsm"]  # the same compiled kernel as test_bsm_against_quantlib
    try:
        for call, s, k, days, v, r, q in ENGINE_CASES:
            t = days / 365
            process = ql.BlackScholesMertonProcess(
                ql.QuoteHandle(ql.SimpleQuote(s)),
                ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
                ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
                ql.BlackVolTermStructureHandle(
                    ql.BlackConstantVol(today, ql.NullCalendar(), v, dc)))
            option = ql.EuropeanOption(_payoff(call, k), ql.EuropeanExercise(today + days))
            option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
            assert dc.yearFraction(today, today + days) == t
            expected = {
                "price": option.NPV(), "delta": option.delta(), "gamma": option.gamma(),
                "vega": option.vega(), "theta": option.theta(), "rho": option.rho(),
                "dividend_rho": option.dividendRho(),
            }
            assert option.thetaPerDay() == pytest.approx(option.theta() / 365, rel=1e-14)
            out = gp.price(option_type="call" if call else "put", spot=s, strike=k, t=t,
                           sigma=v, r=r, q=q, greeks=names, backend=backend)
            for name, value in expected.items():
                tol = TOLERANCES["bsm", name]
                assert float(out[name]) == pytest.approx(value, rel=tol.rtol), (
                    call, s, k, days, name)
    finally:
        ql.Settings.instance().evaluationDate = ql.Date()
