"""Put-call parity, no-arbitrage bounds, monotonicity, homogeneity, scaling
(hypothesis), and the limits t -> 0, sigma -> 0 and far in/out of the money."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gpu_pricer as gp

money = st.floats(1.0, 1000.0)
moneyness = st.floats(0.2, 5.0)
expiry = st.floats(1e-4, 30.0)
vol = st.floats(1e-3, 3.0)
rate = st.floats(-0.05, 0.2)
div = st.floats(0.0, 0.15)
SETTINGS = settings(max_examples=200, deadline=None)


def _bsm(backend: str, **kw: object) -> dict[str, np.ndarray]:
    return gp.price(backend=backend, **kw)  # type: ignore[arg-type]


@SETTINGS
@given(s=money, m=moneyness, t=expiry, v=vol, r=rate, q=div)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_parity_and_bounds(backend: str, s: float, m: float, t: float, v: float, r: float,
                           q: float) -> None:
    k = s * m
    out = _bsm(backend, option_type=["call", "put"], spot=s, strike=k, t=t, sigma=v, r=r, q=q,
               greeks=["delta"])
    call, put = out["price"]
    fs = s * math.exp(-q * t)
    kd = k * math.exp(-r * t)
    scale = fs + kd
    assert abs((call - put) - (fs - kd)) <= 1e-13 * scale
    assert max(fs - kd, 0.0) - 1e-13 * scale <= call <= fs * (1 + 1e-15)
    assert max(kd - fs, 0.0) - 1e-13 * scale <= put <= kd * (1 + 1e-15)
    dcall, dput = out["delta"]
    assert abs((dcall - dput) - math.exp(-q * t)) <= 1e-13
    assert (out["error"] == 0).all()


@SETTINGS
@given(s=money, m1=moneyness, m2=moneyness, t=expiry, v=vol, r=rate, q=div)
def test_monotone_in_strike(s: float, m1: float, m2: float, t: float, v: float, r: float,
                            q: float) -> None:
    lo, hi = sorted((m1, m2))
    out = gp.price(option_type=["call", "call", "put", "put"], spot=s,
                   strike=[s * lo, s * hi, s * lo, s * hi], t=t, sigma=v, r=r, q=q)
    c_lo, c_hi, p_lo, p_hi = out["price"]
    tol = 1e-14 * s
    assert c_hi <= c_lo + tol
    assert p_lo <= p_hi + tol


@SETTINGS
@given(s=money, m=moneyness, t=expiry, v=vol, r=rate, q=div, lam=st.floats(1e-3, 1e3))
@example(s=1.0, m=1.875, t=0.0001, v=1.6484375, r=0.0, q=0.0, lam=0.5)  # subnormal gamma
@example(s=1.0, m=0.6517009974291228, t=6.0, v=0.001, r=0.0, q=0.0625, lam=2.0)  # d = 175
def test_homogeneous_of_degree_one(s: float, m: float, t: float, v: float, r: float, q: float,
                                   lam: float) -> None:
    a = gp.price(option_type=["c", "p"], spot=s, strike=s * m, t=t, sigma=v, r=r, q=q,
                 greeks=["delta", "gamma"])
    b = gp.price(option_type=["c", "p"], spot=lam * s, strike=lam * s * m, t=t, sigma=v, r=r,
                 q=q, greeks=["delta", "gamma"])
    np.testing.assert_allclose(b["price"], lam * a["price"], rtol=1e-12, atol=1e-14 * lam * s)
    np.testing.assert_allclose(b["delta"], a["delta"], rtol=1e-12, atol=1e-14)
    # Far from the money gamma's relative condition number grows as d^2 (d the
    # moneyness in standard deviations), and subnormal values (below 1e-300)
    # carry too few digits for a relative test.
    d = abs(math.log(m) + (r - q) * t) / (v * math.sqrt(t))
    np.testing.assert_allclose(b["gamma"], a["gamma"] / lam, rtol=1e-12 * (1.0 + d * d),
                               atol=1e-14 * np.max(np.abs(a["gamma"])) / lam + 1e-300)


@SETTINGS
@given(s=money, m=moneyness, t=st.floats(1e-3, 10.0), v=vol, c=st.floats(0.1, 10.0))
def test_vol_time_scaling(s: float, m: float, t: float, v: float, c: float) -> None:
    """Without rates the price depends on sigma^2 t only."""
    a = gp.price(option_type=["c", "p"], spot=s, strike=s * m, t=t, sigma=v)
    b = gp.price(option_type=["c", "p"], spot=s, strike=s * m, t=t / c**2, sigma=v * c)
    np.testing.assert_allclose(b["price"], a["price"], rtol=1e-11, atol=1e-13 * s)


@SETTINGS
@given(f=st.floats(-0.05, 0.1), dk=st.floats(-0.05, 0.05), t=expiry, v=st.floats(1e-4, 0.05),
       r=rate)
def test_bachelier_parity_and_negative_rates(f: float, dk: float, t: float, v: float,
                                             r: float) -> None:
    out = gp.price(model="bachelier", option_type=["call", "put"], forward=f, strike=f + dk,
                   t=t, sigma=v, r=r)
    call, put = out["price"]
    d = math.exp(-r * t)
    assert abs((call - put) - d * (f - (f + dk))) <= 1e-15 + 1e-13 * d * abs(dk)
    assert call >= 0 and put >= 0
    assert (out["error"] == 0).all()


# --- limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_no_nan_anywhere_at_the_limits(model: str, backend: str) -> None:
    und = np.array([100.0, 100.0, 100.0, 80.0, 120.0, 100.0])
    strike = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    t = np.array([0.0, 1.0, 0.0, 0.0, 0.5, 1e-300])
    sigma = np.array([0.2, 0.0, 0.0, 0.2, 0.0, 0.2])
    if model == "bachelier":
        sigma = sigma * 100
    kw = {"spot": und, "q": 0.01} if model == "bsm" else {"forward": und}
    for otype in ("call", "put"):
        out = gp.price(model=model, option_type=otype, strike=strike, t=t, sigma=sigma, r=0.03,
                       greeks="all", backend=backend, **kw)  # type: ignore[arg-type]
        assert (out["error"] == 0).all()
        for name, values in out.items():
            assert not np.isnan(values).any(), (model, otype, name, values)


@pytest.mark.parametrize("otype", ["call", "put"])
def test_expiry_is_intrinsic(otype: str, backend: str) -> None:
    s = np.array([80.0, 99.0, 100.0, 101.0, 130.0])
    out = gp.price(option_type=otype, spot=s, strike=100.0, t=0.0, sigma=0.3, r=0.05, q=0.02,
                   greeks="all", backend=backend)
    w = 1.0 if otype == "call" else -1.0
    np.testing.assert_array_equal(out["price"], np.maximum(w * (s - 100.0), 0.0))
    itm = w * (s - 100.0) > 0
    np.testing.assert_array_equal(out["delta"][s != 100.0], (w * itm)[s != 100.0])
    assert out["delta"][2] == w * 0.5  # at the money: the symmetric limit
    np.testing.assert_array_equal(out["gamma"][s != 100.0], 0.0)
    assert out["gamma"][2] == np.inf
    np.testing.assert_array_equal(out["vega"], 0.0)
    # theta of an in-the-money option at expiry: the carry of the intrinsic value
    np.testing.assert_allclose(out["theta"][itm], (w * (0.02 * s - 0.05 * 100.0))[itm],
                               rtol=1e-14)
    assert out["theta"][2] == -np.inf


def test_zero_vol_is_discounted_forward_intrinsic(backend: str) -> None:
    s, k, t, r, q = 100.0, np.array([90.0, 100.0, 104.0, 110.0]), 2.0, 0.03, 0.01
    out = gp.price(option_type="call", spot=s, strike=k, t=t, sigma=0.0, r=r, q=q,
                   greeks=["delta", "vega"], backend=backend)
    fwd_intrinsic = np.maximum(s * math.exp(-q * t) - k * math.exp(-r * t), 0.0)
    np.testing.assert_allclose(out["price"], fwd_intrinsic, rtol=1e-15, atol=1e-13)
    np.testing.assert_array_equal(out["delta"], np.where(fwd_intrinsic > 0, math.exp(-q * t), 0))
    # continuity: a tiny vol gives (almost) the same price
    tiny = gp.price(option_type="call", spot=s, strike=k, t=t, sigma=1e-10, r=r, q=q,
                    backend=backend)
    np.testing.assert_allclose(tiny["price"], out["price"], rtol=1e-9, atol=1e-9)


def test_continuity_as_expiry_approaches(backend: str) -> None:
    s = np.array([90.0, 100.0, 110.0])
    out0 = gp.price(option_type="put", spot=s, strike=100.0, t=0.0, sigma=0.2, backend=backend)
    eps = gp.price(option_type="put", spot=s, strike=100.0, t=1e-14, sigma=0.2, backend=backend)
    np.testing.assert_allclose(eps["price"], out0["price"], atol=1e-5)


@pytest.mark.parametrize("otype", ["call", "put"])
def test_far_from_the_money(otype: str, backend: str) -> None:
    k = 100.0 * np.exp(np.linspace(-8, 8, 33))
    out = gp.price(option_type=otype, spot=100.0, strike=k, t=0.25, sigma=0.2,
                   greeks=["delta", "gamma"], backend=backend)
    assert (out["error"] == 0).all()
    assert (out["price"] >= 0).all()
    w = 1.0 if otype == "call" else -1.0
    intrinsic = np.maximum(w * (100.0 - k), 0)
    deep_itm = w * np.log(100.0 / k) > 4
    np.testing.assert_allclose(out["price"][deep_itm], intrinsic[deep_itm], rtol=1e-15)
    np.testing.assert_allclose(np.abs(out["delta"][deep_itm]), 1.0, rtol=1e-15)
    deep_otm = w * np.log(100.0 / k) < -4
    assert (out["price"][deep_otm] < 1e-30).all()
    assert (out["price"][deep_otm] > 0).all() or (out["price"][deep_otm] == 0).any()
    # prices strictly ordered in strike even in the tails, until they underflow
    p = out["price"] if otype == "put" else out["price"][::-1]
    nonzero = p[p > 0]
    assert (np.diff(nonzero) > 0).all()


def test_negative_rates(backend: str) -> None:
    out = gp.price(option_type=["call", "put"], spot=100.0, strike=100.0, t=2.0, sigma=0.2,
                   r=-0.01, q=-0.005, greeks=["rho"], backend=backend)
    assert (out["error"] == 0).all()
    call, put = out["price"]
    assert abs((call - put) - (100 * math.exp(0.01) - 100 * math.exp(0.02))) < 1e-12


def test_huge_expiry_and_vol(backend: str) -> None:
    out = gp.price(option_type="call", spot=100.0, strike=100.0, t=100.0, sigma=5.0, q=0.0,
                   greeks="all", backend=backend)
    assert out["error"] == 0
    np.testing.assert_allclose(out["price"], 100.0, rtol=1e-12)
    for g in gp.GREEKS:
        assert not np.isnan(out[g]), g


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi).map(lambda e: 10.0 ** e)


@settings(max_examples=1000, deadline=None)
@given(model=st.sampled_from(["bsm", "black76", "bachelier"]), call=st.booleans(),
       und=_log_uniform(-300, 300), k=_log_uniform(-300, 300), t=_log_uniform(-300, 300),
       v=_log_uniform(-300, 300), rt=st.floats(-2000.0, 2000.0), qt=st.floats(-2000.0, 2000.0),
       signs=st.tuples(st.booleans(), st.booleans()))
def test_any_finite_row_is_priced_without_nan_or_has_a_code(
        model: str, call: bool, und: float, k: float, t: float, v: float, rt: float, qt: float,
        signs: tuple[bool, bool]) -> None:
    """Any finite inputs, however far past a market (hundreds of decades, r t
    and q t to +-2,000): each backend prices the row with no NaN value (its
    infinite values are Greeks past the double range or at a singular limit)
    or gives it a code and NaN in every value, and both backends give the
    same code unless one of them overflows the price (the backends' exp and
    log differ by an ulp at that edge)."""
    if model == "bachelier":  # negative forwards and strikes are valid
        und, k = (-und if signs[0] else und), (-k if signs[1] else k)
    kw: dict[str, object] = {"spot" if model == "bsm" else "forward": und}
    if model == "bsm":
        kw["q"] = qt / t
    codes = []
    for backend in ("numpy", "numba"):
        out = {name: np.atleast_1d(values) for name, values in gp.price(
            model=model, option_type="call" if call else "put", strike=k, t=t, sigma=v,
            r=rt / t, greeks="all", backend=backend, **kw).items()}
        code = int(out["error"][0])
        for name, value in out.items():
            if name == "error" or (name == "dividend_rho" and model != "bsm"):
                continue
            assert math.isnan(value[0]) == (code != 0), (backend, name, code, value[0])
        codes.append(code)
    overflow = gp.ErrorCode.RESULT_NOT_FINITE
    assert codes[0] == codes[1] or overflow in codes


@settings(max_examples=1000, deadline=None)
@given(model=st.sampled_from(["bsm", "black76", "bachelier"]), call=st.booleans(),
       und=_log_uniform(-150, 150), k=_log_uniform(-150, 150), t=_log_uniform(-6, 3),
       v=_log_uniform(-3, 1), rt=st.floats(-1000.0, 1000.0), qt=st.floats(-1000.0, 1000.0),
       backend=st.sampled_from(["numpy", "numba"]))
# found on a random book: a put near its upper bound once got vol 0 (e^(-q t)
# underflows), and a black76 vol came out 0.5% off (a subnormal normalised price)
@example(model="bsm", call=False, und=1.210722077128221e148, k=4.24570486611768e-91,
         t=17.353311427243863, v=8.866463079651483, rt=26.622979521085995 * 17.353311427243863,
         qt=52.30638357001496 * 17.353311427243863, backend="numba")
@example(model="black76", call=False, und=1.5978794074574571e46, k=1.3025985256877856e38,
         t=1.5425783562937314, v=0.3908497839794311, rt=-220.02523033241442 * 1.5425783562937314,
         qt=0.0, backend="numba")
def test_any_implied_vol_given_reprices_its_price(
        model: str, call: bool, und: float, k: float, t: float, v: float, rt: float, qt: float,
        backend: str) -> None:
    """A price made from any finite inputs, however far past a market: the
    vol given for it (code 0) reprices it to 1e-9 relative; otherwise the row
    has a code and a NaN vol."""
    kw: dict[str, object] = {"spot" if model == "bsm" else "forward": und,
                             "option_type": "call" if call else "put", "strike": k, "t": t,
                             "r": rt / t}
    if model == "bsm":
        kw["q"] = qt / t
    sigma = v * und if model == "bachelier" else v
    priced = gp.price(model=model, sigma=sigma, backend="numba", **kw)
    price = float(np.atleast_1d(priced["price"])[0])
    if not (int(np.atleast_1d(priced["error"])[0]) == 0 and price > 0.0):
        return
    out = gp.implied_vol(model=model, price=price, backend=backend, **kw)
    code, vol = int(np.atleast_1d(out["error"])[0]), float(np.atleast_1d(out["implied_vol"])[0])
    assert math.isnan(vol) == (code != 0)
    if code == 0:
        again = float(np.atleast_1d(gp.price(model=model, sigma=vol, backend="numba",
                                             **kw)["price"])[0])
        assert abs(again - price) <= 1e-9 * price, (vol, sigma)
