"""tools/simd_prototype.py, the measured starting point for vectorised kernels:
its exp and log are within 1 ulp of libm, and its N(z) and n(z) within a few
ulps of mpmath, over the ranges it claims."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from numba import njit

from .conftest import SIMULATED

pytestmark = pytest.mark.skipif(SIMULATED, reason="CPU kernels only")

PATH = Path(__file__).resolve().parent.parent / "tools" / "simd_prototype.py"


@pytest.fixture(scope="module")
def proto() -> Any:
    spec = importlib.util.spec_from_file_location("simd_prototype", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ulps(got: np.ndarray[Any, Any], ref: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(np.abs(got - ref) / np.spacing(np.abs(ref)))


def test_exp_and_log_are_within_an_ulp_of_libm(proto: Any) -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-700.0, 700.0, 20_000), rng.uniform(-1.0, 1.0, 20_000),
                        [0.0, -1e-300, 1e-300, 0.5 * math.log(2), -0.5 * math.log(2)]])
    got = np.empty_like(x)
    proto._apply(proto.vexp, x, got)
    assert _ulps(got, np.exp(x)).max() <= 1.0
    y = np.concatenate([np.exp(rng.uniform(-700.0, 700.0, 20_000)),
                        rng.uniform(0.5, 2.0, 20_000), [1.0, 2.0, 0.5, math.sqrt(2)]])
    proto._apply(proto.vlog, y, got[:y.size])
    ref = np.log(y)
    ok = ref != 0.0
    assert _ulps(got[:y.size][ok], ref[ok]).max() <= 1.0
    assert got[:y.size][~ok].tolist() == [0.0] * int((~ok).sum())


def test_ncdf_and_density_match_mpmath(proto: Any) -> None:
    @njit
    def both(z: Any, cdf: Any, pdf: Any) -> None:  # pragma: no cover - compiled
        for i in range(z.shape[0]):
            cdf[i], pdf[i] = proto.vncdf(z[i])

    z = np.concatenate([np.linspace(-37.0, 8.0, 400), np.linspace(-1.0, 1.0, 101)])
    cdf, pdf = np.empty_like(z), np.empty_like(z)
    both(z, cdf, pdf)
    mp.mp.dps = 30
    ref_cdf = np.array([float(mp.ncdf(v)) for v in z])
    ref_pdf = np.array([float(mp.npdf(v)) for v in z])
    assert _ulps(pdf, ref_pdf).max() <= 4.0
    # the lower tail relative to N(z); the upper, where N is near 1, to 1 - N
    low = z <= 0.0
    assert _ulps(cdf[low], ref_cdf[low]).max() <= 8.0
    assert np.abs(cdf[~low] - ref_cdf[~low]).max() <= 4 * np.spacing(1.0)
