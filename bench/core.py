"""Throughput of `gpu_pricer.price` against the usual ways of pricing a book of options.

What is measured: options per second for pricing N Black-Scholes-Merton options
(default 1,000,000) with the price and five Greeks (delta, gamma, vega, theta,
rho), every method on the same data, in one run:

1. ``gpu_pricer.price(..., backend="auto")`` -- the backend auto chose is
   recorded from `gpu_pricer.backends()` -- and each backend by name.  These are
   plain calls as a user makes them: input checks and freshly allocated outputs
   are inside the timing.  A backend that is not usable here is listed as "not
   measured" with its reason, never estimated.  With NumPy input the GPU
   backends' timings include the host-device transfers.
2. The "tutorial style": NumPy with ``scipy.stats.norm.cdf``/``norm.pdf`` on the
   textbook formulas, vectorised (the call/put sign folded into d1 and d2, so
   two CDF calls, not four).
3. A QuantLib-Python loop, one ``ql.BlackCalculator`` per option, timed on a
   sample of the book (20,000 options by default); its rate is a per-option
   rate extrapolated to the whole book and labelled so.
4. The "plain fused Numba loop": the same textbook formulas in one
   ``@njit(parallel=True, nogil=True, fastmath=False)`` ``prange`` loop with an
   erfc-based normal CDF, on Numba's thread count (all cores), writing into
   output arrays allocated once before timing.

Two more baselines are written the way the issue's figures for scale were
evidently measured (its tutorial style at about 1.75 M options/s and QuantLib at
about 60 k/s, where 2. and 3. above run several times faster): the tutorial
as tutorials write it, one NumPy function per output, each computing d1 and
d2 again and the call's and the put's formula chosen by ``np.where``
(``tutorial_functions``); and QuantLib as its users write it, one
``EuropeanOption`` with an ``AnalyticEuropeanEngine`` on a
``BlackScholesMertonProcess`` of flat curves per option, on a sample of the
book with expiries rounded to whole days (QuantLib counts time in dates),
checked against gpu_pricer auto on the same rounded sample
(``quantlib_engine``).  The issue's targets are printed against both forms.

Timing rules: a warm-up round first runs every method once on its own data set
(JIT compilation, first-touch page faults, import costs) and is excluded; then
``--repeat`` timed rounds each run every method once on a FRESH data set (R + 1
data sets are drawn up front from a fixed seed, the same ones for every method),
so no repeat reprices arrays the caches or the branch predictor have already
seen.  The methods are interleaved, in an order rotated each round, so that a
drift in the machine's state falls on all of them alike.  Reported: the median
and the minimum wall time (``time.perf_counter``) and options per second at the
median.

Correctness: after timing, every method's outputs from the last round are
compared with gpu_pricer auto's on the same data; a difference beyond 1e-9
relative raises AssertionError, so the bench cannot measure a broken thing.  A
value smaller than 1e-3 of its natural unit (the spot for price, vega, theta
and rho; 1 for delta; 1/spot for gamma) is held to 1e-12 of that unit instead,
because there the textbook formulas cancel (deep out-of-the-money prices,
thetas crossing zero) and QuantLib's normal CDF is accurate in absolute, not
relative, terms.

Run: ``python -m bench.core [--size N] [--repeat R] [--out DIR] [--tiny]``.  It
prints a Markdown table and the three target ratios of the issue, and writes
``<out>/<YYYY-MM-DD>-<hostname>-core.json`` (every figure, the machine and the
library versions; ``-core-tiny`` for ``--tiny``) and the same table as ``.md``
beside it (default ``<out>``: bench/results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numba
import numpy as np
import QuantLib as ql
import scipy
from numba import njit, prange
from scipy.stats import norm

import gpu_pricer as gp
from gpu_pricer.dispatch import AUTO_ORDER
from gpu_pricer.settings import get_settings

DEFAULT_SIZE = 1_000_000
DEFAULT_REPEAT = 5
DEFAULT_QL_SAMPLE = 20_000
TINY_SIZE = 2_000
TINY_REPEAT = 2
TINY_QL_SAMPLE = 200
SEED = 20_240_611
RESULTS_DIR = Path(__file__).resolve().parent / "results"

GREEKS = ("delta", "gamma", "vega", "theta", "rho")
OUTPUTS = ("price", *GREEKS)
#: Relative agreement every method must reach against gpu_pricer auto.
RTOL = 1e-9
#: Values below FLOOR of their natural unit are compared against FLOOR * unit.
FLOOR = 1e-3

#: The issue's targets: (title, key of the method auto is compared with, minimum of
#: auto's rate / that method's rate).
TARGETS = (
    ("auto vs tutorial (NumPy + scipy.stats.norm)", "tutorial", 10.0),
    ("auto vs QuantLib per-option loop", "quantlib", 300.0),
    ("auto vs plain fused Numba loop", "plain_numba", 0.8),
)
#: The same targets against the baselines as users write them (module docstring).
USER_STYLE_TARGETS = (
    ("auto vs tutorial, one function per output", "tutorial_functions", 10.0),
    ("auto vs QuantLib engine per option", "quantlib_engine", 300.0),
)
#: QuantLib's evaluation date for the engine loop (any date: time is counted from it).
QL_TODAY = (15, 1, 2025)

INV_SQRT2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327

Array = np.ndarray[Any, Any]
Book = dict[str, Array]
Outputs = dict[str, Array]


# --- data -----------------------------------------------------------------------------


def make_book(n: int, rng: np.random.Generator) -> Book:
    """A realistic equity book: spot 50..150, strikes log-normal around the spot
    (sd 0.25, clipped to 0.25..4 times the spot), expiries log-uniform from one
    day to three years, vols 5%..80%, rates 0..5%, yields 0..3%, half calls."""
    spot = rng.uniform(50.0, 150.0, n)
    return {
        "option_type": rng.random(n) < 0.5,
        "spot": spot,
        "strike": spot * np.clip(np.exp(rng.normal(0.0, 0.25, n)), 0.25, 4.0),
        "t": np.exp(rng.uniform(math.log(1.0 / 365.0), math.log(3.0), n)),
        "sigma": rng.uniform(0.05, 0.8, n),
        "r": rng.uniform(0.0, 0.05, n),
        "q": rng.uniform(0.0, 0.03, n),
    }


def make_books(n: int, count: int, seed: int = SEED) -> list[Book]:
    """`count` independent books of `n` options, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [make_book(n, rng) for _ in range(count)]


