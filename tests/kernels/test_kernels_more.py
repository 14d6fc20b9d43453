"""Labelling, deblending, mask, noise, cosmic-ray and PSF-stamp kernels against oracles.

Oracles live in ``oracles_more`` (and ``oracles`` for the shared Lanczos shift); the
scenario tests use synthetic images whose answer is known by construction.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from promptcal.kernels.background import clipped_mean
from promptcal.kernels.components import label_bboxes, label_components, relabel
from promptcal.kernels.cosmic_rays import find_cosmic_rays, find_sharp_pixels, mask_cosmic_rays
from promptcal.kernels.deblend import assign_children, line_minimum, separate_peaks
from promptcal.kernels.detect import kept_pixels
from promptcal.kernels.interpolate import interpolate_pixels
from promptcal.kernels.maskops import any_bits_set, bits_set
from promptcal.kernels.noise import footprint_noise, replacement_noise
from promptcal.kernels.psf import pixel_psf_stamps

# LSST-like cosmic-ray settings (RepairConfig defaults).
CR_ARGS = {"min_sigma": 6.0, "min_dn": 150.0, "fac": 2.0, "fac2": 0.35}
SIGN_BIT = np.int32(-(2**31))


def _f32(a):
    return np.ascontiguousarray(a, np.float32)


def _i64(*values):
    return tuple(np.int64(v) for v in values)


def _blob(shape, x, y, amplitude, sigma):
    """Circular Gaussian of peak ``amplitude`` at (x, y) [px]."""
    return oracles.gaussian(shape, x, y, amplitude * 2 * np.pi * sigma**2, sigma**2)


# ------------------------------------------------------------------ labelling


def _check_labels(mask):
    labels, n, bbox = label_components(mask)
    e_labels, e_n, e_bbox = om.label_components(mask)
    assert labels.dtype == np.int32 and labels.shape == mask.shape
    assert n == e_n
    assert_array_equal(labels, e_labels)
    assert bbox.dtype == np.int64 and bbox.shape == (n, 4)
    assert_array_equal(bbox, e_bbox)
    # The docstring promises scipy's own numbering, not just the same partition.
    assert_array_equal(labels, ndimage.label(mask, structure=om.EIGHT)[0])
    return labels, n, bbox


@pytest.mark.parametrize("shape", [(37, 53), (64, 19), (1, 80), (80, 1), (2, 2)])
@pytest.mark.parametrize("density", [0.1, 0.45, 0.7])
def test_label_components_match_scipy_on_random_masks(shape, density):
    rng = np.random.default_rng(int(density * 100) + shape[0])
    for _ in range(3):
        _check_labels(rng.random(shape) < density)


def test_label_components_empty_full_and_single_pixels():
    labels, n, bbox = _check_labels(np.zeros((9, 14), bool))
    assert n == 0 and bbox.shape == (0, 4) and not labels.any()
    labels, n, bbox = _check_labels(np.ones((9, 14), bool))
    assert n == 1 and (labels == 1).all() and bbox.tolist() == [[0, 0, 13, 8]]
    # Isolated pixels on a lattice: > 1024 components (the union-find table must grow).
    mask = np.zeros((80, 90), bool)
    mask[::2, ::2] = True
    labels, n, bbox = _check_labels(mask)
    ys, xs = np.nonzero(mask)
    assert n == ys.size == 1800
    assert_array_equal(bbox, np.stack([xs, ys, xs, ys], 1))
    assert_array_equal(labels[ys, xs], np.arange(1, n + 1))  # raster order


def test_label_components_join_diagonal_neighbours():
    mask = np.zeros((12, 15), bool)
    i = np.arange(10)
    mask[i + 1, i + 2] = True  # a diagonal line ...
    mask[10 - i, i + 2] = True  # ... crossed by an anti-diagonal: an X
    mask[0, 14] = mask[11, 0] = True  # two corner pixels, alone
    _, n, bbox = _check_labels(mask)
    assert n == 3
    assert ndimage.label(mask)[1] > 3  # 4-connectivity would break the X apart
    assert bbox.tolist() == [[14, 0, 14, 0], [2, 1, 11, 10], [0, 11, 0, 11]]


@pytest.mark.parametrize("flip", [False, True])
def test_label_components_merge_many_provisional_labels(flip):
    # A comb: 1100 teeth that only meet along the last (or first) row, so the
    # raster scan opens > 1024 provisional labels and must merge them all.
    mask = np.zeros((4, 2200), bool)
    mask[:, ::2] = True
    mask[-1] = True
    if flip:
        mask = mask[::-1].copy()
    _, n, bbox = _check_labels(mask)
    assert n == 1 and bbox.tolist() == [[0, 0, 2199, 3]]
    # A spiral: one path whose arms the raster scan meets as many separate runs.
    spiral = _spiral(21)
    _, n, bbox = _check_labels(spiral if not flip else spiral[::-1].copy())
    assert n == 1 and bbox.tolist() == [[0, 0, 20, 20]]


def _spiral(size):
    """A one-pixel-wide spiral path with one-pixel gaps between its arms."""
    m = np.zeros((size, size), bool)
    y, x, dy, dx = 0, 0, 0, 1
    m[y, x] = True
    turns = 0
    while turns < 2:
        ny, nx, ay, ax = y + dy, x + dx, y + 2 * dy, x + 2 * dx
        free = 0 <= ny < size and 0 <= nx < size and not m[ny, nx]
        if free and not (0 <= ay < size and 0 <= ax < size and m[ay, ax]):
            y, x, turns = ny, nx, 0
            m[y, x] = True
        else:
            dy, dx, turns = dx, -dy, turns + 1
    return m


def test_label_bboxes_match_find_objects():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 8, (31, 45)).astype(np.int32)
    labels[labels == 3] = 0  # a label that does not occur
    labels[5:9, 7:10] = 9  # labels above n are ignored
    for n in (9, 7, 2, 0):
        bbox = label_bboxes(labels, n)
        expected = om.label_bboxes(labels, n)
        assert bbox.dtype == np.int64 and bbox.shape == (n, 4)
        present = expected[:, 0] >= 0
        assert_array_equal(bbox[present], expected[present])
        # An absent label gets an empty box (nothing to visit inside it).
        assert np.all(bbox[~present, 0] > bbox[~present, 2])
        assert np.all(bbox[~present, 1] > bbox[~present, 3])
    assert label_bboxes(labels, 9)[8].tolist() == [7, 5, 9, 8]  # label 9's block
    # Connected-component labels: the same boxes as label_components returns.
    mask = rng.random((40, 33)) < 0.3
    comp, n, boxes = label_components(mask)
    assert_array_equal(label_bboxes(comp, n), boxes)


def test_label_components_with_empty_rows_and_late_columns():
    # Most rows empty, pixels only near the right edge or in one column: the second
    # pass must still visit every labelled pixel of every row.
    mask = np.zeros((30, 50), bool)
    mask[3, 47:] = mask[4, 49] = mask[10:13, 0] = mask[20, 25] = mask[29, 49] = True
    mask[25, [1, 48]] = True
    labels, n, _ = _check_labels(mask)
    assert n == 6 and (labels > 0).sum() == mask.sum()


def test_relabel_maps_nonzero_labels_in_place():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 10, (27, 38)).astype(np.int32)
    mapping = rng.permutation(np.arange(10, 20)).astype(np.int32)
    mapping[3] = 0  # a label that is dropped
    original = labels.copy()
    assert relabel(labels, mapping) is None
    assert labels.dtype == np.int32
    assert_array_equal(labels, np.where(original != 0, mapping[original], 0))
    assert not labels[original == 0].any()  # 0 stays 0 whatever mapping[0] says


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


# ------------------------------------------------------------------ mask operations


def _random_mask(rng, shape, p=0.3):
    bits = rng.random((*shape, 32)) < p
    words = (bits * (1 << np.arange(32, dtype=np.uint64))).sum(-1).astype(np.uint32)
    return words.view(np.int32)


@pytest.mark.parametrize("bits", [0, 1, 1 << 5, (1 << 3) | (1 << 9), int(SIGN_BIT), -1])
def test_bits_set_and_any_bits_set(bits):
    rng = np.random.default_rng(30)
    mask = _random_mask(rng, (23, 31), p=0.05)
    bits = np.int32(bits)
    expected = (mask & bits) != 0
    got = bits_set(mask, bits)
    assert got.dtype == np.bool_
    assert_array_equal(got, expected)
    assert any_bits_set(mask, bits) == expected.any()
    # Only the very last pixel carries the bits, then none does.
    lone = np.zeros((23, 31), np.int32)
    lone[-1, -1] = bits
    assert any_bits_set(lone, bits) == (bits != 0)
    assert bits_set(lone, bits).sum() == (bits != 0)
    assert not any_bits_set(np.where(expected, 0, mask).astype(np.int32), bits)


def test_kept_pixels():
    rng = np.random.default_rng(31)
    labels = rng.integers(0, 9, (25, 34)).astype(np.int32)
    keep = rng.random(8) < 0.5
    keep[[0, 1]] = True, False
    got = kept_pixels(labels, keep)
    assert got.dtype == np.bool_
    assert_array_equal(got, (labels > 0) & keep[np.maximum(labels - 1, 0)])
    assert got.any() and not got.all()


# ------------------------------------------------------------------ replacement noise


def _disks(shape, centres, radius):
    labels = np.zeros(shape, np.int32)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i, (cx, cy) in enumerate(centres):
        labels[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = i + 1
    return labels


def test_footprint_noise_with_one_footprint_equals_replacement_noise():
    labels = _disks((40, 50), [(22, 18)], 9)
    bbox = om.label_bboxes(labels, 1)
    got = footprint_noise(labels, bbox, 2.5, 17)
    assert got.dtype == np.float32
    assert_array_equal(got, replacement_noise(labels, 2.5, 17))


def test_footprint_noise_fills_only_listed_footprints_inside_their_boxes():
    shape = (60, 70)
    labels = _disks(shape, [(15, 15), (50, 20), (30, 45)], 8)
    labels[7:10, 7:10] = 4  # not in the list, in a corner of footprint 1's box
    bbox = om.label_bboxes(labels, 3)
    bbox[2, 3] -= 3  # footprint 3's box misses its last three rows
    sigma, seed = 4.0, 123
    got = footprint_noise(labels, bbox, sigma, seed)
    inside = np.zeros(shape, bool)
    for i, (x0, y0, x1, y1) in enumerate(bbox):
        inside[y0 : y1 + 1, x0 : x1 + 1] |= labels[y0 : y1 + 1, x0 : x1 + 1] == i + 1
    assert not got[~inside].any()
    assert np.all(got[inside] != 0)
    assert (labels == 4).any() and not got[labels == 4].any()
    assert ((labels == 3) & ~inside).sum() > 0
    # The values are the seeded Gaussian stream (the one replacement_noise draws).
    stream = replacement_noise(np.ones((1, inside.sum()), np.int32), sigma, seed).ravel()
    assert_array_equal(np.sort(got[inside]), np.sort(stream))
    assert_array_equal(got, footprint_noise(labels, bbox, sigma, seed))  # deterministic
    other = footprint_noise(labels, bbox, sigma, seed + 1)
    assert_array_equal(other != 0, inside)
    assert not np.array_equal(got, other)


def test_footprint_noise_has_the_requested_sigma():
    labels = np.zeros((170, 160), np.int32)
    labels[5:165, 3:155] = 1
    sigma = 7.0
    values = footprint_noise(labels, om.label_bboxes(labels, 1), sigma, 5)[labels == 1]
    assert abs(values.mean()) < 5 * sigma / np.sqrt(values.size)
    assert abs(values.std() / sigma - 1) < 6 / np.sqrt(2 * values.size)  # ~6σ of the estimate


# ------------------------------------------------------------------ cosmic rays


def _cr_scene(seed, shape=(55, 67)):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 10.0, shape)
    var = np.full(shape, 100.0) * rng.uniform(0.5, 1.5, shape)
    for _ in range(4):  # stars
        image += oracles.gaussian(shape, *rng.uniform(5, 50, 2), rng.uniform(1e3, 1e5), 2.0)
    hy, hx = rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)  # hot pixels
    clear = ~((hy >= 36) & (hy < 46) & (hx >= 7) & (hx < 18))  # room for a test star
    image[hy[clear], hx[clear]] += rng.uniform(100, 3000, clear.sum())
    image[30:36, 30:36] = 1e5  # a saturated block
    skip = rng.random(shape) < 0.03
    skip[30:36, 30:36] = True
    return _f32(image), _f32(var), skip, rng


@pytest.mark.parametrize("seed", [0, 1])
def test_find_sharp_pixels_match_oracle_and_gaussian_finder(seed):
    image, var, skip, _ = _cr_scene(seed)
    image += _f32(oracles.gaussian(image.shape, 12.3, 40.6, 3e4, 0.6**2))  # a very sharp star
    skip[38:44, 9:16] = False
    for psf_sigma in (1.0, 1.5, 2.5):
        r1, r2 = np.exp(-0.5 / psf_sigma**2), np.exp(-1.0 / psf_sigma**2)
        got = find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS)
        assert_array_equal(got, find_cosmic_rays(image, var, skip, psf_sigma, **CR_ARGS))
        assert_array_equal(got, oracles.find_cosmic_rays(image, var, skip, psf_sigma, **CR_ARGS))
    n_flagged = []
    for r1, r2 in ((0.9, 0.85), (0.5, 0.2), (0.3, 0.1), (0.6, 0.05)):
        got = find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS)
        assert_array_equal(got, om.find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS))
        assert not got[skip].any()
        n_flagged.append(got.sum())
        if r1 in (0.9, 0.3):  # a PSF that sharp explains the star, a broad one does not
            assert got[38:44, 9:16].any() == (r1 == 0.9)
    assert n_flagged[0] > n_flagged[2] > 0


def _peaky_star(shape, x, y, flux):
    """Double Gaussian: 80 % of the flux in a σ = 0.5 px core, 20 % in a σ = 3 px halo."""
    return oracles.gaussian(shape, x, y, 0.8 * flux, 0.25) + oracles.gaussian(
        shape, x, y, 0.2 * flux, 9.0
    )


def test_find_sharp_pixels_with_peaky_psf_ratios_spare_a_sharp_star():
    shape = (31, 33)
    psf = _peaky_star(shape, 16, 15, 1.0)
    r1 = 0.25 * (psf[15, 15] + psf[15, 17] + psf[14, 16] + psf[16, 16]) / psf[15, 16]
    r2 = 0.25 * (psf[14, 15] + psf[14, 17] + psf[16, 15] + psf[16, 17]) / psf[15, 16]
    sigma_moments = np.sqrt(0.8 * 0.25 + 0.2 * 9.0)  # Gaussian with the same 2nd moments
    var = np.full(shape, 25.0, np.float32)
    skip = np.zeros(shape, bool)
    rng = np.random.default_rng(40)
    flagged_as_gaussian = 0
    for flux in (1e3, 1e4, 1e5, 1e6, 1e7):
        x0, y0 = 16 + rng.uniform(-0.3, 0.3), 15 + rng.uniform(-0.3, 0.3)
        image = _f32(_peaky_star(shape, x0, y0, flux))
        assert not find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS).any()
        flagged_as_gaussian += find_cosmic_rays(image, var, skip, sigma_moments, **CR_ARGS).any()
    # Control: judged against a Gaussian of the same second moments, the star is a CR.
    assert flagged_as_gaussian >= 3
    # And a real hot pixel next to it is still caught with the peaky ratios.
    image = _f32(_peaky_star(shape, 16.2, 15.1, 1e5))
    image[5, 6] += 3000.0
    cr = find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS)
    assert cr[5, 6] and not cr[10:21, 11:22].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_mask_cosmic_rays_sets_the_cr_bit_and_counts_it(seed):
    image, var, _, rng = _cr_scene(seed)
    sat, bad, cr_bit, other = (np.int32(1 << b) for b in (1, 0, 3, 8))
    mask = np.where(rng.random(image.shape) < 0.03, bad, 0).astype(np.int32)
    mask[30:36, 30:36] |= sat
    mask |= np.where(rng.random(image.shape) < 0.2, other, 0).astype(np.int32)
    mask[2, 40] |= cr_bit  # CR pixels from an earlier pass are kept and counted
    skip_bits = np.int32(sat | bad)
    for r1, r2 in ((0.8, 0.64), (0.3, 0.1)):
        work = mask.copy()
        original = image.copy()
        count = mask_cosmic_rays(image, var, work, skip_bits, cr_bit, r1, r2, **CR_ARGS)
        e_mask, e_count = om.mask_cosmic_rays(
            image, var, mask, skip_bits, cr_bit, r1, r2, **CR_ARGS
        )
        assert_array_equal(work, e_mask)
        assert count == e_count == np.count_nonzero(work & cr_bit)
        assert_array_equal(image, original)  # the image itself is not touched
        new = (work & cr_bit) & ~(mask & cr_bit) != 0
        assert new.sum() > 5
        assert not new[(mask & skip_bits) != 0].any()
        assert_array_equal(work & ~cr_bit, mask & ~cr_bit)  # no other bit changes
        skip = (mask & skip_bits) != 0
        assert_array_equal(new, find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS) & ~(
            (mask & cr_bit) != 0))  # fmt: skip


# ------------------------------------------------------------------ interpolation


@pytest.mark.parametrize("max_distance", [1, 2, 3])
def test_interpolate_pixels_bridges_short_runs_in_either_direction(max_distance):
    limit = 2 * max_distance
    y, x = np.mgrid[0:40, 0:50]
    plane = (5 * x - 3 * y + 400).astype(np.float32)
    bad = np.zeros(plane.shape, bool)
    bad[4:30, 5 : 5 + limit] = True  # narrow in x, tall in y: rows bridge it
    bad[33 : 33 + limit, 10:40] = True  # wide in x, short in y: columns bridge it
    bad[10 : 10 + limit + 1, 20 : 20 + limit + 1] = True  # one too long both ways
    bad[12, 49] = True  # on the edge in x, a single-pixel run in y
    image = plane.copy()
    image[bad] = -9.0
    failed = interpolate_pixels(image, bad, max_distance)
    e_image, e_failed = oracles.interpolate_pixels(np.where(bad, -9.0, plane), bad, max_distance)
    assert_array_equal(failed, e_failed)
    assert_allclose(image, e_image, rtol=1e-6)
    block = np.zeros(plane.shape, bool)
    block[10 : 10 + limit + 1, 20 : 20 + limit + 1] = True
    assert_array_equal(failed, block)
    assert np.all(image[block] == -9.0)
    assert_allclose(image[~block], plane[~block], rtol=1e-6)  # a plane is bridged exactly


# ------------------------------------------------------------------ PSF stamps


@pytest.mark.parametrize("n_terms", [1, 3, 6])
def test_pixel_psf_stamps_match_tensordot_shift_and_normalise(n_terms):
    rng = np.random.default_rng(n_terms)
    size, n = 19, 5
    base = oracles.gaussian((size, size), size // 2, size // 2, 1.0, 2.2**2)
    coefficients = np.stack(
        [base] + [0.02 * rng.normal(size=(size, size)) * base.max() for _ in range(n_terms - 1)]
    )
    xy = rng.uniform(-1, 1, (2, n))
    terms = np.stack([np.ones(n), *xy, xy[0] ** 2, xy[0] * xy[1], xy[1] ** 2])[:n_terms]
    dx = np.array([0.0, 0.31, -0.47, 0.5, -1.3])
    dy = np.array([0.0, -0.22, 0.05, -0.5, 0.9])
    got = pixel_psf_stamps(coefficients, terms, dx, dy, 3)
    assert got.shape == (n, size, size) and got.dtype == np.float64
    assert_allclose(got, om.pixel_psf_stamps(coefficients, terms, dx, dy, 3), rtol=1e-10,
                    atol=1e-14)  # fmt: skip
    assert_allclose(got.sum(axis=(1, 2)), 1.0, rtol=1e-12)
    if n_terms == 1:  # no shift: the normalised basis image itself
        assert_allclose(got[0], base / base.sum(), rtol=1e-12)


# ------------------------------------------------------------------ clipped mean


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 301, 2001])
@pytest.mark.parametrize("n_iter", [0, 1, 3])
def test_clipped_mean_matches_meanclip(n, n_iter):
    rng = np.random.default_rng(n)
    values = rng.normal(50.0, 3.0, n)
    values[rng.random(n) < 0.05] += rng.uniform(100, 1e4)  # outliers to clip
    buf = np.concatenate([values, np.full(17, 1e9)])  # only buf[:n] is read
    mean, stdev = clipped_mean(buf.copy(), n, 3.0, n_iter)
    e_mean, e_stdev = om.clipped_mean(values, 3.0, n_iter)
    assert_allclose(mean, e_mean, rtol=1e-12)
    assert_array_equal(np.isnan(stdev), np.isnan(e_stdev))
    assert_allclose(stdev, e_stdev, rtol=1e-9)
    if n_iter == 0:
        assert mean == np.median(values) and np.isnan(stdev)
    if n > 100 and n_iter > 0:
        assert abs(mean - 50.0) < 1.0 and abs(stdev - 3.0) < 0.5
