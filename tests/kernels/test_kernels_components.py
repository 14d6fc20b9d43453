"""Span labelling, label boxes and relabelling against SciPy and the NumPy oracles.

Detection labels the 8-connected components of a span set (``span_components``) and
paints them (``paint_labels``, ``span_bboxes``); here masks are turned into spans by
the oracle, so the hard cases (many provisional labels, spirals, combs) exercise the
union-find of the span kernels.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_array_equal
from scipy import ndimage

from promptcal.kernels.components import (
    label_bboxes,
    paint_labels,
    relabel,
    span_bboxes,
    span_components,
)


def _span_labels(mask):
    """Label a mask as detection does: its spans, their components, painted, boxed."""
    spans = oracles.mask_spans(mask)
    component, n = span_components(*spans)
    width = mask.shape[1]
    return paint_labels(*spans, component, width), n, span_bboxes(*spans, component, n, width)


def _check_labels(mask):
    labels, n, bbox = _span_labels(mask)
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
def test_span_labels_match_scipy_on_random_masks(shape, density):
    rng = np.random.default_rng(int(density * 100) + shape[0])
    for _ in range(3):
        _check_labels(rng.random(shape) < density)


def test_span_labels_empty_full_and_single_pixels():
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


def test_span_labels_join_diagonal_neighbours():
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
def test_span_labels_merge_many_provisional_labels(flip):
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
    # Connected-component labels: the same boxes as span_bboxes returns.
    mask = rng.random((40, 33)) < 0.3
    comp, n, boxes = _span_labels(mask)
    assert_array_equal(label_bboxes(comp, n), boxes)


def test_span_labels_with_empty_rows_and_late_columns():
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
