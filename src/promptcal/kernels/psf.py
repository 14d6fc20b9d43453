"""PSF kernels: Lanczos resampling of stamps and registered star cut-outs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.noise import noise_at


@kernel
def lanczos_weights(offset, order):
    """Lanczos weights for sampling at ``i + offset`` from taps ``i - order + 1 … i + order``.

    Returns
    -------
    numpy.ndarray
        float64 (2 * order,), normalised to unit sum.
    """
    out = np.empty(2 * order)
    total = 0.0
    for t in range(2 * order):
        d = offset - (t - order + 1)
        if abs(d) < 1e-12:
            w = 1.0
        elif abs(d) >= order:
            w = 0.0
        else:
            pd = np.pi * d
            w = order * np.sin(pd) * np.sin(pd / order) / (pd * pd)
        out[t] = w
        total += w
    for t in range(2 * order):
        out[t] /= total
    return out


@kernel
def shift_stamp(stamp, dx, dy, order):
    """Resample ``stamp`` so its content moves by (+dx, +dy) pixels (Lanczos).

    Parameters
    ----------
    stamp : numpy.ndarray
        float64 (S, S).
    dx, dy : float
        Shift [px], |shift| ≤ 1 for best accuracy.
    order : int
        Lanczos order (3 is usual).

    Returns
    -------
    numpy.ndarray
        float64 (S, S); content outside the stamp is treated as zero.
    """
    size_y, size_x = stamp.shape
    # new(x) = old(x - dx): sample the old stamp at x - dx.
    fx = np.floor(-dx)
    fy = np.floor(-dy)
    wx = lanczos_weights(-dx - fx, order)
    wy = lanczos_weights(-dy - fy, order)
    ix0 = int(fx) - order + 1
    iy0 = int(fy) - order + 1
    tmp = np.zeros((size_y, size_x))
    for y in range(size_y):
        for x in range(size_x):
            acc = 0.0
            for t in range(2 * order):
                xs = x + ix0 + t
                if 0 <= xs < size_x:
                    acc += wx[t] * stamp[y, xs]
            tmp[y, x] = acc
    out = np.zeros((size_y, size_x))
    for y in range(size_y):
        for t in range(2 * order):
            ys = y + iy0 + t
            if 0 <= ys < size_y:
                w = wy[t]
                for x in range(size_x):
                    out[y, x] += w * tmp[ys, x]
    return out


class RegisteredStamps(NamedTuple):
    """What :func:`registered_stamps` returns.

    Attributes
    ----------
    stamps, variances : numpy.ndarray
        float64 (n, size, size).
    off_image : numpy.ndarray
        bool (n,).
    """

    stamps: np.ndarray
    variances: np.ndarray
    off_image: np.ndarray


def registered_stamps(
    image, variance, noise_values, noise_table, labels, own, xc, yc, size, order
) -> RegisteredStamps:
    """Cut-outs centred exactly on each (xc, yc), resampled with Lanczos.

    Pixels of other footprints read as their replacement noise, given compactly as
    ``noise_values``/``noise_table`` (:func:`promptcal.kernels.noise.footprint_noise_boxes`;
    a full plane via ``flat``/``plane_table``). Returns stamps and the variance of the
    nearest input pixel, plus a flag for cut-outs that leave the image.

    Returns
    -------
    RegisteredStamps
        One entry per source.
    """
    out = _registered_stamps(
        image, variance, noise_values, noise_table, labels, own, xc, yc, size, order
    )
    return RegisteredStamps(*out)


@kernel
def _registered_stamps(
    image, variance, noise_values, noise_table, labels, own, xc, yc, size, order
):
    """The kernel of :func:`registered_stamps` (a plain tuple)."""
    n = xc.size
    half = size // 2
    height, width = image.shape
    stamps = np.zeros((n, size, size))
    variances = np.zeros((n, size, size))
    off_image = np.zeros(n, np.bool_)
    rows = np.empty((size + 2 * order - 1, size))
    for i in range(n):
        fx = np.floor(xc[i])
        fy = np.floor(yc[i])
        wx = lanczos_weights(xc[i] - fx, order)
        wy = lanczos_weights(yc[i] - fy, order)
        bx = int(fx) - half - order + 1
        by = int(fy) - half - order + 1
        if bx < 0 or by < 0 or bx + size + 2 * order > width or by + size + 2 * order > height:
            off_image[i] = True
            continue
        # The resampled rows, each shared by 2·order output rows: the same sums as
        # resampling every output pixel from scratch, computed once.
        for r in range(size + 2 * order - 1):
            yy = by + r
            for k in range(size):
                row = 0.0
                for tx in range(2 * order):
                    xx = bx + k + tx
                    lab = labels[yy, xx]
                    if lab == 0 or lab == own[i]:
                        row += wx[tx] * image[yy, xx]
                    else:  # rare: a neighbour's pixel
                        row += wx[tx] * noise_at(noise_values, noise_table, lab, yy, xx)
                rows[r, k] = row
        for j in range(size):
            for k in range(size):
                acc = 0.0
                for ty in range(2 * order):
                    acc += wy[ty] * rows[j + ty, k]
                stamps[i, j, k] = acc
                vy = int(np.floor(yc[i] + 0.5)) - half + j
                vx = int(np.floor(xc[i] + 0.5)) - half + k
                variances[i, j, k] = variance[vy, vx]
    return stamps, variances, off_image


@kernel
def pixel_psf_stamps(coefficients, terms, dx, dy, order):
    """PSF images of a pixel-basis model at many positions, shifted and unit-sum.

    Parameters
    ----------
    coefficients : numpy.ndarray
        float64 (n_terms, S, S) basis images.
    terms : numpy.ndarray
        float64 (n_terms, n) polynomial terms at each position.
    dx, dy : numpy.ndarray
        float64 (n,) sub-pixel shifts [px].
    order : int
        Lanczos order.

    Returns
    -------
    numpy.ndarray
        float64 (n, S, S).
    """
    n_terms, size, _ = coefficients.shape
    n = dx.size
    out = np.empty((n, size, size))
    image = np.empty((size, size))
    for i in range(n):
        image[:, :] = 0.0
        for t in range(n_terms):
            weight = terms[t, i]
            for j in range(size):
                for k in range(size):
                    image[j, k] += weight * coefficients[t, j, k]
        shifted = shift_stamp(image, dx[i], dy[i], order)
        total = shifted.sum()
        for j in range(size):
            for k in range(size):
                out[i, j, k] = shifted[j, k] / total
    return out
