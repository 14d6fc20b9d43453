"""Plain NumPy references for the noise-replacement kernels and the sky σ.

Companion of :mod:`oracles`: the boxed replacement noise, the value a source
reads at a pixel, the strided unmasked sample and its robust σ, written from the
kernels' docstrings as the most literal code.
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


def seen(image, noise, labels, own, y, x):
    """Pixel (y, x) as footprint ``own`` sees it: other footprints read as noise."""
    lab = labels[y, x]
    return image[y, x] if lab in (0, own) else noise[y, x]


def unmasked_samples(image, mask, stride, bad):
    """Every ``stride``-th pixel in raster order whose mask has none of ``bad``."""
    values = image.ravel()[::stride]
    return values[(mask.ravel()[::stride] & bad) == 0]


def robust_sigma(values):
    """1.4826 × median absolute deviation from the median (NumPy's median)."""
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))