# --- the methods ------------------------------------------------------------------------


def price_gpu_pricer(book: Book, backend: str) -> Outputs:
    """A plain `gpu_pricer.price` call, as a user makes it."""
    return gp.price(model="bsm", option_type=book["option_type"], spot=book["spot"],
                    strike=book["strike"], t=book["t"], sigma=book["sigma"], r=book["r"],
                    q=book["q"], greeks=GREEKS, backend=backend)


def price_tutorial(book: Book) -> Outputs:
    """Textbook Black-Scholes-Merton with NumPy and scipy.stats.norm, vectorised."""
    s, k, t, sigma, r, q = (book[x] for x in ("spot", "strike", "t", "sigma", "r", "q"))
    w = np.where(book["option_type"], 1.0, -1.0)
    sqt = np.sqrt(t)
    sd = sigma * sqt
    d1 = (np.log(s / k) + (r - q + 0.5 * sigma**2) * t) / sd
    d2 = d1 - sd
    dq = np.exp(-q * t)
    dr = np.exp(-r * t)
    nd1 = norm.cdf(w * d1)
    nd2 = norm.cdf(w * d2)
    pdf = norm.pdf(d1)
    return {
        "price": w * (s * dq * nd1 - k * dr * nd2),
        "delta": w * dq * nd1,
        "gamma": dq * pdf / (s * sd),
        "vega": s * dq * pdf * sqt,
        "theta": -0.5 * s * dq * pdf * sigma / sqt + w * (q * s * dq * nd1 - r * k * dr * nd2),
        "rho": w * k * t * dr * nd2,
    }


def _d1(s: Array, k: Array, t: Array, r: Array, q: Array, sigma: Array) -> Array:
    return (np.log(s / k) + (r - q + sigma**2 / 2) * t) / (sigma * np.sqrt(t))


