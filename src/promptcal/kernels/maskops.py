"""Single-pass mask-plane operations on int32 masks (whole planes or span sets)."""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel


@kernel
def bits_set(mask, bits):
    """Boolean array: any of ``bits`` set."""
    height, width = mask.shape
    out = np.empty((height, width), np.bool_)
    for y in range(height):
        for x in range(width):
            out[y, x] = (mask[y, x] & bits) != 0
    return out


@kernel
def any_bits_set(mask, bits):
    """Whether any pixel has any of ``bits`` set (stops after the first row with one)."""
    height, width = mask.shape
    for y in range(height):
        # An OR over the whole row vectorises; a test per pixel would not.
        row = mask[y]
        found = 0
        for x in range(width):
            found |= row[x] & bits
        if found:
            return True
    return False


@kernel
def clear_and_set_bits(mask, clear, row_start, x0, x1, bit):
    """``mask &= ~clear`` everywhere, then ``mask |= bit`` on a span set (in place).

    One pass over the mask, each row updated while it is in cache.
    """
    height, width = mask.shape
    inverse = ~clear
    for y in range(height):
        # Rows without the bits (all rows, in a first pass) are only read.
        found = np.int32(0)
        for x in range(width):
            found |= mask[y, x] & clear
        if found != 0:
            for x in range(width):
                mask[y, x] &= inverse
        for s in range(row_start[y], row_start[y + 1]):
            for x in range(x0[s], x1[s] + 1):
                mask[y, x] |= bit


@kernel
def set_bits_on_spans(mask, row_start, x0, x1, bit):
    """``mask |= bit`` on the pixels of a span set (in place)."""
    for y in range(row_start.size - 1):
        for s in range(row_start[y], row_start[y + 1]):
            for x in range(x0[s], x1[s] + 1):
                mask[y, x] |= bit
