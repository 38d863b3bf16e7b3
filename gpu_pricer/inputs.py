"""Argument checking and normalisation for `gpu_pricer.price` (no pricing here).

Whole-call mistakes (an unknown model, a Greek the model lacks, ``spot``
given to a forward model, shapes that do not broadcast) raise a
`ValueError` before anything is computed.  Row-level problems (a NaN, a
negative vol, an unknown option type in an array) are left to the kernels,
which mark just that row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .kernels import formulas as f
from .kernels import text

MODELS: dict[str, int] = {"bsm": f.BSM, "black76": f.BLACK76, "bachelier": f.BACHELIER}

#: Every Greek, in output order, with the value index the kernels use.
GREEKS: dict[str, int] = {
    "delta": f.DELTA,
    "gamma": f.GAMMA,
    "vega": f.VEGA,
    "theta": f.THETA,
    "rho": f.RHO,
    "dividend_rho": f.DIVIDEND_RHO,
    "vanna": f.VANNA,
    "volga": f.VOLGA,
    "charm": f.CHARM,
    "speed": f.SPEED,
    "zomma": f.ZOMMA,
    "color": f.COLOR,
    "veta": f.VETA,
}
BSM_ONLY_GREEKS = frozenset({"dividend_rho"})
DTYPES = ("float64", "float32")

_CALL = 1
_PUT = 0
_INVALID = -1
_TYPE_WORDS = {"call": _CALL, "c": _CALL, "put": _PUT, "p": _PUT}

#: Output tiers: a kernel computes value codes 0..size-1 for the smallest
#: size covering the request (price only; first-order Greeks; everything).
TIERS = (1, f.DIVIDEND_RHO + 1, f.N_VALUES)

#: Order of the numeric inputs handed to the kernels (after option_type).
FIELDS = ("underlying", "strike", "t", "sigma", "r", "q")


@dataclass(frozen=True)
class Request:
    """A checked call: flat 1-d inputs (length n or 1) ready for a kernel."""

    model: int
    kind: str  # "price" or "implied_vol"
    xp: ModuleType
    shape: tuple[int, ...]
    n: int
    dtype: np.dtype[Any]
    otype: Any
    values: tuple[Any, ...]  # underlying, strike, t, sigma (implied_vol: price), r, q
    names: tuple[str, ...]  # output names: "price", then the Greeks
    codes: np.ndarray[Any, np.dtype[np.int64]]  # value code of each name

    @property
    def size(self) -> int:
        """Rows of the output buffer: value codes 0..size-1 (the tier)."""
        top = max(self.codes.tolist()) + 1
        return next(size for size in TIERS if size >= top)

    @property
    def steps(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        arrays = (self.otype, *self.values)
        return np.array([1 if a.shape[0] == self.n and self.n > 1 else 0 for a in arrays],
                        dtype=np.int64)


def model_code(model: str) -> int:
    try:
        return MODELS[model]
    except (KeyError, TypeError):
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}") from None


def greek_names(greeks: str | Iterable[str], model: str) -> tuple[str, ...]:
    """Requested Greeks in the caller's order, duplicates removed; "all"
    means every Greek the model has."""
    if isinstance(greeks, str):
        if greeks != "all":
            raise ValueError(f"greeks must be 'all' or a list of names, got {greeks!r}")
        return tuple(g for g in GREEKS if model == "bsm" or g not in BSM_ONLY_GREEKS)
    names: list[str] = []
    for g in greeks:
        if g not in GREEKS:
            raise ValueError(f"unknown Greek {g!r}; valid: {', '.join(GREEKS)}")
        if g in BSM_ONLY_GREEKS and model != "bsm":
            raise ValueError(f"{g} is defined for model 'bsm' only, not {model!r}")
        if g not in names:
            names.append(g)
    return tuple(names)


def _array_module(values: Sequence[Any]) -> ModuleType:
    for v in values:
        if type(v).__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415

            return cupy  # type: ignore[no-any-return]
    return np


def _numeric(xp: ModuleType, name: str, value: Any, dtype: np.dtype[Any]) -> Any:
    try:
        arr = xp.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be read as numbers ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got an array of dtype {arr.dtype}")
    # a value past the dtype's range (1e39 as float32) becomes inf, and its
    # row NON_FINITE_INPUT: a per-row error, not a warning
    with np.errstate(over="ignore"):
        return arr.astype(dtype, copy=False)


def option_codes(xp: ModuleType, value: Any) -> Any:
    """1 for call, 0 for put, -1 for anything else (a per-row error)."""
    if isinstance(value, str):
        code = _TYPE_WORDS.get(value.lower())
        if code is None:
            raise ValueError(f"option_type must be call/put/c/p (any case), got {value!r}")
        return xp.asarray(code, dtype=np.int8)
    if isinstance(value, (bool, np.bool_)):
        return xp.asarray(_CALL if value else _PUT, dtype=np.int8)
    arr = value if xp is not np else np.asarray(value)
    if arr.dtype == np.bool_:
        return arr.view(np.int8)  # True/False are the bytes 1/0: the codes, no copy
    if xp is not np:
        raise ValueError("option_type on the device must be a boolean array (True = call)")
    if arr.dtype.kind == "O":
        arr = arr.astype(str)
    if arr.dtype.kind not in "US":
        raise ValueError(
            f"option_type must be strings or booleans (True = call), got dtype {arr.dtype}"
        )
    return text_codes(arr)


def text_codes(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The codes of a NumPy ``U`` (code points) or ``S`` (bytes; any byte
    past ASCII makes a row invalid) array of option types, in a compiled
    loop over its fixed-width units."""
    unit = np.uint32 if arr.dtype.kind == "U" else np.uint8
    width = arr.dtype.itemsize // np.dtype(unit).itemsize
    out = np.empty(arr.shape, dtype=np.int8)
    if width == 0:
        out.fill(_INVALID)
        return out
    units = np.ascontiguousarray(arr).view(unit).reshape(-1, width)
    text.fixed_width_codes(units, out.reshape(-1))
    return out