def _d2(s: Array, k: Array, t: Array, r: Array, q: Array, sigma: Array) -> Array:
    return _d1(s, k, t, r, q, sigma) - sigma * np.sqrt(t)


def _bs_price(call: Array, s: Array, k: Array, t: Array, r: Array, q: Array,
              sigma: Array) -> Array:
    d1, d2 = _d1(s, k, t, r, q, sigma), _d2(s, k, t, r, q, sigma)
    c = s * np.exp(-q * t) * norm.cdf(d1) - k * np.exp(-r * t) * norm.cdf(d2)
    p = k * np.exp(-r * t) * norm.cdf(-d2) - s * np.exp(-q * t) * norm.cdf(-d1)
    return np.where(call, c, p)


def _bs_delta(call: Array, s: Array, k: Array, t: Array, r: Array, q: Array,
              sigma: Array) -> Array:
    d1 = _d1(s, k, t, r, q, sigma)
    return np.where(call, np.exp(-q * t) * norm.cdf(d1), -np.exp(-q * t) * norm.cdf(-d1))


def _bs_gamma(call: Array, s: Array, k: Array, t: Array, r: Array, q: Array,
              sigma: Array) -> Array:
    d1 = _d1(s, k, t, r, q, sigma)
    return np.exp(-q * t) * norm.pdf(d1) / (s * sigma * np.sqrt(t))


def _bs_vega(call: Array, s: Array, k: Array, t: Array, r: Array, q: Array,
             sigma: Array) -> Array:
    d1 = _d1(s, k, t, r, q, sigma)
    return s * np.exp(-q * t) * norm.pdf(d1) * np.sqrt(t)


def _bs_theta(call: Array, s: Array, k: Array, t: Array, r: Array, q: Array,
              sigma: Array) -> Array:
    d1, d2 = _d1(s, k, t, r, q, sigma), _d2(s, k, t, r, q, sigma)
    decay = -s * np.exp(-q * t) * norm.pdf(d1) * sigma / (2 * np.sqrt(t))
    c = decay - r * k * np.exp(-r * t) * norm.cdf(d2) + q * s * np.exp(-q * t) * norm.cdf(d1)
    p = decay + r * k * np.exp(-r * t) * norm.cdf(-d2) - q * s * np.exp(-q * t) * norm.cdf(-d1)
    return np.where(call, c, p)


def _bs_rho(call: Array, s: Array, k: Array, t: Array, r: Array, q: Array,
            sigma: Array) -> Array:
    d2 = _d2(s, k, t, r, q, sigma)
    return np.where(call, k * t * np.exp(-r * t) * norm.cdf(d2),
                    -k * t * np.exp(-r * t) * norm.cdf(-d2))


_TUTORIAL_FUNCTIONS = {"price": _bs_price, "delta": _bs_delta, "gamma": _bs_gamma,
                       "vega": _bs_vega, "theta": _bs_theta, "rho": _bs_rho}


def price_tutorial_functions(book: Book) -> Outputs:
    """The tutorial as tutorials write it: one function per output, each from
    the inputs (d1 and d2 computed again), calls and puts by their own
    formulas chosen with np.where."""
    args = [book[x] for x in ("option_type", "spot", "strike", "t", "r", "q", "sigma")]
    return {name: fn(*args) for name, fn in _TUTORIAL_FUNCTIONS.items()}


def whole_days(book: Book, m: int) -> Book:
    """The first `m` options of the book with expiries rounded to whole days
    (at least one) of an Actual/365 year, as the QuantLib engine loop prices them."""
    sample = {k: v[:m] for k, v in book.items()}
    sample["t"] = np.maximum(np.round(sample["t"] * 365.0), 1.0) / 365.0
    return sample


