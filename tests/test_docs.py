"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest

import gpu_pricer.pricing


def test_price_docstring_example() -> None:
    result = doctest.testmod(gpu_pricer.pricing, verbose=False)
    assert result.attempted >= 3
    assert result.failed == 0
