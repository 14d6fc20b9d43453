"""Cosmic-ray detection: pixels too sharp to be the PSF get the CR mask bit."""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.interpolate import grow_indices


@kernel
def _count_bits(row, bits):
    """Number of entries of ``row`` with any of ``bits`` set."""
    count = 0
    for x in range(row.size):
        count += 1 if row[x] & bits else 0
    return count


@kernel
def _clear_bits(row, bits):
    """``row &= ~bits`` where needed (rows without ``bits`` are only read)."""
    if _count_bits(row, bits):
        inverse = ~bits
        for x in range(row.size):
            row[x] &= inverse


#: Pixels per block of the sparse scans (a fixed length lets the block test vectorise).
_BLOCK = 64


@kernel
def _candidate(v, var, m, skip_bits, keep_bits, min_dn, threshold):
    """The tests made before :func:`_is_sharp` (same float expressions; NaN passes).

    Branch-free (``&``, not ``and``) so that loops over it vectorise. The mask is
    taken with only ``keep_bits`` kept.
    """
    return (not (v < min_dn)) & (not (v * v < threshold * var)) & ((m & keep_bits & skip_bits) == 0)


@kernel
def _scan_row(
    image, variance, mask, y, skip_bits, keep_bits, cr_bit, min_dn, min_sigma, flags, hit
):
    """Flag the candidates of row y (``flags``, and per block ``hit``); count ``cr_bit``.

    Streams the three rows once, in fixed-length blocks (so the loops vectorise).
    """
    threshold = min_sigma * min_sigma
    row = image[y]
    var_row = variance[y]
    mask_row = mask[y]
    width = row.size
    n_full = width // _BLOCK
    n_cr = 0
    for b in range(n_full):
        x0 = b * _BLOCK
        values = row[x0 : x0 + _BLOCK]
        variances = var_row[x0 : x0 + _BLOCK]
        masks = mask_row[x0 : x0 + _BLOCK]
        out = flags[x0 : x0 + _BLOCK]
        n = 0
        for j in range(_BLOCK):
            m = masks[j]
            n_cr += 1 if m & cr_bit else 0
            c = _candidate(values[j], variances[j], m, skip_bits, keep_bits, min_dn, threshold)
            out[j] = c
            n += c
        hit[b] = n > 0
    if n_full < hit.size:
        n = 0
        for x in range(n_full * _BLOCK, width):
            m = mask_row[x]
            n_cr += 1 if m & cr_bit else 0
            c = _candidate(row[x], var_row[x], m, skip_bits, keep_bits, min_dn, threshold)
            flags[x] = c
            n += c
        hit[n_full] = n > 0
    return n_cr


@kernel
def _sharp_in_row(
    image,
    variance,
    mask,
    skip_bits,
    y,
    flags,
    hit,
    ratio1,
    ratio2,
    min_sigma,
    min_dn,
    fac,
    fac2,
    out,
):
    """Columns of row y (flagged candidates of hit blocks) that pass :func:`_is_sharp`.

    Written to ``out``; returns their number. Kept apart from the growing list of
    cores, whose possible reallocation would slow this loop down.
    """
    width = image.shape[1]
    n = 0
    for b in range(hit.size):
        if not hit[b]:
            continue
        for x in range(max(b * _BLOCK, 1), min((b + 1) * _BLOCK, width - 1)):
            if flags[x] and _is_sharp(
                image,
                variance,
                mask,
                skip_bits,
                y,
                x,
                ratio1,
                ratio2,
                min_sigma,
                min_dn,
                fac,
                fac2,
            ):
                out[n] = x
                n += 1
    return n


