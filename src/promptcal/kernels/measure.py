"""Per-source measurement kernels.

Every kernel reads pixels through :func:`pixel`, which implements LSST's noise
replacement: pixels of *other* footprints read as noise, so neighbours do not bias
a source's measurement.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

# Bits of the centroid flag word.
CENTROID_FAILED = 1
CENTROID_EDGE = 2
CENTROID_NOT_AT_MAXIMUM = 4
CENTROID_NO_CONVERGENCE = 8
# Bits of the shape flag word.
SHAPE_FAILED = 1
SHAPE_NO_CONVERGENCE = 2
SHAPE_EDGE = 4


@kernel
def pixel(image, noise, labels, own, y, x):
    """Value at (y, x) as seen by the source of footprint label ``own``."""
    lab = labels[y, x]
    if lab == 0 or lab == own:
        return image[y, x]
    return noise[y, x]


@kernel
def _ring_mean(image, variance, noise, labels, own, ix, iy, r_in, r_out):
    """Mean and its variance of pixels with r_in < distance ≤ r_out from (ix, iy)."""
    total = 0.0
    var = 0.0
    count = 0
    reach = int(np.ceil(r_out))
    for yy in range(iy - reach, iy + reach + 1):
        for xx in range(ix - reach, ix + reach + 1):
            d2 = (xx - ix) ** 2 + (yy - iy) ** 2
            if (r_in < 0 or r_in * r_in < d2) and d2 <= r_out * r_out:
                total += pixel(image, noise, labels, own, yy, xx)
                var += variance[yy, xx]
                count += 1
    return total / count, var / (count * count)


@kernel
def central_hole(image, variance, noise, labels, own, ix, iy, nsigma):
    """Whether the profile dips at its centre (not a maximum of the raw image).

    Compares the centre pixel with its 8 neighbours, and the central 3×3 with the
    ring at 2 px; a dip of more than ``nsigma`` σ in either marks a hollow centre,
    which a point source or a smooth galaxy never shows. Pixels within 3 px of
    (ix, iy) must be on the image.
    """
    c, vc = _ring_mean(image, variance, noise, labels, own, ix, iy, -1.0, 0.5)
    a, va = _ring_mean(image, variance, noise, labels, own, ix, iy, 0.5, 1.5)
    if a - c > nsigma * np.sqrt(vc + va):
        return True
    b, vb = _ring_mean(image, variance, noise, labels, own, ix, iy, -1.0, 1.5)
    r, vr = _ring_mean(image, variance, noise, labels, own, ix, iy, 1.5, 2.5)
    return r - b > nsigma * np.sqrt(vb + vr)


@kernel
def weighted_centroids(image, variance, noise, labels, own, x_start, y_start, sigma, max_iter):
    """Gaussian-weighted (PSF-matched) centroids, one per source.

    The fixed point is the maximum of the image smoothed by the weight, the same
    estimator as SdssCentroid; steps are doubled so a matched Gaussian converges at once.

    Parameters
    ----------
    image, variance, noise : numpy.ndarray
        float32 (H, W) background-subtracted image, variance, noise replacement.
    labels : numpy.ndarray
        int32 (H, W) footprint labels; ``own[i]`` is source i's label.
    x_start, y_start : numpy.ndarray
        float64 starting array positions (the peaks) [px].
    sigma : float
        Weight σ [px] (the PSF σ).
    max_iter : int
        Maximum number of iterations.

    Returns
    -------
    x, y, x_err, y_err : numpy.ndarray
        float64 centroids and 1σ errors [px, array coordinates].
    flags : numpy.ndarray
        int32 bit flags (CENTROID_*).
    """
    n = x_start.size
    height, width = image.shape
    out_x = np.empty(n)
    out_y = np.empty(n)
    out_xe = np.full(n, np.nan)
    out_ye = np.full(n, np.nan)
    flags = np.zeros(n, np.int32)
    radius = max(3, int(np.ceil(4.0 * sigma)))
    inv2s2 = 0.5 / (sigma * sigma)
    for i in range(n):
        xc = x_start[i]
        yc = y_start[i]
        converged = False
        for _ in range(max_iter):
            ix = int(np.floor(xc + 0.5))
            iy = int(np.floor(yc + 0.5))
            if ix - radius < 0 or iy - radius < 0 or ix + radius >= width or iy + radius >= height:
                flags[i] |= CENTROID_EDGE
                break
            sw = 0.0
            swx = 0.0
            swy = 0.0
            for yy in range(iy - radius, iy + radius + 1):
                dy = yy - yc
                for xx in range(ix - radius, ix + radius + 1):
                    dx = xx - xc
                    w = np.exp(-(dx * dx + dy * dy) * inv2s2)
                    v = pixel(image, noise, labels, own[i], yy, xx)
                    sw += w * v
                    swx += w * v * dx
                    swy += w * v * dy
            if sw <= 0:
                flags[i] |= CENTROID_FAILED
                break
            step_x = 2.0 * swx / sw
            step_y = 2.0 * swy / sw
            if abs(step_x) > radius or abs(step_y) > radius:
                flags[i] |= CENTROID_FAILED
                break
            xc += step_x
            yc += step_y
            if step_x * step_x + step_y * step_y < 1e-10:
                converged = True
                break
        if flags[i] == 0 and not converged:
            flags[i] |= CENTROID_NO_CONVERGENCE
        ix = int(np.floor(xc + 0.5))
        iy = int(np.floor(yc + 0.5))
        # The last step may have moved the window off the image: check it again.
        if ix - radius < 0 or iy - radius < 0 or ix + radius >= width or iy + radius >= height:
            flags[i] |= CENTROID_EDGE
        if (
            flags[i] & CENTROID_EDGE == 0
            and abs(xc - x_start[i]) <= radius
            and abs(yc - y_start[i]) <= radius
        ):
            sw = 0.0
            sxx = 0.0
            syy = 0.0
            vxx = 0.0
            vyy = 0.0
            for yy in range(iy - radius, iy + radius + 1):
                dy = yy - yc
                for xx in range(ix - radius, ix + radius + 1):
                    dx = xx - xc
                    w = np.exp(-(dx * dx + dy * dy) * inv2s2)
                    v = pixel(image, noise, labels, own[i], yy, xx)
                    var = variance[yy, xx]
                    sw += w * v
                    sxx += w * v * dx * dx
                    syy += w * v * dy * dy
                    vxx += w * w * dx * dx * var
                    vyy += w * w * dy * dy * var
            if sw > 0:
                out_xe[i] = 2.0 * np.sqrt(vxx) / sw
                out_ye[i] = 2.0 * np.sqrt(vyy) / sw
                # The smoothed image has a maximum here only if the weighted second
                # moment is below the weight's own (curvature of I*w negative).
                if sxx / sw >= sigma * sigma or syy / sw >= sigma * sigma:
                    flags[i] |= CENTROID_NOT_AT_MAXIMUM
            if central_hole(image, variance, noise, labels, own[i], ix, iy, 5.0):
                flags[i] |= CENTROID_NOT_AT_MAXIMUM
            # A hollow source can pull the centroid onto its rim, so test its peak too,
            # when the peak lies within the PSF core (beyond ~√2 σ a narrow profile's
            # curvature changes sign and a smooth star would look hollow there).
            px = int(np.floor(x_start[i] + 0.5))
            py = int(np.floor(y_start[i] + 0.5))
            near = (x_start[i] - xc) ** 2 + (y_start[i] - yc) ** 2 < 2.0 * sigma * sigma
            if near and central_hole(image, variance, noise, labels, own[i], px, py, 5.0):
                flags[i] |= CENTROID_NOT_AT_MAXIMUM
        else:
            # An edge source keeps its last on-image position; other failures fall
            # back to the peak.
            if flags[i] & CENTROID_EDGE == 0:
                xc = x_start[i]
                yc = y_start[i]
            flags[i] |= CENTROID_FAILED
        out_x[i] = xc
        out_y[i] = yc
    return out_x, out_y, out_xe, out_ye, flags


@kernel
def adaptive_moments(image, noise, labels, own, xc, yc, sigma0, max_iter, tolerance):
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
    ixx, iyy, ixy : numpy.ndarray
        float64 moments of the matched weight [px²] (the object's moments for a Gaussian).
    flags : numpy.ndarray
        int32 SHAPE_* bits.
    """
    n = xc.size
    height, width = image.shape
    out_xx = np.full(n, np.nan)
    out_yy = np.full(n, np.nan)
    out_xy = np.full(n, np.nan)
    flags = np.zeros(n, np.int32)
    for i in range(n):
        wxx = sigma0 * sigma0
        wyy = sigma0 * sigma0
        wxy = 0.0
        converged = False
        for _ in range(max_iter):
            det = wxx * wyy - wxy * wxy
            if det <= 0 or not np.isfinite(det):
                flags[i] |= SHAPE_FAILED
                break
            # inverse of the weight covariance
            ixx_w = wyy / det
            iyy_w = wxx / det
            ixy_w = -wxy / det
            radius = int(np.ceil(4.0 * np.sqrt(max(wxx, wyy)))) + 1
            radius = min(radius, 64)
            cx = int(np.floor(xc[i] + 0.5))
            cy = int(np.floor(yc[i] + 0.5))
            if cx - radius < 0 or cy - radius < 0 or cx + radius >= width or cy + radius >= height:
                flags[i] |= SHAPE_EDGE
            s0 = 0.0
            sxx = 0.0
            syy = 0.0
            sxy = 0.0
            for yy in range(max(cy - radius, 0), min(cy + radius + 1, height)):
                dy = yy - yc[i]
                for xx in range(max(cx - radius, 0), min(cx + radius + 1, width)):
                    dx = xx - xc[i]
                    q = ixx_w * dx * dx + iyy_w * dy * dy + 2.0 * ixy_w * dx * dy
                    if q > 32.0:
                        continue
                    w = np.exp(-0.5 * q)
                    v = w * pixel(image, noise, labels, own[i], yy, xx)
                    s0 += v
                    sxx += v * dx * dx
                    syy += v * dy * dy
                    sxy += v * dx * dy
            if s0 <= 0:
                flags[i] |= SHAPE_FAILED
                break
            mxx = sxx / s0
            myy = syy / s0
            mxy = sxy / s0
            # For a Gaussian source, 1/M = 1/C + 1/W: solve for C (exact in one step).
            mdet = mxx * myy - mxy * mxy
            if mdet <= 0:
                flags[i] |= SHAPE_FAILED
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
                flags[i] |= SHAPE_FAILED
                break
            change = abs(nxx - wxx) + abs(nyy - wyy) + abs(nxy - wxy)
            wxx, wyy, wxy = nxx, nyy, nxy
            if change < tolerance * (wxx + wyy):
                converged = True
                break
        if flags[i] & SHAPE_FAILED == 0:
            if not converged:
                flags[i] |= SHAPE_NO_CONVERGENCE
            out_xx[i] = wxx
            out_yy[i] = wyy
            out_xy[i] = wxy
    return out_xx, out_yy, out_xy, flags


