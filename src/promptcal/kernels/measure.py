"""Adaptive moments, and all per-source measurements at once (:func:`measure_core`).

Pixels of other footprints read as replacement noise (:mod:`promptcal.kernels.noise`):
:func:`adaptive_moments` takes a full noise plane, :func:`measure_core` the per-box
noise and its table. The hot loops spell the pixel test out instead of calling a helper: a
call of a compiled function with array arguments is not inlined and costs ~15 ns of
reference counting, several times the pixel's own work; helpers are called per
source, per iteration, or on the rare path of a neighbour's pixel.

The elliptical weight is advanced along each row by the ratio of neighbouring values
(:func:`promptcal.kernels.fluxes.weight_step`), equal to the direct ``exp`` to ~1e-13
relative. The per-source centroid and flux kernels live in
:mod:`promptcal.kernels.centroid` and :mod:`promptcal.kernels.fluxes`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.centroid import centroid_buffer, centroid_one
from promptcal.kernels.fluxes import (
    aperture_buffers,
    aperture_fluxes_one,
    distinct_radii,
    gaussian_flux_one,
    weight_step,
)
from promptcal.kernels.noise import flat, noise_at, plane_table
from promptcal.kernels.warm import warm_rows

# Bits of the shape flag word.
SHAPE_FAILED = 1
SHAPE_NO_CONVERGENCE = 2
SHAPE_EDGE = 4


@kernel
def _load_box(image, noise, table, labels, own, box, seen):
    """Pixels of ``box`` (x_lo, x_hi, y_lo, y_hi; half-open) as ``own`` sees them, row-major."""
    k = 0
    for yy in range(box[2], box[3]):
        for xx in range(box[0], box[1]):
            lab = labels[yy, xx]
            seen[k] = image[yy, xx]
            if (lab != 0) & (lab != own):
                seen[k] = noise_at(noise, table, lab, yy, xx)
            k += 1


@kernel
def _moment_sums(seen, box, xc, yc, ixx, iyy, ixy):
    """Σw·I, Σw·I·dx², Σw·I·dy², Σw·I·dx·dy over ``box`` of the weight truncated at q = 32.

    Where the weight follows the row recurrence (:func:`weight_step`), a row's pixels
    with q ≤ 32 are one run (q is convex along the row, and neighbouring pixels' q
    differ by far more than its rounding), so q is evaluated only to find the ends of
    the run and the first weight; the sums are term for term those of a test at
    every pixel (:func:`_moment_sums_tested`).
    """
    if not 0.0 < ixx <= 1.0:
        return _moment_sums_tested(seen, box, xc, yc, ixx, iyy, ixy)
    e_a = np.exp(-ixx)
    s0 = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    x_lo = box[0]
    x_hi = box[1]
    for yy in range(box[2], box[3]):
        dy = yy - yc
        first = (yy - box[2]) * (x_hi - x_lo) - x_lo  # seen[first + xx] is pixel xx
        a = x_lo
        while a < x_hi:
            dx = a - xc
            if not (ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy > 32.0):
                break
            a += 1
        if a == x_hi:
            continue
        b = x_hi - 1
        while True:  # stops at a at the latest
            dx = b - xc
            if not (ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy > 32.0):
                break
            b -= 1
        dx = a - xc
        q = ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy
        w, g, _ = weight_step(q, dx, dy, ixx, ixy, e_a, 0.0, 0.0, False)
        v = w * seen[first + a]
        s0 += v
        sxx += v * dx * dx
        syy += v * dy * dy
        sxy += v * dx * dy
        for xx in range(a + 1, b + 1):
            dx = xx - xc
            # weight_step while running (q ≤ 32 is below its direct-exp limit)
            w = w * g
            g = g * e_a
            v = w * seen[first + xx]
            s0 += v
            sxx += v * dx * dx
            syy += v * dy * dy
            sxy += v * dx * dy
    return s0, sxx, syy, sxy


@kernel
def _moment_sums_tested(seen, box, xc, yc, ixx, iyy, ixy):
    """:func:`_moment_sums` with q evaluated and tested at every pixel."""
    e_a = np.exp(-ixx)
    s0 = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    k = 0
    for yy in range(box[2], box[3]):
        dy = yy - yc
        running = False
        w = 0.0
        g = 0.0
        for xx in range(box[0], box[1]):
            dx = xx - xc
            q = ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy
            if q > 32.0:
                running = False
            else:
                w, g, running = weight_step(q, dx, dy, ixx, ixy, e_a, w, g, running)
                v = w * seen[k]
                s0 += v
                sxx += v * dx * dx
                syy += v * dy * dy
                sxy += v * dx * dy
            k += 1
    return s0, sxx, syy, sxy


@kernel
def _moments_one(image, noise, table, labels, own, xc, yc, sigma0, max_iter, tolerance, buf):
    """Adaptive moments of one source; see :func:`adaptive_moments`.

    ``buf`` is scratch of ≥ 129² values: the pixels of the current weight box, loaded
    when the box changes (rarely after the first iteration).
    """
    height, width = image.shape
    box = np.full(4, -1, np.int64)
    wxx = sigma0 * sigma0
    wyy = sigma0 * sigma0
    wxy = 0.0
    flags = 0
    converged = False
    for _ in range(max_iter):
        det = wxx * wyy - wxy * wxy
        if det <= 0 or not np.isfinite(det):
            flags |= SHAPE_FAILED
            break
        # inverse of the weight covariance
        ixx_w = wyy / det
        iyy_w = wxx / det
        ixy_w = -wxy / det
        radius = int(np.ceil(4.0 * np.sqrt(max(wxx, wyy)))) + 1
        radius = min(radius, 64)
        cx = int(np.floor(xc + 0.5))
        cy = int(np.floor(yc + 0.5))
        if cx - radius < 0 or cy - radius < 0 or cx + radius >= width or cy + radius >= height:
            flags |= SHAPE_EDGE
        x_lo = max(cx - radius, 0)
        x_hi = min(cx + radius + 1, width)
        y_lo = max(cy - radius, 0)
        y_hi = min(cy + radius + 1, height)
        if x_lo != box[0] or x_hi != box[1] or y_lo != box[2] or y_hi != box[3]:
            box[0] = x_lo
            box[1] = x_hi
            box[2] = y_lo
            box[3] = y_hi
            _load_box(image, noise, table, labels, own, box, buf)
        s0, sxx, syy, sxy = _moment_sums(buf, box, xc, yc, ixx_w, iyy_w, ixy_w)
        if s0 <= 0:
            flags |= SHAPE_FAILED
            break
        mxx = sxx / s0
        myy = syy / s0
        mxy = sxy / s0
        # For a Gaussian source, 1/M = 1/C + 1/W: solve for C (exact in one step).
        mdet = mxx * myy - mxy * mxy
        if mdet <= 0:
            flags |= SHAPE_FAILED
            break
        a = myy / mdet - ixx_w
        b = mxx / mdet - iyy_w
        c = -mxy / mdet - ixy_w
        cdet = a * b - c * c
        if a > 0 and b > 0 and cdet > 0:
            nxx = b / cdet
            nyy = a / cdet
            nxy = -c / cdet
        else:
            nxx = 2.0 * mxx
            nyy = 2.0 * myy
            nxy = 2.0 * mxy
        # Keep the weight bounded so a diverging source fails instead of looping.
        if nxx > 4096.0 or nyy > 4096.0:
            flags |= SHAPE_FAILED
            break
        change = abs(nxx - wxx) + abs(nyy - wyy) + abs(nxy - wxy)
        wxx, wyy, wxy = nxx, nyy, nxy
        if change < tolerance * (wxx + wyy):
            converged = True
            break
    if flags & SHAPE_FAILED:
        return np.nan, np.nan, np.nan, flags
    if not converged:
        flags |= SHAPE_NO_CONVERGENCE
    return wxx, wyy, wxy, flags


class Moments(NamedTuple):
    """What :func:`adaptive_moments` returns.

    Attributes
    ----------
    ixx, iyy, ixy : numpy.ndarray
        float64 moments of the matched weight [px²] (the object's moments for a Gaussian).
    flags : numpy.ndarray
        int32 SHAPE_* bits.
    """

    ixx: np.ndarray
    iyy: np.ndarray
    ixy: np.ndarray
    flags: np.ndarray


def adaptive_moments(image, noise, labels, own, xc, yc, sigma0, max_iter, tolerance) -> Moments:
    """Adaptive second moments (elliptical Gaussian weight matched to the source).

    Parameters
    ----------
    xc, yc : numpy.ndarray
        float64 fixed centres [px, array coordinates].
    sigma0 : float
        Starting circular weight σ [px].
    max_iter : int
        Maximum iterations.
    tolerance : float
        Convergence on the moments, relative.

    Returns
    -------
    Moments
        One entry per source.
    """
    out = _adaptive_moments(image, noise, labels, own, xc, yc, sigma0, max_iter, tolerance)
    return Moments(*out)


@kernel
def _adaptive_moments(image, noise, labels, own, xc, yc, sigma0, max_iter, tolerance):
    """The kernel of :func:`adaptive_moments` (a plain tuple)."""
    n = xc.size
    values = flat(noise)
    table = plane_table(noise)
    out = np.empty((3, n))
    flags = np.zeros(n, np.int32)
    buf = np.empty(129 * 129)
    for i in range(n):
        out[0, i], out[1, i], out[2, i], flags[i] = _moments_one(
            image, values, table, labels, own[i], xc[i], yc[i], sigma0, max_iter, tolerance, buf
        )
    return out[0], out[1], out[2], flags


class CoreMeasurements(NamedTuple):
    """What :func:`measure_core` returns.

    Attributes
    ----------
    centroid : numpy.ndarray
        float64 (4, n): x, y, x_err, y_err [px, array coordinates].
    centroid_flags : numpy.ndarray
        int32 CENTROID_* bits.
    shape : numpy.ndarray
        float64 (3, n): ixx, iyy, ixy [px²].
    shape_flags : numpy.ndarray
        int32 SHAPE_* bits.
    ap_flux, ap_err : numpy.ndarray
        float64 (n, n_radii) [image unit].
    ap_truncated : numpy.ndarray
        bool (n, n_radii): the aperture extends off the image.
    gaussian : numpy.ndarray
        float64 (2, n): Gaussian flux and its error [image unit].
    """

    centroid: np.ndarray
    centroid_flags: np.ndarray
    shape: np.ndarray
    shape_flags: np.ndarray
    ap_flux: np.ndarray
    ap_err: np.ndarray
    ap_truncated: np.ndarray
    gaussian: np.ndarray


def measure_core(
    image, variance, noise, table, labels, own, x_start, y_start, sigma, radii,
    centroid_iter, shape_iter, shape_tolerance, gaussian=True,
) -> CoreMeasurements:  # fmt: skip
    """Centroid, adaptive moments, aperture and Gaussian fluxes, one source at a time.

    Per source: :func:`~promptcal.kernels.centroid.centroid_one` from the peak, then
    adaptive moments (as :func:`adaptive_moments`, weight σ0 = ``sigma``), naive
    apertures (:func:`~promptcal.kernels.fluxes.aperture_fluxes_one`) and the
    Gaussian flux (:func:`~promptcal.kernels.fluxes.gaussian_flux_one`) at the
    centroid; each source's pixels are fetched from memory once instead of once per
    measurement.

    Parameters
    ----------
    noise, table : numpy.ndarray
        Boxed replacement noise and its table
        (:func:`~promptcal.kernels.noise.footprint_noise_boxes`).
    radii : numpy.ndarray
        float64 aperture radii [px].
    gaussian : bool
        Whether to measure the Gaussian flux; without it, that row is NaN (the
        other measurements are the same either way).

    Returns
    -------
    CoreMeasurements
        One column (or row) per source.
    """
    out = _measure_core(
        image, variance, noise, table, labels, own, x_start, y_start, sigma, radii,
        centroid_iter, shape_iter, shape_tolerance, bool(gaussian),
    )  # fmt: skip
    return CoreMeasurements(*out)


@kernel
def _warm_source(image, variance, labels, x, y, reach):
    """:func:`~promptcal.kernels.warm.warm_rows` of the three planes within ``reach`` of (x, y)."""
    ix = int(np.floor(x + 0.5))
    iy = int(np.floor(y + 0.5))
    box = (ix - reach, ix + reach, iy - reach, iy + reach)
    return warm_rows(image, *box) + warm_rows(variance, *box) + warm_rows(labels, *box)


@kernel
def _measure_core(
    image, variance, noise, table, labels, own, x_start, y_start, sigma, radii,
    centroid_iter, shape_iter, shape_tolerance, gaussian,
):  # fmt: skip
    """The kernel of :func:`measure_core` (returns a plain tuple)."""
    n = x_start.size
    centroid = np.empty((4, n))
    cflags = np.zeros(n, np.int32)
    shape = np.empty((3, n))
    sflags = np.zeros(n, np.int32)
    g_flux = np.full((2, n), np.nan)
    ap_flux = np.zeros((n, radii.size))
    ap_err = np.zeros((n, radii.size))
    ap_trunc = np.zeros((n, radii.size), np.bool_)
    cbuf = centroid_buffer(sigma)
    mbuf = np.empty(129 * 129)
    limits, rank = distinct_radii(radii)
    abuf, rows = aperture_buffers(radii, limits.size)
    # The next source's box (its widest aperture around the peak) is warmed while
    # this one is measured (:mod:`promptcal.kernels.warm`); ``warmed`` keeps the reads.
    reach = int(np.ceil(max(radii.max(), 4.0 * sigma))) + 2
    warmed = np.zeros(1)
    for i in range(n):
        if i + 1 < n:
            warmed[0] += _warm_source(
                image, variance, labels, x_start[i + 1], y_start[i + 1], reach
            )
        xc, yc, xe, ye, cf = centroid_one(
            image, variance, noise, table, labels, own[i], x_start[i], y_start[i], sigma,
            centroid_iter, cbuf,
        )  # fmt: skip
        centroid[0, i], centroid[1, i], centroid[2, i], centroid[3, i] = xc, yc, xe, ye
        cflags[i] = cf
        wxx, wyy, wxy, sflags[i] = _moments_one(
            image, noise, table, labels, own[i], xc, yc, sigma, shape_iter, shape_tolerance, mbuf
        )
        shape[0, i], shape[1, i], shape[2, i] = wxx, wyy, wxy
        aperture_fluxes_one(
            image, variance, noise, table, labels, own[i], xc, yc, radii.max(), limits, rank,
            abuf, rows, ap_flux[i], ap_err[i], ap_trunc[i],
        )  # fmt: skip
        if gaussian:
            g_flux[0, i], g_flux[1, i] = gaussian_flux_one(
                image, variance, noise, table, labels, own[i], xc, yc, wxx, wyy, wxy
            )
    return centroid, cflags, shape, sflags, ap_flux, ap_err, ap_trunc, g_flux
