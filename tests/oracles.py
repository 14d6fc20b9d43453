"""Plain NumPy/SciPy reference implementations of the Numba kernels.

Each oracle is written from the kernel's docstring (what it should compute), with
vectorised NumPy or ``scipy.ndimage``/``scipy.optimize`` instead of the kernel's loops,
so a shared mistake in a loop is unlikely. Everything is computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, optimize

# ------------------------------------------------------------------ convolution


def correlate_valid(data, taps):
    """Separable correlation with ``taps`` on both axes; zero within ``len//2`` of edges."""
    taps = np.asarray(taps, np.float64)
    half = taps.size // 2
    out = ndimage.correlate1d(np.asarray(data, np.float64), taps, axis=1, mode="constant")
    out = ndimage.correlate1d(out, taps, axis=0, mode="constant")
    valid = np.zeros(out.shape, bool)
    valid[half : out.shape[0] - half, half : out.shape[1] - half] = True
    return np.where(valid, out, 0.0)


def smooth_image_and_variance(image, variance, ignore, taps):
    """Image smoothed with ``taps``, variance with ``taps²``; ignored pixels count as 0."""
    taps = np.asarray(taps, np.float64)
    clean = np.where(ignore, 0.0, image.astype(np.float64))
    clean_var = np.where(ignore, 0.0, variance.astype(np.float64))
    return correlate_valid(clean, taps), correlate_valid(clean_var, taps**2)


def correlate_valid_float32_in_order(data, taps):
    """:func:`correlate_valid` as the smoothing kernels round it, for bit-for-bit checks.

    Every output is ``0 + Σ_k taps[k]·v_k`` with float32 products and sums, k
    ascending, first along rows and then along columns. NumPy's element-wise float32
    operations round exactly like the kernels' scalar ones (no fused multiply-add).
    """
    data = np.asarray(data, np.float32)
    taps = np.asarray(taps, np.float32)
    size = taps.size
    half = size // 2
    height, width = data.shape
    rows = np.zeros((height, width), np.float32)
    if width >= size:
        acc = np.zeros((height, width - size + 1), np.float32)
        for k in range(size):
            acc = acc + taps[k] * data[:, k : k + width - size + 1]
        rows[:, half : width - half] = acc
    out = np.zeros((height, width), np.float32)
    if height >= size:
        acc = np.zeros((height - size + 1, width), np.float32)
        for k in range(size):
            acc = acc + taps[k] * rows[k : k + height - size + 1]
        out[half : height - half] = acc
    return out


def gaussian_taps(sigma):
    """Normalised Gaussian of half-width ⌊⌊7σ+½⌋/2⌋ (LSST's kernel-size rule)."""
    half = math.floor(math.floor(7.0 * sigma + 0.5) / 2)
    x = np.arange(-half, half + 1)
    taps = np.exp(-(x**2) / (2.0 * sigma**2))
    return taps / taps.sum()


# ------------------------------------------------------------------ detection


def significance(smoothed, smoothed_var, polarity):
    """polarity × smoothed / √var, with -inf where the variance is not positive."""
    var = smoothed_var.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sig = polarity * smoothed.astype(np.float64) / np.sqrt(var)
    return np.where(var > 0, sig, -np.inf)


def significance_above(smoothed, smoothed_var, threshold, polarity):
    return significance(smoothed, smoothed_var, polarity) > threshold


def label_peak_significance(labels, n_labels, smoothed, smoothed_var, polarity):
    """Max significance per label and its first (raster-order) position."""
    sig = significance(smoothed, smoothed_var, polarity)
    peak = np.full(n_labels, -np.inf)
    px = np.zeros(n_labels, np.int64)
    py = np.zeros(n_labels, np.int64)
    for lab in range(1, n_labels + 1):
        ys, xs = np.nonzero((labels == lab) & np.isfinite(sig))
        if ys.size == 0:
            continue
        j = np.argmax(sig[ys, xs])  # first maximum in raster order
        peak[lab - 1], px[lab - 1], py[lab - 1] = sig[ys[j], xs[j]], xs[j], ys[j]
    return peak, px, py


def disk(radius):
    """Structuring element: offsets with dx² + dy² ≤ radius²."""
    r = max(int(radius), 0)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x**2 + y**2 <= r * r


def grow_mask(labels, keep, radius):
    kept = (labels > 0) & np.asarray(keep)[np.maximum(labels - 1, 0)]
    if radius <= 0 or not kept.any():
        return kept
    return ndimage.binary_dilation(kept, structure=disk(radius))


def _neighbours(values):
    """Dict (dy, dx) -> array of the neighbour at that offset (-inf off the image)."""
    padded = np.pad(values, 1, constant_values=-np.inf)
    h, w = values.shape
    return {
        (dy, dx): padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    }