def price_quantlib_engine(book: Book, m: int) -> Outputs:
    """QuantLib as its users write it, for `whole_days(book, m)`: per option, a
    EuropeanOption priced by an AnalyticEuropeanEngine on a
    BlackScholesMertonProcess of flat curves (Actual/365, continuous rates)."""
    sample = whole_days(book, m)
    cols = [sample[x].tolist() for x in ("option_type", "spot", "strike", "t", "sigma", "r",
                                         "q")]
    today = ql.Date(*QL_TODAY)
    ql.Settings.instance().evaluationDate = today
    dc, cal = ql.Actual365Fixed(), ql.NullCalendar()
    res: list[list[float]] = [[], [], [], [], [], []]
    for is_call, s, k, t, sigma, r, q in zip(*cols, strict=True):
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, k)
        exercise = ql.EuropeanExercise(today + round(t * 365.0))
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(s)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, cal, sigma, dc)))
        option = ql.EuropeanOption(payoff, exercise)
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        res[0].append(option.NPV())
        res[1].append(option.delta())
        res[2].append(option.gamma())
        res[3].append(option.vega())
        res[4].append(option.theta())
        res[5].append(option.rho())
    return {name: np.array(col) for name, col in zip(OUTPUTS, res, strict=True)}


def price_quantlib(book: Book, m: int) -> Outputs:
    """One ql.BlackCalculator per option for the first `m` options of the book."""
    cols = [book[x][:m].tolist() for x in ("option_type", "spot", "strike", "t", "sigma", "r",
                                          "q")]
    call, put = ql.Option.Call, ql.Option.Put
    res: list[list[float]] = [[], [], [], [], [], []]
    for is_call, s, k, t, sigma, r, q in zip(*cols, strict=True):
        calc = ql.BlackCalculator(ql.PlainVanillaPayoff(call if is_call else put, k),
                                  s * math.exp((r - q) * t), sigma * math.sqrt(t),
                                  math.exp(-r * t))
        res[0].append(calc.value())
        res[1].append(calc.delta(s))
        res[2].append(calc.gamma(s))
        res[3].append(calc.vega(t))
        res[4].append(calc.theta(s, t))
        res[5].append(calc.rho(t))
    return {name: np.array(col) for name, col in zip(OUTPUTS, res, strict=True)}


@njit(parallel=True, nogil=True, fastmath=False, cache=False)
def _plain_kernel(is_call: Array, spot: Array, strike: Array, t: Array, sigma: Array, r: Array,
                  q: Array, out: Array) -> None:  # pragma: no cover - compiled
    """Textbook formulas, one fused parallel pass; out[0..5] = price, delta, gamma,
    vega, theta, rho."""
    for i in prange(spot.shape[0]):
        s = spot[i]
        k = strike[i]
        tt = t[i]
        v = sigma[i]
        rr = r[i]
        qq = q[i]
        w = 1.0 if is_call[i] else -1.0
        sqt = math.sqrt(tt)
        sd = v * sqt
        d1 = (math.log(s / k) + (rr - qq + 0.5 * v * v) * tt) / sd
        d2 = d1 - sd
        dq = math.exp(-qq * tt)
        dr = math.exp(-rr * tt)
        nd1 = 0.5 * math.erfc(-w * d1 * INV_SQRT2)
        nd2 = 0.5 * math.erfc(-w * d2 * INV_SQRT2)
        pdf = INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
        out[0, i] = w * (s * dq * nd1 - k * dr * nd2)
        out[1, i] = w * dq * nd1
        out[2, i] = dq * pdf / (s * sd)
        out[3, i] = s * dq * pdf * sqt
        out[4, i] = -0.5 * s * dq * pdf * v / sqt + w * (qq * s * dq * nd1 - rr * k * dr * nd2)
        out[5, i] = w * k * tt * dr * nd2


def plain_numba(n: int) -> Callable[[Book], Outputs]:
    """The plain fused Numba loop with its outputs preallocated (once, here)."""
    buf = np.empty((len(OUTPUTS), n))

    def run(book: Book) -> Outputs:
        _plain_kernel(book["option_type"], book["spot"], book["strike"], book["t"],
                      book["sigma"], book["r"], book["q"], buf)
        return {name: buf[j] for j, name in enumerate(OUTPUTS)}

    return run


