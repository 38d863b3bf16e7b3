"""`implied_vol`: the volatility that reprices European options, on any backend."""

from __future__ import annotations

from typing import Any

from .inputs import build_request
from .pricing import compute, raise_bad_rows


def implied_vol(
    *,
    price: Any,
    model: str = "bsm",
    option_type: Any,
    strike: Any,
    t: Any,
    spot: Any = None,
    forward: Any = None,
    r: Any = 0.0,
    q: Any = 0.0,
    backend: str = "auto",
    strict: bool = False,
) -> dict[str, Any]:
    """Implied volatility of European option prices, vectorised over all inputs.

    Example:
        >>> out = implied_vol(price=8.902417741298, option_type="call", spot=100.0,
        ...                   strike=95.0, t=0.5, r=0.03, q=0.01)
        >>> round(float(out["implied_vol"]), 12), int(out["error"])
        (0.2, 0)

    The inverse of `gpu_pricer.price` in ``sigma``: the same models, keywords
    and units, with ``price`` (the option's present value, in the
    underlying's price units) in place of ``sigma``.

    Method:
        bsm and black76: P. Jaeckel's "Let's Be Rational" (2015): the price's
        normalised out-of-the-money time value, a first guess from rational
        cubic interpolation in four branches, and third-order Householder
        steps on a branch-specific objective, usually two, to machine
        precision.  bachelier (the normal vol, price units per sqrt(year)):
        Householder steps on ``ln`` of the normalised time value from
        asymptotic first guesses.  See `gpu_pricer.kernels.implied`.

    Accuracy:
        Wherever the price carries information about sigma in float64, the
        result reprices to the input within a few ulps and matches the
        true sigma to about 1e-12 relative or better (README, "Implied
        volatility").  Information runs out where the time value is lost
        to rounding: deep in the money (the time value is below the
        price's last digit: the result is the volatility of the time value
        that remains after subtracting the intrinsic value, 0 when none
        does), where the price rounds to the upper bound (code 10), and
        far out of the money where the price underflows.

    Args (keyword-only; numbers broadcast against arrays):
        price: option prices (present values), > 0.
        model, option_type, strike, t, spot, forward, r, q, backend: as in
            `gpu_pricer.price`.
        strict: raise instead of marking bad rows.

    Returns:
        A dict of arrays in input order and shape: "implied_vol" (per
        sqrt(year); lognormal for bsm and black76, absolute for bachelier)
        and "error" (int8 codes, the table `gpu_pricer.ERRORS`: 8 = price
        <= 0, 9 = below intrinsic value, 10 = at or above the upper bound,
        11 = no volatility found).  A price equal to its intrinsic value
        gives 0.  Rows with a non-zero code are NaN.

    Raises:
        ValueError: a whole-call mistake (unknown model, spot given to a
            forward model, shapes that do not broadcast), or any bad row
            when ``strict=True``.
        RuntimeError: an explicitly named backend is unavailable.

    References:
        P. Jaeckel, "Let's Be Rational", Wilmott (2015) 40-53;
        R. Delbourgo & J. A. Gregory, "Shape preserving piecewise rational
        interpolation", SIAM J. Sci. Stat. Comput. 6 (1985);
        P. Jaeckel, "Implied Normal Volatility", Wilmott (2017).
    """
    req = build_request(
        model=model,
        option_type=option_type,
        strike=strike,
        t=t,
        sigma=price,
        spot=spot,
        forward=forward,
        r=r,
        q=q,
        greeks=(),
        dtype="float64",
        kind="implied_vol",
    )
    out, err = compute(req, backend)
    if strict:
        raise_bad_rows(err, "solved")
    return {"implied_vol": out[0].reshape(req.shape), "error": err.reshape(req.shape)}
