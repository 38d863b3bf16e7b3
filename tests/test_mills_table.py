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


def test_the_vector_kernels_rational_rho1_is_accurate_to_a_few_ulps() -> None:
    """The vectorised kernels' rational rho1 (tools/make_mills_rational.py),
    evaluated as they evaluate it, over its whole range: within 5 ulps of
    I1/I0 (so within an ulp in N(z)'s tail n/(rho1 + |z|)), and every
    coefficient positive (Horner's rule without cancellation)."""
    from numba import njit

    from gpu_pricer.kernels import mills_rational, vector

    assert min(mills_rational.P + mills_rational.Q) > 0.0
    assert mills_rational.SPAN >= vector.MAX_Z  # the fit covers every |z| the kernels clamp to
    vrho1 = vector.vrho1

    @njit
    def apply(h: np.ndarray, out: np.ndarray) -> None:  # type: ignore[type-arg]
        for i in range(h.shape[0]):
            out[i] = vrho1(h[i])

    rng = np.random.default_rng(2)
    h = -np.concatenate([np.linspace(0.0, vector.MAX_Z, 4001), rng.uniform(0.0, 2.0, 1000)])
    got = np.empty_like(h)
    apply(h, got)
    mp.mp.dps = 40
    exact = [mp.npdf(x) / mp.ncdf(x) + x for x in h]
    rel = np.array([float(abs(g / e - 1)) for g, e in zip(got, exact, strict=True)])
    eps = np.finfo(np.float64).eps
    assert rel.max() < 5 * eps, rel.max() / eps
    tail_rel = rel * np.array([float(e / (e - x)) for e, x in zip(exact, h, strict=True)])
    assert tail_rel.max() < 1.5 * eps, tail_rel.max() / eps
