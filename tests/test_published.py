"""Published reference values, checked the way QuantLib's own test suite checks them.

Sources (only the numbers are copied: inputs, published results and tolerances):

* E. G. Haug, "The Complete Guide to Option Pricing Formulas" (McGraw-Hill, 1st ed.
  1998, pp. 2-8, 24, 27 for values and pp. 11-16 for Greeks; the same worked
  examples are in ch. 1-2 of the 2nd ed., 2007), as tabulated with their
  tolerances in QuantLib's test-suite/europeanoption.cpp, `testValues` and
  `testGreekValues`.  The tables state every option in Haug's generalised
  Black-Scholes form: spot S, dividend yield q = r - b (b the cost of carry).
  Rows with q = r (b = 0) are Black (1976) options on a futures/forward price F = S,
  so they are checked both as bsm (as tabulated) and as our black76 (forward=F).
  Rows with q = the foreign rate are Garman-Kohlhagen (1983) FX options (bsm).
* J. C. Hull, "Options, Futures, and Other Derivatives": the worked example of the
  Black-Scholes-Merton chapter (S = 42, K = 40, r = 10%, sigma = 20%, T = 0.5) and
  the Greek-letters example (S = 49, K = 50, r = 5%, sigma = 20%, T = 20 weeks =
  0.3846 years), printed to 2-3 significant digits.

Units.  Both sources quote vega per 1.00 of volatility (Haug: 18.9358, i.e. 0.1894
per vol point; Hull: 12.1, i.e. 0.121 per point), rho and dividend rho per 1.00 of
rate (Haug 38.7325; Hull 8.91, i.e. 0.0891 per 1%), and theta per year (Haug
-31.1924; Hull -4.31), with theta per calendar day = theta / 365 (Haug -0.0855,
QuantLib's thetaPerDay).  Those are our units too, so only theta per day needs a
conversion.  The published numbers are rounded, so the tolerance is the published
one (1e-4 for Haug, as in QuantLib's test) or half a unit of the last printed digit
(Hull).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest

import gpu_pricer as gp

BACKENDS = ("numpy", "numba")


class Row(NamedTuple):
    call: bool
    strike: float
    spot: float
    q: float
    r: float
    t: float
    vol: float
    value: float
    tol: float


C, P = True, False

# Haug (1998) pp. 2-8, 24, 27 via QuantLib testValues.
#       type, strike,   spot,    q,    r,    t,  vol,   value,    tol
HAUG_VALUES = [
    # pp. 2-8: Black-Scholes, Merton (dividend yield), Black-76 (futures),
    # Garman-Kohlhagen (FX: q = foreign rate 8%), generalised (b = 5%)
    Row(C, 65.00, 60.00, 0.00, 0.08, 0.25, 0.30, 2.1334, 1.0e-4),
    Row(P, 95.00, 100.00, 0.05, 0.10, 0.50, 0.20, 2.4648, 1.0e-4),
    Row(P, 19.00, 19.00, 0.10, 0.10, 0.75, 0.28, 1.7011, 1.0e-4),
    Row(C, 19.00, 19.00, 0.10, 0.10, 0.75, 0.28, 1.7011, 1.0e-4),
    Row(C, 1.60, 1.56, 0.08, 0.06, 0.50, 0.12, 0.0291, 1.0e-4),
    Row(P, 70.00, 75.00, 0.05, 0.10, 0.50, 0.35, 4.0870, 1.0e-4),
    # p. 24: European options on futures (b = 0), F = 90/100/110, K = 100
    Row(C, 100.00, 90.00, 0.10, 0.10, 0.10, 0.15, 0.0205, 1.0e-4),
    Row(C, 100.00, 100.00, 0.10, 0.10, 0.10, 0.15, 1.8734, 1.0e-4),
    Row(C, 100.00, 110.00, 0.10, 0.10, 0.10, 0.15, 9.9413, 1.0e-4),
    Row(C, 100.00, 90.00, 0.10, 0.10, 0.10, 0.25, 0.3150, 1.0e-4),
    Row(C, 100.00, 100.00, 0.10, 0.10, 0.10, 0.25, 3.1217, 1.0e-4),
    Row(C, 100.00, 110.00, 0.10, 0.10, 0.10, 0.25, 10.3556, 1.0e-4),
    Row(C, 100.00, 90.00, 0.10, 0.10, 0.10, 0.35, 0.9474, 1.0e-4),
    Row(C, 100.00, 100.00, 0.10, 0.10, 0.10, 0.35, 4.3693, 1.0e-4),
    Row(C, 100.00, 110.00, 0.10, 0.10, 0.10, 0.35, 11.1381, 1.0e-4),
    Row(C, 100.00, 90.00, 0.10, 0.10, 0.50, 0.15, 0.8069, 1.0e-4),
    Row(C, 100.00, 100.00, 0.10, 0.10, 0.50, 0.15, 4.0232, 1.0e-4),
    Row(C, 100.00, 110.00, 0.10, 0.10, 0.50, 0.15, 10.5769, 1.0e-4),
    Row(C, 100.00, 90.00, 0.10, 0.10, 0.50, 0.25, 2.7026, 1.0e-4),
    Row(C, 100.00, 100.00, 0.10, 0.10, 0.50, 0.25, 6.6997, 1.0e-4),
    Row(C, 100.00, 110.00, 0.10, 0.10, 0.50, 0.25, 12.7857, 1.0e-4),
    Row(C, 100.00, 90.00, 0.10, 0.10, 0.50, 0.35, 4.9329, 1.0e-4),
    Row(C, 100.00, 100.00, 0.10, 0.10, 0.50, 0.35, 9.3679, 1.0e-4),
    Row(C, 100.00, 110.00, 0.10, 0.10, 0.50, 0.35, 15.3086, 1.0e-4),
    Row(P, 100.00, 90.00, 0.10, 0.10, 0.10, 0.15, 9.9210, 1.0e-4),
    Row(P, 100.00, 100.00, 0.10, 0.10, 0.10, 0.15, 1.8734, 1.0e-4),
    Row(P, 100.00, 110.00, 0.10, 0.10, 0.10, 0.15, 0.0408, 1.0e-4),
    Row(P, 100.00, 90.00, 0.10, 0.10, 0.10, 0.25, 10.2155, 1.0e-4),
    Row(P, 100.00, 100.00, 0.10, 0.10, 0.10, 0.25, 3.1217, 1.0e-4),
    Row(P, 100.00, 110.00, 0.10, 0.10, 0.10, 0.25, 0.4551, 1.0e-4),
    Row(P, 100.00, 90.00, 0.10, 0.10, 0.10, 0.35, 10.8479, 1.0e-4),
    Row(P, 100.00, 100.00, 0.10, 0.10, 0.10, 0.35, 4.3693, 1.0e-4),
    Row(P, 100.00, 110.00, 0.10, 0.10, 0.10, 0.35, 1.2376, 1.0e-4),
    Row(P, 100.00, 90.00, 0.10, 0.10, 0.50, 0.15, 10.3192, 1.0e-4),
    Row(P, 100.00, 100.00, 0.10, 0.10, 0.50, 0.15, 4.0232, 1.0e-4),
    Row(P, 100.00, 110.00, 0.10, 0.10, 0.50, 0.15, 1.0646, 1.0e-4),
    Row(P, 100.00, 90.00, 0.10, 0.10, 0.50, 0.25, 12.2149, 1.0e-4),
    Row(P, 100.00, 100.00, 0.10, 0.10, 0.50, 0.25, 6.6997, 1.0e-4),
    Row(P, 100.00, 110.00, 0.10, 0.10, 0.50, 0.25, 3.2734, 1.0e-4),
    Row(P, 100.00, 90.00, 0.10, 0.10, 0.50, 0.35, 14.4452, 1.0e-4),
    Row(P, 100.00, 100.00, 0.10, 0.10, 0.50, 0.35, 9.3679, 1.0e-4),
    Row(P, 100.00, 110.00, 0.10, 0.10, 0.50, 0.35, 5.7963, 1.0e-4),
    # p. 27: b = r - q = -4%
    Row(C, 40.00, 42.00, 0.08, 0.04, 0.75, 0.35, 5.0975, 1.0e-4),
]

# Haug (1998) pp. 11-16 via QuantLib testGreekValues (tolerance 1e-4 throughout).
# (greek, row): value = the published Greek in the units of the module docstring.
HAUG_GREEKS = [
    # futures option (b = 0): delta w.r.t. the futures price
    ("delta", Row(C, 100.00, 105.00, 0.10, 0.10, 0.5, 0.36, 0.5946, 1.0e-4)),
    ("delta", Row(P, 100.00, 105.00, 0.10, 0.10, 0.5, 0.36, -0.3566, 1.0e-4)),
    # elasticity = delta * F / V
    ("elasticity", Row(P, 100.00, 105.00, 0.10, 0.10, 0.5, 0.36, -4.8775, 1.0e-4)),
    ("gamma", Row(C, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, 0.0278, 1.0e-4)),
    ("gamma", Row(P, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, 0.0278, 1.0e-4)),
    # vega per 1.00 of vol
    ("vega", Row(C, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, 18.9358, 1.0e-4)),
    ("vega", Row(P, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, 18.9358, 1.0e-4)),
    # theta per year, and per calendar day (theta / 365)
    ("theta", Row(P, 405.00, 430.00, 0.05, 0.07, 1 / 12, 0.20, -31.1924, 1.0e-4)),
    ("theta_per_day", Row(P, 405.00, 430.00, 0.05, 0.07, 1 / 12, 0.20, -0.0855, 1.0e-4)),
    # rho and dividend rho per 1.00 of rate / yield
    ("rho", Row(C, 75.00, 72.00, 0.00, 0.09, 1.0, 0.19, 38.7325, 1.0e-4)),
    ("dividend_rho", Row(P, 490.00, 500.00, 0.05, 0.08, 0.25, 0.15, 42.2254, 1.0e-4)),
]


def _bsm(rows: list[Row], backend: str) -> dict[str, Any]:
    cols = [np.array(c) for c in zip(*rows, strict=True)]
    call, strike, spot, q, r, t, vol = cols[:7]
    out = gp.price(option_type=call.astype(bool), spot=spot, strike=strike, t=t, sigma=vol,
                   r=r, q=q, greeks="all", backend=backend)
    assert np.all(out["error"] == 0)
    return out


def _black76(rows: list[Row], backend: str) -> dict[str, Any]:
    """Haug's b = 0 rows (q = r) as Black-76 on the forward F = S."""
    cols = [np.array(c) for c in zip(*rows, strict=True)]
    call, strike, fwd, _, r, t, vol = cols[:7]
    out = gp.price(model="black76", option_type=call.astype(bool), forward=fwd, strike=strike,
                   t=t, sigma=vol, r=r, greeks="all", backend=backend)
    assert np.all(out["error"] == 0)
    return out


