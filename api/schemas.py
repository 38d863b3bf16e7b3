"""Request and response bodies of the JSON API, with units in every field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Model = Literal["bsm", "black76", "bachelier"]
GreekName = Literal[
    "delta", "gamma", "vega", "theta", "rho", "dividend_rho", "vanna", "volga", "charm",
    "speed", "zomma", "color", "veta",
]


class _Contract(BaseModel):
    """The terms of one option, shared by pricing and implied vol."""

    model_config = ConfigDict(extra="forbid")

    option_type: Literal["call", "put", "c", "p", "CALL", "PUT", "C", "P", "Call", "Put"] = Field(
        description="call or put (c/p accepted)."
    )
    spot: float | None = Field(None, description="Spot price (bsm only), currency units.")
    forward: float | None = Field(
        None, description="Forward price (black76, bachelier only), currency units."
    )
    strike: float = Field(description="Strike price, currency units.")
    t: float = Field(description="Time to expiry in years (>= 0).")
    r: float = Field(0.0, description="Continuously compounded risk-free rate per year.")
    q: float = Field(0.0, description="Continuous dividend yield per year (bsm only).")
    id: str | None = Field(None, max_length=256, description="Echoed back in the result.")


class OptionIn(_Contract):
    """One option; field names are gpu_pricer.price's keywords."""

    sigma: float = Field(
        description="Volatility per sqrt(year): lognormal (0.2 = 20%) for bsm/black76, "
        "absolute in price units for bachelier (>= 0)."
    )


class ImpliedVolOptionIn(_Contract):
    """One option and its price; field names are gpu_pricer.implied_vol's keywords."""

    price: float = Field(
        description="Option price: its present value, in the underlying's price units "
        "(currency units), > 0."
    )


class PriceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Model = Field("bsm", description="Pricing model.")
    greeks: list[GreekName] | Literal["all"] = Field(
        default_factory=list, description="Greeks to return, or 'all'."
    )
    strict: bool = Field(False, description="Reject the request (422) if any row is bad.")
    options: list[OptionIn] = Field(description="The options, answered in the same order.")


class ImpliedVolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Model = Field("bsm", description="Model the prices are inverted under.")
    strict: bool = Field(False, description="Reject the request (422) if any row is bad.")
    options: list[ImpliedVolOptionIn] = Field(
        description="The options, answered in the same order."
    )


class RowError(BaseModel):
    code: int = Field(description="gpu_pricer.ERRORS code (never 0 here).")
    reason: str


class PriceResult(BaseModel):
    """price and the requested Greeks, in the units of gpu_pricer.price:
    vega per 1.00 vol, theta per year (-dV/dt), rho and dividend_rho per 1.00
    of rate; null values when the row could not be priced, and for a Greek
    that is infinite (JSON has no infinity): at its singular limit (gamma at
    expiry at the money), or past the double range for inputs far past any
    market (theta at r t = -700); the Arrow answer carries them as +-inf."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    price: float | None = Field(description="Option value, currency units.")
    error: RowError | None = Field(description="Why the row was not priced, or null.")


class PriceResponse(BaseModel):
    model: Model
    backend: str = Field(description="Backend that priced the request.")
    results: list[PriceResult] = Field(description="results[i] answers options[i].")


class ImpliedVolResult(BaseModel):
    """The volatility that reprices the row's option (gpu_pricer.implied_vol)."""

    id: str | None = None
    implied_vol: float | None = Field(
        description="Implied volatility per sqrt(year): lognormal (0.2 = 20%) for bsm and "
        "black76, absolute (normal) in the underlying's price units for bachelier; null when "
        "the row has an error."
    )
    error: RowError | None = Field(description="Why no volatility was found, or null.")


class ImpliedVolResponse(BaseModel):
    model: Model
    backend: str = Field(description="Backend that solved the request.")
    results: list[ImpliedVolResult] = Field(description="results[i] answers options[i].")
