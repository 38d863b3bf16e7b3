"""Whole-call errors, per-row errors, broadcasting and option types."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpu_pricer as gp
from gpu_pricer import ERRORS, ErrorCode


def test_public_names() -> None:
    assert gp.MODELS == ("bsm", "black76", "bachelier")
    assert gp.GREEKS[:5] == ("delta", "gamma", "vega", "theta", "rho")
    assert len(gp.GREEKS) == 13
    assert set(ERRORS) == {int(c) for c in ErrorCode}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "heston"}, "model must be one of"),
        ({"forward": 100.0}, "takes spot, not forward"),
        ({"spot": None}, "needs spot"),
        ({"greeks": ["delta", "gamma_x"]}, "unknown Greek 'gamma_x'"),
        ({"greeks": "some"}, "greeks must be 'all'"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"option_type": "straddle"}, "option_type must be call/put"),
        ({"strike": [1.0, 2.0], "t": [1.0, 2.0, 3.0]}, "do not broadcast"),
        ({"sigma": ["a", "b"]}, "sigma: expected numbers"),
        ({"option_type": [1, 0]}, "option_type must be strings or booleans"),
    ],
)
def test_whole_call_errors(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"option_type": "call", "spot": 100.0, "strike": 100.0,
                               "t": 1.0, "sigma": 0.2}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gp.price(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["black76", "bachelier"])
def test_forward_models_refuse_spot_and_q(model: str) -> None:
    with pytest.raises(ValueError, match="takes forward, not spot"):
        gp.price(model=model, option_type="c", spot=1.0, strike=1.0, t=1.0, sigma=0.2)
    with pytest.raises(ValueError, match="needs forward"):
        gp.price(model=model, option_type="c", strike=1.0, t=1.0, sigma=0.2)
    with pytest.raises(ValueError, match="q applies to model 'bsm' only"):
        gp.price(model=model, option_type="c", forward=1.0, strike=1.0, t=1.0, sigma=0.2, q=0.01)
    with pytest.raises(ValueError, match="dividend_rho is defined for model 'bsm' only"):
        gp.price(model=model, option_type="c", forward=1.0, strike=1.0, t=1.0, sigma=0.2,
                 greeks=["dividend_rho"])


def test_greeks_all_per_model() -> None:
    out = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2, greeks="all")
    assert list(out) == ["price", *gp.GREEKS, "error"]
    out = gp.price(model="black76", option_type="call", forward=100.0, strike=100.0, t=1.0,
                   sigma=0.2, greeks="all")
    assert "dividend_rho" not in out
    assert len(out) == 1 + 12 + 1


def test_option_type_forms(backend: str) -> None:
    words = np.array(["call", "CALL", "c", "C", "put", "Put", "p", "P", "x", ""])
    out = gp.price(option_type=words, spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                   backend=backend)
    call = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                    backend=backend)["price"]
    put = gp.price(option_type="put", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                   backend=backend)["price"]
    np.testing.assert_array_equal(out["price"][:4], call)
    np.testing.assert_array_equal(out["price"][4:8], put)
    assert np.isnan(out["price"][8:]).all()
    assert (out["error"][8:] == ErrorCode.INVALID_OPTION_TYPE).all()
    booleans = gp.price(option_type=np.array([True, False]), spot=100.0, strike=100.0, t=1.0,
                        sigma=0.2, backend=backend)
    np.testing.assert_array_equal(booleans["price"], [call, put])
    objects = gp.price(option_type=np.array(["call", "p"], dtype=object), spot=100.0,
                       strike=100.0, t=1.0, sigma=0.2, backend=backend)
    np.testing.assert_array_equal(objects["price"], [call, put])


def test_bad_rows_are_marked_and_isolated(backend: str) -> None:
    spot = np.array([100.0, np.nan, 100.0, 100.0, -5.0, 100.0, 100.0, 1e300, 100.0])
    strike = np.array([95.0, 95.0, 95.0, 95.0, 95.0, 0.0, 95.0, 1e-300, 95.0])
    t = np.array([0.5, 0.5, -1.0, 0.5, 0.5, 0.5, np.inf, 0.5, 0.5])
    sigma = np.array([0.2, 0.2, 0.2, -0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    out = gp.price(option_type="call", spot=spot, strike=strike, t=t, sigma=sigma,
                   greeks="all", backend=backend)
    expected = [0, ErrorCode.NON_FINITE_INPUT, ErrorCode.NEGATIVE_TIME,
                ErrorCode.NEGATIVE_VOLATILITY, ErrorCode.NON_POSITIVE_UNDERLYING,
                ErrorCode.NON_POSITIVE_STRIKE, ErrorCode.NON_FINITE_INPUT, 0, 0]
    np.testing.assert_array_equal(out["error"][:7], expected[:7])
    good = gp.price(option_type="call", spot=100.0, strike=95.0, t=0.5, sigma=0.2,
                    greeks="all", backend=backend)
    for name in ["price", *gp.GREEKS]:
        bad_rows = out["error"] != 0
        assert np.isnan(out[name][bad_rows]).all(), name
        # neighbours of bad rows are priced exactly as alone
        assert out[name][0] == good[name], name
        assert out[name][8] == good[name], name
    # a row with a huge but finite forward either prices finitely or is flagged
    assert out["error"][7] in (0, ErrorCode.RESULT_NOT_FINITE)
    if out["error"][7] == 0:
        assert np.isfinite(out["price"][7])


def test_strict_names_rows() -> None:
    with pytest.raises(ValueError, match=r"2 row\(s\) cannot be priced: row 1: sigma < 0, "
                                         r"row 3: t < 0"):
        gp.price(option_type="call", spot=100.0, strike=100.0, t=[1.0, 1.0, 1.0, -1.0],
                 sigma=[0.2, -0.2, 0.2, 0.2], strict=True)
    # strict with clean input returns normally
    out = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2, strict=True)
    assert out["error"] == 0


def test_broadcasting_and_shapes(backend: str) -> None:
    strikes = np.linspace(80, 120, 5)
    expiries = np.array([[0.25], [1.0]])
    out = gp.price(option_type="put", spot=100.0, strike=strikes, t=expiries, sigma=0.25,
                   greeks=["delta"], backend=backend)
    assert out["price"].shape == (2, 5)
    assert out["error"].shape == (2, 5)
    for i, te in enumerate(expiries[:, 0]):
        for j, k in enumerate(strikes):
            one = gp.price(option_type="put", spot=100.0, strike=k, t=te, sigma=0.25,
                           greeks=["delta"], backend=backend)
            assert out["price"][i, j] == one["price"]
            assert out["delta"][i, j] == one["delta"]
    scalar = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2)
    assert scalar["price"].shape == ()
    empty = gp.price(option_type="call", spot=np.array([]), strike=100.0, t=1.0, sigma=0.2,
                     backend=backend)
    assert empty["price"].shape == (0,)


def test_greek_order_and_duplicates() -> None:
    out = gp.price(option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2,
                   greeks=["vega", "delta", "vega"])
    assert list(out) == ["price", "vega", "delta", "error"]


def test_input_order_preserved(backend: str) -> None:
    rng = np.random.default_rng(3)
    k = rng.uniform(50, 150, 1000)
    out = gp.price(option_type="call", spot=100.0, strike=k, t=1.0, sigma=0.2, backend=backend)
    order = np.argsort(k)
    # calls fall as the strike rises: the output follows the input order
    assert (np.diff(out["price"][order]) < 0).all()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_float32_input_past_its_range_is_a_row_error(backend: str) -> None:
    """1e39 is finite as a float64 and infinite as a float32: with
    dtype="float32" its row is NON_FINITE_INPUT, its neighbour priced as
    usual, and no overflow warning is raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gp.price(model="bsm", option_type="call", spot=np.array([100.0, 1e39]),
                       strike=100.0, t=1.0, sigma=0.2, dtype="float32", backend=backend)
    assert out["error"].tolist() == [0, gp.ErrorCode.NON_FINITE_INPUT]
    assert np.isnan(out["price"][1])
    ref = gp.price(model="bsm", option_type="call", spot=100.0, strike=100.0, t=1.0, sigma=0.2)
    np.testing.assert_allclose(out["price"][0], ref["price"], rtol=1e-6)


def test_boolean_option_types_are_read_in_place() -> None:
    """A boolean option_type array is its own codes (True = call = 1, False = put
    = 0): viewed, not copied, and never written."""
    from gpu_pricer.inputs import option_codes

    flags = np.array([True, False, False, True])
    codes = option_codes(np, flags)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, [1, 0, 0, 1])
    assert np.shares_memory(codes, flags)
    gp.price(option_type=flags, spot=100.0, strike=[90.0, 95.0, 100.0, 105.0], t=1.0,
             sigma=0.2, backend="numba")
    np.testing.assert_array_equal(flags, [True, False, False, True])
