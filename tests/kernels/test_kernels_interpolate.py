"""Interpolation over flagged pixels against the NumPy oracle and exact linear truth.

``interpolate_flagged`` works from mask bits; ``_interpolate`` gives it a mask whose
only flagged pixels are a bool ``bad`` image, fills them with NaN first (the kernel
never reads a flagged pixel) and reports the ones left unchanged.
"""

from __future__ import annotations

import numpy as np
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.kernels.interpolate import flagged_pixels, interpolate_flagged

BAD, INTRP = np.int32(1 << 3), np.int32(1 << 2)


def _interpolate(image, bad, max_distance):
    """Interpolate the ``bad`` pixels of ``image`` in place; bool (H, W) of those that failed."""
    mask = np.where(bad, BAD, 0).astype(np.int32)
    image[bad] = np.nan
    n_bad, n_failed = interpolate_flagged(image, mask, BAD, INTRP, INTRP, max_distance)
    failed = bad & np.isnan(image)
    assert (n_bad, n_failed) == (bad.sum(), failed.sum())
    assert_array_equal(mask, np.where(bad, BAD | INTRP, 0))  # every bad pixel is marked
    return failed


def test_flagged_pixels_lists_bits_without_excluded_ones_in_row_major_order():
    rng = np.random.default_rng(9)
    mask = np.where(rng.random((30, 200)) < 0.02, 1 << 3, 0).astype(np.int32)
    mask |= np.where(rng.random(mask.shape) < 0.3, 1 << 2, 0).astype(np.int32)
    mask[-1, -1] = 1 << 3  # the very last pixel, in a partial block
    ys, xs = flagged_pixels(mask, np.int32(1 << 3), np.int32(1 << 2))
    e_ys, e_xs = np.nonzero(((mask & (1 << 3)) != 0) & ((mask & (1 << 2)) == 0))
    assert_array_equal(ys, e_ys)
    assert_array_equal(xs, e_xs)
    assert ys.size > 20
    none = flagged_pixels(np.zeros((5, 70), np.int32), np.int32(1), np.int32(0))
    assert none[0].size == none[1].size == 0


@pytest.mark.parametrize("max_distance", [1, 3])
def test_interpolate_flagged_skips_excluded_bits_and_marks(max_distance):
    rng = np.random.default_rng(max_distance)
    y, x = np.mgrid[0:40, 0:90]
    image = (5 * x - 3 * y + 400 + rng.normal(0, 2, x.shape)).astype(np.float32)
    bits, without, mark = np.int32(1 << 3), np.int32(1 << 2), np.int32(1 << 2)
    mask = np.where(rng.random(image.shape) < 0.08, bits, 0).astype(np.int32)
    mask[rng.random(image.shape) < 0.3] |= without  # already interpolated: not bad
    mask[10:18, 20:40] = bits  # too long to bridge either way
    mask |= np.where(rng.random(image.shape) < 0.1, 1 << 8, 0).astype(np.int32)
    bad = ((mask & bits) != 0) & ((mask & without) == 0)
    expected, e_failed = om.interpolate_pixels(image, bad, max_distance)
    work, work_mask = image.copy(), mask.copy()
    n_bad, n_failed = interpolate_flagged(work, work_mask, bits, without, mark, max_distance)
    assert_allclose(work, expected, rtol=1e-6)
    assert_array_equal(work[e_failed], image[e_failed])
    assert (n_bad, n_failed) == (bad.sum(), e_failed.sum())
    assert 0 < n_failed < n_bad
    assert_array_equal(work_mask, np.where(bad, mask | mark, mask))


@pytest.mark.parametrize("max_distance", [1, 2, 3])
def test_interpolation_bridges_short_runs_in_either_direction(max_distance):
    limit = 2 * max_distance
    y, x = np.mgrid[0:40, 0:50]
    plane = (5 * x - 3 * y + 400).astype(np.float32)
    bad = np.zeros(plane.shape, bool)
    bad[4:30, 5 : 5 + limit] = True  # narrow in x, tall in y: rows bridge it
    bad[33 : 33 + limit, 10:40] = True  # wide in x, short in y: columns bridge it
    bad[10 : 10 + limit + 1, 20 : 20 + limit + 1] = True  # one too long both ways
    bad[12, 49] = True  # on the edge in x, a single-pixel run in y
    image = plane.copy()
    failed = _interpolate(image, bad, max_distance)
    e_image, e_failed = om.interpolate_pixels(plane, bad, max_distance)
    assert_array_equal(failed, e_failed)
    assert_allclose(image[~failed], e_image[~failed], rtol=1e-6)
    block = np.zeros(plane.shape, bool)
    block[10 : 10 + limit + 1, 20 : 20 + limit + 1] = True
    assert_array_equal(failed, block)
    assert_allclose(image[~block], plane[~block], rtol=1e-6)  # a plane is bridged exactly


def test_interpolation_reproduces_linear_ramp_across_masked_columns():
    y, x = np.mgrid[0:30, 0:41]
    ramp = (8 * x + 3 * y + 100).astype(np.float32)  # integer values: exact arithmetic
    for x0, x1 in ((10, 11), (20, 23), (40, 41)):  # 1- and 3-column gaps, one on the border
        image = ramp.copy()
        bad = np.zeros(ramp.shape, bool)
        bad[:, x0:x1] = True
        failed = _interpolate(image, bad, 16)
        if x1 < 41:
            assert not failed.any()
            assert_array_equal(image, ramp)
        else:  # no good pixel to the right of the last column
            assert_array_equal(failed, bad)
            assert_array_equal(image[~bad], ramp[~bad])


def test_interpolation_reproduces_a_plane_in_a_masked_block():
    y, x = np.mgrid[0:30, 0:40]
    plane = (4 * x - 8 * y + 500).astype(np.float32)
    image = plane.copy()
    bad = np.zeros(plane.shape, bool)
    bad[10:13, 14:17] = True  # both directions give an estimate: the mean is exact
    assert not _interpolate(image, bad, 4).any()
    assert_array_equal(image, plane)


@pytest.mark.parametrize("seed", [0, 1])
def test_interpolation_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, (37, 52)).astype(np.float32)
    bad = rng.random(image.shape) < 0.12
    bad[5:9, 0:6] = True  # touching the border
    original = image.copy()
    failed = _interpolate(image, bad, 16)
    expected, e_failed = om.interpolate_pixels(original, bad, 16)
    assert_array_equal(failed, e_failed)
    assert_allclose(image[~failed], expected[~failed], rtol=1e-6)
    assert_array_equal(image[~bad], original[~bad])


@pytest.mark.parametrize("max_distance", [1, 2, 3])
def test_interpolation_gap_width_limit(max_distance):
    # Docstring: a gap wider than 2 × max_distance in one direction is skipped, so gaps
    # of up to 2·max_distance pixels are filled completely and wider ones not at all.
    _, x = np.mgrid[0:7, 0:40]
    ramp = (6 * x).astype(np.float32)
    for width in range(1, 2 * max_distance + 3):
        image = ramp.copy()
        bad = np.zeros(ramp.shape, bool)
        bad[:, 10 : 10 + width] = True  # full-height: only the rows can interpolate
        failed = _interpolate(image, bad, max_distance)
        if width <= 2 * max_distance:
            assert not failed.any(), f"gap of {width} px not filled"
            assert_allclose(image, ramp, rtol=1e-6)
        else:
            assert_array_equal(failed, bad, err_msg=f"gap of {width} px partly filled")
