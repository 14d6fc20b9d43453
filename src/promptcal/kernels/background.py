"""Per-bin clipped-mean statistics for background estimation (arrays in, arrays out).

The statistic follows afw's ``MEANCLIP``: start from the median with a width taken
from the inter-quartile range (σ ≈ 0.7413·IQR), then iterate: keep pixels within
``n_sigma`` widths of the current centre, take their mean as the new centre and
their sample standard deviation as the new width.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.order_statistics import quartiles_into, workspace

#: σ of a Gaussian per unit inter-quartile range (1 / 1.349).
IQR_TO_SIGMA = 0.741301109252802


@kernel
def clipped_mean_into(buf, n, n_sigma, n_iter, slots, counts, work):
    """Iteratively clipped mean of ``buf[:n]`` (``buf`` may be reordered).

    Parameters
    ----------
    buf : numpy.ndarray
        float32 or float64 work buffer holding the values in ``buf[:n]``; the
        arithmetic is float64 either way.
    n : int
        Number of values (> 0).
    n_sigma : float
        Clipping half-width in units of the current width estimate.
    n_iter : int
        Number of clipping iterations (0 returns the median).
    slots, counts, work : numpy.ndarray
        A :func:`~promptcal.kernels.order_statistics.workspace` for ``n`` values.

    Returns
    -------
    mean, stdev : float
        Clipped mean and clipped sample standard deviation (NaN when fewer than
        two values survive); same unit as the input.
    """
    q = quartiles_into(buf, n, slots, counts, work)
    median = q[1]
    center = median
    hwidth = n_sigma * IQR_TO_SIGMA * (q[2] - q[0])
    mean = median
    var = np.nan
    for _ in range(n_iter):
        # One pass with sums shifted by the centre (stable for large offsets), over
        # two interleaved accumulators so that the additions do not wait on each other.
        s1a = 0.0
        s2a = 0.0
        s1b = 0.0
        s2b = 0.0
        m = 0
        for i in range(0, n - 1, 2):
            da = buf[i] - center
            db = buf[i + 1] - center
            ka = abs(da) <= hwidth
            kb = abs(db) <= hwidth
            da = da if ka else 0.0
            db = db if kb else 0.0
            s1a += da
            s2a += da * da
            s1b += db
            s2b += db * db
            m += int(ka) + int(kb)
        if n % 2 == 1:
            d = buf[n - 1] - center
            if abs(d) <= hwidth:
                s1a += d
                s2a += d * d
                m += 1
        s1 = s1a + s1b
        s2 = s2a + s2b
        if m == 0:
            break
        mean = center + s1 / m
        if m > 1:
            var = max((s2 - s1 * s1 / m) / (m - 1), 0.0)
            hwidth = n_sigma * np.sqrt(var)
        center = mean
    return mean, np.sqrt(var)


@kernel
def _gather_bin(image, mask, ignore_bits, y0, y1, x0, x1, stride, buf):
    """Copy the unmasked, finite pixels ``[y·stride, x·stride]`` of one bin into ``buf``.

    Row-major order, as the clipped sums depend on it. Branch-free: every pixel is
    written and the count advances only for valid ones, so ``buf`` needs one slot per
    pixel of the bin. Returns the number of valid pixels.
    """
    n = 0
    inf = np.float32(np.inf)
    for y in range(y0, y1):
        row = image[y * stride, x0 * stride : x1 * stride : stride]
        mask_row = mask[y * stride, x0 * stride : x1 * stride : stride]
        for j in range(x1 - x0):
            v = row[j]
            buf[n] = v
            # ``&`` and |v| < inf (false for NaN and ±inf) keep the loop free of branches.
            n += ((mask_row[j] & ignore_bits) == 0) & (abs(v) < inf)
    return n


class BinStatistics(NamedTuple):
    """What :func:`binned_clipped_mean_strided` returns.

    Attributes
    ----------
    values : numpy.ndarray
        float64 (ny, nx) clipped means [image unit]; NaN for bins without valid pixels.
    stdevs : numpy.ndarray
        float64 (ny, nx) clipped standard deviations [image unit]; NaN when undefined.
    n_valid : numpy.ndarray
        int64 (ny, nx) number of unmasked, finite pixels per bin.
    """

    values: np.ndarray
    stdevs: np.ndarray
    n_valid: np.ndarray


def binned_clipped_mean_strided(
    image, mask, ignore_bits, y_edges, x_edges, stride, n_sigma, n_iter
) -> BinStatistics:
    """Clipped mean of the unmasked, finite pixels of every bin of ``image[::stride, ::stride]``.

    The bin edges are in subsampled pixels; the subsample is read in place rather than
    copied.

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W) pixels [image unit].
    mask : numpy.ndarray
        int32 (H, W) bit mask.
    ignore_bits : int
        Pixels with any of these bits set are excluded.
    y_edges, x_edges : numpy.ndarray
        int64 bin edges [subsampled px]: bin ``(j, i)`` covers the subsampled rows
        ``y_edges[j]:y_edges[j+1]`` and columns ``x_edges[i]:x_edges[i+1]``, i.e. the
        pixels ``(y·stride, x·stride)``. ``y_edges[-1]·stride`` must not exceed
        ``H + stride - 1`` (likewise for x).
    stride : int
        Subsampling step along both axes [px].
    n_sigma : float
        Clipping half-width [σ].
    n_iter : int
        Clipping iterations.

    Returns
    -------
    BinStatistics
        Statistics per bin.
    """
    out = _binned_clipped_mean_strided(
        image, mask, ignore_bits, y_edges, x_edges, stride, n_sigma, n_iter
    )
    return BinStatistics(*out)


@kernel
def _binned_clipped_mean_strided(
    image, mask, ignore_bits, y_edges, x_edges, stride, n_sigma, n_iter
):
    """The kernel of :func:`binned_clipped_mean_strided` (a plain tuple)."""
    ny = y_edges.size - 1
    nx = x_edges.size - 1
    values = np.full((ny, nx), np.nan)
    stdevs = np.full((ny, nx), np.nan)
    n_valid = np.zeros((ny, nx), np.int64)
    max_h = 0
    for j in range(ny):
        max_h = max(max_h, y_edges[j + 1] - y_edges[j])
    max_w = 0
    for i in range(nx):
        max_w = max(max_w, x_edges[i + 1] - x_edges[i])
    # float32 holds the pixels exactly and halves the cache footprint of the passes.
    buf = np.empty(max(1, max_h * max_w), np.float32)
    slots, counts, work = workspace(buf.size, buf)
    for j in range(ny):
        for i in range(nx):
            n = _gather_bin(
                image,
                mask,
                ignore_bits,
                y_edges[j],
                y_edges[j + 1],
                x_edges[i],
                x_edges[i + 1],
                stride,
                buf,
            )
            n_valid[j, i] = n
            if n > 0:
                values[j, i], stdevs[j, i] = clipped_mean_into(
                    buf, n, n_sigma, n_iter, slots, counts, work
                )
    return values, stdevs, n_valid


@kernel
def subtract_separable(image, ty, rows):
    """``image -= ty @ rows`` in place, row by row (no full-size temporary).

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W), modified in place.
    ty : numpy.ndarray
        float32 (H, K) per-row basis values.
    rows : numpy.ndarray
        float32 (K, W) per-column model rows.
    """
    height, width = image.shape
    for y in range(height):
        for k in range(ty.shape[1]):
            weight = ty[y, k]
            for x in range(width):
                image[y, x] -= weight * rows[k, x]
