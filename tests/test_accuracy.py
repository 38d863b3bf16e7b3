"""Prices against 50-digit mpmath over the whole domain, deep tails included.

The bound is ``|error| <= ULPS * (1 + kappa) * eps * |price|`` where kappa is the
price's relative condition number with respect to its inputs
(sum over inputs of |x dV/dx / V|): the error the rounding of the float64
inputs alone would cause.  Where the price is well conditioned this is a
few ulps; for a tiny far-out-of-the-money price it allows what the inputs
themselves leave undetermined, and no more.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mpmath as mp
import numpy as np
import pytest

import gpu_pricer as gp
from gpu_pricer.kernels import cpu, formulas

mp.mp.dps = 50
EPS = float(np.finfo(np.float64).eps)
ULPS = 16


def _bsm(w: int, s: mp.mpf, k: mp.mpf, t: mp.mpf, v: mp.mpf, r: mp.mpf, q: mp.mpf) -> mp.mpf:
    if v * mp.sqrt(t) == 0:
        return max(w * (s * mp.e ** (-q * t) - k * mp.e ** (-r * t)), 0)
    sd = v * mp.sqrt(t)
    d1 = (mp.log(s / k) + (r - q) * t) / sd + sd / 2
    d2 = d1 - sd
    return w * (s * mp.e ** (-q * t) * mp.ncdf(w * d1) - k * mp.e ** (-r * t) * mp.ncdf(w * d2))


def _bachelier(w: int, f: mp.mpf, k: mp.mpf, t: mp.mpf, v: mp.mpf, r: mp.mpf) -> mp.mpf:
    sd = v * mp.sqrt(t)
    d = (f - k) / sd
    return mp.e ** (-r * t) * (w * (f - k) * mp.ncdf(w * d) + sd * mp.npdf(d))


def _exact_and_kappa(fn: Callable[..., mp.mpf], w: int, args: list[float]) -> tuple[float, float]:
    xs = [mp.mpf(a) for a in args]
    v = fn(w, *xs)
    kappa = mp.mpf(0)
    for i, x in enumerate(xs):
        if x == 0:
            continue
        h = abs(x) * mp.mpf("1e-20")

        def g(y: mp.mpf, i: int = i) -> mp.mpf:
            ys = list(xs)
            ys[i] = y
            return fn(w, *ys)

        kappa += abs(x * (g(x + h) - g(x - h)) / (2 * h) / v)
    return float(v), float(kappa)


def _cases(seed: int, n: int) -> list[tuple[int, float, float, float, float, float, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = 100.0
        # log-moneyness in units of the total vol: from 0 to 40 standard deviations
        sd = 10 ** rng.uniform(-5, 1.2)
        t = 10 ** rng.uniform(-3, 1.5)
        v = sd / math.sqrt(t)
        m = rng.choice([-1, 1]) * sd * 10 ** rng.uniform(-3, 1.6)
        k = s * math.exp(m)
        r = rng.uniform(-0.03, 0.1)
        q = rng.uniform(0.0, 0.08)
        out.append((int(rng.choice([-1, 1])), s, k, t, v, r, q))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bsm_prices_match_mpmath(backend: str, seed: int) -> None:
    cases = _cases(seed, 150)
    w, s, k, t, v, r, q = (np.array(c) for c in zip(*cases, strict=True))
    out = gp.price(option_type=w > 0, spot=s, strike=k, t=t, sigma=v, r=r, q=q, backend=backend)
    checked = 0
    for i, case in enumerate(cases):
        exact, kappa = _exact_and_kappa(_bsm, case[0], list(case[1:]))
        if exact < 1e-290:  # below float64's normal range: must not be reported as large
            assert out["price"][i] < 1e-280
            continue
        err = abs(out["price"][i] - exact) / exact
        assert err <= ULPS * (1 + kappa) * EPS, (case, out["price"][i], exact, kappa)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("seed", [4, 5])
def test_black76_prices_match_mpmath(backend: str, seed: int) -> None:
    cases = _cases(seed, 120)
    w, f, k, t, v, r, _ = (np.array(c) for c in zip(*cases, strict=True))
    out = gp.price(model="black76", option_type=w > 0, forward=f, strike=k, t=t, sigma=v, r=r,
                   backend=backend)
    for i, (wi, fi, ki, ti, vi, ri, _) in enumerate(cases):
        exact, kappa = _exact_and_kappa(
            lambda w_, f_, k_, t_, v_, r_: _bsm(w_, f_, k_, t_, v_, r_, r_), wi,
            [fi, ki, ti, vi, ri])
        if exact < 1e-290:
            continue
        err = abs(out["price"][i] - exact) / exact
        assert err <= ULPS * (1 + kappa) * EPS, (i, out["price"][i], exact, kappa)


@pytest.mark.parametrize("seed", [6, 7])
def test_bachelier_prices_match_mpmath(backend: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    f = rng.uniform(-0.02, 0.05, n)
    t = 10 ** rng.uniform(-3, 1.5, n)
    sd = 10 ** rng.uniform(-5, -1.5, n)
    v = sd / np.sqrt(t)
    k = f + rng.choice([-1, 1], n) * sd * 10 ** rng.uniform(-3, 1.5, n)
    r = rng.uniform(-0.01, 0.05, n)
    w = rng.choice([-1, 1], n)
    out = gp.price(model="bachelier", option_type=w > 0, forward=f, strike=k, t=t, sigma=v, r=r,
                   backend=backend)
    for i in range(n):
        exact, kappa = _exact_and_kappa(_bachelier, int(w[i]), [f[i], k[i], t[i], v[i], r[i]])
        if exact < 1e-290:
            continue
        err = abs(out["price"][i] - exact) / exact
        assert err <= ULPS * (1 + kappa) * EPS, (i, out["price"][i], exact, kappa)


def test_tiny_prices_are_exact_to_a_few_ulps(backend: str) -> None:
    """Deep out of the money, where the textbook formula cancels: a 1-day
    10%-vol call struck 5% out of the money is worth about 3e-22."""
    out = gp.price(option_type="call", spot=100.0, strike=105.0, t=1 / 365, sigma=0.1,
                   backend=backend)
    exact, kappa = _exact_and_kappa(_bsm, 1, [100.0, 105.0, 1 / 365, 0.1, 0.0, 0.0])
    assert 1e-40 < exact < 1e-20
    assert abs(out["price"] - exact) / exact <= ULPS * (1 + kappa) * EPS
    # the textbook formula, for contrast, loses about five digits here
    sd = 0.1 * math.sqrt(1 / 365)
    d1 = math.log(100 / 105) / sd + sd / 2
    textbook = 100 * 0.5 * math.erfc(-d1 / math.sqrt(2)) - 105 * 0.5 * math.erfc(
        -(d1 - sd) / math.sqrt(2))
    assert abs(textbook - exact) / exact > 1e4 * EPS


def _black_parts_exact(h: float, t: float) -> tuple[mp.mpf, ...]:
    hm, tm = mp.mpf(h), mp.mpf(t)
    e = mp.e ** (-hm * tm)  # e^{ax/2}, as the kernel receives it
    pa, pb = mp.ncdf(hm + tm), mp.ncdf(hm - tm)
    return pa / e - e * pb, pa, pb, mp.npdf(hm + tm)


def test_kernel_bachelier_parts_are_accurate_to_a_few_ulps() -> None:
    """The compiled kernel's normal-model values at exact arguments: an
    out-of-the-money call with forward 0, strike a, sigma*sqrt(t) = 1 and no
    discounting has d = -a exactly, price z N(z) + n(z), delta N(z) and
    gamma n(z) at z = -a.  From the Mills-ratio table each is within a few
    ulps over the table's range (0 <= a <= RHO1_H), where an erfc of the
    rounded argument -z/sqrt(2) alone costs up to z^2 ulps (hundreds here)."""
    rng = np.random.default_rng(17)
    a = np.concatenate([rng.uniform(0.0, 3.0, 300), rng.uniform(3.0, formulas.RHO1_H, 300),
                        [0.0, 2.0, formulas.RHO1_H]])
    out = gp.price(model="bachelier", option_type="call", forward=0.0, strike=a, t=1.0,
                   sigma=1.0, r=0.0, greeks=["delta", "gamma"], backend="numba")
    worst = 0.0
    for i, ai in enumerate(a):
        z = -mp.mpf(ai)
        exact = (z * mp.ncdf(z) + mp.npdf(z), mp.ncdf(z), mp.npdf(z))
        for name, x in zip(("price", "delta", "gamma"), exact, strict=True):
            if x < 1e-290:  # subnormal in float64: a few ulps are out of reach
                continue
            worst = max(worst, float(abs((mp.mpf(out[name][i]) - x) / x)) / EPS)
    assert worst <= 4.0, worst


@pytest.mark.parametrize("region", ["asymptotic", "series"])
def test_kernel_black_parts_are_accurate_to_a_few_ulps(region: str) -> None:
    """The compiled kernel's normalised price b and its N(h+t), N(h-t),
    n(h+t) (which every Greek is built from) against mpmath for exact
    float64 h, t: the regions that avoid erfc (the asymptotic series of
    Mills' ratio for h + t < -10, the Taylor series for t < SMALL_T) hold
    each value to a few ulps, with no condition number to hide behind."""
    parts = cpu._F.black_parts
    rng = np.random.default_rng(11)
    worst = 0.0
    for _ in range(300):
        if region == "asymptotic":
            t = 10 ** rng.uniform(-4, 0.5)
            h = -rng.uniform(10.05, 37.0) - t
        else:
            t = rng.uniform(1e-5, formulas.SMALL_T)
            h = -rng.uniform(0.0, 10.0 - t) if rng.random() < 0.9 else -rng.uniform(0, 1e-3)
        e_exact = mp.e ** (-mp.mpf(h) * mp.mpf(t))  # e^{ax/2} with ax = -2ht
        e = float(e_exact)
        got = parts(-2.0 * h * t, h, 2.0 * t, e)
        exact = _black_parts_exact(h, t)
        # e itself is rounded: its relative error scales b and n(h+t) by at most that
        slack = float(abs(mp.mpf(e) / e_exact - 1)) / EPS
        for g, x in zip(got[:4], exact, strict=True):
            if x < 1e-290:  # subnormal in float64: a few ulps are out of reach
                continue
            err = float(abs((mp.mpf(g) - x) / x)) / EPS
            worst = max(worst, err - slack)
    assert worst <= 8.0, worst
