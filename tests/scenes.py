"""Small synthetic scenes with known truth for the measurement-kernel tests."""

from __future__ import annotations

import numpy as np
import oracles

SKY_SIGMA = 1.0


def f32(a):
    """C-contiguous float32 copy (the kernels' pixel dtype)."""
    return np.ascontiguousarray(a, np.float32)


def disk_labels(shape, centres, radius, start=1):
    """Footprint labels: disks of ``radius`` around each (x, y), labels start, start+1, …"""
    labels = np.zeros(shape, np.int32)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i, (cx, cy) in enumerate(centres):
        labels[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = start + i
    return labels


def star_field(seed, shape=(64, 72), n=4, sigma=1.7, flux=(2e3, 2e4)):
    """Noisy Gaussian stars in separate disk footprints, a noise image and the truth.

    Returns image, variance, noise (float32), labels, own (int32 label of each star),
    and the true x, y [px] and flux of each star.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(14, nx - 15, 2), np.linspace(14, ny - 15, (n + 1) // 2))
    xs = gx.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    ys = gy.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    fl = rng.uniform(*flux, n)
    image = sum(
        oracles.gaussian(shape, x, y, f, sigma**2) for x, y, f in zip(xs, ys, fl, strict=True)
    )
    image = image + rng.normal(0, SKY_SIGMA, shape)
    variance = np.full(shape, SKY_SIGMA**2) * rng.uniform(0.8, 1.2, shape)
    labels = disk_labels(shape, list(zip(xs, ys, strict=True)), 9)
    noise = rng.normal(0, SKY_SIGMA, shape) * (labels > 0)
    own = np.arange(1, n + 1, dtype=np.int32)
    return f32(image), f32(variance), f32(noise), labels, own, xs, ys, fl
