"""Sky-source placement and painting on masks of known layout."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from promptcal.core.exposure import Exposure, Mask
from promptcal.pipeline.detect.sky_sources import (
    SkySourcesConfig,
    paint_sky_footprints,
    place_sky_sources,
)


def _blank(shape):
    return Exposure(
        np.zeros(shape, np.float32), np.ones(shape, np.float32), Mask(np.zeros(shape, np.int32))
    )


def _exposure(shape=(200, 300)):
    """Blank exposure whose mask has a DETECTED block, a BAD column and an EDGE border."""
    mask = Mask(np.zeros(shape, np.int32))
    mask.array[40:120, 60:180] |= mask.bit("DETECTED")
    mask.array[:, 250] |= mask.bit("BAD")
    mask.array[:5, :] |= mask.bit("EDGE")
    mask.array[150:160, 20:40] |= mask.bit("SAT")  # not avoided by default
    return Exposure(np.zeros(shape, np.float32), np.ones(shape, np.float32), mask)


def _disk_pixels(centres, radius, shape):
    """Bool (n, H, W): the pixels within ``radius`` of each centre."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.array([(x - cx) ** 2 + (y - cy) ** 2 <= radius**2 for cx, cy in centres])


def test_sky_sources_avoid_the_planes_and_each_other():
    exposure = _exposure()
    config = SkySourcesConfig(n_sources=40, radius=6.0)
    centres = place_sky_sources(exposure, config, seed=7)
    assert centres.shape == (40, 2) and centres.dtype == np.int64
    disks = _disk_pixels(centres, config.radius, exposure.image.shape)
    avoid = exposure.mask.bit(*config.avoid_mask_planes)
    for disk in disks:
        assert not (exposure.mask.array[disk] & avoid).any()
    # Footprints never touch: centres at least 2r + 1 apart, so no pixel is shared.
    d = np.hypot(*(centres[:, None, :] - centres[None, :, :]).T)
    assert np.all(d[~np.eye(len(centres), dtype=bool)] >= 2 * config.radius + 1)
    assert disks.sum(axis=0).max() == 1
    # Centres keep the whole disk on the image.
    r = int(np.ceil(config.radius))
    assert np.all(centres >= r) and np.all(centres[:, 0] < 300 - r)
    assert np.all(centres[:, 1] < 200 - r)


def test_sky_sources_are_reproducible_from_the_seed():
    exposure = _exposure()
    config = SkySourcesConfig(n_sources=20)
    a = place_sky_sources(exposure, config, seed=3)
    assert_array_equal(a, place_sky_sources(exposure, config, seed=3))
    assert not np.array_equal(a, place_sky_sources(exposure, config, seed=4))


def test_avoided_planes_follow_the_config():
    exposure = _exposure()
    config = SkySourcesConfig(n_sources=60, radius=4.0, avoid_mask_planes=("SAT",))
    centres = place_sky_sources(exposure, config, seed=11)
    disks = _disk_pixels(centres, config.radius, exposure.image.shape)
    sat = exposure.mask.is_set("SAT")
    detected = exposure.mask.is_set("DETECTED")
    assert not (disks & sat).any()
    assert (disks & detected).any()  # DETECTED is no longer avoided


def test_crowded_sky_gives_fewer_sources_and_tiny_images_none():
    exposure = _blank((40, 40))
    exposure.mask.array[:, :] |= exposure.mask.bit("DETECTED")
    exposure.mask.array[10:30, 10:30] = 0  # room for one 8-px footprint only
    centres = place_sky_sources(exposure, SkySourcesConfig(n_sources=10), seed=1)
    assert centres.shape == (1, 2)
    assert np.all((centres >= 18) & (centres <= 21))
    for config, shape in ((SkySourcesConfig(n_sources=0), (200, 300)),
                          (SkySourcesConfig(radius=8.0), (16, 300))):  # fmt: skip
        assert place_sky_sources(_blank(shape), config, seed=1).shape == (0, 2)


@pytest.mark.parametrize("radius", [3.0, 4.5, 8.0])
def test_paint_sky_footprints_writes_labelled_disks(radius):
    labels = np.zeros((60, 80), np.int32)
    labels[0, 0] = 9  # existing labels away from the disks are kept
    centres = np.array([[20, 20], [50, 30], [70, 45]], np.int64)
    paint_sky_footprints(labels, centres, radius, first=5)
    disks = _disk_pixels(centres, radius, labels.shape)
    for k, disk in enumerate(disks):
        assert_array_equal(labels == 5 + k, disk)
    assert labels[0, 0] == 9
    assert np.count_nonzero(labels) == disks.sum() + 1