@kernel
def naive_aperture_fluxes(image, variance, noise, labels, own, xc, yc, radii):
    """Sums of pixels whose centres lie within each radius (LSST's naive apertures).

    Returns
    -------
    flux, flux_err : numpy.ndarray
        float64 (n, n_radii) [image unit].
    truncated : numpy.ndarray
        bool (n, n_radii): the aperture extends off the image.
    """
    n = xc.size
    n_r = radii.size
    height, width = image.shape
    flux = np.zeros((n, n_r))
    err = np.zeros((n, n_r))
    truncated = np.zeros((n, n_r), np.bool_)
    r_max = radii.max()
    r2_limits = radii * radii
    for i in range(n):
        x0 = int(np.floor(xc[i] - r_max))
        x1 = int(np.ceil(xc[i] + r_max))
        y0 = int(np.floor(yc[i] - r_max))
        y1 = int(np.ceil(yc[i] + r_max))
        var_sum = np.zeros(n_r)
        for yy in range(y0, y1 + 1):
            dy = yy - yc[i]
            inside_y = 0 <= yy < height
            for xx in range(x0, x1 + 1):
                dx = xx - xc[i]
                r2 = dx * dx + dy * dy
                if r2 > r2_limits[n_r - 1] and r2 > r_max * r_max:
                    continue
                inside = inside_y and 0 <= xx < width
                if inside:
                    value = pixel(image, noise, labels, own[i], yy, xx)
                    var = variance[yy, xx]
                for k in range(n_r):
                    if r2 <= r2_limits[k]:
                        if inside:
                            flux[i, k] += value
                            var_sum[k] += var
                        else:
                            truncated[i, k] = True
        for k in range(n_r):
            err[i, k] = np.sqrt(var_sum[k])
    return flux, err, truncated


