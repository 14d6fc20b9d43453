"""Deblending kernels (segment minimum, peak separation, child assignment) against oracles.

The oracles live in ``oracles_more``; the scenario tests use synthetic images whose
answer is known by construction.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_array_equal
from scipy import ndimage

from promptcal.kernels.deblend import assign_children, line_minimum, separate_peaks


def _f32(a):
    return np.ascontiguousarray(a, np.float32)


def _i64(*values):
    return tuple(np.int64(v) for v in values)


def _blob(shape, x, y, amplitude, sigma):
    """Circular Gaussian of peak ``amplitude`` at (x, y) [px]."""
    return oracles.gaussian(shape, x, y, amplitude * 2 * np.pi * sigma**2, sigma**2)


# ------------------------------------------------------------------ segment minimum


def _smooth_field(rng, shape, sigma=1.5):
    return _f32(ndimage.gaussian_filter(rng.normal(size=shape), sigma))


def test_line_minimum_along_rows_and_columns_is_the_exact_minimum():
    rng = np.random.default_rng(20)
    field = _smooth_field(rng, (30, 40))
    for _ in range(20):
        y, xa, xb = rng.integers(0, 30), *rng.integers(0, 40, 2)
        got = line_minimum(field, *_i64(xa, y, xb, y))
        assert got == field[y, min(xa, xb) : max(xa, xb) + 1].min()
        x, ya, yb = rng.integers(0, 40), *rng.integers(0, 30, 2)
        got = line_minimum(field, *_i64(x, ya, x, yb))
        assert got == field[min(ya, yb) : max(ya, yb) + 1, x].min()


def test_line_minimum_samples_only_pixels_on_the_segment_and_misses_no_column():
    rng = np.random.default_rng(21)
    shape = (35, 45)
    field = _smooth_field(rng, shape)
    n_walls = 0
    for _ in range(60):
        x0, x1 = rng.integers(0, shape[1], 2)
        y0, y1 = rng.integers(0, shape[0], 2)
        got = line_minimum(field, *_i64(x0, y0, x1, y1))
        on = om.segment_pixel_superset(shape, x0, y0, x1, y1)
        # A nearest-pixel sample: a value of a pixel the segment touches, no lower
        # than their minimum and no higher than either end.
        assert got in field[on]
        assert field[on].min() <= got <= min(field[y0, x0], field[y1, x1])
        # Pixels the segment does not touch never matter.
        far = field.copy()
        far[~on] = -1e6
        assert line_minimum(far, *_i64(x0, y0, x1, y1)) == got
        # A trench across the whole image between the ends is always found.
        walled = field.copy()
        if abs(x1 - x0) >= max(abs(y1 - y0), 2):
            walled[:, (x0 + x1) // 2 + (1 if x1 < x0 else 0)] = -50.0
        elif abs(y1 - y0) >= 2:
            walled[(y0 + y1) // 2 + (1 if y1 < y0 else 0), :] = -50.0
        else:
            continue
        n_walls += 1
        assert line_minimum(walled, *_i64(x0, y0, x1, y1)) == -50.0
    assert n_walls > 30


# ------------------------------------------------------------------ children


def _blobs_footprints(rng, shape=(60, 70)):
    field = ndimage.gaussian_filter(rng.normal(size=shape), 3.0)
    labels, n = ndimage.label(field > 0.3 * field.std(), structure=om.EIGHT)
    return labels.astype(np.int32), n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assign_children_match_template_argmax(seed):
    rng = np.random.default_rng(seed)
    labels, n = _blobs_footprints(rng)
    boxes = om.label_bboxes(labels, n)
    sizes = ndimage.sum(np.ones(labels.shape), labels, np.arange(1, n + 1))
    tested = 0
    for lab in np.flatnonzero(sizes >= 20) + 1:
        bbox = boxes[lab - 1]
        n_peaks = rng.integers(1, 5)
        px = rng.integers(bbox[0], bbox[2] + 1, n_peaks).astype(np.int64)
        py = rng.integers(bbox[1], bbox[3] + 1, n_peaks).astype(np.int64)
        amp = rng.uniform(0.5, 200.0, n_peaks)
        if tested == 1:
            amp[-1] = 0.0  # a non-positive template never wins unless alone
        sigma = rng.uniform(1.0, 4.0)
        first = np.int32(100 + lab)
        cut = assign_children(labels, np.int32(lab), bbox, px, py, amp, sigma, first)
        expected = om.assign_children(labels, lab, bbox, px, py, amp, sigma, first)
        assert cut.dtype == np.int32
        assert_array_equal(cut, expected)
        inside = labels[bbox[1] : bbox[3] + 1, bbox[0] : bbox[2] + 1] == lab
        assert np.all(cut[inside] >= first) and np.all(cut[inside] < first + n_peaks)
        tested += 1
    assert tested >= 3


def test_assign_children_equal_peaks_split_at_the_bisector():
    shape = (30, 40)
    labels = np.zeros(shape, np.int32)
    labels[3:27, 4:37] = 2
    labels[10:12, 15:18] = 5  # another footprint inside the box: not assigned
    bbox = np.array([4, 3, 36, 26], np.int64)
    px, py = np.array([12, 27], np.int64), np.array([14, 17], np.int64)
    cut = assign_children(labels, np.int32(2), bbox, px, py, np.array([7.0, 7.0]), 2.5, 1)
    y, x = np.mgrid[3:27, 4:37]
    d0 = (x - px[0]) ** 2 + (y - py[0]) ** 2
    d1 = (x - px[1]) ** 2 + (y - py[1]) ** 2
    own = labels[3:27, 4:37] == 2
    assert_array_equal(cut[~own], 0)
    assert np.all(cut[own & (d0 < d1)] == 1) and np.all(cut[own & (d1 < d0)] == 2)
    assert np.all(cut[own & (d0 == d1)] == 1)  # ties go to the first (brighter) peak
    # A brighter peak pushes the boundary towards the fainter one.
    bright = assign_children(labels, np.int32(2), bbox, px, py, np.array([70.0, 7.0]), 2.5, 1)
    assert (bright == 1).sum() > (cut == 1).sum()


# ------------------------------------------------------------------ peak separation


def _run_separate(smoothed, var, peaks, starts, counts, min_sig, max_children):
    px = np.array([p[0] for p in peaks], np.int64)
    py = np.array([p[1] for p in peaks], np.int64)
    value = smoothed[py, px].astype(np.float64)
    args = (smoothed, var, px, py, value, np.array(starts, np.int64),
            np.array(counts, np.int64), float(min_sig), int(max_children))  # fmt: skip
    keep = separate_peaks(*args)
    assert keep.dtype == np.bool_
    assert_array_equal(keep, om.separate_peaks(*args, line_min=line_minimum))
    return keep.tolist()


def _is_local_max(image, x, y):
    return image[y, x] == image[y - 1 : y + 2, x - 1 : x + 2].max()


SHAPE = (60, 80)
ONES = np.ones(SHAPE, np.float32)


def test_separate_peaks_keeps_two_well_separated_stars():
    image = _f32(_blob(SHAPE, 20, 30, 500.0, 2.0) + _blob(SHAPE, 45, 33, 300.0, 2.0))
    assert _run_separate(image, ONES, [(20, 30), (45, 33)], [0], [2], 3.0, 10) == [True, True]


def _star_with_bump():
    image = _f32(_blob(SHAPE, 30, 30, 50.0, 3.0) + _blob(SHAPE, 39, 30, 4.0, 1.2))
    assert _is_local_max(image, 39, 30)  # the bump is a genuine (spurious) peak
    return image


def test_separate_peaks_rejects_a_bump_on_a_wing():
    image = _star_with_bump()
    assert _run_separate(image, ONES, [(30, 30), (39, 30)], [0], [2], 3.0, 10) == [True, False]
    # Control: the bump does dip towards the star, by a fraction of one σ.
    assert _run_separate(image, ONES, [(30, 30), (39, 30)], [0], [2], 0.05, 10) == [True, True]
    # With less noise the same dip is significant.
    quiet = np.full(SHAPE, 1e-4, np.float32)
    assert _run_separate(image, quiet, [(30, 30), (39, 30)], [0], [2], 3.0, 10) == [True, True]


def test_separate_peaks_checks_every_brighter_kept_peak():
    # A and B are separate stars; C is a bump on B's wing (separate from A, not from B).
    image = _f32(
        _blob(SHAPE, 15, 30, 400.0, 2.5)
        + _blob(SHAPE, 45, 30, 100.0, 3.0)
        + _blob(SHAPE, 54, 30, 8.0, 1.2)
    )
    a, b, c = (15, 30), (45, 30), (54, 30)
    assert _is_local_max(image, *c)
    assert _run_separate(image, ONES, [a, b, c], [0], [3], 3.0, 10) == [True, True, False]
    # Without B in the list, C only has to be separate from A.
    assert _run_separate(image, ONES, [a, c], [0], [2], 3.0, 10) == [True, True]
    # With a cap of two the search stops before C.
    assert _run_separate(image, ONES, [a, b, c], [0], [3], 3.0, 2) == [True, True, False]


def test_separate_peaks_caps_the_number_of_kept_children():
    xs = [15, 30, 45, 58, 71]
    amps = [500.0, 400.0, 15.0, 12.0, 10.0]
    image = sum(_blob(SHAPE, x, 30, a, 2.0) for x, a in zip(xs, amps, strict=True))
    image = _f32(image + _blob(SHAPE, 8, 30, 20.0, 1.2))  # a bump on the first star's wing
    stars = [(x, 30) for x in xs]
    assert _is_local_max(image, 8, 30) and 15.0 < image[30, 8] < 400.0
    for cap, n_kept in ((1, 1), (3, 3), (5, 5), (50, 5)):
        got = _run_separate(image, ONES, stars, [0], [5], 3.0, cap)
        assert got == [True] * n_kept + [False] * (5 - n_kept)
    # Brightest first, the bump comes third; rejected, it does not use up a slot.
    peaks = [*stars[:2], (8, 30), *stars[2:]]
    got = _run_separate(image, ONES, peaks, [0], [6], 3.0, 3)
    assert got == [True, True, False, True, False, False]


def test_separate_peaks_skips_footprints_without_a_start():
    image = _f32(_blob(SHAPE, 20, 30, 500.0, 2.0) + _blob(SHAPE, 45, 33, 300.0, 2.0))
    image += _f32(_blob(SHAPE, 60, 10, 200.0, 2.0) + _blob(SHAPE, 60, 50, 150.0, 2.0))
    peaks = [(20, 30), (45, 33), (60, 10), (60, 50)]
    got = _run_separate(image, ONES, peaks, [0, -1], [2, 2], 3.0, 10)
    assert got == [True, True, False, False]
    got = _run_separate(image, ONES, peaks, [-1, 2], [2, 2], 3.0, 10)
    assert got == [False, False, True, True]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_separate_peaks_match_oracle_on_random_footprints(seed):
    rng = np.random.default_rng(seed)
    shape = (50, 60)
    image = ndimage.gaussian_filter(rng.normal(size=shape), 2.0) * 30
    for _ in range(6):
        image += _blob(shape, *rng.uniform(5, 45, 2), rng.uniform(2, 40), rng.uniform(1, 3))
    image = _f32(image)
    var = _f32(rng.uniform(0.05, 0.5, shape))
    peaks, starts, counts = [], [], []
    for _ in range(12):
        count = int(rng.integers(1, 7))
        xy = np.stack([rng.integers(0, shape[1], count), rng.integers(0, shape[0], count)], 1)
        xy = xy[np.argsort(-image[xy[:, 1], xy[:, 0]], kind="stable")]  # brightest first
        starts.append(len(peaks) if rng.random() > 0.2 else -1)
        counts.append(count)
        peaks.extend(map(tuple, xy))
    n_first = sum(s >= 0 for s in starts)
    outcomes = set()
    for min_sig in (0.5, 2.0, 5.0):
        for cap in (1, 2, 3, 10):
            keep = np.array(_run_separate(image, var, peaks, starts, counts, min_sig, cap))
            assert keep.sum() >= n_first
            outcomes.add(int(keep.sum()) - n_first)
    assert len(outcomes) > 2  # both kept and rejected fainter peaks occur
