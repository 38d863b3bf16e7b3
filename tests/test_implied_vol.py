"""Implied volatility: round trips, exact values, independent solvers, bad rows.

Accuracy is judged against the problem's own conditioning.  A float64
price ``p`` fixes sigma only up to ``dp/p / e`` where ``e = vega sigma / p``
is the price's elasticity in sigma, and the rounding of the other inputs
moves ``p`` by up to ``kappa eps`` (``kappa`` the price's condition number in
them, from its Greeks).  So the bound is
``|sigma_hat - sigma| / sigma <= ULPS (1 + kappa) eps / e``: about 1e-14
for a typical option, 1e-12 or better wherever ``(1 + kappa)/e < 280``,
and looser only where the price itself carries less information (deep in
the money, where the time value is a sliver of the price).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gpu_pricer as gp
from gpu_pricer import ErrorCode

# Bound at import: py_vollib_vectorized (the bench imports it in a child
# process only) would replace vollib's functions with its own.
vollib_bsm = pytest.importorskip("vollib.black_scholes_merton.implied_volatility")
vollib_implied_volatility = vollib_bsm.implied_volatility

EPS = float(np.finfo(np.float64).eps)
ULPS = 48
#: Smallest price the tests expect to be solved (below: subnormal, digits lost).
TINY = 1e-300


def _grid(model: str) -> tuple[dict[str, Any], np.ndarray]:
    """Calls and puts over t in [1 day, 30 years], sigma in [0.1%, 500%],
    log-moneyness from 0 to +-6 (bachelier: the same in normal terms)."""
    ts = [1 / 365, 7 / 365, 0.1, 0.5, 1.0, 5.0, 30.0]
    sigmas = [0.001, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0]
    ms = [0.0, 1e-6, 1e-3, 0.01, 0.05, 0.1, 0.3, 0.7, 1.5, 3.0, 6.0]
    rows = list(itertools.product(ts, sigmas, ms, [-1.0, 1.0], [True, False]))
    t, sig, m, sign, call = (np.array(c) for c in zip(*rows, strict=True))
    m = m * sign
    kw: dict[str, Any] = {"t": t, "option_type": call, "r": 0.03}
    if model == "bachelier":
        kw.update(forward=0.02, strike=0.02 - 0.05 * m)
        return kw, 0.01 * sig
    kw["strike"] = 100.0 * np.exp(m)
    if model == "bsm":
        kw.update(spot=100.0, q=0.01)
    else:
        kw.update(forward=100.0)
    return kw, sig


def _kappa(model: str, kw: dict[str, Any], out: dict[str, np.ndarray]) -> np.ndarray:
    """The price's condition number in its inputs other than sigma, from
    its Greeks (homogeneity gives the strike's: K dP/dK = P - S delta)."""
    p = out["price"]
    und = np.broadcast_to(kw.get("spot", kw.get("forward")), p.shape)
    k = np.broadcast_to(kw["strike"], p.shape)
    t = np.broadcast_to(kw["t"], p.shape)
    s_delta = und * out["delta"]
    if model == "bachelier":
        # P(F, K) depends on F - K: |F delta| + |K delta| bounds both terms
        k_term = np.abs(k * out["delta"])
    else:
        k_term = np.abs(p - s_delta)
    total = np.abs(s_delta) + k_term + np.abs(t * out["theta"]) + np.abs(kw["r"] * out["rho"])
    if model == "bsm":
        total = total + np.abs(kw["q"] * out["dividend_rho"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(total / p)


def _upper_bound(model: str, kw: dict[str, Any]) -> np.ndarray:
    t = kw["t"]
    if model == "bachelier":
        return np.full(t.shape, np.inf)
    dr = np.exp(-kw["r"] * t)
    und = kw.get("spot", kw.get("forward"))
    fd = und * np.exp(-kw.get("q", kw["r"]) * t)
    return np.where(kw["option_type"], fd, kw["strike"] * dr)


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_round_trip_over_a_dense_grid(model: str, backend: str) -> None:
    kw, sigma = _grid(model)
    greeks = ["delta", "vega", "theta", "rho"] + (["dividend_rho"] if model == "bsm" else [])
    out = gp.price(model=model, sigma=sigma, greeks=greeks, backend=backend, **kw)
    p = out["price"]
    iv = gp.implied_vol(model=model, price=p, backend=backend, **kw)
    vol, err = iv["implied_vol"], iv["error"]
    # where information runs out, and only there, a row is refused
    underflow = p < TINY
    at_bound = p >= _upper_bound(model, kw) * (1.0 - 4 * EPS)
    assert np.all(err[underflow & (p <= 0.0)] == ErrorCode.NON_POSITIVE_PRICE)
    assert np.all(at_bound[err == ErrorCode.PRICE_ABOVE_UPPER_BOUND])
    assert np.all(err[~underflow & ~at_bound] == 0)
    assert at_bound.sum() < 0.02 * p.size
    solved = (err == 0) & ~underflow
    assert solved.sum() > 0.8 * p.size
    with np.errstate(divide="ignore", invalid="ignore"):
        elasticity = out["vega"] * sigma / p
        kappa = _kappa(model, kw, out)
        bound = np.maximum(ULPS * (1.0 + kappa) * EPS / elasticity, 4 * EPS)
        rel = np.abs(vol - sigma) / sigma
    assert np.all(rel[solved] <= bound[solved]), np.max(rel[solved] / bound[solved])
    # 1e-12 wherever the price determines sigma that well
    informative = solved & (bound <= 1e-12)
    assert informative.sum() > 0.45 * p.size
    assert np.max(rel[informative]) <= 1e-12
    # and the vol reprices the input within the pricer's own accuracy
    again = gp.price(model=model, sigma=np.where(solved, vol, 0.2), backend=backend, **kw)
    gap = np.abs(again["price"] - p)
    assert np.all(gap[solved] <= 2 * ULPS * (1.0 + kappa[solved]) * EPS * p[solved])


def _bsm_mp(w: int, s: float, k: float, t: float, v: mp.mpf, r: float, q: float) -> mp.mpf:
    s_, k_, t_, r_, q_ = (mp.mpf(a) for a in (s, k, t, r, q))
    sd = v * mp.sqrt(t_)
    d1 = (mp.log(s_ / k_) + (r_ - q_) * t_) / sd + sd / 2
    return w * (s_ * mp.e ** (-q_ * t_) * mp.ncdf(w * d1)
                - k_ * mp.e ** (-r_ * t_) * mp.ncdf(w * (d1 - sd)))


def test_exact_implied_vols_from_mpmath(backend: str) -> None:
    """sigma* solved in 40 digits for the float64 price itself: the solver's
    own error, apart from the price's rounding, is a few ulps times the
    conditioning of sigma in the other inputs."""
    mp.mp.dps = 40
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(60):
        t = 10 ** rng.uniform(-2.5, 1.4)
        sigma = 10 ** rng.uniform(-2.5, 0.6)
        sd = sigma * math.sqrt(t)
        k = 100.0 * math.exp(rng.choice([-1, 1]) * sd * 10 ** rng.uniform(-3, 0.9))
        w = int(rng.choice([-1, 1]))
        r, q = rng.uniform(-0.02, 0.08), rng.uniform(0, 0.05)
        p = float(_bsm_mp(w, 100.0, k, t, mp.mpf(sigma), r, q))
        if p < TINY:
            continue
        exact = mp.findroot(
            lambda v, a=(w, 100.0, k, t, r, q), target=p: _bsm_mp(
                a[0], a[1], a[2], a[3], v, a[4], a[5]) - mp.mpf(target),
            mp.mpf(sigma), tol=mp.mpf(10) ** -60, verify=False)
        rows.append((w > 0, k, t, r, q, p, float(exact), sigma))
    call, k, t, r, q, p, exact, sigma = (np.array(c) for c in zip(*rows, strict=True))
    kw = {"option_type": call, "spot": 100.0, "strike": k, "t": t, "r": r, "q": q}
    iv = gp.implied_vol(price=p, backend=backend, **kw)
    assert np.all(iv["error"] == 0)
    out = gp.price(sigma=exact, greeks=["delta", "vega", "theta", "rho", "dividend_rho"],
                   backend=backend, **kw)
    elasticity = out["vega"] * exact / out["price"]
    bound = np.maximum(ULPS * (1.0 + _kappa("bsm", kw, out)) * EPS / elasticity, 4 * EPS)
    rel = np.abs(iv["implied_vol"] - exact) / exact
    assert np.all(rel <= bound), np.max(rel / bound)
    assert np.median(rel) < 1e-14


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_backends_agree(model: str) -> None:
    from .conftest import model_kwargs, random_book

    book = random_book(3000, seed=11)
    kw = model_kwargs(model, book)
    sigma = kw.pop("sigma")
    kw.pop("greeks")
    p = gp.price(model=model, sigma=sigma, backend="numpy", **kw)["price"]
    p[::97] = -1.0  # bad rows in the middle
    a = gp.implied_vol(model=model, price=p, backend="numpy", **kw)
    b = gp.implied_vol(model=model, price=p, backend="numba", **kw)
    np.testing.assert_array_equal(a["error"], b["error"])
    assert np.all(a["error"][::97] == ErrorCode.NON_POSITIVE_PRICE)
    ok = a["error"] == 0
    vega = gp.price(model=model, sigma=sigma, greeks=["vega"], backend="numpy", **kw)["vega"]
    with np.errstate(divide="ignore", invalid="ignore"):
        slack = np.maximum(1e-13, 1e3 * EPS * p / (vega * sigma))
    diff = np.abs(a["implied_vol"] - b["implied_vol"]) / sigma
    assert np.all(diff[ok] <= slack[ok])
    assert np.all(np.isnan(a["implied_vol"][~ok]) & np.isnan(b["implied_vol"][~ok]))


def test_hull_textbook_example(backend: str) -> None:
    # Hull, Options, Futures and Other Derivatives: a call worth 1.875 with
    # S = 21, K = 20, r = 10%, T = 0.25 has an implied volatility of 23.5%
    iv = gp.implied_vol(price=1.875, option_type="call", spot=21.0, strike=20.0, t=0.25, r=0.1,
                        backend=backend)
    assert round(float(iv["implied_vol"]), 3) == 0.235


def test_agrees_with_lets_be_rational_and_vollib(backend: str) -> None:
    """py_lets_be_rational (Jaeckel's algorithm, another implementation) on
    the normalised problem; vollib on bsm with rates, where they succeed."""
    lbr = pytest.importorskip("py_lets_be_rational")
    rng = np.random.default_rng(5)
    n = 400
    f = rng.uniform(50, 150, n)
    k = f * np.exp(rng.normal(0, 0.4, n))
    t = np.exp(rng.uniform(np.log(1 / 365), np.log(10), n))
    sigma = rng.uniform(0.03, 1.5, n)
    call = rng.random(n) < 0.5
    p = gp.price(model="black76", option_type=call, forward=f, strike=k, t=t, sigma=sigma,
                 backend=backend)["price"]
    ours = gp.implied_vol(model="black76", price=p, option_type=call, forward=f, strike=k, t=t,
                          backend=backend)
    theirs = np.array([
        lbr.implied_volatility_from_a_transformed_rational_guess(
            float(p[i]), float(f[i]), float(k[i]), float(t[i]), 1.0 if call[i] else -1.0)
        for i in range(n)
    ])
    vega = gp.price(model="black76", option_type=call, forward=f, strike=k, t=t, sigma=sigma,
                    greeks=["vega"], backend=backend)["vega"]
    # else sigma is undetermined in float64 (deep in the money, or a subnormal price)
    informative = (vega * sigma / p > 1e-3) & (p > TINY)
    assert informative.sum() > 0.8 * n
    assert np.all(ours["error"][informative] == 0)
    fine = informative & np.isfinite(theirs) & (theirs > 0)
    assert fine.sum() > 0.98 * informative.sum()
    np.testing.assert_allclose(ours["implied_vol"][fine], theirs[fine], rtol=1e-10)
    # vollib: bsm with r and q
    s, r, q = 100.0, 0.03, 0.01
    kb = s * np.exp(rng.normal(0, 0.3, 100))
    tb = t[:100]
    pb = gp.price(option_type=call[:100], spot=s, strike=kb, t=tb, sigma=sigma[:100], r=r, q=q,
                  backend=backend)["price"]
    mine = gp.implied_vol(price=pb, option_type=call[:100], spot=s, strike=kb, t=tb, r=r, q=q,
                          backend=backend)["implied_vol"]
    vb = gp.price(option_type=call[:100], spot=s, strike=kb, t=tb, sigma=sigma[:100], r=r, q=q,
                  greeks=["vega"], backend=backend)["vega"]
    compared = 0
    rows = np.flatnonzero((vb * sigma[:100] / pb > 1e-3) & (pb > TINY))
    for i in rows:
        try:
            v = vollib_implied_volatility(float(pb[i]), s, float(kb[i]), float(tb[i]), r, q,
                                          "c" if call[i] else "p")
        except Exception:  # vollib raises for prices it cannot invert
            continue
        if v > 0 and math.isfinite(v):
            assert mine[i] == pytest.approx(v, rel=1e-8)
            compared += 1
    assert compared >= 0.9 * len(rows) > 0


def test_bachelier_against_quantlib(backend: str) -> None:
    """QuantLib's Bachelier implied vol (Jaeckel's 2017 method) as an oracle,
    on the grid of QuantLib's own test (forward 1, normal vol 1%, 10 years,
    strikes a few standard deviations either side, discount 0.95)."""
    ql = pytest.importorskip("QuantLib")
    forward, vol, tte, df = 1.0, 0.01, 10.0, 0.95
    r = -math.log(df) / tte
    sd = vol * math.sqrt(tte)
    for d in (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0):
        strike = forward - d * sd
        for otype, word in ((ql.Option.Call, "call"), (ql.Option.Put, "put")):
            premium = ql.bachelierBlackFormula(otype, strike, forward, sd, df)
            theirs = ql.bachelierBlackFormulaImpliedVol(otype, strike, forward, tte, premium, df)
            ours = gp.implied_vol(model="bachelier", price=premium, option_type=word,
                                  forward=forward, strike=strike, t=tte, r=r, backend=backend)
            assert int(ours["error"]) == 0
            assert float(ours["implied_vol"]) == pytest.approx(vol, rel=1e-12)
            assert float(ours["implied_vol"]) == pytest.approx(theirs, rel=1e-10)


def test_black_against_quantlib(backend: str) -> None:
    ql = pytest.importorskip("QuantLib")
    rng = np.random.default_rng(3)
    for _ in range(60):
        f = 100.0
        k = f * math.exp(rng.normal(0, 0.3))
        t = math.exp(rng.uniform(math.log(0.05), math.log(5)))
        sigma = rng.uniform(0.1, 0.8)
        df = math.exp(-0.02 * t)
        otype, word = (ql.Option.Call, "call") if rng.random() < 0.5 else (ql.Option.Put, "put")
        premium = ql.blackFormula(otype, k, f, sigma * math.sqrt(t), df)
        vega = float(gp.price(model="black76", option_type=word, forward=f, strike=k, t=t,
                              sigma=sigma, r=0.02, greeks=["vega"])["vega"])
        if vega * sigma < 1e-3 * premium:
            continue  # deep in the money: the price does not determine sigma
        theirs = ql.blackFormulaImpliedStdDev(otype, k, f, premium, df, 0.0, ql.nullDouble(),
                                              1e-14, 200) / math.sqrt(t)
        ours = gp.implied_vol(model="black76", price=premium, option_type=word, forward=f,
                              strike=k, t=t, r=0.02, backend=backend)
        assert float(ours["implied_vol"]) == pytest.approx(theirs, rel=1e-7)
        assert float(ours["implied_vol"]) == pytest.approx(sigma, rel=1e-10)


def test_bad_rows_are_marked_and_never_disturb_others(backend: str) -> None:
    s, k, t, r = 100.0, 100.0, 1.0, 0.05
    good = float(gp.price(option_type="call", spot=s, strike=k, t=t, sigma=0.3, r=r)["price"])
    intrinsic_itm = s - 80.0 * math.exp(-r * t)
    prices = np.array([good, 0.0, -1.0, np.nan, 2.0, 101.0, intrinsic_itm, good, good, good])
    strikes = np.array([k, k, k, k, 80.0, k, 80.0, -5.0, k, k])
    times = np.array([t, t, t, t, t, t, t, t, -1.0, 0.0])
    out = gp.implied_vol(price=prices, option_type="call", spot=s, strike=strikes, t=times, r=r,
                         backend=backend)
    e = out["error"]
    assert list(e) == [0, ErrorCode.NON_POSITIVE_PRICE, ErrorCode.NON_POSITIVE_PRICE,
                       ErrorCode.NON_FINITE_INPUT, ErrorCode.PRICE_BELOW_INTRINSIC,
                       ErrorCode.PRICE_ABOVE_UPPER_BOUND, 0, ErrorCode.NON_POSITIVE_STRIKE,
                       ErrorCode.NEGATIVE_TIME, ErrorCode.PRICE_ABOVE_UPPER_BOUND]
    vol = out["implied_vol"]
    assert vol[0] == pytest.approx(0.3, rel=1e-13)
    assert vol[6] == 0.0  # a price at intrinsic value
    assert np.all(np.isnan(vol[e != 0]))
    alone = gp.implied_vol(price=good, option_type="call", spot=s, strike=k, t=t, r=r,
                           backend=backend)
    assert vol[0] == float(alone["implied_vol"])


def test_limits_and_edges(backend: str) -> None:
    # at t = 0 only the intrinsic value is a valid price (vol 0)
    out = gp.implied_vol(price=[5.0, 5.5], option_type="call", spot=105.0, strike=100.0, t=0.0,
                         backend=backend)
    assert list(out["error"]) == [0, ErrorCode.PRICE_ABOVE_UPPER_BOUND]
    assert out["implied_vol"][0] == 0.0
    # a put's bound is the discounted strike; just under it, a huge but finite vol
    df = math.exp(-0.02)
    out = gp.implied_vol(price=[100 * df, 100 * df * (1 - 1e-9)], option_type="put",
                         spot=100.0, strike=100.0, t=1.0, r=0.02, backend=backend)
    assert out["error"][0] == ErrorCode.PRICE_ABOVE_UPPER_BOUND
    assert out["error"][1] == 0 and 10.0 < out["implied_vol"][1] < 20.0
    # tiny time values far out of the money and huge vols at the money
    for sigma, k, t in ((0.05, 125.0, 0.02), (4.0, 100.0, 4.0), (0.001, 100.0, 1 / 365)):
        p = gp.price(option_type="call", spot=100.0, strike=k, t=t, sigma=sigma,
                     backend=backend)["price"]
        v = gp.implied_vol(price=p, option_type="call", spot=100.0, strike=k, t=t,
                           backend=backend)["implied_vol"]
        assert float(v) == pytest.approx(sigma, rel=1e-12), (sigma, k, t, float(p))
    # bachelier: negative forwards and strikes, at the money exactly
    p = gp.price(model="bachelier", option_type=["call", "put"], forward=-0.01, strike=-0.01,
                 t=2.0, sigma=0.007, r=0.01, backend=backend)["price"]
    out = gp.implied_vol(model="bachelier", price=p, option_type=["call", "put"],
                         forward=-0.01, strike=-0.01, t=2.0, r=0.01, backend=backend)
    np.testing.assert_allclose(out["implied_vol"], 0.007, rtol=1e-14)


def test_strict_shapes_and_whole_call_errors() -> None:
    out = gp.implied_vol(price=np.full((2, 3), 10.0), option_type="call", spot=100.0,
                         strike=np.array([[90.0], [100.0]]), t=1.0)
    assert out["implied_vol"].shape == (2, 3) and out["error"].shape == (2, 3)
    with pytest.raises(ValueError, match=r"row 1: price <= 0"):
        gp.implied_vol(price=[10.0, 0.0], option_type="call", spot=100.0, strike=100.0, t=1.0,
                       strict=True)
    with pytest.raises(ValueError, match="takes forward, not spot"):
        gp.implied_vol(model="black76", price=1.0, option_type="call", spot=100.0,
                       strike=100.0, t=1.0)
    with pytest.raises(ValueError, match="price: expected numbers"):
        gp.implied_vol(price=np.array(["a"]), option_type="call", spot=100.0, strike=100.0,
                       t=1.0)


@settings(max_examples=150, deadline=None)
@given(
    call=st.booleans(),
    log_m=st.floats(-2.0, 2.0),
    t=st.floats(1 / 365, 30.0),
    sigma=st.floats(0.001, 5.0),
    r=st.floats(-0.05, 0.15),
    q=st.floats(0.0, 0.1),
)
# a price of 1.7e-315, subnormal: its normalised time value is below the
# normal range, where the solver gives no vol (code 11) rather than a guess
@example(call=True, log_m=0.001, t=0.0859375, sigma=0.001, r=-0.03125, q=0.0859375)
def test_property_solves_or_says_why(call: bool, log_m: float, t: float, sigma: float, r: float,
                                     q: float) -> None:
    kw = {"option_type": call, "spot": 100.0, "strike": 100.0 * math.exp(log_m), "t": t,
          "r": r, "q": q}
    out = gp.price(sigma=sigma, greeks=["delta", "vega", "theta", "rho", "dividend_rho"],
                   backend="numba", **kw)
    p = float(out["price"])
    iv = gp.implied_vol(price=p, backend="numba", **kw)
    code = int(iv["error"])
    if p < TINY:
        assert code in (0, ErrorCode.NON_POSITIVE_PRICE, ErrorCode.NO_VOLATILITY_FOUND)
        return
    if code == ErrorCode.PRICE_ABOVE_UPPER_BOUND:
        assert p >= _upper_bound("bsm", {k: np.asarray(v) for k, v in kw.items()}) * (1 - 4 * EPS)
        return
    assert code == 0
    elasticity = float(out["vega"]) * sigma / p
    kappa = float(_kappa("bsm", kw, out))
    bound = max(ULPS * (1 + kappa) * EPS / elasticity, 4 * EPS) if elasticity > 0 else math.inf
    assert abs(float(iv["implied_vol"]) - sigma) / sigma <= bound


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(("log_m", "t", "r", "q"), [
    (0.0, 18.810614360921978, 0.0, 0.0718956965762517),  # exactly the bound
    (-1.1407157620790966, 19.011954051141657, 0.09111523751350077, 0.0859375),  # an ulp under
])
def test_a_price_within_rounding_of_its_upper_bound_is_above_bound(
        backend: str, log_m: float, t: float, r: float, q: float) -> None:
    """A 19-year put at 400% vol is worth its discounted strike to the last bit
    or two: no vol is determined by such a price, and the answer says the price
    is at the bound (not 'no vol found')."""
    kw = {"option_type": False, "spot": 100.0, "strike": 100.0 * math.exp(log_m), "t": t,
          "r": r, "q": q}
    p = gp.price(sigma=4.0, backend=backend, **kw)["price"]
    bound = kw["strike"] * math.exp(-r * t)
    assert abs(float(p) - bound) <= 4 * EPS * bound
    iv = gp.implied_vol(price=p, backend=backend, **kw)
    assert int(iv["error"]) == ErrorCode.PRICE_ABOVE_UPPER_BOUND


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_far_past_any_market_a_vol_is_exact_or_not_given(model: str, backend: str) -> None:
    """Inputs over hundreds of decades (log-uniform spot, strike, t, vol; r t
    and q t up to +-1000): every vol given (code 0) reprices its price to
    1e-9 relative.  Where a discount factor, the discounted forward or
    strike, or the normalised time value has left the normal double range,
    or |ln(F/K)| > 700, there is no such vol in float64 and the row is
    NO_VOLATILITY_FOUND.  Before that check, vols off by up to 1% (a price
    off 1,000-fold) came back with code 0, and a put at 97% of its upper
    bound got vol 0."""
    rng = np.random.default_rng(3)
    n = 20_000

    def log_uniform(lo: float, hi: float) -> np.ndarray:
        return np.asarray(10.0 ** rng.uniform(lo, hi, n))

    t = log_uniform(-6, 3)
    book: dict[str, Any] = {"option_type": rng.random(n) < 0.5, "strike": log_uniform(-150, 150),
                            "t": t, "r": rng.uniform(-1000, 1000, n) / t}
    und = log_uniform(-150, 150)
    sigma = log_uniform(-3, 1) * (und if model == "bachelier" else 1.0)
    if model == "bsm":
        book["q"] = rng.uniform(-1000, 1000, n) / t
    book["spot" if model == "bsm" else "forward"] = und
    priced = gp.price(model=model, sigma=sigma, backend="numba", **book)
    ok = (priced["error"] == 0) & (priced["price"] > 0.0)
    price = np.where(ok, priced["price"], 1.0)
    out = gp.implied_vol(model=model, price=price, backend=backend, **book)
    solved = (out["error"] == 0) & ok
    assert solved.sum() > 2_000
    again = gp.price(model=model, sigma=np.where(solved, out["implied_vol"], 0.2),
                     backend="numba", **book)["price"]
    rel = np.abs(again[solved] - price[solved]) / price[solved]
    assert rel.max() < 1e-9
