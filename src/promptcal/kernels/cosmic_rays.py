"""Cosmic-ray detection and pixel interpolation kernels."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def mask_cosmic_rays(
    image, variance, mask, skip_bits, cr_bit, ratio1, ratio2, min_sigma, min_dn, fac, fac2
):
    """Run :func:`find_sharp_pixels` on pixels without ``skip_bits`` and OR ``cr_bit`` in.

    Works sparsely (a list of CR pixels instead of full-size boolean images), so it
    costs one pass over the image.

    Returns
    -------
    int
        Number of pixels that carry ``cr_bit`` afterwards.
    """
    height, width = image.shape
    cores_y = np.empty(256, np.int64)
    cores_x = np.empty(256, np.int64)
    n_cores = 0
    count = 0
    for y in range(height):
        for x in range(width):
            if mask[y, x] & cr_bit:
                count += 1
            if y == 0 or x == 0 or y == height - 1 or x == width - 1:
                continue
            if mask[y, x] & skip_bits:
                continue
            v = image[y, x]
            # Cheap rejection first: nearly every pixel is faint sky.
            if v < min_dn or v * v < min_sigma * min_sigma * variance[y, x]:
                continue
            if _is_sharp(
                image, variance, mask, skip_bits, y, x, ratio1, ratio2, min_sigma, min_dn, fac, fac2
            ):
                if n_cores == cores_y.size:
                    cores_y = _grow(cores_y)
                    cores_x = _grow(cores_x)
                cores_y[n_cores] = y
                cores_x[n_cores] = x
                n_cores += 1
    for k in range(n_cores):
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
def _grow(values):
    out = np.empty(values.size * 2, np.int64)
    out[: values.size] = values
    return out


@kernel
def _is_sharp(image, variance, mask, skip_bits, y, x, ratio1, ratio2, min_sigma, min_dn, fac, fac2):
    """The CR test of :func:`find_sharp_pixels` at (y, x), skipping by mask bits."""
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


@kernel
def find_cosmic_rays(image, variance, skip, psf_sigma, min_sigma, min_dn, fac, fac2):
    """Pixels too sharp to be the PSF.

    A pixel is a CR when it is ``min_sigma`` σ and ``min_dn`` above the (subtracted)
    background and, along at least one of the four directions through it, the mean of
    the two opposite neighbours (plus ``fac`` σ) is below ``fac2`` times what the PSF
    predicts from the pixel value (minus ``fac`` σ). Tracks are caught by the
    direction perpendicular to them.

    Parameters
    ----------
    image, variance : numpy.ndarray
        float32 (H, W) background-subtracted image and variance.
    skip : numpy.ndarray
        bool (H, W) pixels never flagged nor used as neighbours (SAT, NO_DATA, BAD).
    psf_sigma : float
        Gaussian σ of the PSF [px].

    Returns
    -------
    numpy.ndarray
        bool (H, W) cosmic-ray pixels (grown by one pixel into significant neighbours).
    """
    ratio1 = np.exp(-0.5 / (psf_sigma * psf_sigma))
    ratio2 = np.exp(-1.0 / (psf_sigma * psf_sigma))
    return find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2)


@kernel
def find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2):
    """:func:`find_cosmic_rays` with the PSF given by its neighbour/centre ratios.

    ``ratio1`` is the PSF value one pixel from the centre along a row or column and
    ``ratio2`` one pixel along a diagonal, both relative to the central pixel.
    """
    height, width = image.shape
    cr = np.zeros((height, width), np.bool_)
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            if skip[y, x]:
                continue
            v = image[y, x]
            var = variance[y, x]
            if not (var > 0) or v < min_dn or v * v < min_sigma * min_sigma * var:
                continue
            core = v - fac * np.sqrt(var)
            for d in range(4):
                ay, ax, by, bx, ratio = _direction(d, y, x, ratio1, ratio2)
                if skip[ay, ax] or skip[by, bx]:
                    continue
                if _too_sharp(image, variance, ay, ax, by, bx, ratio, core, fac, fac2):
                    cr[y, x] = True
                    break
    grown = cr.copy()
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            if not cr[y, x]:
                continue
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy = y + dy
                    xx = x + dx
                    if not skip[yy, xx] and image[yy, xx] > fac * np.sqrt(variance[yy, xx]):
                        grown[yy, xx] = True
    return grown


@kernel
def interpolate_pixels(image, bad, max_distance):
    """Replace ``bad`` pixels by linear interpolation between the nearest good pixels.

    Along each row and each column, a run of bad pixels no longer than
    ``2 × max_distance`` is bridged linearly between the good pixels on either side;
    where both directions bridge a pixel the two estimates are averaged. Pixels in
    longer runs, or at an edge in both directions, are left unchanged.

    Returns
    -------
    numpy.ndarray
        bool (H, W): bad pixels that could not be interpolated.
    """
    height, width = image.shape
    failed = np.zeros((height, width), np.bool_)
    out = image.copy()
    longest = 2 * max_distance
    for y in range(height):
        for x in range(width):
            if not bad[y, x]:
                continue
            total = 0.0
            count = 0
            xl = x - 1
            while xl >= 0 and bad[y, xl] and x - xl <= longest:
                xl -= 1
            xr = x + 1
            while xr < width and bad[y, xr] and xr - x <= longest:
                xr += 1
            if 0 <= xl and xr < width and not bad[y, xl] and not bad[y, xr]:
                if xr - xl - 1 <= longest:
                    t = (x - xl) / (xr - xl)
                    total += image[y, xl] * (1 - t) + image[y, xr] * t
                    count += 1
            yd = y - 1
            while yd >= 0 and bad[yd, x] and y - yd <= longest:
                yd -= 1
            yu = y + 1
            while yu < height and bad[yu, x] and yu - y <= longest:
                yu += 1
            if 0 <= yd and yu < height and not bad[yd, x] and not bad[yu, x]:
                if yu - yd - 1 <= longest:
                    t = (y - yd) / (yu - yd)
                    total += image[yd, x] * (1 - t) + image[yu, x] * t
                    count += 1
            if count > 0:
                out[y, x] = total / count
            else:
                failed[y, x] = True
    image[:, :] = out
    return failed