# --- timing and checks ------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table."""

    key: str
    method: str
    backend: str
    options: int  # options priced per timed call
    times_s: list[float] = field(default_factory=list)
    reason: str = ""  # why it was not measured
    extrapolated: bool = False
    max_rel_err: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return bool(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def rate(self) -> float:
        """Options per second at the median time."""
        return self.options / self.median_s

    @property
    def best_rate(self) -> float:
        """Options per second at the minimum time."""
        return self.options / self.min_s


def time_methods(methods: dict[str, Callable[[Book], Outputs]],
                 books: Sequence[Book]) -> tuple[dict[str, list[float]], dict[str, Outputs]]:
    """A warm-up round on books[0], excluded; then one timed round per later book.

    Every round runs every method once, in an order rotated from round to
    round, so a drift in the machine's state (memory a VM touches for the
    first time, other load) falls on all methods alike, not on whichever would
    run first.  Returns each method's wall times and its outputs of the last
    round."""
    keys = list(methods)
    for key in keys:
        methods[key](books[0])
    times: dict[str, list[float]] = {key: [] for key in keys}
    last: dict[str, Outputs] = {}
    rounds = len(books) - 1
    for rnd, book in enumerate(books[1:]):
        shift = rnd % len(keys)
        for key in keys[shift:] + keys[:shift]:
            gc.collect()
            start = time.perf_counter()
            out = methods[key](book)
            times[key].append(time.perf_counter() - start)
            if rnd == rounds - 1:
                last[key] = out
            del out
    return times, last


def _unit(name: str, spot: Array) -> Array | float:
    """The natural size of an output for the floor of the comparison."""
    if name == "delta":
        return 1.0
    if name == "gamma":
        return 1.0 / spot
    return spot


def check_agreement(label: str, got: Outputs, ref: Outputs, spot: Array) -> dict[str, float]:
    """Largest error of each output against `ref`, relative to max(|ref|, FLOOR * unit);
    raises AssertionError beyond RTOL (or on a NaN)."""
    worst: dict[str, float] = {}
    for name in OUTPUTS:
        a = np.asarray(got[name], dtype=np.float64)
        b = ref[name]
        if a.shape != b.shape:
            raise AssertionError(f"{label}: {name} has shape {a.shape}, expected {b.shape}")
        err = np.abs(a - b) / np.maximum(np.abs(b), FLOOR * _unit(name, spot))
        bad = ~(err <= RTOL)  # catches NaN too
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AssertionError(
                f"{label}: {name} disagrees with gpu_pricer auto beyond {RTOL:g} relative in "
                f"{int(bad.sum())} of {b.size} rows; first row {i}: {a[i]!r} vs {b[i]!r}")
        worst[name] = float(err.max()) if err.size else 0.0
    return worst


# --- the run ----------------------------------------------------------------------------


def _first_use_error(backend: str, book: Book) -> str | None:
    """Why `backend` fails on a few rows of `book`, or None if it works."""
    try:
        price_gpu_pricer({k: v[:16] for k, v in book.items()}, backend)
    except Exception as exc:
        return f"failed at first use: {type(exc).__name__}: {exc}"
    return None


def auto_choice() -> str:
    """The backend ``backend="auto"`` uses for NumPy input, from `gp.backends()`:
    the configured default (GPU_PRICER_BACKEND) if set, else the first usable of
    the documented order."""
    configured = get_settings().backend
    if configured != "auto":
        return configured
    status = gp.backends()
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    for name in AUTO_ORDER:
        if status[name].available and not (name == "numba-cuda" and simulated):
            return name
    raise RuntimeError("gpu_pricer has no usable backend")


def run(size: int, repeat: int, ql_sample: int, log: Callable[[str], None],
        tiny: bool = False) -> dict[str, Any]:
    """Time every method and check them; returns the full report (no printing
    except progress lines through `log`)."""
    if size < 1 or repeat < 1 or ql_sample < 1:
        raise ValueError("size, repeat and the QuantLib sample must be positive")
    m = min(ql_sample, size)
    load_before = _loadavg()
    log(f"drawing {repeat + 1} books of {size:,} options (seed {SEED})")
    books = make_books(size, repeat + 1)
    last = books[-1]
    threads = numba.get_num_threads()
    statuses = gp.backends()
    # a backend that reports itself usable but fails at first use is not measured either
    failed = {name: _first_use_error(name, books[0]) for name, st in statuses.items()
              if st.available}
    available = [name for name, error in failed.items() if error is None]
    methods: dict[str, Callable[[Book], Outputs]] = {
        "auto": partial(price_gpu_pricer, backend="auto"),
        **{f"backend:{name}": partial(price_gpu_pricer, backend=name) for name in available},
        "tutorial": price_tutorial,
        "tutorial_functions": price_tutorial_functions,
        "quantlib": partial(price_quantlib, m=m),
        "quantlib_engine": partial(price_quantlib_engine, m=m),
        "plain_numba": plain_numba(size),
    }
    log(f"timing {len(methods)} methods: a warm-up round (JIT compilation) and {repeat} "
        f"timed rounds")
    times, outs = time_methods(methods, books)

    # read after use: a backend that failed at first use is reported unavailable
    chosen = auto_choice()
    ref = outs["auto"]
    if not np.all(ref["error"] == 0):
        raise AssertionError("gpu_pricer auto did not price every row of the book")
    auto = Result("auto", "gpu_pricer.price (plain call)", f"auto -> {chosen}", size,
                  times["auto"], max_rel_err=dict.fromkeys(OUTPUTS, 0.0))
    results = [auto]
    # Auto's outputs are bit for bit those of the backend it chose, if measured.
    auto_bitwise: bool | None = None
    for name, st in statuses.items():
        key = f"backend:{name}"
        res = Result(key, "gpu_pricer.price (plain call)", name, size)
        if key in times:
            res.times_s = times[key]
            res.max_rel_err = check_agreement(f"gpu_pricer {name}", outs[key], ref, last["spot"])
            if name == chosen:
                auto_bitwise = all(np.array_equal(outs[key][k], ref[k], equal_nan=True)
                                   for k in OUTPUTS)
        else:
            res.reason = failed.get(name) or st.reason
        results.append(res)

    res = Result("tutorial", "tutorial style: NumPy + scipy.stats.norm", "numpy + scipy", size,
                 times["tutorial"])
    res.max_rel_err = check_agreement("tutorial", outs["tutorial"], ref, last["spot"])
    results.append(res)

    res = Result("quantlib", f"QuantLib BlackCalculator per-option loop (rate extrapolated "
                 f"from a {m:,}-option sample)", f"QuantLib {ql.__version__}", m,
                 times["quantlib"], extrapolated=True)
    ref_m = {k: v[:m] for k, v in ref.items()}
    res.max_rel_err = check_agreement("QuantLib loop", outs["quantlib"], ref_m,
                                      last["spot"][:m])
    results.append(res)

    res = Result("tutorial_functions", "tutorial style, one function per output (NumPy + "
                 "scipy.stats.norm)", "numpy + scipy", size, times["tutorial_functions"])
    res.max_rel_err = check_agreement("tutorial, one function per output",
                                      outs["tutorial_functions"], ref, last["spot"])
    results.append(res)

    res = Result("quantlib_engine", f"QuantLib EuropeanOption + AnalyticEuropeanEngine per "
                 f"option (expiries in whole days; rate extrapolated from a {m:,}-option "
                 f"sample)", f"QuantLib {ql.__version__}", m, times["quantlib_engine"],
                 extrapolated=True)
    days = whole_days(last, m)
    ref_days = {k: np.asarray(v) for k, v in
                price_gpu_pricer(days, "auto").items()}  # the same rounded rows, untimed
    res.max_rel_err = check_agreement("QuantLib engine loop", outs["quantlib_engine"],
                                      ref_days, days["spot"])
    results.append(res)

    res = Result("plain_numba", "plain fused Numba loop (preallocated outputs)",
                 f"numba, {threads} threads", size, times["plain_numba"])
    res.max_rel_err = check_agreement("plain fused Numba loop", outs["plain_numba"], ref,
                                      last["spot"])
    results.append(res)
    log("timed and checked")

    return {
        "benchmark": "core",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {**machine_info(), "loadavg_1min_before": load_before,
                    "loadavg_1min_after": _loadavg()},
        "versions": versions(),
        "config": {
            "size": size,
            "tiny": tiny,
            "repeat": repeat,
            "quantlib_sample": m,
            "seed": SEED,
            "model": "bsm",
            "outputs": list(OUTPUTS),
            "dtype": "float64",
            "rtol": RTOL,
            "floor": FLOOR,
            "numba_threads": threads,
        },
        "backends": {k: {"available": v.available, "reason": v.reason}
                     for k, v in gp.backends().items()},
        "auto_backend": chosen,
        "auto_matches_backend_bitwise": auto_bitwise,
        "series_region_share": series_region_share(last),
        "methods": [result_dict(r, auto.rate) for r in results],
        "targets": targets(results),
        "user_style_targets": targets(results, USER_STYLE_TARGETS),
    }


def result_dict(res: Result, auto_rate: float) -> dict[str, Any]:
    """A row of the table with every figure, for the JSON."""
    row: dict[str, Any] = {
        "key": res.key,
        "method": res.method,
        "backend": res.backend,
        "measured": res.measured,
        "options_per_call": res.options,
        "extrapolated": res.extrapolated,
    }
    if not res.measured:
        row["reason"] = res.reason or "not available"
        return row
    row.update(
        times_s=res.times_s,
        median_s=res.median_s,
        min_s=res.min_s,
        options_per_s_median=res.rate,
        options_per_s_best=res.best_rate,
        ratio_vs_auto=res.rate / auto_rate,
        auto_vs_this=auto_rate / res.rate,
        max_rel_err_vs_auto=res.max_rel_err,
    )
    return row


def targets(results: Sequence[Result],
            wanted: Sequence[tuple[str, str, float]] = TARGETS) -> list[dict[str, Any]]:
    """The ratios of auto's median rate to another method's: the issue's three,
    or (USER_STYLE_TARGETS) the same against the baselines as users write them."""
    by_key = {r.key: r for r in results}
    auto = by_key["auto"]
    out = []
    for title, key, target in wanted:
        ratio = auto.rate / by_key[key].rate
        out.append({"name": title, "method": key, "ratio": ratio, "target": target,
                    "pass": ratio >= target})
    return out


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numba_threading_layer": _threading_layer(),
    }


