"""Noise-replacement kernels and the sky σ against NumPy oracles."""

from __future__ import annotations

import numpy as np
import oracles_more as om
import oracles_noise as on
import pytest
from numpy.testing import assert_array_equal

from promptcal.core.exposure import Exposure, Mask
from promptcal.kernels import noise as nk
from promptcal.pipeline.measurement import _median, background_noise_sigma


def _blobs(shape, n, seed, radius=(3, 12)):
    """Labels 1..n: discs of random radius at random places (later ones on top)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i in range(n):
        cx, cy = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        r = rng.uniform(*radius)
        labels[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = i + 1
    return labels


# ------------------------------------------------------------------ generator


@pytest.mark.parametrize("seed", [0, 1, 17, 2**31 - 1, 2**32 - 1])
def test_footprint_noise_is_the_legacy_stream_across_twists_and_blocks(seed):
    # 40 000 pixels: dozens of MT19937 twists and ten 4096-value blocks, with the
    # polar method's cached second value carried across every boundary.
    labels = np.ones((160, 250), np.int32)
    values, table = nk.footprint_noise_boxes(labels, np.array([[0, 0, 249, 159]]), 2.5, seed)
    expected = (np.random.RandomState(seed).standard_normal(labels.size) * 2.5).astype(np.float32)
    assert table.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 250, 160]]
    assert_array_equal(values, expected)


def test_footprint_noise_matches_oracle_with_overlapping_boxes():
    labels = _blobs((120, 140), 40, 3)
    labels[5:9, 5:9] = 41  # a label without a box: stays 0
    bbox = om.label_bboxes(labels, 40)
    bbox[7, 3] -= 2  # a box missing its last rows: those pixels stay 0
    values, table = nk.footprint_noise_boxes(labels, bbox, 3.0, 99)
    assert values.dtype == np.float32
    assert_array_equal(
        on.noise_plane(values, table, labels), on.footprint_noise(labels, bbox, 3.0, 99)
    )


def test_boxed_noise_reads_like_the_plane():
    labels = _blobs((90, 100), 25, 4)
    labels[0:3, 0:3] = 26  # not in the table: reads 0 like the plane
    bbox = om.label_bboxes(labels, 25)
    bbox[4, 1] += 1  # a box missing its first row: that row reads 0
    first = bbox[4, 1] - 1
    values, table = nk.footprint_noise_boxes(labels, bbox, 1.5, 5)
    plane = on.noise_plane(values, table, labels)
    assert_array_equal(plane, on.footprint_noise(labels, bbox, 1.5, 5))
    assert table.shape == (26, 5) and values.size == np.sum(table[:, 3] * table[:, 4])
    ys, xs = np.nonzero(labels)
    got = [nk.noise_at(values, table, labels[y, x], y, x) for y, x in zip(ys, xs, strict=True)]
    assert_array_equal(got, plane[ys, xs])
    assert (plane[labels == 26] == 0).all()
    assert (labels[first] == 5).any() and not plane[first, labels[first] == 5].any()
    # A full plane is read through a one-row table.
    flat, one = nk.flat(plane), nk.plane_table(plane)
    assert one.tolist() == [[0, 0, 0, 100, 90]]
    assert_array_equal([nk.noise_at(flat, one, 7, y, x) for y, x in [(0, 0), (89, 99), (40, 3)]],
                       [plane[0, 0], plane[89, 99], plane[40, 3]])  # fmt: skip


def _disks(shape, centres, radius):
    labels = np.zeros(shape, np.int32)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i, (cx, cy) in enumerate(centres):
        labels[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = i + 1
    return labels


def test_footprint_noise_fills_only_listed_footprints_inside_their_boxes():
    shape = (60, 70)
    labels = _disks(shape, [(15, 15), (50, 20), (30, 45)], 8)
    labels[7:10, 7:10] = 4  # not in the list, in a corner of footprint 1's box
    bbox = om.label_bboxes(labels, 3)
    bbox[2, 3] -= 3  # footprint 3's box misses its last three rows
    sigma, seed = 4.0, 123
    got = on.noise_plane(*nk.footprint_noise_boxes(labels, bbox, sigma, seed), labels)
    inside = np.zeros(shape, bool)
    for i, (x0, y0, x1, y1) in enumerate(bbox):
        inside[y0 : y1 + 1, x0 : x1 + 1] |= labels[y0 : y1 + 1, x0 : x1 + 1] == i + 1
    assert not got[~inside].any()
    assert np.all(got[inside] != 0)
    assert (labels == 4).any() and not got[labels == 4].any()
    assert ((labels == 3) & ~inside).sum() > 0
    # The values are the seeded Gaussian stream, one value per footprint pixel.
    stream = (np.random.RandomState(seed).standard_normal(inside.sum()) * sigma).astype(np.float32)
    assert_array_equal(np.sort(got[inside]), np.sort(stream))
    again = on.noise_plane(*nk.footprint_noise_boxes(labels, bbox, sigma, seed), labels)
    assert_array_equal(got, again)  # deterministic
    other = on.noise_plane(*nk.footprint_noise_boxes(labels, bbox, sigma, seed + 1), labels)
    assert_array_equal(other != 0, inside)
    assert not np.array_equal(got, other)


def test_footprint_noise_has_the_requested_sigma():
    labels = np.zeros((170, 160), np.int32)
    labels[5:165, 3:155] = 1
    sigma = 7.0
    values, _ = nk.footprint_noise_boxes(labels, om.label_bboxes(labels, 1), sigma, 5)
    assert abs(values.mean()) < 5 * sigma / np.sqrt(values.size)
    assert abs(values.std() / sigma - 1) < 6 / np.sqrt(2 * values.size)  # ~6σ of the estimate


# ------------------------------------------------------------------ sky σ


def test_unmasked_samples_match_oracle():
    rng = np.random.default_rng(7)
    image = rng.normal(size=(211, 307)).astype(np.float32)
    mask = rng.integers(0, 16, image.shape).astype(np.int32)
    for stride in (1, 7, 33):
        values, has_nan = nk.unmasked_samples(image, mask, stride, 0b0101)
        assert_array_equal(values, on.unmasked_samples(image, mask, stride, 0b0101))
        assert not has_nan
    image[3, 3] = np.nan
    assert nk.unmasked_samples(image, np.zeros_like(mask), 1, 1)[1]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 16383, 16384, 16385, 50_000, 480_001])
def test_median_equals_numpy(n):
    rng = np.random.default_rng(n)
    for values in (
        rng.normal(3.0, 2.0, n),
        rng.standard_cauchy(n),  # heavy tails
        rng.integers(-3, 4, n),  # many ties
        np.sort(rng.normal(size=n))[::-1],  # ordered input
    ):
        values = values.astype(np.float32)
        got = _median(values, False)
        assert got.dtype == np.float32 and got == np.median(values)
        a, b = nk.middle_values(values)
        ordered = np.sort(values)
        assert (a, b) == (ordered[(n - 1) // 2], ordered[n // 2])


def test_median_of_nan_is_nan():
    values = np.arange(20, dtype=np.float32)
    values[4] = np.nan
    assert np.isnan(_median(values, True))


def test_background_noise_sigma_equals_oracle():
    rng = np.random.default_rng(11)
    image = rng.normal(0, 4.0, (700, 900)).astype(np.float32)
    exposure = Exposure(
        image, np.full(image.shape, 16.0, np.float32), Mask(np.zeros(image.shape, np.int32))
    )
    detected = exposure.mask.bit("DETECTED")
    exposure.mask.array[100:300, 200:500] |= detected
    exposure.image[100:300, 200:500] += 1e4  # masked out: must not widen σ
    stride = max(1, exposure.image.size // 500_000) | 1
    bad = exposure.mask.bit("DETECTED", "DETECTED_NEGATIVE", "NO_DATA", "BAD", "SAT", "EDGE")
    expected = on.robust_sigma(
        on.unmasked_samples(exposure.image, exposure.mask.array, stride, bad)
    )
    assert background_noise_sigma(exposure) == expected
    assert abs(expected / 4.0 - 1) < 0.02