@kernel
def gaussian_fluxes(image, variance, noise, labels, own, xc, yc, wxx, wyy, wxy):
    """Flux of an elliptical Gaussian with the given moments, fitted at fixed centre.

    Returns
    -------
    flux, flux_err : numpy.ndarray
        float64 [image unit]; NaN where the shape is invalid.
    """
    n = xc.size
    height, width = image.shape
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    for i in range(n):
        det = wxx[i] * wyy[i] - wxy[i] * wxy[i]
        if not (det > 0):
            continue
        ixx = wyy[i] / det
        iyy = wxx[i] / det
        ixy = -wxy[i] / det
        radius = min(int(np.ceil(4.0 * np.sqrt(max(wxx[i], wyy[i])))) + 1, 64)
        cx = int(np.floor(xc[i] + 0.5))
        cy = int(np.floor(yc[i] + 0.5))
        swi = 0.0
        sww = 0.0
        swwv = 0.0
        for yy in range(max(cy - radius, 0), min(cy + radius + 1, height)):
            dy = yy - yc[i]
            for xx in range(max(cx - radius, 0), min(cx + radius + 1, width)):
                dx = xx - xc[i]
                w = np.exp(-0.5 * (ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy))
                swi += w * pixel(image, noise, labels, own[i], yy, xx)
                sww += w * w
                swwv += w * w * variance[yy, xx]
        norm = 2.0 * np.pi * np.sqrt(det) / sww
        flux[i] = swi * norm
        err[i] = np.sqrt(swwv) * norm
    return flux, err