def _loadavg() -> float | None:
    """The 1-minute load average: other work on the machine skews the timings."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _threading_layer() -> str:
    try:
        return str(numba.threading_layer())  # type: ignore[attr-defined]
    except ValueError:  # no parallel function has run yet
        return "not initialised"


def versions() -> dict[str, str]:
    return {
        "gpu_pricer": gp.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "QuantLib": ql.__version__,
        "python": platform.python_version(),
    }


# --- output -----------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(report: dict[str, Any]) -> str:
    """The Markdown table of the report."""
    lines = [
        "| method | backend | options/s (median) | options/s (best) | median time | min time "
        "| ratio vs gpu_pricer auto | auto vs this |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report["methods"]:
        method, backend = _cell(row["method"]), _cell(row["backend"])
        if not row["measured"]:
            lines.append(f"| {method} | {backend} | not measured: {_cell(row['reason'])} "
                         "| | | | | |")
            continue
        lines.append(
            f"| {method} | {backend} | {row['options_per_s_median']:,.0f} "
            f"| {row['options_per_s_best']:,.0f} | {row['median_s'] * 1e3:.2f} ms "
            f"| {row['min_s'] * 1e3:.2f} ms | {row['ratio_vs_auto']:.4g}x "
            f"| {row['auto_vs_this']:.4g}x |")
    return "\n".join(lines)


def series_region_share(book: Book) -> float:
    """Share of the book's rows that the kernels price by the cancellation-free
    series (short total vol, or far out of the money) rather than the textbook
    formula: the rows that cost more than the plain loop's."""
    from gpu_pricer.kernels import formulas

    s = book["sigma"] * np.sqrt(book["t"])
    x = np.log(book["spot"] / book["strike"]) + (book["r"] - book["q"]) * book["t"]
    h = -np.abs(x) / s
    series = (0.5 * s < formulas.SMALL_T) | (h + 0.5 * s < formulas.ASYMPTOTIC_D1)
    return float(np.mean(series))


