"""Plain NumPy/SciPy references for the measurement and PSF-resampling kernels.

Companion of :mod:`oracles`: what a source sees (neighbours read as noise), the
weighted centroid, the hollow-centre test, adaptive moments, aperture, Gaussian and
PSF fluxes, mask bits, and Lanczos resampling, each written from the kernel's
docstring with vectorised NumPy or ``scipy.optimize``, in float64.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

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
