"""The generated table of I1/I0 (tools/make_mills_table.py) against mpmath."""

from __future__ import annotations

import mpmath as mp
import numpy as np

from gpu_pricer.kernels import formulas


def test_rho1_table_is_accurate_to_a_few_ulps() -> None:
    f = formulas.build(lambda fn: fn)  # plain Python: the kernels' source, uncompiled
    mp.mp.dps = 40
    worst = 0.0
    for h in np.linspace(-formulas.RHO1_H, 0.0, 4001):
        exact = mp.npdf(h) / mp.ncdf(h) + h  # 1/M(h) + h
        worst = max(worst, float(abs((f.rho1(float(h)) - exact) / exact)))
    assert worst < 8 * np.finfo(np.float64).eps, worst
