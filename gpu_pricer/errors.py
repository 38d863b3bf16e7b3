"""Per-row error codes returned in the ``"error"`` output of `gpu_pricer.price`
and `gpu_pricer.implied_vol` (one table; codes 8-11 are implied vol's).

A row with a non-zero code is not priced (solved): every value of that row is NaN.
A bad row never changes another row's result.  When several checks fail,
the smallest code wins.
"""

from __future__ import annotations

from enum import IntEnum

from .kernels import formulas as _f


class ErrorCode(IntEnum):
    """Why a row was not priced (0 means it was)."""

    OK = _f.OK
    NON_FINITE_INPUT = _f.NON_FINITE
    NEGATIVE_VOLATILITY = _f.NEG_SIGMA
    NEGATIVE_TIME = _f.NEG_T
    NON_POSITIVE_UNDERLYING = _f.BAD_UNDERLYING
    NON_POSITIVE_STRIKE = _f.BAD_STRIKE
    INVALID_OPTION_TYPE = _f.BAD_TYPE
    RESULT_NOT_FINITE = _f.OVERFLOW
    NON_POSITIVE_PRICE = _f.BAD_PRICE
    PRICE_BELOW_INTRINSIC = _f.BELOW_INTRINSIC
    PRICE_ABOVE_UPPER_BOUND = _f.ABOVE_BOUND
    NO_VOLATILITY_FOUND = _f.NO_SOLUTION


#: Code -> reason, the table quoted in README and the service's schema.
ERRORS: dict[int, str] = {
    ErrorCode.OK: "priced",
    ErrorCode.NON_FINITE_INPUT: (
        "an input is NaN or infinite (in the dtype asked for: past 3.4e38 for float32)"
    ),
    ErrorCode.NEGATIVE_VOLATILITY: "sigma < 0",
    ErrorCode.NEGATIVE_TIME: "t < 0",
    ErrorCode.NON_POSITIVE_UNDERLYING: "spot or forward <= 0 (bsm and black76)",
    ErrorCode.NON_POSITIVE_STRIKE: "strike <= 0 (bsm and black76)",
    ErrorCode.INVALID_OPTION_TYPE: "option_type is not call/put/c/p",
    ErrorCode.RESULT_NOT_FINITE: (
        "the price overflows float64, or a value would be NaN (an intermediate past the "
        "double range: inputs too large); a Greek past the double range is +-inf, not an error"
    ),
    ErrorCode.NON_POSITIVE_PRICE: "price <= 0 (implied_vol)",
    ErrorCode.PRICE_BELOW_INTRINSIC: (
        "price below the discounted intrinsic value by more than its rounding (implied_vol)"
    ),
    ErrorCode.PRICE_ABOVE_UPPER_BOUND: (
        "price at or above the no-arbitrage upper bound, or within 4 ulps of it "
        "(discounted forward for a call, discounted strike for a put; intrinsic value at "
        "t = 0): no finite volatility (implied_vol)"
    ),
    ErrorCode.NO_VOLATILITY_FOUND: (
        "no volatility float64 can give to full precision: a discount factor, the discounted "
        "forward or strike, or the price normalised by them is outside the normal double "
        "range, or |ln(F/K)| > 700; or the solver found no finite volatility (implied_vol)"
    ),
}
