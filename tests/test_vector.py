"""The vectorised bsm kernel (gpu_pricer/kernels/vector.py): its exp and log
within 1 ulp of libm, its N(z) and n(z) within a few ulps of mpmath, and every
row it prices equal, to a few ulps, to the row kernel's value for that row --
in each of its regions, and exactly (the row function itself) for every row
it leaves: bad rows, limits, far tails."""

from __future__ import annotations

import math
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from numba import njit, prange

from gpu_pricer import dispatch
from gpu_pricer.inputs import build_request
from gpu_pricer.kernels import cpu, formulas, vector

from .conftest import SIMULATED

pytestmark = pytest.mark.skipif(SIMULATED, reason="CPU kernels only")


@njit(parallel=True)
def _apply(f: Any, x: Any, out: Any) -> None:  # pragma: no cover - compiled
    for i in prange(x.shape[0]):
        out[i] = f(x[i])


@njit
def _ncdf(z: Any, cdf: Any, pdf: Any) -> None:  # pragma: no cover - compiled
    vncdf = _VNCDF
    for i in range(z.shape[0]):
        cdf[i], pdf[i] = vncdf(z[i])


_VNCDF = vector.vncdf


def _ulps(got: np.ndarray[Any, Any], ref: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(np.abs(got - ref) / np.spacing(np.abs(ref)))


def test_exp_and_log_are_within_an_ulp_of_libm() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-700.0, 700.0, 20_000), rng.uniform(-1.0, 1.0, 20_000),
                        [0.0, -1e-300, 1e-300, 0.5 * math.log(2), -0.5 * math.log(2)]])
    got = np.empty_like(x)
    _apply(vector.vexp, x, got)
    assert _ulps(got, np.exp(x)).max() <= 1.0
    y = np.concatenate([np.exp(rng.uniform(-700.0, 700.0, 20_000)),
                        rng.uniform(0.5, 2.0, 20_000), [2.0, 0.5, math.sqrt(2), 3.0]])
    got = np.empty_like(y)
    _apply(vector.vlog, y, got)
    assert _ulps(got, np.log(y)).max() <= 1.0
    one = np.ones(1)
    _apply(vector.vlog, one, one)
    assert one[0] == 0.0


def test_ncdf_and_density_match_mpmath() -> None:
    z = np.concatenate([np.linspace(-vector.MAX_Z, 8.0, 400), np.linspace(-1.0, 1.0, 101)])
    cdf, pdf = np.empty_like(z), np.empty_like(z)
    _ncdf(z, cdf, pdf)
    mp.mp.dps = 30
    ref_cdf = np.array([float(mp.ncdf(v)) for v in z])
    ref_pdf = np.array([float(mp.npdf(v)) for v in z])
    assert _ulps(pdf, ref_pdf).max() <= 4.0
    low = z <= 0.0  # relative to N in the lower tail; near 1 in the upper
    assert _ulps(cdf[low], ref_cdf[low]).max() <= 8.0
    assert np.abs(cdf[~low] - ref_cdf[~low]).max() <= 4 * np.spacing(1.0)