@kernel
def psf_fluxes(image, variance, noise, labels, own, stamps, stamp_x0, stamp_y0):
    """Least-squares amplitude of each source's PSF stamp (unweighted, as LSST's PsfFlux).

    Parameters
    ----------
    stamps : numpy.ndarray
        float64 (n, S, S) PSF images normalised to unit sum, already shifted to
        each source's centroid.
    stamp_x0, stamp_y0 : numpy.ndarray
        int64 array position of each stamp's pixel [0, 0].

    Returns
    -------
    flux, flux_err : numpy.ndarray
        float64 [image unit].
    truncated : numpy.ndarray
        bool: part of the stamp fell off the image.
    """
    n = stamps.shape[0]
    size = stamps.shape[1]
    height, width = image.shape
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    truncated = np.zeros(n, np.bool_)
    for i in range(n):
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
                spi += p * pixel(image, noise, labels, own[i], yy, xx)
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
    for i in range(n):
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


@kernel
def replacement_noise(labels, sigma, seed):
    """Gaussian noise (σ [image unit]) on footprint pixels, zero elsewhere, seeded."""
    np.random.seed(seed)  # noqa: NPY002 (Numba supports only the legacy API)
    height, width = labels.shape
    out = np.zeros((height, width), np.float32)
    for y in range(height):
        for x in range(width):
            if labels[y, x] != 0:
                out[y, x] = np.random.normal() * sigma  # noqa: NPY002
    return out


@kernel
def footprint_noise(labels, bbox, sigma, seed):
    """Like :func:`replacement_noise` but touching only the footprints' boxes.

    ``np.zeros`` pages that are never written cost nothing, so the work scales
    with the detected area instead of the image size.

    Parameters
    ----------
    bbox : numpy.ndarray
        int64 (n, 4) inclusive array boxes ``x_min, y_min, x_max, y_max`` of labels 1..n.
    """
    np.random.seed(seed)  # noqa: NPY002 (Numba supports only the legacy API)
    out = np.zeros(labels.shape, np.float32)
    for i in range(bbox.shape[0]):
        for y in range(bbox[i, 1], bbox[i, 3] + 1):
            for x in range(bbox[i, 0], bbox[i, 2] + 1):
                if labels[y, x] == i + 1:
                    out[y, x] = np.random.normal() * sigma  # noqa: NPY002
    return out
