"""Compiled (numba) kernel of :class:`owsbench.metrics.pixel.AnomalyMetric`'s update.

:func:`add_counts` reads a piece of float32 scores (as their uint32 bit patterns) and uint8
labels once and adds ``delta`` to the cell ``offset[key >> 23] + 2 * bin_in_block + label`` of
every non-void pixel, where ``key`` is the order-preserving key of :mod:`owsbench.metrics.pixel`
(``-0.0`` as ``+0.0``; negative floats: all bits inverted; else the sign bit set). It stops at
the first pixel whose (sign, exponent) block has no storage yet (the caller allocates it and
resumes there), or whose score is NaN or label not 0 / 1 / 255 (the caller takes back the
counts added before it and raises). The counts are exactly those of the numpy formulation
(``float_to_key``, ``key >> (32 - bits)``) in one pass over the pixels instead of about fifteen
array passes and a ``np.add.at`` scatter. numba (https://numba.readthedocs.io) compiles it on
first use and caches the machine code beside this file (``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

OK, NEW_BLOCK, NAN_SCORE, BAD_LABEL = 0, 1, 2, 3  # add_counts' codes
BLOCK_BITS = 9  # a key's sign + exponent bits, which select its block (pixel._BLOCK_BITS)
BLOCK_SHIFT = np.uint32(32 - BLOCK_BITS)


@numba.njit(cache=True, nogil=True)
def score_key(bits: np.uint32) -> np.uint32:
    """The order-preserving key of a float32's bit pattern (``-0.0`` as ``+0.0``)."""
    if bits == np.uint32(0x80000000):
        return np.uint32(0x80000000)
    if bits >> np.uint32(31):
        return ~bits
    return bits | np.uint32(0x80000000)


@numba.njit(cache=True, nogil=True)
def block_of(bits: np.uint32) -> int:
    """The (sign, exponent) block of a float32's bit pattern: its key's top 9 bits."""
    return int(score_key(bits) >> BLOCK_SHIFT)


@numba.njit(cache=True, nogil=True)
def add_counts(
    bits: np.ndarray,
    labels: np.ndarray,
    offset: np.ndarray,
    flat: np.ndarray,
    shift: int,
    delta: int,
    start: int,
) -> tuple[int, int]:
    """``flat[offset[block] + 2 * bin_in_block + label] += delta`` for the non-void pixels from
    ``start`` on (``shift`` = 32 - bits); ``(code, index)``: ``(OK, size)``, or the code and
    index of the pixel it stopped at (``NEW_BLOCK``, ``NAN_SCORE``, ``BAD_LABEL``)."""
    mask = np.uint32((1 << (32 - shift - BLOCK_BITS)) - 1)
    for i in range(start, bits.size):
        label = labels[i]
        if label == 255:
            continue
        if label > 1:
            return BAD_LABEL, i
        if (bits[i] & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            return NAN_SCORE, i
        key = score_key(bits[i])
        base = offset[key >> BLOCK_SHIFT]
        if base < 0:
            return NEW_BLOCK, i
        flat[base + 2 * ((key >> np.uint32(shift)) & mask) + label] += delta
    return OK, bits.size
