"""Gaussian-weighted (SdssCentroid-like) centroids and the hollow-centre test.

Pixels of other footprints read as replacement noise (:mod:`promptcal.kernels.noise`),
given as a noise array and its table (a full plane through
:func:`~promptcal.kernels.noise.plane_table`). The weight is circular, so it
factorises into a row and a column term: ``2(2r+1)`` ``exp`` per window instead of
``(2r+1)²``, equal to ~1e-15 relative.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.noise import noise_at

# Bits of the centroid flag word.
CENTROID_FAILED = 1
CENTROID_EDGE = 2
CENTROID_NOT_AT_MAXIMUM = 4
CENTROID_NO_CONVERGENCE = 8


@kernel
def _ring_mean(seen, var, r_in, r_out):
    """Mean and its variance of 5×5 patch pixels with r_in < distance ≤ r_out from its centre."""
    total = 0.0
    vsum = 0.0
    count = 0
    for j in range(5):
        for k in range(5):
            d2 = (k - 2) ** 2 + (j - 2) ** 2
            if (r_in < 0 or r_in * r_in < d2) and d2 <= r_out * r_out:
                total += seen[j, k]
                vsum += var[j, k]
                count += 1
    return total / count, vsum / (count * count)


@kernel
def central_hole(image, variance, noise, table, labels, own, ix, iy, nsigma):
    """Whether the profile dips at its centre (not a maximum of the raw image).

    Compares the centre pixel with its 8 neighbours, and the central 3×3 with the
    ring at 2 px; a dip of more than ``nsigma`` σ in either marks a hollow centre,
    which a point source or a smooth galaxy never shows. Pixels within 3 px of
    (ix, iy) must be on the image. ``noise``, ``table``: the replacement noise
    (:mod:`promptcal.kernels.noise`).
    """
    seen = np.empty((5, 5))
    var = np.empty((5, 5))
    for j in range(5):
        yy = iy - 2 + j
        for k in range(5):
            xx = ix - 2 + k
            lab = labels[yy, xx]
            seen[j, k] = image[yy, xx]
            if (lab != 0) & (lab != own):
                seen[j, k] = noise_at(noise, table, lab, yy, xx)
            var[j, k] = variance[yy, xx]
    c, vc = _ring_mean(seen, var, -1.0, 0.5)
    a, va = _ring_mean(seen, var, 0.5, 1.5)
    if a - c > nsigma * np.sqrt(vc + va):
        return True
    b, vb = _ring_mean(seen, var, -1.0, 1.5)
    r, vr = _ring_mean(seen, var, 1.5, 2.5)
    return r - b > nsigma * np.sqrt(vb + vr)


@kernel
def _gauss_1d(out, first, centre, inv2s2):
    """out[k] = exp(-(first + k - centre)² · inv2s2): one axis of a circular weight."""
    for k in range(out.size):
        d = first + k - centre
        out[k] = np.exp(-(d * d) * inv2s2)


@kernel
def _load_window(image, variance, noise, table, labels, own, ix, iy, radius, seen, var):
    """The (2r+1)² window around (ix, iy) as ``own`` sees it, and its variance."""
    size = 2 * radius + 1
    for j in range(size):
        yy = iy - radius + j
        for k in range(size):
            xx = ix - radius + k
            lab = labels[yy, xx]
            seen[j, k] = image[yy, xx]
            if (lab != 0) & (lab != own):
                seen[j, k] = noise_at(noise, table, lab, yy, xx)
            var[j, k] = variance[yy, xx]


@kernel
def _first_moments(seen, wx, wy, ix0, iy0, xc, yc):
    """Σw·I, Σw·I·dx, Σw·I·dy over the window whose first pixel is (ix0, iy0)."""
    size = wx.size
    sw = 0.0
    swx = 0.0
    swy = 0.0
    for j in range(size):
        row = 0.0
        row_x = 0.0
        for k in range(size):
            v = wx[k] * seen[j, k]
            row += v
            row_x += v * (ix0 + k - xc)
        sw += wy[j] * row
        swx += wy[j] * row_x
        swy += wy[j] * (iy0 + j - yc) * row
    return sw, swx, swy


@kernel
def _second_moments(seen, var, wx, wy, ix, iy, radius, xc, yc):
    """Σw·I, Σw·I·dx², Σw·I·dy² and the variances Σw²·var·dx², Σw²·var·dy²."""
    size = wx.size
    sw = 0.0
    sxx = 0.0
    syy = 0.0
    vxx = 0.0
    vyy = 0.0
    for j in range(size):
        dy = iy - radius + j - yc
        row = 0.0
        row_xx = 0.0
        row_v = 0.0
        row_vxx = 0.0
        for k in range(size):
            dx = ix - radius + k - xc
            w = wx[k]
            v = w * seen[j, k]
            wwv = w * w * var[j, k]
            row += v
            row_xx += v * dx * dx
            row_v += wwv
            row_vxx += wwv * dx * dx
        wrow = wy[j]
        sw += wrow * row
        sxx += wrow * row_xx
        syy += wrow * dy * dy * row
        vxx += wrow * wrow * row_vxx
        vyy += wrow * wrow * dy * dy * row_v
    return sw, sxx, syy, vxx, vyy


@kernel
def _hollow(image, variance, noise, table, labels, own, ix, iy, x0, y0, xc, yc, sigma):
    """Whether the centroid's pixel (ix, iy), or the peak (x0, y0) near it, is hollow."""
    if central_hole(image, variance, noise, table, labels, own, ix, iy, 5.0):
        return True
    # A hollow source can pull the centroid onto its rim, so test its peak too,
    # when the peak lies within the PSF core (beyond ~√2 σ a narrow profile's
    # curvature changes sign and a smooth star would look hollow there).
    px = int(np.floor(x0 + 0.5))
    py = int(np.floor(y0 + 0.5))
    near = (x0 - xc) ** 2 + (y0 - yc) ** 2 < 2.0 * sigma * sigma
    return near and central_hole(image, variance, noise, table, labels, own, px, py, 5.0)