def summary(report: dict[str, Any]) -> str:
    """Table, target ratios and the set-up, as printed and written to the .md."""
    cfg, mach, ver = report["config"], report["machine"], report["versions"]
    head = (
        f"gpu_pricer core benchmark, {report['timestamp']}: bsm, price + "
        f"{', '.join(GREEKS)}; N = {cfg['size']:,} options, median of {cfg['repeat']} "
        f"repeats on fresh data (warm-up excluded); QuantLib sample {cfg['quantlib_sample']:,}."
        f"\nMachine: {mach['cpu_model']}, {mach['cpus_usable']} usable of {mach['cpu_count']} "
        f"CPUs, {mach['hostname']}; Python {ver['python']}, numpy {ver['numpy']}, numba "
        f"{ver['numba']} ({cfg['numba_threads']} threads), scipy {ver['scipy']}, QuantLib "
        f"{ver['QuantLib']}; load average {_fmt_load(mach['loadavg_1min_before'])} before, "
        f"{_fmt_load(mach['loadavg_1min_after'])} after.\n"
        f"gpu_pricer auto chose: {report['auto_backend']}; "
        f"{report['series_region_share']:.0%} of the book's rows take the kernels' "
        "cancellation-free series."
    )
    if cfg["tiny"]:
        head += "\nSmoke run (--tiny): at this size the ratios mean nothing."
    def verdicts(tgts: list[dict[str, Any]]) -> list[str]:
        return [f"- {t['name']}: {t['ratio']:.3g}x (target >= {t['target']:g}x) "
                f"{'PASS' if t['pass'] else 'FAIL'}" for t in tgts]

    ratios = ["Issue targets (auto's median options/s over the method's):",
              *verdicts(report["targets"]),
              "The same targets against the tutorial and QuantLib as users write them "
              "(the issue's figures for scale: tutorial about 1.75 M options/s, QuantLib "
              "about 60 k/s):",
              *verdicts(report.get("user_style_targets", []))]
    return "\n\n".join([head, table(report), "\n".join(ratios)]) + "\n"


