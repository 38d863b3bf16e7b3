"""`price`: European options and their Greeks on any backend."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from . import buffers, dispatch
from .errors import ERRORS
from .inputs import Request, build_request


def price(
    *,
    model: str = "bsm",
    option_type: Any,
    strike: Any,
    t: Any,
    sigma: Any,
    spot: Any = None,
    forward: Any = None,
    r: Any = 0.0,
    q: Any = 0.0,
    greeks: str | Iterable[str] = (),
    backend: str = "auto",
    dtype: str = "float64",
    strict: bool = False,
) -> dict[str, Any]:
    """Price European options and their Greeks, vectorised over all inputs.

    Example:
        >>> out = price(option_type="call", spot=100.0, strike=95.0, t=0.5,
        ...             sigma=0.2, r=0.03, q=0.01, greeks=["delta", "vega"])
        >>> round(float(out["price"]), 10), round(float(out["delta"]), 10)
        (8.9024177413, 0.6894554648)
        >>> int(out["error"])
        0

    Models:
        - ``"bsm"``: Black-Scholes-Merton on ``spot`` with continuous dividend
          yield ``q`` (Garman-Kohlhagen: ``q`` = the foreign rate).
        - ``"black76"``: Black (1976) on ``forward``, discounted at ``r``.
        - ``"bachelier"``: the normal model on ``forward``, ``sigma`` an absolute
          (normal) vol in price units per sqrt(year); negative forwards and
          strikes are valid.

    Args (all keyword-only; numbers broadcast against arrays):
        option_type: "call"/"put"/"c"/"p" in any case, as a scalar or array,
            or a boolean array (True = call).  An unknown word in an array is
            a per-row error.
        strike: strike price, in the underlying's price units.
        t: time to expiry in years (>= 0).
        sigma: volatility per sqrt(year): lognormal (0.2 = 20%) for bsm and
            black76, absolute for bachelier (>= 0).
        spot: spot price (bsm only).
        forward: forward price (black76 and bachelier only).
        r: continuously compounded risk-free rate per year (0.03 = 3%).
        q: continuous dividend yield per year (bsm only).
        greeks: names from `GREEKS`, or "all" (dividend_rho is bsm only).
        backend: "auto", "numpy", "numba", "cupy" or "numba-cuda".
        dtype: "float64", or "float32" for half the memory traffic (inputs
            and outputs in float32, arithmetic in float64; see README for
            the measured accuracy).
        strict: raise instead of marking bad rows.

    Greeks and their units (QuantLib conventions):
        delta, gamma: d/dS, d2/dS2 (bsm) or d/dF, d2/dF2 (black76, bachelier).
        vega: dV/dsigma per 1.00 of vol.  theta: change in value per year as
        calendar time passes, -dV/dt (negative for most long options).
        rho: dV/dr per 1.00 of rate (forward held fixed in black76 and
        bachelier, so rho = -t * price).  dividend_rho: dV/dq per 1.00 (bsm).
        vanna d2V/dS dsigma, volga d2V/dsigma2, speed d3V/dS3,
        zomma d3V/dS2 dsigma; charm, color, veta: -d/dt of delta, gamma
        and vega (per year of calendar time, like theta).

    Returns:
        A dict of arrays in input order and shape: "price", each requested
        Greek, and "error" (int8 codes, 0 = priced; see `ERRORS`).  Rows with
        a non-zero code are NaN everywhere.  NumPy in, NumPy out; CuPy in,
        CuPy out (on the device).

    Raises:
        ValueError: a whole-call mistake (unknown model or Greek, spot given
            to a forward model, shapes that do not broadcast), or any bad
            row when ``strict=True`` (the message names the first ones).
        RuntimeError: an explicitly named backend is unavailable.

    References:
        Black & Scholes (1973); Merton (1973); Black (1976); Bachelier (1900);
        E. G. Haug, The Complete Guide to Option Pricing Formulas, 2nd ed.
        (2007), ch. 1-2 for the Greeks; P. Jaeckel, "Let's Be Rational"
        (2015) for the normalised Black function.
    """
    req = build_request(
        model=model,
        option_type=option_type,
        strike=strike,
        t=t,
        sigma=sigma,
        spot=spot,
        forward=forward,
        r=r,
        q=q,
        greeks=greeks,
        dtype=dtype,
    )
    out, err = compute(req, backend)
    if strict:
        raise_bad_rows(err)
    result = {name: out[code].reshape(req.shape) for name, code in
              zip(req.names, req.codes, strict=True)}
    result["error"] = err.reshape(req.shape)
    return result


def compute(req: Request, backend: str, out: Any = None, err: Any = None) -> tuple[Any, Any]:
    """(out, err) for a checked request on `backend`, falling back under "auto".

    `out` (shape (req.size, req.n), req.dtype) and `err` (req.n, int8) are
    filled when given (a caller pricing the same rows many times reuses them);
    otherwise they are allocated."""
    xp = req.xp
    # one row per value code of the tier; the result's arrays are views of its rows
    if out is None and xp is np:
        out = buffers.OUTPUTS.empty((req.size, req.n), req.dtype)
    elif out is None:
        out = xp.empty((req.size, req.n), dtype=req.dtype)
    if err is None:
        err = xp.empty(req.n, dtype=np.int8)
    if req.n == 0:
        return out, err
    tried = dispatch.candidates(backend, on_device=xp is not np)
    for i, name in enumerate(tried):
        try:
            dispatch.RUNNERS[name](req, out, err)
            return out, err
        except Exception as exc:
            if len(tried) == 1 or i == len(tried) - 1:
                raise
            dispatch.mark_failed(name, exc)
    raise AssertionError("unreachable")  # pragma: no cover


def raise_bad_rows(err: Any, verb: str = "priced") -> None:
    """ValueError naming the first rows with a non-zero code, if any."""
    host = err.get() if hasattr(err, "get") else np.asarray(err)
    bad = np.flatnonzero(host)
    if bad.size:
        first = ", ".join(f"row {i}: {ERRORS[int(host[i])]}" for i in bad[:5])
        more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
        raise ValueError(f"{bad.size} row(s) cannot be {verb}: {first}{more}")