def find_peaks(labels, core, smoothed, smoothed_var, polarity, min_significance):
    """8-neighbour maxima in ``core``; a tie is won by the earliest pixel in raster order."""
    value = polarity * smoothed.astype(np.float64)
    nb = _neighbours(value)
    later_max = np.max([nb[k] for k in nb if k > (0, 0)], axis=0)
    earlier_max = np.max([nb[k] for k in nb if k < (0, 0)], axis=0)
    is_peak = (value >= later_max) & (value > earlier_max)
    local_max = value >= ndimage.maximum_filter(value, size=3, mode="constant", cval=-np.inf)
    assert np.all(local_max[is_peak])
    interior = np.zeros(value.shape, bool)
    interior[1:-1, 1:-1] = True
    sig = significance(smoothed, smoothed_var, polarity)
    ok = interior & core & (labels != 0) & is_peak & np.isfinite(sig) & (sig >= min_significance)
    ys, xs = np.nonzero(ok)
    return labels[ys, xs].astype(np.int64), xs, ys, sig[ys, xs], value[ys, xs]


def label_spans(labels):
    """Runs of equal non-zero labels along each row, in raster order."""
    out = []
    for y, row in enumerate(labels):
        change = np.flatnonzero(np.diff(row) != 0) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change - 1, [row.size - 1]])
        for x0, x1 in zip(starts, ends, strict=True):
            if row[x0] != 0:
                out.append((row[x0], y, x0, x1))
    arr = np.array(out, np.int64).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]


# ------------------------------------------------------------------ measurement


def seen_by(image, noise, labels, own):
    """The image as source ``own`` sees it: other footprints read as noise."""
    return np.where((labels == 0) | (labels == own), image, noise).astype(np.float64)


def _ring_mean(img, var, ix, iy, r_in, r_out):
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    d2 = (x - ix) ** 2 + (y - iy) ** 2
    sel = (d2 <= r_out**2) & ((d2 > r_in**2) if r_in >= 0 else True)
    n = sel.sum()
    return img[sel].mean(), var[sel].astype(np.float64).sum() / n**2


def central_hole(image, variance, noise, labels, own, ix, iy, nsigma):
    """Centre below its 8 neighbours, or the 3×3 below the 2-px ring, by > nsigma σ."""
    img = seen_by(image, noise, labels, own)
    c, vc = _ring_mean(img, variance, ix, iy, -1, 0.5)
    a, va = _ring_mean(img, variance, ix, iy, 0.5, 1.5)
    b, vb = _ring_mean(img, variance, ix, iy, -1, 1.5)
    r, vr = _ring_mean(img, variance, ix, iy, 1.5, 2.5)
    return bool(a - c > nsigma * np.sqrt(vc + va) or r - b > nsigma * np.sqrt(vb + vr))


def _box(shape, cx, cy, radius):
    """Index grids of the (clipped) square box of half-width ``radius`` around (cx, cy)."""
    y0, y1 = max(cy - radius, 0), min(cy + radius + 1, shape[0])
    x0, x1 = max(cx - radius, 0), min(cx + radius + 1, shape[1])
    return np.mgrid[y0:y1, x0:x1]


def weighted_centroid(image, variance, noise, labels, own, x_start, y_start, sigma):
    """Root of ∇(image ⋆ Gaussian(σ)) near the start, with its linearised 1σ error.

    The weight box (half-width max(3, ⌈4σ⌉) around the rounded centre) is that of
    the final position, so the root is searched with the box fixed.
    """
    img = seen_by(image, noise, labels, own)
    radius = max(3, int(np.ceil(4.0 * sigma)))
    xc, yc = float(x_start), float(y_start)
    for _ in range(5):  # re-centre the box until it no longer moves
        cx, cy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
        yy, xx = _box(img.shape, cx, cy, radius)
        v = img[yy, xx]

        def gradient(p, xx=xx, yy=yy, v=v):
            w = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * sigma**2))
            return [np.sum(w * v * (xx - p[0])), np.sum(w * v * (yy - p[1]))]

        sol = optimize.root(gradient, [xc, yc], tol=1e-13)
        xc, yc = sol.x
        if (int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))) == (cx, cy):
            break
    w = np.exp(-((xx - xc) ** 2 + (yy - yc) ** 2) / (2 * sigma**2))
    var = variance[yy, xx].astype(np.float64)
    sw = np.sum(w * v)
    xe = 2 * np.sqrt(np.sum(w**2 * (xx - xc) ** 2 * var)) / sw
    ye = 2 * np.sqrt(np.sum(w**2 * (yy - yc) ** 2 * var)) / sw
    return xc, yc, xe, ye


