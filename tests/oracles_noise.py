"""Plain NumPy references for the noise-replacement kernels and the sky σ.

Companion of :mod:`oracles`: the boxed replacement noise and the plane it stands
for, the strided unmasked sample and its robust σ, written from the kernels'
docstrings as the most literal code.
"""

from __future__ import annotations

import numpy as np


def footprint_noise(labels, bbox, sigma, seed):
    """Footprint pixels inside their own box, in footprint then raster order, get the
    legacy ``RandomState(seed)`` normals × σ (float32); everything else 0."""
    draws = np.random.RandomState(seed)
    out = np.zeros(labels.shape, np.float32)
    for i, (x0, y0, x1, y1) in enumerate(bbox):
        y, x = np.nonzero(labels[y0 : y1 + 1, x0 : x1 + 1] == i + 1)  # raster order
        out[y + y0, x + x0] = draws.standard_normal(y.size) * sigma
    return out


def noise_plane(values, table, labels):
    """The (H, W) float32 plane of boxed noise: footprint pixels in their box, else 0.

    Row L of ``table`` (``offset, x0, y0, width, height``) places label L's box in
    ``values``; the pixels of label L inside it read their value.
    """
    out = np.zeros(labels.shape, np.float32)
    for lab in range(1, table.shape[0]):
        offset, x0, y0, width, height = (int(v) for v in table[lab])
        box = values[offset : offset + width * height].reshape(height, width)
        own = labels[y0 : y0 + height, x0 : x0 + width] == lab
        out[y0 : y0 + height, x0 : x0 + width][own] = box[own]
    return out


def unmasked_samples(image, mask, stride, bad):
    """Every ``stride``-th pixel in raster order whose mask has none of ``bad``."""
    values = image.ravel()[::stride]
    return values[(mask.ravel()[::stride] & bad) == 0]


def robust_sigma(values):
    """1.4826 × median absolute deviation from the median (NumPy's median)."""
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))
