"""The host side of the staged GPU path (gpu_pricer/staging.py) on the CPU:
its parallel copy into and out of pinned buffers.  The stages themselves
run under the CUDA simulator (tests/test_cudasim.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_pricer import staging


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8])
@pytest.mark.parametrize("n", [0, 1, staging._COPY_BLOCK - 1, 2 * staging._COPY_BLOCK,
                               3 * staging._COPY_BLOCK + 17])
def test_parallel_copy_copies_every_element(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    src = (rng.random(2 * n) * 100).astype(dtype)[::2]  # strided, as a column view can be
    dst = np.zeros(n, dtype)
    staging._copy(src, dst)
    np.testing.assert_array_equal(dst, src)
    dst[:] = 0
    staging.copy(src, dst)  # the parallel one, whatever the size
    np.testing.assert_array_equal(dst, src)
