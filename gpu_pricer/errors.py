"""Per-row error codes returned in the ``"error"`` output of `gpu_pricer.price`.

A row with a non-zero code is not priced: every value of that row is NaN.
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


#: Code -> reason, the table quoted in README and the service's schema.
ERRORS: dict[int, str] = {
    ErrorCode.OK: "priced",
    ErrorCode.NON_FINITE_INPUT: "an input is NaN or infinite",
    ErrorCode.NEGATIVE_VOLATILITY: "sigma < 0",
    ErrorCode.NEGATIVE_TIME: "t < 0",
    ErrorCode.NON_POSITIVE_UNDERLYING: "spot or forward <= 0 (bsm and black76)",
    ErrorCode.NON_POSITIVE_STRIKE: "strike <= 0 (bsm and black76)",
    ErrorCode.INVALID_OPTION_TYPE: "option_type is not call/put/c/p",
    ErrorCode.RESULT_NOT_FINITE: "the price overflows float64 (inputs too large)",
}