def _book(n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Rows in every region: textbook, short series, the asymptotic tail,
    and limits and bad rows the vector loops leave to the row function."""
    spot = rng.uniform(50.0, 150.0, n)
    t = np.exp(rng.uniform(math.log(1e-4), math.log(5.0), n))
    sigma = rng.uniform(0.01, 1.5, n)
    book = {"option_type": rng.random(n) < 0.5, "spot": spot,
            "strike": spot * np.exp(rng.normal(0.0, 0.6, n)), "t": t, "sigma": sigma,
            "r": rng.uniform(-0.02, 0.1, n), "q": rng.uniform(0.0, 0.05, n)}
    special = [("t", 0.0), ("sigma", 0.0), ("sigma", -0.1), ("t", -1.0), ("spot", np.nan),
               ("strike", 0.0), ("r", np.inf), ("spot", 1e250), ("sigma", 40.0),
               ("strike", 1e-3), ("t", 1e-12)]
    for j, (name, value) in enumerate(special):
        book[name][j::97] = value
    return book


def _rates(model: str, book: dict[str, Any]) -> tuple[Any, Any]:
    """The underlying's own rate and the carry: (q, r - q) for bsm, (r, 0)
    for black76 (the forward has no carry)."""
    if model == "black76":
        return book["r"], np.zeros_like(book["r"])
    return book["q"], book["r"] - book["q"]


def _row_and_vector(req: Any) -> tuple[Any, Any, Any, Any]:
    """(values, codes) of the row kernel, then of the vectorised kernel, for a
    request of float64 columns."""
    ins = [dispatch._readonly(a) for a in (req.otype, *req.values)]
    rows, vec = np.empty((req.size, req.n)), np.empty((req.size, req.n))
    err_rows, err_vec = np.empty(req.n, np.int8), np.empty(req.n, np.int8)
    cpu.kernel(req.model, req.size)(*ins, req.steps, rows, err_rows)
    kern = cpu.vector_kernel(req.model, req.size)
    assert kern is not None
    kern(*ins, req.steps, vec, err_vec)
    return rows, err_rows, vec, err_vec


def _higher_order_scales(model: str, book: dict[str, Any],
                         rows: np.ndarray[Any, Any]) -> Any:
    """Each higher-order Greek's size of terms, row by row, from the row
    kernel's delta, gamma and vega: what its rounding is relative to.  The
    formulas take d1 = x/s + s/2 and d2 = d1 - s, whose rounding (of
    log(S/K) in x, a few ulps apart between vlog and libm) is of order
    eps * (|x|/s + s), however small d1 or d2 itself."""
    with np.errstate(all="ignore"):
        t, sigma = book["t"], book["sigma"]
        q, carry = _rates(model, book)
        s = sigma * np.sqrt(t)
        carry = np.abs(carry)
        x = np.abs(np.log(book["spot"] / book["strike"])) + carry * t
        d = x / s + s  # |d1| and |d2| at most
        delta, gamma, vega = (np.abs(rows[c]) for c in (formulas.DELTA, formulas.GAMMA,
                                                        formulas.VEGA))
        dq_n1 = gamma * book["spot"] * s
        dd1 = carry / s + d / t
        return np.stack([dq_n1 * d / sigma,  # vanna
                         vega * d * d / sigma,  # volga
                         q * delta + dq_n1 * dd1,  # charm
                         gamma / book["spot"] * (d / s + 1.0),  # speed
                         gamma * (d * d + 1.0) / sigma,  # zomma
                         gamma * (q + 0.5 / t + d * dd1),  # color
                         vega * (q + 0.5 / t + d * dd1)])  # veta


@pytest.mark.parametrize(("model", "greeks"), [
    ("bsm", ()), ("bsm", ("delta", "gamma", "vega", "theta", "rho", "dividend_rho")),
    ("bsm", "all"), ("black76", ()), ("black76", "all")])
def test_vector_kernel_matches_the_row_kernel(model: str, greeks: tuple[str, ...] | str) -> None:
    book = _book(20_000, np.random.default_rng(11))
    if model == "black76":  # the same numbers as forwards, without a dividend yield
        kw = {k: v for k, v in book.items() if k not in ("spot", "q")}
        req = build_request(model=model, greeks=greeks, dtype="float64", spot=None,
                            forward=book["spot"], q=0.0, **kw)
    else:
        req = build_request(model=model, greeks=greeks, dtype="float64", forward=None, **book)
    # whole columns (broadcast inputs: test_vector_kernel_broadcasts), black76's q aside
    assert req.steps[:6].all() and req.steps[6] == (model == "bsm")
    rows, err_rows, vec, err_vec = _row_and_vector(req)

    np.testing.assert_array_equal(err_vec, err_rows)
    assert (err_rows != 0).sum() > 100  # the bad rows are there
    # every region of the kernels is in the book
    with np.errstate(all="ignore"):  # the bad rows
        s = book["sigma"] * np.sqrt(book["t"])
        x = np.log(book["spot"] / book["strike"]) + _rates(model, book)[1] * book["t"]
        h, half = -np.abs(x) / s, 0.5 * s
    ok = err_rows == 0
    assert (ok & (half >= formulas.SMALL_T) & (h + half >= formulas.ASYMPTOTIC_D1)).sum() > 1000
    assert (ok & (half < formulas.SMALL_T) & (s > 0)).sum() > 1000
    assert (ok & (half >= formulas.SMALL_T) & (h + half < formulas.ASYMPTOTIC_D1)).sum() > 10
    # NaN where the row kernel has NaN, infinities alike, values to a few ulps
    # of the row's own scale (theta and rho sum terms of both signs)
    np.testing.assert_array_equal(np.isnan(vec), np.isnan(rows))
    np.testing.assert_array_equal(np.isinf(vec), np.isinf(rows))
    fin = np.isfinite(rows)
    scale = np.maximum(np.abs(rows), 1e-300)
    if req.size > 1:
        spot_scale = book["spot"] * (1.0 + book["t"]) * 1e-14
        scale[1:] = np.maximum(scale[1:], 1e-3 * spot_scale)
    if req.size > formulas.VANNA:
        # (NaN at the limits the row function prices: s = 0 or t = 0)
        scale[formulas.VANNA:] = np.fmax(scale[formulas.VANNA:],
                                         _higher_order_scales(model, book, rows))
    rel = np.abs(vec - rows)[fin] / scale[fin]
    assert rel.max() < 2e-12
    price_rel = np.abs(vec[0] - rows[0])[fin[0]] / np.maximum(np.abs(rows[0]), 1e-300)[fin[0]]
    assert np.median(price_rel) < 1e-15


@pytest.mark.parametrize("model", ["bsm", "black76", "bachelier"])
def test_one_vector_kernel_serves_every_tier(model: str) -> None:
    """A model's three tiers run one compiled kernel, which reads the tier
    from its output's rows: a smaller tier's values are the larger ones'
    first rows, bit for bit, and nothing is written past its rows."""
    code = {"bsm": formulas.BSM, "black76": formulas.BLACK76,
            "bachelier": formulas.BACHELIER}[model]
    tiers = (1, formulas.DIVIDEND_RHO + 1, formulas.N_VALUES)
    kernels = {id(cpu.vector_kernel(code, size)) for size in tiers}
    assert len(kernels) == 1
    assert len({id(cpu.vector_kernel(c, 1)) for c in (formulas.BSM, formulas.BLACK76,
                                                      formulas.BACHELIER)}) == 3
    book = _book(5_000, np.random.default_rng(3))
    und = {"spot": book["spot"]} if model == "bsm" else {"forward": book["spot"], "q": 0.0}
    kw = {k: v for k, v in book.items() if k != "spot" and (model == "bsm" or k != "q")}
    full = None
    for size in reversed(tiers):
        req = build_request(model=model, greeks="all" if size == tiers[-1] else
                            ("delta",) if size > 1 else (), dtype="float64",
                            **({"forward": None} if model == "bsm" else {"spot": None}),
                            **und, **kw)
        assert req.size == size
        ins = [dispatch._readonly(a) for a in (req.otype, *req.values)]
        out = np.full((size + 1, req.n), 7.0)  # one row more than the tier
        err = np.empty(req.n, np.int8)
        cpu.vector_kernel(code, size)(*ins, req.steps, out[:size], err)  # type: ignore[misc]
        assert (out[size] == 7.0).all()
        if full is None:
            full = out[:size].copy()
        else:
            np.testing.assert_array_equal(out[:size], full[:size])


def _normal_book(n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Bachelier rows of every kind: rates-like forwards and strikes of either
    sign, |d| from 0 to beyond MAX_Z (the far tail goes to the row function),
    and limits and bad rows."""
    f = rng.uniform(-0.02, 0.06, n)
    t = np.exp(rng.uniform(math.log(1e-4), math.log(30.0), n))
    sigma = rng.uniform(0.0005, 0.03, n)
    d = rng.choice([-1.0, 1.0], n) * 10 ** rng.uniform(-4.0, 1.7, n)
    book = {"option_type": rng.random(n) < 0.5, "forward": f,
            "strike": f - d * sigma * np.sqrt(t), "t": t, "sigma": sigma,
            "r": rng.uniform(-0.02, 0.1, n)}
    special = [("t", 0.0), ("sigma", 0.0), ("sigma", -0.1), ("t", -1.0), ("forward", np.nan),
               ("strike", np.inf), ("r", np.inf), ("forward", 1e250), ("t", 1e-12),
               ("sigma", 1e-300)]
    for j, (name, value) in enumerate(special):
        book[name][j::89] = value
    book["strike"][5::89] = book["forward"][5::89]  # at the money, sigma = 0 below
    book["sigma"][5::89] = 0.0
    return book


@pytest.mark.parametrize("greeks", [(), ("delta", "gamma", "vega", "theta", "rho"), "all"])
def test_bachelier_vector_kernel_matches_the_row_kernel(greeks: tuple[str, ...] | str) -> None:
    """The vectorised bachelier kernel against the row kernel, row by row: the
    same error codes, NaN and infinities, and values within 1e-13 of the
    size of their formula's terms (theta, charm, color and veta add terms
    of either sign; vexp and vgauss are within a few ulps of exp)."""
    book = _normal_book(20_000, np.random.default_rng(13))
    req = build_request(model="bachelier", greeks=greeks, dtype="float64", spot=None, q=0.0,
                        **book)
    rows, err_rows, vec, err_vec = _row_and_vector(req)
    np.testing.assert_array_equal(err_vec, err_rows)
    assert (err_rows != 0).sum() > 500
    np.testing.assert_array_equal(np.isnan(vec), np.isnan(rows))
    np.testing.assert_array_equal(np.isinf(vec), np.isinf(rows))
    with np.errstate(all="ignore"):
        t, sigma, r = book["t"], book["sigma"], np.abs(book["r"])
        s = sigma * np.sqrt(t)
        d = np.abs((book["forward"] - book["strike"]) / s)
        assert ((err_rows == 0) & (d <= vector.MAX_Z) & (s > 0)).sum() > 15_000  # the loops
        assert ((err_rows == 0) & (d > vector.MAX_Z)).sum() > 100  # the far tail
        scale = np.maximum(np.abs(rows), 1e-300)
        if req.size > 1:
            price, gamma, vega = (np.abs(rows[c]) for c in (formulas.PRICE, formulas.GAMMA,
                                                            formulas.VEGA))
            n_dr = gamma * s  # dr n(d)
            scale[formulas.THETA] += r * price + 0.5 * n_dr * sigma / np.sqrt(t)
        if req.size > formulas.VANNA:
            delta = np.abs(rows[formulas.DELTA])
            scale[formulas.CHARM] += r * delta + 0.5 * n_dr * d / t
            scale[formulas.ZOMMA] += gamma * (d * d + 1.0) / sigma
            scale[formulas.COLOR] += r * gamma + 0.5 * gamma * (d * d + 1.0) / t
            scale[formulas.VETA] += r * vega + 0.5 * vega * (1.0 + d * d) / t
    # at the limits the row function prices (t = 0, s = 0) the terms' sizes are
    # not finite: there the value's own size
    scale = np.where(np.isfinite(scale), scale, np.maximum(np.abs(rows), 1e-300))
    fin = np.isfinite(rows)
    rel = np.abs(vec[fin] - rows[fin]) / scale[fin]
    assert rel.max() < 1e-13, rel.max()


def test_vector_kernel_broadcasts_as_whole_columns() -> None:
    """A scalar input prices every row exactly as the same value repeated in a
    column does: one kernel, whatever the steps."""
    import gpu_pricer as gp

    rng = np.random.default_rng(5)
    n = 3_000
    book = _book(n, rng)
    greeks = ("delta", "gamma", "vega", "theta", "rho")
    scalars = {**book, "option_type": "put", "r": 0.03, "q": 0.01, "t": 0.4}
    columns = {**book, "option_type": np.zeros(n, bool), "r": np.full(n, 0.03),
               "q": np.full(n, 0.01), "t": np.full(n, 0.4)}
    a = gp.price(model="bsm", greeks=greeks, backend="numba", **scalars)
    b = gp.price(model="bsm", greeks=greeks, backend="numba", **columns)
    for name in ("price", *greeks, "error"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(("model", "dtype"), [("bsm", "float64"), ("black76", "float64"),
                                               ("bachelier", "float32")])
def test_vector_kernel_reads_strided_inputs_as_contiguous_ones(model: str, dtype: str) -> None:
    """The kernel reads each block's rows straight from the caller's arrays
    (`vector.source`): strided views (every other element of a longer
    array), mixed with contiguous columns and broadcast scalars, price every
    row exactly as contiguous copies do, in float64 and float32."""
    import gpu_pricer as gp

    rng = np.random.default_rng(11)
    n = 2_000
    book = _book(n, rng)
    underlying = "spot" if model == "bsm" else "forward"
    book[underlying] = book.pop("spot")
    if model != "bsm":
        book.pop("q")
    if model == "bachelier":
        book["sigma"] = book["sigma"] * 30.0
    dt = np.dtype(dtype)
    strided = {}
    for i, (name, v) in enumerate(book.items()):
        if i % 2 == 0:  # every other column strided, the rest contiguous
            wide = np.empty(2 * n, v.dtype)
            wide[::2] = v
            strided[name] = wide[::2]
        else:
            strided[name] = v
    strided["r"] = 0.02  # a broadcast scalar among them
    contiguous = {k: np.ascontiguousarray(v) for k, v in strided.items()}
    assert not strided["t"].flags.c_contiguous
    kw = {"model": model, "greeks": "all", "backend": "numba", "dtype": dtype}
    a = gp.price(**kw, **strided)
    b = gp.price(**kw, **contiguous)
    assert a["price"].dtype == dt
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert (b["error"] == 0).mean() > 0.8


def test_a_rows_value_does_not_depend_on_its_block() -> None:
    """Sorted by total volatility, whole blocks fall in one region (priced in
    place, not gathered); shuffled, every block mixes them: each row gets
    bitwise the same values either way, and so does a book priced alone."""
    import gpu_pricer as gp

    n, rng = 20 * vector.BLOCK, np.random.default_rng(23)
    spot = rng.uniform(50.0, 150.0, n)
    book = {"option_type": rng.random(n) < 0.5, "spot": spot,
            "strike": spot * np.exp(rng.normal(0.0, 0.3, n)),
            "t": np.exp(rng.uniform(math.log(1e-3), math.log(3.0), n)),
            "sigma": rng.uniform(0.05, 0.8, n), "r": rng.uniform(0.0, 0.05, n),
            "q": rng.uniform(0.0, 0.03, n)}
    half = 0.5 * book["sigma"] * np.sqrt(book["t"])
    order = np.argsort(half, kind="stable")
    # blocks of the short series alone and of the textbook formula alone
    blocks = (half[order] < formulas.SMALL_T).reshape(20, vector.BLOCK)
    assert blocks.all(axis=1).sum() >= 3 and (~blocks).all(axis=1).sum() >= 3
    greeks = gp.GREEKS
    mixed = gp.price(model="bsm", greeks=greeks, backend="numba", **book)
    ranked = gp.price(model="bsm", greeks=greeks, backend="numba",
                      **{k: v[order] for k, v in book.items()})
    for name in ("price", *greeks, "error"):
        np.testing.assert_array_equal(ranked[name], mixed[name][order], err_msg=name)
    one = gp.price(model="bsm", greeks=greeks, backend="numba",
                   **{k: v[order][:1] for k, v in book.items()})
    for name in ("price", *greeks):
        np.testing.assert_array_equal(one[name], ranked[name][:1], err_msg=name)


def test_block_rows_fit_half_the_l2_cache() -> None:
    """A block's scratch columns fill at most half of the L2 cache: 2048 rows
    with 1 MiB of it, 1024 with 512 KiB, 512 below, and 1024 when its size is
    unknown; the size is read from sysfs where there is one."""
    assert vector.block_rows(1 << 20) == 2048
    assert vector.block_rows(2 << 20) == 2048
    assert vector.block_rows(512 << 10) == 1024
    assert vector.block_rows(256 << 10) == 512
    assert vector.block_rows(64 << 10) == 512
    assert vector.block_rows(None) == 1024
    for rows in (512, 1024, 2048):
        l2 = vector.SCRATCH_COLUMNS * rows * 8 * 2
        assert vector.block_rows(l2) == rows
        assert vector.block_rows(l2 - 1) == rows // 2 or rows == 512
    l2 = vector.l2_bytes()
    assert l2 is None or l2 >= 64 << 10
    assert vector.block_rows(l2) == vector.BLOCK