def weighted_moments(img, xc, yc, wxx, wyy, wxy):
    """Moments of ``img`` under the elliptical Gaussian weight of covariance W."""
    radius = min(int(np.ceil(4.0 * np.sqrt(max(wxx, wyy)))) + 1, 64)
    yy, xx = _box(img.shape, int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5)), radius)
    dx, dy = xx - xc, yy - yc
    inv = np.linalg.inv([[wxx, wxy], [wxy, wyy]])
    q = inv[0, 0] * dx**2 + inv[1, 1] * dy**2 + 2 * inv[0, 1] * dx * dy
    wv = np.where(q <= 32.0, np.exp(-0.5 * q), 0.0) * img[yy, xx]
    s0 = wv.sum()
    return np.array([np.sum(wv * dx**2), np.sum(wv * dy**2), np.sum(wv * dx * dy)]) / s0


def adaptive_moments(image, noise, labels, own, xc, yc, sigma0):
    """Weight W with weighted moments M(W) = W/2 (adaptive moments' fixed point)."""
    img = seen_by(image, noise, labels, own)

    def residual(w):
        return weighted_moments(img, xc, yc, *w) - 0.5 * np.asarray(w)

    sol = optimize.root(residual, [sigma0**2, sigma0**2, 0.0], tol=1e-13)
    assert sol.success
    return sol.x


def aperture_sums(image, variance, noise, labels, own, xc, yc, radius):
    """Masked sum of pixels whose centres are within ``radius``; and √Σvar."""
    img = seen_by(image, noise, labels, own)
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    inside = (x - xc) ** 2 + (y - yc) ** 2 <= radius**2
    return img[inside].sum(), np.sqrt(variance[inside].astype(np.float64).sum())


def gaussian_flux(image, variance, noise, labels, own, xc, yc, wxx, wyy, wxy):
    """Least-squares amplitude of exp(-½ dᵀW⁻¹d) on its box, times its integral 2π√det W."""
    img = seen_by(image, noise, labels, own)
    radius = min(int(np.ceil(4.0 * np.sqrt(max(wxx, wyy)))) + 1, 64)
    yy, xx = _box(img.shape, int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5)), radius)
    d = np.stack([xx - xc, yy - yc], -1)[..., None]
    cov = np.array([[wxx, wxy], [wxy, wyy]])
    model = np.exp(-0.5 * (np.swapaxes(d, -1, -2) @ np.linalg.inv(cov) @ d))[..., 0, 0]
    return _least_squares(
        model, img[yy, xx], variance[yy, xx], 2 * np.pi * np.sqrt(np.linalg.det(cov))
    )


def _least_squares(model, data, var, scale=1.0):
    m = model.ravel()[:, None]
    amp = np.linalg.lstsq(m, data.ravel(), rcond=None)[0][0]
    err = np.sqrt(np.sum(m[:, 0] ** 2 * var.ravel())) / np.sum(m**2)
    return amp * scale, err * scale


def psf_flux(image, variance, noise, labels, own, stamp, x0, y0):
    """Unweighted least-squares amplitude of ``stamp`` placed at (x0, y0), on-image part."""
    img = seen_by(image, noise, labels, own)
    s = stamp.shape[0]
    yy, xx = np.mgrid[y0 : y0 + s, x0 : x0 + s]
    on = (yy >= 0) & (yy < img.shape[0]) & (xx >= 0) & (xx < img.shape[1])
    truncated = bool(np.any(stamp[~on] != 0))
    flux, err = _least_squares(stamp[on], img[yy[on], xx[on]], variance[yy[on], xx[on]])
    return flux, err, truncated


def mask_or(mask, labels, own, xc, yc):
    """OR of mask over the footprint, and over the on-image 3×3 at the rounded centre."""
    fp = np.bitwise_or.reduce(mask[labels == own]) if np.any(labels == own) else 0
    cx, cy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
    box = mask[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2]
    return int(fp), int(np.bitwise_or.reduce(box.ravel()) if box.size else 0)


# ------------------------------------------------------------------ PSF resampling


def lanczos(d, order):
    """Lanczos kernel sinc(d)·sinc(d/a) for |d| < a, else 0."""
    d = np.asarray(d, np.float64)
    return np.where(np.abs(d) < order, np.sinc(d) * np.sinc(d / order), 0.0)


def lanczos_matrix(n_out, n_in, positions, order):
    """Matrix M with (M @ f)[i] = Lanczos interpolant of f sampled at ``positions[i]``.

    Weights of each output are normalised over all integer taps (taps off the input
    count towards the normalisation but contribute zero data).
    """
    taps = np.arange(-order - 2, n_in + order + 2)
    w = lanczos(np.asarray(positions)[:, None] - taps[None, :], order)
    w /= w.sum(axis=1, keepdims=True)
    on = (taps >= 0) & (taps < n_in)
    m = np.zeros((n_out, n_in))
    m[:, taps[on]] = w[:, on]
    return m


