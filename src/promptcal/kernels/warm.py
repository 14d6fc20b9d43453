"""Bring a box of a full plane into the cache before a per-source loop reads it.

The per-source kernels (measurement, PSF fluxes, mask bits, footprint noise) visit
small boxes scattered over 4k×4k planes that are far larger than the cache, so the
first reads of every box wait for main memory: a third of the measurement's time on
the benchmark sky. Their loads queue behind the arithmetic of each pixel, only a few
in flight at once. Reading one value per cache line of the *next* source's box first
(:func:`warm_rows`) puts all of those loads in flight together, and the box is in
cache by the time the source is measured. Nothing computed depends on it.
"""

from __future__ import annotations

from promptcal.kernels._jit import kernel

#: Bytes per cache line.
_LINE = 64


@kernel
def warm_rows(plane, x_lo, x_hi, y_lo, y_hi):
    """Sum of one value per cache line of ``plane[y_lo:y_hi+1, x_lo:x_hi+1]``.

    The inclusive box [px, array coordinates] is clipped to the plane; per row, the
    values at ``x_lo, x_lo + s, ...`` (``s`` values per cache line) and at ``x_hi``.
    Callers keep the sum (in the plane's unit, as float64) only so that the reads are
    not optimised away.
    """
    height, width = plane.shape
    x_lo = max(x_lo, 0)
    x_hi = min(x_hi, width - 1)
    y_lo = max(y_lo, 0)
    y_hi = min(y_hi, height - 1)
    step = max(1, _LINE // plane.itemsize)
    total = 0.0
    if x_lo > x_hi:
        return total
    for yy in range(y_lo, y_hi + 1):
        for xx in range(x_lo, x_hi + step, step):
            total += plane[yy, min(xx, x_hi)]
    return total
