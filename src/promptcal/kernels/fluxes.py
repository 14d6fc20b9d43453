"""Per-source flux and pixel-flag kernels (aperture, Gaussian, PSF, mask bits).

Pixels of other footprints read as replacement noise (:mod:`promptcal.kernels.noise`),
given as a noise array and its table (a full plane through
:func:`~promptcal.kernels.noise.plane_table`). The hot loops spell the pixel test out because a call
of a compiled function with array arguments costs ~15 ns (reference counting).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.noise import noise_at
from promptcal.kernels.warm import warm_rows

# Beyond this quadratic form q the weight exp(-q/2) < 1e-304 is evaluated directly,
# so the row recurrence of :func:`weight_step` never steps through underflowed values.
_Q_RECURRENCE_MAX = 1400.0


@kernel
def weight_step(q, dx, dy, ixx, ixy, e_a, w, g, running):
    """Next weight exp(-q/2) along a row of an elliptical Gaussian, and its state.

    ``q = ixx dx² + iyy dy² + 2 ixy dx dy`` is the pixel's quadratic form, with
    (ixx, iyy, ixy) the inverse weight covariance [px⁻²] and ``e_a = exp(-ixx)``.
    While ``running``, the weight is the previous pixel's (``w``) times the ratio
    ``g`` = exp(-(ixx dx + ixy dy) - ixx/2), itself advanced by ``e_a``: two ``exp``
    per row instead of one per pixel, equal to ~1e-13 relative. A run only starts
    where q ≤ 1400, so no step passes through underflowed values; the caller resets
    ``running`` where it skips a pixel. A weight narrower than a pixel (``ixx > 1``)
    covers few pixels and its adaptive moments are ill-conditioned, so there, and
    for a covariance that is not positive definite, every weight is a direct ``exp``.

    Returns
    -------
    w, g : float
        The pixel's weight and the ratio to the next pixel's.
    running : bool
        Whether the next pixel may use the recurrence.
    """
    if q > _Q_RECURRENCE_MAX or not 0.0 < ixx <= 1.0:
        return np.exp(-0.5 * q), 0.0, False
    if running:
        return w * g, g * e_a, True
    return np.exp(-0.5 * q), np.exp(-(ixx * dx + ixy * dy) - 0.5 * ixx), True


@kernel
def _inside(x, xc, dy, limit):
    """Whether pixel x of a row at offset dy lies within the radius² ``limit`` of xc."""
    dx = x - xc
    return dx * dx + dy * dy <= limit


@kernel
def _row_segment(xc, dy, limit, x_min, x_max):
    """Inclusive run ``lo..hi`` of x in [x_min, x_max] inside the disc; lo > hi if none.

    The disc test is the exact floating-point one of :func:`_inside`, which is
    monotone in |x − xc|, so the run found from the analytic chord is exact.
    """
    dy2 = dy * dy
    if dy2 > limit:
        return x_min + 1, x_min
    half = np.sqrt(limit - dy2)
    lo = max(int(np.ceil(xc - half)), x_min)
    hi = min(int(np.floor(xc + half)), x_max)
    while lo - 1 >= x_min and _inside(lo - 1, xc, dy, limit):
        lo -= 1
    while lo <= hi and not _inside(lo, xc, dy, limit):
        lo += 1
    while hi + 1 <= x_max and _inside(hi + 1, xc, dy, limit):
        hi += 1
    while hi >= lo and not _inside(hi, xc, dy, limit):
        hi -= 1
    return lo, hi


@kernel
def distinct_radii(radii):
    """Distinct radius² in increasing order, and the index of each radius among them."""
    order = np.argsort(radii * radii)
    limits = np.empty(radii.size)
    rank = np.empty(radii.size, np.int64)
    n_u = 0
    for k in order:
        r2 = radii[k] * radii[k]
        if n_u == 0 or r2 != limits[n_u - 1]:
            limits[n_u] = r2
            n_u += 1
        rank[k] = n_u - 1
    return limits[:n_u].copy(), rank


@kernel
def aperture_buffers(radii, n_distinct):
    """Scratch for :func:`aperture_fluxes_one`: pixel rows and chord ends."""
    span = int(np.ceil(2.0 * radii.max())) + 3
    return np.empty((2, span, span)), np.empty((2, span, n_distinct), np.int64)


@kernel
def aperture_fluxes_one(
    image, variance, noise, table, labels, own, xc, yc, r_max, limits, rank, buf, rows,
    flux, err, truncated,
):  # fmt: skip
    """Naive aperture sums of one source into ``flux``, ``err``, ``truncated`` (n_radii,).

    LSST's naive apertures: sums of the pixels whose centres lie within each radius
    of (xc, yc) [px, array coordinates], and √Σvariance, in the image unit;
    ``truncated``: the aperture extends off the image. ``limits``, ``rank``:
    :func:`distinct_radii`; ``buf``, ``rows``: :func:`aperture_buffers`.

    Each row is read once over the chord of the largest disc, whose ends come from
    the exact disc test rather than from testing every pixel of the box. Chords
    first, then all pixels of the widest chords in one loop of independent loads,
    then each disc's sum over its own chords in increasing y and x: per radius the
    same additions in the same order as a pixel-by-pixel test, so the sums are those
    of the disc test exactly. The largest disc is summed in the loading loop itself,
    which visits its pixels in that order.
    """
    height, width = image.shape
    n_u = limits.size
    x0 = int(np.floor(xc - r_max))
    x1 = int(np.ceil(xc + r_max))
    y0 = int(np.floor(yc - r_max))
    y1 = int(np.ceil(yc + r_max))
    seen = buf[0]
    seen_var = buf[1]
    lo = rows[0]
    hi = rows[1]
    cut = np.zeros(n_u, np.bool_)
    for j in range(y1 - y0 + 1):
        yy = y0 + j
        row_on = 0 <= yy < height
        for t in range(n_u):
            a, b = _row_segment(xc, yy - yc, limits[t], x0, x1)
            if a <= b and (not row_on or a < 0 or b >= width):
                cut[t] = True
            if not row_on:
                b = a - 1
            lo[j, t] = max(a, 0)
            hi[j, t] = min(b, width - 1)
    outer = 0.0
    outer_var = 0.0
    for j in range(y1 - y0 + 1):
        yy = y0 + j
        for xx in range(lo[j, n_u - 1], hi[j, n_u - 1] + 1):
            lab = labels[yy, xx]
            value = np.float64(image[yy, xx])
            if (lab != 0) & (lab != own):
                value = noise_at(noise, table, lab, yy, xx)
            var = np.float64(variance[yy, xx])
            seen[j, xx - x0] = value
            seen_var[j, xx - x0] = var
            outer += value
            outer_var += var
    for t in range(n_u):
        total = outer
        total_var = outer_var
        if t < n_u - 1:
            total = 0.0
            total_var = 0.0
            for j in range(y1 - y0 + 1):
                for xx in range(lo[j, t], hi[j, t] + 1):
                    total += seen[j, xx - x0]
                    total_var += seen_var[j, xx - x0]
        for k in range(rank.size):
            if rank[k] == t:
                flux[k] = total
                err[k] = np.sqrt(total_var)
                truncated[k] = cut[t]


@kernel
def gaussian_flux_one(image, variance, noise, table, labels, own, xc, yc, wxx, wyy, wxy):
    """Flux of an elliptical Gaussian of covariance (wxx, wyy, wxy) [px²] fitted at (xc, yc).

    Returns
    -------
    flux, flux_err : float
        [image unit]; NaN when the covariance is not positive definite.
    """
    height, width = image.shape
    det = wxx * wyy - wxy * wxy
    if not (det > 0):
        return np.nan, np.nan
    ixx = wyy / det
    iyy = wxx / det
    ixy = -wxy / det
    radius = min(int(np.ceil(4.0 * np.sqrt(max(wxx, wyy)))) + 1, 64)
    cx = int(np.floor(xc + 0.5))
    cy = int(np.floor(yc + 0.5))
    e_a = np.exp(-ixx)
    swi = 0.0
    sww = 0.0
    swwv = 0.0
    for yy in range(max(cy - radius, 0), min(cy + radius + 1, height)):
        dy = yy - yc
        running = False
        w = 0.0
        g = 0.0
        for xx in range(max(cx - radius, 0), min(cx + radius + 1, width)):
            dx = xx - xc
            q = ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy
            w, g, running = weight_step(q, dx, dy, ixx, ixy, e_a, w, g, running)
            lab = labels[yy, xx]
            value = image[yy, xx]
            if (lab != 0) & (lab != own):
                value = noise_at(noise, table, lab, yy, xx)
            swi += w * value
            sww += w * w
            swwv += w * w * variance[yy, xx]
    norm = 2.0 * np.pi * np.sqrt(det) / sww
    return swi * norm, np.sqrt(swwv) * norm


class PsfFluxes(NamedTuple):
    """What :func:`boxed_psf_fluxes` returns.

    Attributes
    ----------
    flux, flux_err : numpy.ndarray
        float64 [image unit].
    truncated : numpy.ndarray
        bool: part of the stamp fell off the image.
    """

    flux: np.ndarray
    flux_err: np.ndarray
    truncated: np.ndarray


def boxed_psf_fluxes(
    image, variance, noise, table, labels, own, stamps, stamp_x0, stamp_y0
) -> PsfFluxes:
    """Least-squares amplitude of each source's PSF stamp (unweighted, as LSST's PsfFlux).

    Parameters
    ----------
    noise, table : numpy.ndarray
        Replacement noise and its table (:mod:`promptcal.kernels.noise`).
    stamps : numpy.ndarray
        float64 (n, S, S) PSF images normalised to unit sum, already shifted to
        each source's centroid.
    stamp_x0, stamp_y0 : numpy.ndarray
        int64 array position of each stamp's pixel [0, 0].

    Returns
    -------
    PsfFluxes
        One entry per source.
    """
    out = _boxed_psf_fluxes(image, variance, noise, table, labels, own, stamps, stamp_x0, stamp_y0)
    return PsfFluxes(*out)


@kernel
def _boxed_psf_fluxes(image, variance, noise, table, labels, own, stamps, stamp_x0, stamp_y0):
    """The kernel of :func:`boxed_psf_fluxes` (a plain tuple)."""
    n = stamps.shape[0]
    size = stamps.shape[1]
    height, width = image.shape
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    truncated = np.zeros(n, np.bool_)
    warmed = np.zeros(1)  # the next stamp's pixels are warmed (promptcal.kernels.warm)
    for i in range(n):
        if i + 1 < n:
            x, y = stamp_x0[i + 1], stamp_y0[i + 1]
            box = (x, x + size - 1, y, y + size - 1)
            warmed[0] += warm_rows(image, *box) + warm_rows(variance, *box)
            warmed[0] += warm_rows(labels, *box)
        spi = 0.0
        spp = 0.0
        sppv = 0.0
        for j in range(size):
            yy = stamp_y0[i] + j
            for k in range(size):
                xx = stamp_x0[i] + k
                p = stamps[i, j, k]
                if yy < 0 or yy >= height or xx < 0 or xx >= width:
                    if p != 0.0:
                        truncated[i] = True
                    continue
                lab = labels[yy, xx]
                value = image[yy, xx]
                if (lab != 0) & (lab != own[i]):
                    value = noise_at(noise, table, lab, yy, xx)
                spi += p * value
                spp += p * p
                sppv += p * p * variance[yy, xx]
        if spp > 0:
            flux[i] = spi / spp
            err[i] = np.sqrt(sppv) / spp
    return flux, err, truncated


@kernel
def mask_or(mask, labels, own, bbox, xc, yc):
    """OR of mask bits over each footprint and over the 3×3 pixels at the centroid.

    Returns
    -------
    footprint_bits, center_bits : numpy.ndarray
        int32 per source.
    """
    n = own.size
    height, width = mask.shape
    fp_bits = np.zeros(n, np.int32)
    c_bits = np.zeros(n, np.int32)
    warmed = np.zeros(1)  # the next box is warmed (promptcal.kernels.warm)
    for i in range(n):
        if i + 1 < n:
            box = (bbox[i + 1, 0], bbox[i + 1, 2], bbox[i + 1, 1], bbox[i + 1, 3])
            warmed[0] += warm_rows(mask, *box) + warm_rows(labels, *box)
        for yy in range(bbox[i, 1], bbox[i, 3] + 1):
            for xx in range(bbox[i, 0], bbox[i, 2] + 1):
                if labels[yy, xx] == own[i]:
                    fp_bits[i] |= mask[yy, xx]
        cx = int(np.floor(xc[i] + 0.5))
        cy = int(np.floor(yc[i] + 0.5))
        for yy in range(cy - 1, cy + 2):
            for xx in range(cx - 1, cx + 2):
                if 0 <= yy < height and 0 <= xx < width:
                    c_bits[i] |= mask[yy, xx]
    return fp_bits, c_bits
