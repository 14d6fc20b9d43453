"""Separable convolution of an image and its variance (detection smoothing)."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def _convolve_rows(data, taps, out):
    height, width = data.shape
    half = taps.size // 2
    # A private accumulator row lets LLVM vectorise (no aliasing with ``data``).
    acc = np.empty(width, np.float32)
    for y in range(height):
        acc[:] = 0.0
        for k in range(taps.size):
            weight = taps[k]
            for x in range(width - 2 * half):
                acc[x] += weight * data[y, x + k]
        for x in range(width - 2 * half):
            out[y, x + half] = acc[x]


@kernel
def _convolve_columns(data, taps, out):
    height, width = data.shape
    half = taps.size // 2
    for y in range(half, height - half):
        for k in range(taps.size):
            weight = taps[k]
            source = y + k - half
            for x in range(width):
                out[y, x] += weight * data[source, x]


@kernel
def separable_convolve(data, taps):
    """Convolve ``data`` with ``taps`` along both axes (valid region only).

    Parameters
    ----------
    data : numpy.ndarray
        float32 (H, W), C-contiguous.
    taps : numpy.ndarray
        float32 1-D kernel of odd length.

    Returns
    -------
    numpy.ndarray
        float32 (H, W); pixels closer than ``len(taps)//2`` to an edge are 0.
    """
    rows = np.zeros(data.shape, np.float32)
    _convolve_rows(data, taps, rows)
    out = np.zeros(data.shape, np.float32)
    _convolve_columns(rows, taps, out)
    return out


@kernel
def _row_pass(source, y, taps, ignore, use_ignore, acc, target):
    """Convolve row ``y`` of ``source`` along x into ``target`` (valid part only)."""
    width = source.shape[1]
    half = taps.size // 2
    acc[:] = 0.0
    for k in range(taps.size):
        weight = taps[k]
        if use_ignore:
            for x in range(width - 2 * half):
                if not ignore[y, x + k]:
                    acc[x] += weight * source[y, x + k]
        else:
            for x in range(width - 2 * half):
                acc[x] += weight * source[y, x + k]
    target[:] = 0.0
    for x in range(width - 2 * half):
        target[x + half] = acc[x]


@kernel
def smooth_image_and_variance(image, variance, ignore, taps):
    """Smooth image with ``taps`` and variance with ``taps²`` (separable).

    Pixels where ``ignore`` is True contribute neither flux nor variance; pass an
    array of another shape (e.g. (1, 1)) when no pixel is to be ignored.

    Returns
    -------
    smoothed, smoothed_variance : numpy.ndarray
        float32 (H, W); zero within ``len(taps)//2`` of the edges.
    """
    return _smooth(image, variance, ignore, taps, True)


@kernel
def smooth_image(image, ignore, taps):
    """:func:`smooth_image_and_variance` for the image alone (float32 (H, W))."""
    return _smooth(image, image, ignore, taps, False)[0]


@kernel
def _smooth(image, variance, ignore, taps, with_variance):
    # Fused and streaming: rows are convolved into a ring of len(taps) rows that
    # stays in cache, and each output row is written once.
    height, width = image.shape
    use_ignore = ignore.shape == image.shape
    size = taps.size
    half = size // 2
    taps2 = taps * taps
    smoothed = np.empty((height, width), np.float32)
    var_shape = (height, width) if with_variance else (1, 1)
    smoothed_var = np.zeros(var_shape, np.float32)
    ring = np.zeros((size, width), np.float32)
    ring_var = np.zeros((size if with_variance else 1, width), np.float32)
    acc = np.empty(width, np.float32)
    col = np.empty(width, np.float32)
    col_var = np.empty(width, np.float32)
    for y in range(min(half, height)):
        smoothed[y, :] = 0.0
        smoothed[height - 1 - y, :] = 0.0
    for y in range(height):
        slot = y % size
        _row_pass(image, y, taps, ignore, use_ignore, acc, ring[slot])
        if with_variance:
            _row_pass(variance, y, taps2, ignore, use_ignore, acc, ring_var[slot])
        if y < size - 1:
            continue
        col[:] = 0.0
        col_var[:] = 0.0
        for k in range(size):
            slot_k = (y - size + 1 + k) % size
            weight = taps[k]
            for x in range(width):
                col[x] += weight * ring[slot_k, x]
            if with_variance:
                weight2 = taps2[k]
                for x in range(width):
                    col_var[x] += weight2 * ring_var[slot_k, x]
        smoothed[y - half, :] = col
        if with_variance:
            smoothed_var[y - half, :] = col_var
    return smoothed, smoothed_var


def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of width ``2⌊⌊7σ+½⌋/2⌋+1`` (LSST's rule) [float32]."""
    half = int(int(7.0 * sigma + 0.5) // 2)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)
