"""The AVX-512 compress and expand of the vectorised kernels
(gpu_pricer/kernels/simd.py): they move exactly a region's rows out and
back, and a kernel built on them prices every row to the bit as the one
built on index gathers and scatters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gpu_pricer import dispatch
from gpu_pricer.inputs import build_request
from gpu_pricer.kernels import cpu, formulas, simd, vector

from .conftest import SIMULATED
from .test_vector import _book

pytestmark = [pytest.mark.skipif(SIMULATED, reason="CPU kernels only"),
              pytest.mark.skipif(not simd.AVAILABLE, reason="no AVX-512F on this CPU")]


@pytest.mark.parametrize("m", [512, 509, 64, 9, 8, 7, 1])
@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_compress_and_expand_move_exactly_the_regions_rows(m: int, share: float) -> None:
    rng = np.random.default_rng(m)
    region = np.full(m + simd.LANES, 1, np.int8)  # slack: the code itself, to be ignored
    region[:m] = np.where(rng.random(m) < share, 1, rng.choice([0, 2], m))
    f = rng.random((6, m + simd.LANES))
    picked = np.empty(m, np.uint64)
    c = simd.count(m, region, 1, picked)
    sel = region[:m] == 1
    assert c == sel.sum()
    before = f.copy()
    simd.compress_rows(m, c, region, 1, picked, f, (0, 1), (2, 3))
    np.testing.assert_array_equal(f[2, :c], before[0, :m][sel])
    np.testing.assert_array_equal(f[3, :c], before[1, :m][sel])
    np.testing.assert_array_equal(f[:2], before[:2])  # the sources untouched
    f[4:] = -1.0
    simd.expand_rows(m, c, region, 1, picked, f, (2, 3), (4, 5))
    np.testing.assert_array_equal(f[4, :m][sel], before[0, :m][sel])
    np.testing.assert_array_equal(f[5, :m][sel], before[1, :m][sel])
    assert (f[4:, :m][:, ~sel] == -1.0).all() and (f[4:, m:] == -1.0).all()


@pytest.mark.parametrize("model", ["bsm", "black76"])
@pytest.mark.parametrize("size", [1, formulas.DIVIDEND_RHO + 1, formulas.N_VALUES])
def test_compress_and_index_gathers_price_to_the_bit(model: str, size: int) -> None:
    """Every region, bad rows and a last block of 3 rows (20,483 = 20,480 + 3,
    and 20,480 a multiple of every block size, `vector.block_rows`)."""
    book = _book(20_483, np.random.default_rng(17))
    code = formulas.BSM if model == "bsm" else formulas.BLACK76
    if model == "black76":
        kw: dict[str, Any] = {k: v for k, v in book.items() if k not in ("spot", "q")}
        kw.update(spot=None, forward=book["spot"], q=0.0)
    else:
        kw = {**book, "forward": None}
    greeks = {1: (), formulas.DIVIDEND_RHO + 1: ("delta",), formulas.N_VALUES: "all"}[size]
    req = build_request(model=model, greeks=greeks, dtype="float64", **kw)
    assert req.size == size
    ins = [dispatch._readonly(a) for a in (req.otype, *req.values)]
    results = []
    for compress in (True, False):
        kern = vector.kernel(cpu._called(code), cpu._F.gauss_small, cpu._F.taylor_terms,
                             forward=model == "black76", compress=compress)
        out, err = np.empty((size, req.n)), np.empty(req.n, np.int8)
        kern(*ins, req.steps, out, err)
        results.append((out, err))
    (out_c, err_c), (out_i, err_i) = results
    np.testing.assert_array_equal(err_c, err_i)
    np.testing.assert_array_equal(out_c, out_i)  # NaN where NaN, every value to the bit
    assert (err_c == 0).sum() > 15_000 and (err_c != 0).sum() > 100