def shift_stamp(stamp, dx, dy, order):
    """Resample so content moves by (+dx, +dy): new(x, y) = old(x - dx, y - dy)."""
    sy, sx = stamp.shape
    mx = lanczos_matrix(sx, sx, np.arange(sx) - dx, order)
    my = lanczos_matrix(sy, sy, np.arange(sy) - dy, order)
    return my @ stamp @ mx.T


def registered_stamp(image, variance, noise, labels, own, xc, yc, size, order):
    """Cut-out whose pixel (j, k) is the image interpolated at (xc - h + k, yc - h + j)."""
    img = seen_by(image, noise, labels, own)
    h = size // 2
    k = np.arange(size)
    mx = lanczos_matrix(size, img.shape[1], xc - h + k, order)
    my = lanczos_matrix(size, img.shape[0], yc - h + k, order)
    vx = int(np.floor(xc + 0.5)) - h + k
    vy = int(np.floor(yc + 0.5)) - h + k
    return my @ img @ mx.T, variance[np.ix_(vy, vx)].astype(np.float64)


# ------------------------------------------------------------------ cosmic rays


def find_cosmic_rays(image, variance, skip, psf_sigma, min_sigma, min_dn, fac, fac2):
    """The sharpness test with a Gaussian PSF's neighbour/centre ratios."""
    ratio1 = np.exp(-0.5 / psf_sigma**2)
    ratio2 = np.exp(-1.0 / psf_sigma**2)
    return find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2)


def find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2):
    """Vectorised sharpness test with the PSF given by its neighbour/centre ratios."""
    img = image.astype(np.float64)
    var = variance.astype(np.float64)
    h, w = img.shape
    c = np.s_[1 : h - 1, 1 : w - 1]

    def at(arr, dy, dx):
        return arr[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]

    v, vv = img[c], var[c]
    with np.errstate(invalid="ignore"):
        candidate = ~skip[c] & (vv > 0) & (v >= min_dn) & (v**2 >= min_sigma**2 * vv)
        core = v - fac * np.sqrt(vv)
        sharp = np.zeros_like(candidate)
        for (ay, ax), ratio in (((0, 1), ratio1), ((1, 0), ratio1), ((1, 1), ratio2),
                                ((1, -1), ratio2)):  # fmt: skip
            ok = ~at(skip, ay, ax) & ~at(skip, -ay, -ax)
            pair = 0.5 * (at(img, ay, ax) + at(img, -ay, -ax))
            pair_sigma = 0.5 * np.sqrt(at(var, ay, ax) + at(var, -ay, -ax))
            sharp |= ok & (pair + fac * pair_sigma < fac2 * ratio * core)
        cr = np.zeros((h, w), bool)
        cr[c] = candidate & sharp
        significant = ~skip & (img > fac * np.sqrt(var))
    return cr | (ndimage.binary_dilation(cr, structure=np.ones((3, 3), bool)) & significant)


def interpolate_pixels(image, bad, max_distance):
    """Linear interpolation along rows and columns across gaps of ≤ 2·max_distance pixels.

    Returns the interpolated image and the pixels with no estimate (left unchanged).
    """
    img = image.astype(np.float64)
    total = np.zeros(img.shape)
    count = np.zeros(img.shape, int)
    for transpose in (False, True):
        im = img.T if transpose else img
        bd = bad.T if transpose else bad
        tot = total.T if transpose else total
        cnt = count.T if transpose else count
        for y in range(im.shape[0]):
            lab, _ = ndimage.label(bd[y])
            for run in ndimage.find_objects(lab):
                x0, x1 = run[0].start, run[0].stop - 1
                left, right = x0 - 1, x1 + 1
                if left < 0 or right >= im.shape[1] or x1 - x0 + 1 > 2 * max_distance:
                    continue
                xs = np.arange(x0, x1 + 1)
                tot[y, xs] += np.interp(xs, [left, right], [im[y, left], im[y, right]])
                cnt[y, xs] += 1
    out = np.where(count > 0, total / np.maximum(count, 1), img)
    out = np.where(bad, out, img)
    return out, bad & (count == 0)


# ------------------------------------------------------------------ analytic truth


def gaussian(shape, xc, yc, flux, ixx, iyy=None, ixy=0.0):
    """Elliptical Gaussian of total ``flux`` and covariance (ixx, iyy, ixy) at pixel centres."""
    iyy = ixx if iyy is None else iyy
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    det = ixx * iyy - ixy**2
    dx, dy = x - xc, y - yc
    q = (iyy * dx**2 + ixx * dy**2 - 2 * ixy * dx * dy) / det
    return flux * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))
