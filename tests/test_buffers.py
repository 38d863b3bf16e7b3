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


def test_byte_buffers_reuse_the_smallest_free_one_that_fits() -> None:
    """Bodies and answers of any size reuse mapped memory: the smallest free
    pooled byte buffer at least as large, never one still referenced."""
    pool = BufferPool(max_bytes=1 << 27)
    big = pool.bytes(12 << 20)
    small = pool.bytes(6 << 20)
    assert big.size == 12 << 20 and small.size == 6 << 20
    big_at, small_at = big.ctypes.data, small.ctypes.data
    del big, small
    a = pool.bytes(5 << 20)  # both fit: the smaller one
    assert a.size == 5 << 20 and a.ctypes.data == small_at
    b = pool.bytes(5 << 20)  # the smaller is held through `a`: the larger
    assert b.ctypes.data == big_at
    c = pool.bytes(5 << 20)  # both held: a new one
    assert c.ctypes.data not in (big_at, small_at)
    del a
    assert pool.free() == [6 << 20]
    d = pool.bytes(7 << 20)  # the free one (6 MiB) is too small: a new one
    assert d.ctypes.data != small_at and d.size == 7 << 20
    assert pool.bytes(100).size == 100  # small: not pooled


def test_a_call_of_any_shape_reuses_a_larger_free_buffer() -> None:
    """Outputs of a smaller call (a million rows after a warm-up batch of
    2^20) are a view of the larger buffer's start, of the shape and dtype
    asked for; the buffer is free again once no view of it is left."""
    pool = BufferPool(max_bytes=1 << 28)
    warm = pool.empty((7, 1 << 20), np.dtype(np.float64))
    at = warm.ctypes.data
    del warm
    out = pool.empty((7, 1_000_000), np.dtype(np.float64))
    assert out.ctypes.data == at and out.shape == (7, 1_000_000)
    assert out.dtype == np.float64 and out.flags.c_contiguous and out.flags.writeable
    row = out[3]
    del out
    assert pool.free() == []  # still held through `row`
    other = pool.empty((5, 1_000_000), np.dtype(np.float32))
    assert other.ctypes.data != at
    del row
    again = pool.empty((1_000_000,), np.dtype(np.int64))
    assert again.ctypes.data == at