def _greek(name: str, out: dict[str, Any], i: int, forward: float) -> float:
    if name == "elasticity":
        return float(out["delta"][i] * forward / out["price"][i])
    if name == "theta_per_day":
        return float(out["theta"][i] / 365)
    return float(out[name][i])


@pytest.mark.parametrize("backend", BACKENDS)
def test_haug_values(backend: str) -> None:
    out = _bsm(HAUG_VALUES, backend)
    for i, row in enumerate(HAUG_VALUES):
        assert abs(out["price"][i] - row.value) <= row.tol, row


@pytest.mark.parametrize("backend", BACKENDS)
def test_haug_futures_values_as_black76(backend: str) -> None:
    rows = [row for row in HAUG_VALUES if row.q == row.r]
    assert len(rows) == 38  # the Black-76 example of pp. 2-8 and the p. 24 table
    out = _black76(rows, backend)
    for i, row in enumerate(rows):
        assert abs(out["price"][i] - row.value) <= row.tol, row


@pytest.mark.parametrize("backend", BACKENDS)
def test_haug_greeks(backend: str) -> None:
    rows = [row for _, row in HAUG_GREEKS]
    out = _bsm(rows, backend)
    for i, (name, row) in enumerate(HAUG_GREEKS):
        got = _greek(name, out, i, row.spot)
        assert abs(got - row.value) <= row.tol, (name, row, got)


