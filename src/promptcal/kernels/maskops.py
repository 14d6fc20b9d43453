"""Single-pass mask-plane operations on int32 masks."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


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
