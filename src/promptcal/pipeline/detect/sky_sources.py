"""Sky sources: empty-sky apertures measured like stars (spec A8)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.exposure import Exposure


class SkySourcesConfig(Config):
    """Placement of sky sources."""

    n_sources: int = Field(100, ge=0, description="Number of sky sources wanted [1].")
    radius: float = Field(8.0, gt=0, description="Radius of each sky footprint [px].")
    avoid_mask_planes: tuple[str, ...] = Field(
        ("DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA", "EDGE"),
        description="Planes a sky footprint must not touch.",
    )
    n_trial_factor: int = Field(
        20, ge=1, description="Random candidate positions per wanted source [1]."
    )


def place_sky_sources(exposure: Exposure, config: SkySourcesConfig, seed: int) -> np.ndarray:
    """Centres (array x, y) of non-overlapping sky footprints on clean sky.

    Returns
    -------
    numpy.ndarray
        int64 (n, 2) array positions; fewer than requested if the sky is crowded.
    """
    if config.n_sources == 0:
        return np.zeros((0, 2), np.int64)
    radius = int(np.ceil(config.radius))
    height, width = exposure.image.shape
    if height <= 2 * radius or width <= 2 * radius:
        return np.zeros((0, 2), np.int64)
    avoid_bits = exposure.mask.bit(*config.avoid_mask_planes)
    rng = np.random.default_rng(seed)
    n_trials = config.n_sources * config.n_trial_factor
    xs = rng.integers(radius, width - radius, n_trials)
    ys = rng.integers(radius, height - radius, n_trials)
    # Gather only the disk pixels of each candidate: far cheaper than a full-image pass.
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = dx**2 + dy**2 <= config.radius**2
    pixels = exposure.mask.array[ys[:, None] + dy[disk][None, :], xs[:, None] + dx[disk][None, :]]
    dirty = (pixels & avoid_bits).any(axis=1)
    chosen: list[tuple[int, int]] = []
    min_sep2 = (2 * config.radius + 1) ** 2
    for x, y in zip(xs[~dirty], ys[~dirty], strict=True):
        if all((x - cx) ** 2 + (y - cy) ** 2 >= min_sep2 for cx, cy in chosen):
            chosen.append((int(x), int(y)))
            if len(chosen) == config.n_sources:
                break
    return np.array(chosen, np.int64).reshape(-1, 2)


def paint_sky_footprints(labels: np.ndarray, centres: np.ndarray, radius: float, first: int):
    """Write disk footprints with labels ``first, first + 1, …`` into ``labels``."""
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = dx**2 + dy**2 <= radius**2
    for k, (x, y) in enumerate(centres):
        view = labels[y - r : y + r + 1, x - r : x + r + 1]
        view[disk] = first + k