@kernel
def remask_cosmic_rays(
    image, variance, mask, skip_bits, cr_bit, ratio1, ratio2, min_sigma, min_dn, fac, fac2
):
    """Clear ``cr_bit`` everywhere and set it on the pixels too sharp to be the PSF.

    A pixel is a CR when it is ``min_sigma`` σ and ``min_dn`` above the (subtracted)
    background and, along at least one of the four directions through it, the mean of
    the two opposite neighbours (plus ``fac`` σ) is below ``fac2`` times what the PSF
    predicts from the pixel value (minus ``fac`` σ). Tracks are caught by the
    direction perpendicular to them. CR pixels grow by one pixel into neighbours
    above ``fac`` σ. Pixels with ``skip_bits`` are never flagged nor used as
    neighbours (SAT, NO_DATA, BAD).

    Works sparsely, in the same pass that clears the old bits: one streaming pass
    over image, variance and mask flags the few pixels that pass the cheap tests,
    and only they get the sharpness test.

    Parameters
    ----------
    image, variance : numpy.ndarray
        float32 (H, W) background-subtracted image and variance.
    mask : numpy.ndarray
        int32 (H, W) bit mask, modified in place.
    skip_bits, cr_bit : int
        Mask bits of the skipped pixels and of the cosmic rays.
    ratio1, ratio2 : float
        The PSF's value one pixel from its centre along a row or column, and one
        pixel along a diagonal, relative to the central pixel.

    Returns
    -------
    int
        Number of pixels that carry ``cr_bit`` afterwards (the new cosmic rays).
    """
    height, width = image.shape
    cores_y = np.empty(256, np.int64)
    cores_x = np.empty(256, np.int64)
    n_cores = 0
    keep_bits = ~cr_bit
    n_blocks = -(-width // _BLOCK)
    flags = np.zeros((2, width), np.bool_)
    hit = np.zeros((2, n_blocks), np.bool_)
    row_cores = np.empty(width, np.int64)
    # Row y + 1 is scanned (and its CR bits cleared) before row y is tested, so the
    # neighbours that the sharpness test reads are in cache already.
    for y in range(-1, height - 1):
        scan = y + 1
        n_cr = _scan_row(
            image, variance, mask, scan, skip_bits, keep_bits, cr_bit, min_dn, min_sigma,
            flags[scan % 2], hit[scan % 2],
        )  # fmt: skip
        if n_cr:
            _clear_bits(mask[scan], cr_bit)
        if y < 1:
            continue
        n_row = _sharp_in_row(
            image, variance, mask, skip_bits, y, flags[y % 2], hit[y % 2], ratio1, ratio2,
            min_sigma, min_dn, fac, fac2, row_cores,
        )  # fmt: skip
        if n_cores + n_row > cores_y.size:
            cores_y = grow_indices(cores_y, n_cores + n_row)
            cores_x = grow_indices(cores_x, n_cores + n_row)
        for k in range(n_row):
            cores_y[n_cores] = y
            cores_x[n_cores] = row_cores[k]
            n_cores += 1
    return _grow_cores(image, variance, mask, skip_bits, cr_bit, fac, cores_y[:n_cores], cores_x)


@kernel
def _grow_cores(image, variance, mask, skip_bits, cr_bit, fac, cores_y, cores_x):
    """Set ``cr_bit`` on the cores and their neighbours above ``fac`` σ; count new bits."""
    count = 0
    for k in range(cores_y.size):
        y = cores_y[k]
        x = cores_x[k]
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                yy = y + dy
                xx = x + dx
                if (dy == 0 and dx == 0) or (
                    not (mask[yy, xx] & skip_bits)
                    and image[yy, xx] > fac * np.sqrt(variance[yy, xx])
                ):
                    if not (mask[yy, xx] & cr_bit):
                        mask[yy, xx] |= cr_bit
                        count += 1
    return count


@kernel
def _is_sharp(image, variance, mask, skip_bits, y, x, ratio1, ratio2, min_sigma, min_dn, fac, fac2):
    """The CR test of :func:`remask_cosmic_rays` at (y, x), skipping by mask bits."""
    v = image[y, x]
    var = variance[y, x]
    if not (var > 0) or v < min_dn or v * v < min_sigma * min_sigma * var:
        return False
    core = v - fac * np.sqrt(var)
    for d in range(4):
        ay, ax, by, bx, ratio = _direction(d, y, x, ratio1, ratio2)
        if (mask[ay, ax] & skip_bits) or (mask[by, bx] & skip_bits):
            continue
        if _too_sharp(image, variance, ay, ax, by, bx, ratio, core, fac, fac2):
            return True
    return False


@kernel
def _direction(d, y, x, ratio1, ratio2):
    """Opposite neighbours of (y, x) along direction d (row, column, two diagonals)."""
    if d == 0:
        return y, x - 1, y, x + 1, ratio1
    if d == 1:
        return y - 1, x, y + 1, x, ratio1
    if d == 2:
        return y - 1, x - 1, y + 1, x + 1, ratio2
    return y - 1, x + 1, y + 1, x - 1, ratio2


@kernel
def _too_sharp(image, variance, ay, ax, by, bx, ratio, core, fac, fac2):
    pair = 0.5 * (image[ay, ax] + image[by, bx])
    pair_sigma = 0.5 * np.sqrt(variance[ay, ax] + variance[by, bx])
    return pair + fac * pair_sigma < fac2 * ratio * core