def option_type_of(codes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The `option_type` argument whose codes are `codes` (int8: 1 call, 0
    put, -1 invalid): a boolean view of them when every row is valid (no
    copy, and `price` reads it back as the same bytes), else one-letter
    strings, ``"?"`` where invalid."""
    if codes.size == 0 or codes.min() >= 0:
        return codes.view(np.bool_)
    letters: np.ndarray[Any, Any] = np.array(["?", "p", "c"])[codes + 1]
    return letters


def _flat(xp: ModuleType, arr: Any, shape: tuple[int, ...]) -> Any:
    if arr.size == 1:
        return arr.reshape(1)
    if arr.shape != shape:
        arr = xp.broadcast_to(arr, shape)
    return xp.ascontiguousarray(arr).reshape(-1)


def build_request(
    *,
    model: str,
    option_type: Any,
    strike: Any,
    t: Any,
    sigma: Any,
    spot: Any,
    forward: Any,
    r: Any,
    q: Any,
    greeks: str | Iterable[str],
    dtype: Any,
    kind: str = "price",
) -> Request:
    """Check every whole-call rule and return flat inputs for the kernels.

    ``kind="implied_vol"``: `sigma` holds the prices and the one output is
    "implied_vol".
    """
    code = model_code(model)
    if model == "bsm":
        if forward is not None:
            raise ValueError("model 'bsm' takes spot, not forward (use black76 for a forward)")
        if spot is None:
            raise ValueError("model 'bsm' needs spot")
        underlying, und_name = spot, "spot"
    else:
        if spot is not None:
            raise ValueError(f"model {model!r} takes forward, not spot")
        if forward is None:
            raise ValueError(f"model {model!r} needs forward")
        underlying, und_name = forward, "forward"
        if not (np.isscalar(q) and q == 0):
            raise ValueError(f"q applies to model 'bsm' only, not {model!r}")
    if kind == "implied_vol":
        names: tuple[str, ...] = ("implied_vol",)
        value_name = "price"
    else:
        names = ("price", *greek_names(greeks, model))
        value_name = "sigma"
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    dt = np.dtype(str(dtype))
    raw = {und_name: underlying, "strike": strike, "t": t, value_name: sigma, "r": r, "q": q}
    xp = _array_module([option_type, *raw.values()])
    arrays = {name: _numeric(xp, name, v, dt) for name, v in raw.items()}
    otype = option_codes(xp, option_type)
    try:
        shape = tuple(np.broadcast_shapes(otype.shape, *(a.shape for a in arrays.values())))
    except ValueError:
        shapes = ", ".join(f"{k}{tuple(a.shape)}" for k, a in arrays.items())
        raise ValueError(
            f"inputs do not broadcast together: option_type{tuple(otype.shape)}, {shapes}"
        ) from None
    n = math.prod(shape)
    flat = tuple(_flat(xp, a, shape) for a in arrays.values())
    codes = np.array([f.PRICE, *(GREEKS[g] for g in names[1:])], dtype=np.int64)
    return Request(
        model=code,
        kind=kind,
        xp=xp,
        shape=shape,
        n=n,
        dtype=dt,
        otype=_flat(xp, otype, shape),
        values=flat,
        names=names,
        codes=codes,
    )
