"""Output buffers are reused only when no result refers to them any more."""

from __future__ import annotations

import numpy as np

import gpu_pricer as gp
from gpu_pricer.buffers import BufferPool


def test_pool_reuses_only_free_buffers() -> None:
    pool = BufferPool(max_bytes=1 << 26)
    shape = (2, 1 << 20)
    a = pool.empty(shape, np.dtype(np.float64))
    view = a[0]
    del a
    b = pool.empty(shape, np.dtype(np.float64))
    assert not np.shares_memory(b, view)  # a is still referenced through its view
    del view, b
    c = pool.empty(shape, np.dtype(np.float64))
    d = pool.empty(shape, np.dtype(np.float64))
    assert not np.shares_memory(c, d)
    small = pool.empty((10,), np.dtype(np.float64))
    assert small.shape == (10,)


def test_price_results_survive_later_calls() -> None:
    n = 400_000
    rng = np.random.default_rng(0)
    s1 = rng.uniform(50, 150, n)
    first = gp.price(option_type="call", spot=s1, strike=100.0, t=1.0, sigma=0.2,
                     greeks=["delta"], backend="numba")
    kept = first["price"].copy()
    second = gp.price(option_type="put", spot=s1, strike=100.0, t=1.0, sigma=0.2,
                      greeks=["delta"], backend="numba")
    np.testing.assert_array_equal(first["price"], kept)  # not overwritten
    assert not np.shares_memory(first["price"], second["price"])
    del first
    third = gp.price(option_type="put", spot=s1, strike=100.0, t=1.0, sigma=0.2,
                     greeks=["delta"], backend="numba")
    np.testing.assert_array_equal(third["price"], second["price"])
