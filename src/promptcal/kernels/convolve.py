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
def smooth_image_and_variance(image, variance, ignore, taps):
    """Smooth image with ``taps`` and variance with ``taps²`` (separable).

    Pixels where ``ignore`` is True contribute neither flux nor variance.

    Returns
    -------
    smoothed, smoothed_variance : numpy.ndarray
        float32 (H, W); zero within ``len(taps)//2`` of the edges.
    """
    height, width = image.shape
    clean = np.empty((height, width), np.float32)
    clean_var = np.empty((height, width), np.float32)
    for y in range(height):
        for x in range(width):
            if ignore[y, x]:
                clean[y, x] = 0.0
                clean_var[y, x] = 0.0
            else:
                clean[y, x] = image[y, x]
                clean_var[y, x] = variance[y, x]
    smoothed = separable_convolve(clean, taps)
    smoothed_var = separable_convolve(clean_var, taps * taps)
    return smoothed, smoothed_var


def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of width ``2⌊⌊7σ+½⌋/2⌋+1`` (LSST's rule) [float32]."""
    half = int(int(7.0 * sigma + 0.5) // 2)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)
