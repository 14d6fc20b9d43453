"""Plain NumPy/SciPy reference implementations of the Numba kernels: detection.

Each oracle is written from the kernel's docstring (what it should compute), with
vectorised NumPy or ``scipy.ndimage``/``scipy.optimize`` instead of the kernel's loops,
so a shared mistake in a loop is unlikely. Everything is computed in float64. This
module holds the smoothing, thresholding, growth, peak and span oracles and the
analytic Gaussian; :mod:`oracles_measure`, :mod:`oracles_more` and
:mod:`oracles_noise` the others.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

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


def mask_spans(mask):
    """Span set (row_start, x0, x1) of the runs of True pixels of a bool mask."""
    _, y, x0, x1 = label_spans(np.asarray(mask, np.int32))
    row_start = np.searchsorted(y, np.arange(mask.shape[0] + 1)).astype(np.int64)
    return row_start, x0, x1


def paint_mask(row_start, x0, x1, width):
    """Bool (H, W) mask of a span set."""
    out = np.zeros((row_start.size - 1, width), bool)
    y = np.repeat(np.arange(row_start.size - 1), np.diff(row_start))
    for row, a, b in zip(y, x0, x1, strict=True):
        out[row, a : b + 1] = True
    return out


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


# ------------------------------------------------------------------ analytic truth


def gaussian(shape, xc, yc, flux, ixx, iyy=None, ixy=0.0):
    """Elliptical Gaussian of total ``flux`` and covariance (ixx, iyy, ixy) at pixel centres."""
    iyy = ixx if iyy is None else iyy
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    det = ixx * iyy - ixy**2
    dx, dy = x - xc, y - yc
    q = (iyy * dx**2 + ixx * dy**2 - 2 * ixy * dx * dy) / det
    return flux * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))
