"""Option types from text, in compiled loops: ``call``, ``put``, ``c``, ``p``
in any case become the codes 1 (call) and 0 (put); anything else, -1 (a
per-row error).

Lowercasing ASCII letters alone is exact here: no other code point's
Unicode lowercase is, or contains, one of the letters of these words.  Two
layouts of a column of text:

* fixed width: a NumPy ``U`` array viewed as ``uint32`` code points, or an
  ``S`` array as bytes, one row per string, padded with zeros at the end;
* Arrow's UTF-8: one data buffer and the offsets of each string in it.

They replace NumPy's string lowercasing and comparisons and Arrow's
lowercasing and set lookups, which made new strings for every row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

CALL, PUT, INVALID = 1, 0, -1

_jit = njit(nogil=True, cache=False)


@njit(nogil=True, cache=False, inline="always")
def _code(c0: Any, c1: Any, c2: Any, c3: Any) -> np.int8:
    """The code of a string whose first four units are c0..c3 (0 past its
    end; no unit past the fourth).  ``unit | 32`` equals a lowercase ASCII
    letter exactly for that letter and its capital, so it stands for
    lowercasing.  Branch-free: call and put rows come in any order, and a
    mispredicted branch per row cost more than the rest of the work."""
    a, b, c = c1 | 32, c2 | 32, c3 | 32
    single = (c1 == 0) & (c2 == 0) & (c3 == 0)
    first = c0 | 32
    call = (first == 99) & (((a == 97) & (b == 108) & (c == 108)) | single)
    put = (first == 112) & (((a == 117) & (b == 116) & (c3 == 0)) | single)
    return np.int8(2 * np.int64(call) + np.int64(put) - 1)


@_jit
def fixed_width_codes(units: Any, out: Any) -> None:
    """Codes into `out` (int8, n) of the rows of `units` (n x width, code
    points or bytes, zero-padded at the end)."""
    width = units.shape[1]
    for i in range(units.shape[0]):
        c1 = units[i, 1] if width > 1 else 0
        c2 = units[i, 2] if width > 2 else 0
        c3 = units[i, 3] if width > 3 else 0
        code = _code(units[i, 0], c1, c2, c3)
        for j in range(4, width):  # a fifth unit: too long for any word
            if units[i, j] != 0:
                code = np.int8(INVALID)
        out[i] = code


@_jit
def utf8_codes(offsets: Any, data: Any, out: Any) -> None:
    """Codes into `out` (int8, n) of the n strings ``data[offsets[i]:offsets[i + 1]]``
    (each unit read from a clamped index and zeroed past the string's end:
    no branch on its length; a zero byte inside a string makes it invalid)."""
    last = data.shape[0] - 1
    for i in range(out.shape[0]):
        start = offsets[i]
        length = offsets[i + 1] - start
        if last < 0 or length > 4:
            out[i] = INVALID
            continue
        r0, r1 = data[min(start, last)], data[min(start + 1, last)]
        r2, r3 = data[min(start + 2, last)], data[min(start + 3, last)]
        in0, in1, in2, in3 = length > 0, length > 1, length > 2, length > 3
        nul = (in0 & (r0 == 0)) | (in1 & (r1 == 0)) | (in2 & (r2 == 0)) | (in3 & (r3 == 0))
        code = _code(r0 * np.uint8(in0), r1 * np.uint8(in1), r2 * np.uint8(in2),
                     r3 * np.uint8(in3))
        out[i] = np.int8(INVALID) if nul else code