def _fmt_load(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.2f}"


def write_report(report: dict[str, Any], out_dir: Path, tiny: bool,
                 size: int = DEFAULT_SIZE) -> tuple[Path, Path]:
    """Write the JSON and the Markdown beside it; returns their paths.  A run at
    another size than the default gets its own files (n<size>), so a quick run
    never overwrites the full one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    host = report["machine"]["hostname"].replace(os.sep, "_")
    label = "-tiny" if tiny else ("" if size == DEFAULT_SIZE else f"-n{size}")
    stem = f"{dt.date.today().isoformat()}-{host}-core{label}"
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(summary(report), encoding="utf-8")
    return json_path, md_path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.core",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"options per book (default {DEFAULT_SIZE:,})")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"timed repeats, each on fresh data (default {DEFAULT_REPEAT})")
    parser.add_argument("--quantlib-sample", type=int, default=DEFAULT_QL_SAMPLE,
                        help=f"options in the QuantLib loop's sample (default "
                             f"{DEFAULT_QL_SAMPLE:,})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="directory for the JSON and Markdown results (default "
                             "bench/results)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"smoke run: N={TINY_SIZE:,}, {TINY_REPEAT} repeats, QuantLib "
                             f"sample {TINY_QL_SAMPLE}")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.repeat, args.quantlib_sample = TINY_SIZE, TINY_REPEAT, TINY_QL_SAMPLE
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and targets, write the results.

    Returns the report, with the written files under "files"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)

    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench.core {time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr,
              flush=True)

    report = {"command": " ".join(["python -m bench.core", *argv]),
              **run(args.size, args.repeat, args.quantlib_sample, log, args.tiny)}
    json_path, md_path = write_report(report, args.out, args.tiny, args.size)
    print(summary(report))
    print(f"Written: {json_path}\n         {md_path}")
    report["files"] = {"json": str(json_path), "md": str(md_path)}
    return report


if __name__ == "__main__":
    main()
