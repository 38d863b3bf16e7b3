"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest

import gpu_pricer.pricing


def test_price_docstring_example() -> None:
    result = doctest.testmod(gpu_pricer.pricing, verbose=False)
    assert result.attempted >= 3
    assert result.failed == 0


def test_implied_vol_docstring_example() -> None:
    import gpu_pricer.volatility

    result = doctest.testmod(gpu_pricer.volatility, verbose=False)
    assert result.attempted >= 2
    assert result.failed == 0