@kernel
def _finish(
    image, variance, noise, table, labels, own, x0, y0, xc, yc, sigma, flags, loaded_x,
    loaded_y, buf,
):  # fmt: skip
    """The errors and the not-at-maximum tests at the centroid, or the fallback position.

    ``loaded_x``, ``loaded_y``: the window centre already in ``buf``. Returns what
    :func:`centroid_one` returns.
    """
    height, width = image.shape
    radius = max(3, int(np.ceil(4.0 * sigma)))
    inv2s2 = 0.5 / (sigma * sigma)
    wx = buf[0, 0]
    wy = buf[0, 1]
    seen = buf[1]
    var = buf[2]
    xe = np.nan
    ye = np.nan
    ix = int(np.floor(xc + 0.5))
    iy = int(np.floor(yc + 0.5))
    # The last step may have moved the window off the image: check it again.
    if ix - radius < 0 or iy - radius < 0 or ix + radius >= width or iy + radius >= height:
        flags |= CENTROID_EDGE
    if flags & CENTROID_EDGE == 0 and abs(xc - x0) <= radius and abs(yc - y0) <= radius:
        if ix != loaded_x or iy != loaded_y:
            _load_window(image, variance, noise, table, labels, own, ix, iy, radius, seen, var)
        _gauss_1d(wx, ix - radius, xc, inv2s2)
        _gauss_1d(wy, iy - radius, yc, inv2s2)
        sw, sxx, syy, vxx, vyy = _second_moments(seen, var, wx, wy, ix, iy, radius, xc, yc)
        if sw > 0:
            xe = 2.0 * np.sqrt(vxx) / sw
            ye = 2.0 * np.sqrt(vyy) / sw
            # The smoothed image has a maximum here only if the weighted second
            # moment is below the weight's own (curvature of I*w negative).
            if sxx / sw >= sigma * sigma or syy / sw >= sigma * sigma:
                flags |= CENTROID_NOT_AT_MAXIMUM
        if _hollow(image, variance, noise, table, labels, own, ix, iy, x0, y0, xc, yc, sigma):
            flags |= CENTROID_NOT_AT_MAXIMUM
    else:
        # An edge source keeps its last on-image position; other failures fall
        # back to the peak.
        if flags & CENTROID_EDGE == 0:
            xc = x0
            yc = y0
        flags |= CENTROID_FAILED
    return xc, yc, xe, ye, flags


@kernel
def centroid_one(image, variance, noise, table, labels, own, x0, y0, sigma, max_iter, buf):
    """Gaussian-weighted (PSF-matched) centroid of one source.

    The fixed point is the maximum of the image smoothed by the weight, the same
    estimator as SdssCentroid; steps are doubled so a matched Gaussian converges at once.

    Parameters
    ----------
    image, variance : numpy.ndarray
        float32 (H, W) background-subtracted image and variance.
    noise, table : numpy.ndarray
        Replacement noise and its table (:mod:`promptcal.kernels.noise`).
    labels : numpy.ndarray
        int32 (H, W) footprint labels; ``own`` is the source's label.
    x0, y0 : float
        Starting array position (the peak) [px].
    sigma : float
        Weight σ [px] (the PSF σ).
    max_iter : int
        Maximum number of iterations.
    buf : numpy.ndarray
        Scratch from :func:`centroid_buffer`.

    Returns
    -------
    x, y, x_err, y_err : float
        Centroid and 1σ errors [px, array coordinates].
    flags : int
        CENTROID_* bits.
    """
    height, width = image.shape
    radius = max(3, int(np.ceil(4.0 * sigma)))
    inv2s2 = 0.5 / (sigma * sigma)
    wx = buf[0, 0]
    wy = buf[0, 1]
    seen = buf[1]
    var = buf[2]
    flags = 0
    xc = x0
    yc = y0
    loaded_x = -1
    loaded_y = -1
    converged = False
    for _ in range(max_iter):
        ix = int(np.floor(xc + 0.5))
        iy = int(np.floor(yc + 0.5))
        if ix - radius < 0 or iy - radius < 0 or ix + radius >= width or iy + radius >= height:
            flags |= CENTROID_EDGE
            break
        if ix != loaded_x or iy != loaded_y:
            _load_window(image, variance, noise, table, labels, own, ix, iy, radius, seen, var)
            loaded_x = ix
            loaded_y = iy
        _gauss_1d(wx, ix - radius, xc, inv2s2)
        _gauss_1d(wy, iy - radius, yc, inv2s2)
        sw, swx, swy = _first_moments(seen, wx, wy, ix - radius, iy - radius, xc, yc)
        if sw <= 0:
            flags |= CENTROID_FAILED
            break
        step_x = 2.0 * swx / sw
        step_y = 2.0 * swy / sw
        if abs(step_x) > radius or abs(step_y) > radius:
            flags |= CENTROID_FAILED
            break
        xc += step_x
        yc += step_y
        if step_x * step_x + step_y * step_y < 1e-10:
            converged = True
            break
    if flags == 0 and not converged:
        flags |= CENTROID_NO_CONVERGENCE
    return _finish(
        image, variance, noise, table, labels, own, x0, y0, xc, yc, sigma, flags, loaded_x,
        loaded_y, buf,
    )  # fmt: skip


@kernel
def centroid_buffer(sigma):
    """Scratch for :func:`centroid_one`: weights, window, window variance."""
    size = 2 * max(3, int(np.ceil(4.0 * sigma))) + 1
    return np.empty((3, size, size))