@pytest.mark.parametrize("backend", BACKENDS)
def test_haug_futures_greeks_as_black76(backend: str) -> None:
    """Haug's delta and elasticity examples are a futures option (b = 0): the same
    numbers are Black-76's delta w.r.t. the forward and delta * F / V."""
    greeks = [(name, row) for name, row in HAUG_GREEKS if row.q == row.r]
    assert [name for name, _ in greeks] == ["delta", "delta", "elasticity"]
    out = _black76([row for _, row in greeks], backend)
    for i, (name, row) in enumerate(greeks):
        got = _greek(name, out, i, row.spot)
        assert abs(got - row.value) <= row.tol, (name, row, got)


# Hull, Black-Scholes-Merton chapter: c = 4.76, p = 0.81 as printed; 4.7594 and
# 0.8086 are the same values to four decimals.
HULL_BSM = [
    # call, value, tol
    (C, 4.76, 0.005),
    (P, 0.81, 0.005),
    (C, 4.7594, 1e-4),
    (P, 0.8086, 1e-4),
]

# Hull, Greek letters chapter: S = 49, K = 50, r = 5%, sigma = 20%, T = 0.3846,
# a call; values as printed, tolerance half a unit of the last printed digit.
HULL_GREEKS = {
    "price": (2.40, 0.005),
    "delta": (0.522, 0.0005),
    "gamma": (0.066, 0.0005),
    "vega": (12.1, 0.05),  # per 1.00 of vol (0.121 per vol point)
    "theta": (-4.31, 0.005),  # per year (-0.0118 per calendar day)
    "rho": (8.91, 0.005),  # per 1.00 of rate (0.0891 per 1%)
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_hull_bsm_example(backend: str) -> None:
    calls = np.array([c for c, _, _ in HULL_BSM])
    # greeks="all" only to share the compiled numba kernel of the other tests
    out = gp.price(option_type=calls, spot=42.0, strike=40.0, t=0.5, sigma=0.2, r=0.1,
                   greeks="all", backend=backend)
    for i, (call, value, tol) in enumerate(HULL_BSM):
        assert abs(out["price"][i] - value) <= tol, (call, value, out["price"][i])


@pytest.mark.parametrize("backend", BACKENDS)
def test_hull_greeks_example(backend: str) -> None:
    out = gp.price(option_type="call", spot=49.0, strike=50.0, t=0.3846, sigma=0.2, r=0.05,
                   greeks="all", backend=backend)
    for name, (value, tol) in HULL_GREEKS.items():
        assert abs(float(out[name]) - value) <= tol, (name, value, float(out[name]))
    assert abs(float(out["theta"]) / 365 - (-0.0118)) <= 0.00005
