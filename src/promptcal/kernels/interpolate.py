"""Interpolation over flagged pixels (defects, cosmic rays), working from pixel lists.

The pixels to repair are a handful in a full-size image, so they are listed first
(one vectorised scan) and only they, their rows and their columns are touched.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel

#: Pixels per block of the sparse scan (a fixed length lets the block test vectorise).
_BLOCK = 64


@kernel
def grow_indices(values, needed=0):
    """A copy of ``values`` with room for at least ``needed`` (and twice as many) items."""
    out = np.empty(max(values.size * 2, needed), np.int64)
    out[: values.size] = values
    return out


@kernel
def _is_flagged(flags, y, x, bits, without):
    f = flags[y, x]
    return (f & bits) != 0 and (f & without) == 0


@kernel
def flagged_pixels(flags, bits, without):
    """Coordinates of the pixels with any of ``bits`` and none of ``without`` set.

    Parameters
    ----------
    flags : numpy.ndarray
        Integer (H, W) bit mask (or a bool array viewed as uint8, with ``bits = 1``).
    bits, without : int
        Bit masks.

    Returns
    -------
    ys, xs : numpy.ndarray
        int64 row and column indices [px], row-major order.
    """
    height, width = flags.shape
    ys = np.empty(64, np.int64)
    xs = np.empty(64, np.int64)
    n = 0
    n_full = width // _BLOCK
    for y in range(height):
        row = flags[y]
        for b in range(n_full + 1):
            x0 = b * _BLOCK
            x1 = min(x0 + _BLOCK, width)
            if b < n_full:
                # Blocks without ``bits`` are the rule: one vectorised test each.
                block = row[x0 : x0 + _BLOCK]
                found = 0
                for j in range(_BLOCK):
                    found |= block[j] & bits
                if not found:
                    continue
            for x in range(x0, x1):
                if (row[x] & bits) != 0 and (row[x] & without) == 0:
                    if n == ys.size:
                        ys = grow_indices(ys)
                        xs = grow_indices(xs)
                    ys[n] = y
                    xs[n] = x
                    n += 1
    return ys[:n].copy(), xs[:n].copy()


@kernel
def _interpolate_listed(image, flags, bits, without, ys, xs, max_distance):
    """Interpolate the listed flagged pixels in place; returns bool ``failed`` per pixel.

    All estimates are made from the unmodified image before any is written.
    """
    height, width = image.shape
    longest = 2 * max_distance
    n = ys.size
    values = np.empty(n, np.float32)
    failed = np.zeros(n, np.bool_)
    for k in range(n):
        y = ys[k]
        x = xs[k]
        total = 0.0
        count = 0
        xl = x - 1
        while xl >= 0 and _is_flagged(flags, y, xl, bits, without) and x - xl <= longest:
            xl -= 1
        xr = x + 1
        while xr < width and _is_flagged(flags, y, xr, bits, without) and xr - x <= longest:
            xr += 1
        if (
            0 <= xl
            and xr < width
            and not _is_flagged(flags, y, xl, bits, without)
            and not _is_flagged(flags, y, xr, bits, without)
        ):
            if xr - xl - 1 <= longest:
                t = (x - xl) / (xr - xl)
                total += image[y, xl] * (1 - t) + image[y, xr] * t
                count += 1
        yd = y - 1
        while yd >= 0 and _is_flagged(flags, yd, x, bits, without) and y - yd <= longest:
            yd -= 1
        yu = y + 1
        while yu < height and _is_flagged(flags, yu, x, bits, without) and yu - y <= longest:
            yu += 1
        if (
            0 <= yd
            and yu < height
            and not _is_flagged(flags, yd, x, bits, without)
            and not _is_flagged(flags, yu, x, bits, without)
        ):
            if yu - yd - 1 <= longest:
                t = (y - yd) / (yu - yd)
                total += image[yd, x] * (1 - t) + image[yu, x] * t
                count += 1
        if count > 0:
            values[k] = total / count
        else:
            failed[k] = True
    for k in range(n):
        if not failed[k]:
            image[ys[k], xs[k]] = values[k]
    return failed


@kernel
def interpolate_flagged(image, mask, bits, without, mark, max_distance):
    """Interpolate the pixels with ``bits`` and without ``without`` in the mask.

    Along each row and each column, a run of such pixels no longer than
    ``2 × max_distance`` is bridged linearly between the good pixels on either side;
    where both directions bridge a pixel the two estimates are averaged. Pixels in
    longer runs, or at an edge in both directions, are left unchanged.

    Works from the mask directly (no full-size boolean images): one pass finds the
    pixels, then only they and their rows and columns are touched. Afterwards every
    such pixel, interpolated or not, also carries ``mark``.

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W), modified in place.
    mask : numpy.ndarray
        int32 (H, W) bit mask, modified in place.
    bits, without, mark : int
        Bit masks: the bad pixels have any of ``bits`` and none of ``without``.
    max_distance : int
        Largest half-gap interpolated across [px].

    Returns
    -------
    n_bad, n_failed : int
        Number of bad pixels, and of those left unchanged.
    """
    ys, xs = flagged_pixels(mask, bits, without)
    failed = _interpolate_listed(image, mask, bits, without, ys, xs, max_distance)
    for k in range(ys.size):
        mask[ys[k], xs[k]] |= mark
    return ys.size, int(failed.sum())
