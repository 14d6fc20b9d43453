"""The peak-splitting deblender on hand-built footprints of known content.

A footprint holding two stars separated by a deep saddle must become two children
that share its pixels along the bisector; a star with a faint bump on its wing, a
footprint with one peak, and ``do_deblend=False`` must stay single.
"""

from __future__ import annotations

import numpy as np
import oracles
from numpy.testing import assert_array_equal

from promptcal.core.footprints import Footprints
from promptcal.pipeline.detect.deblend import DeblendConfig, deblend

SHAPE = (50, 90)
PSF_SIGMA = 1.5


def _blob(x, y, peak, sigma=PSF_SIGMA):
    """Circular Gaussian of peak value ``peak`` at (x, y) [px]."""
    return oracles.gaussian(SHAPE, x, y, peak * 2 * np.pi * sigma**2, sigma**2)


def _footprints(boxes, peaks, image):
    """Rectangular footprints (x0, y0, x1, y1 inclusive) and their peaks (footprint, x, y).

    Peaks are ordered by footprint, then brightest first, as detection returns them.
    """
    labels = np.zeros(SHAPE, np.int32)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        labels[y0 : y1 + 1, x0 : x1 + 1] = i + 1
    fp, px, py = (np.array(c, np.int64) for c in zip(*peaks, strict=True))
    value = image[py, px].astype(np.float64)
    order = np.lexsort((-value, fp))
    return Footprints(
        labels=labels,
        bbox=np.array(boxes, np.int64),
        peak_footprint=fp[order],
        peak_x=px[order],
        peak_y=py[order],
        peak_significance=value[order] / 0.1,
        peak_value=value[order],
    )


def _scene():
    """Footprint 0: two equal stars 12 px apart; 1: one star; 2: a star and a faint bump."""
    image = _blob(15, 25, 100.0) + _blob(27, 25, 100.0)
    image += _blob(48, 25, 80.0)
    image += _blob(72, 25, 60.0) + _blob(78, 25, 1.5, sigma=1.0)
    image = image.astype(np.float32)
    assert image[25, 78] == image[24:27, 77:80].max()  # the bump is a local maximum
    boxes = [(3, 13, 39, 37), (41, 15, 55, 35), (60, 13, 86, 37)]
    peaks = [(0, 15, 25), (0, 27, 25), (1, 48, 25), (2, 72, 25), (2, 78, 25)]
    return image, _footprints(boxes, peaks, image)


def _deblend(image, footprints, **config):
    variance = np.full(SHAPE, 0.01, np.float32)  # the saddle depth in σ: 0.1 counts per σ
    return deblend(footprints, image, variance, PSF_SIGMA, DeblendConfig(**config))


def test_two_stars_become_children_sharing_the_footprint_at_the_bisector():
    image, footprints = _scene()
    result = _deblend(image, footprints)
    assert_array_equal(result.parent, [0, 0, 1, 2])
    assert_array_equal(result.n_child, [2, 2, 0, 0])
    assert_array_equal(result.x, [15, 27, 48, 72])
    assert_array_equal(result.y, [25, 25, 25, 25])
    labels = result.labels
    # Source i owns label i + 1; the children cover exactly their parent's pixels.
    parent_pixels = footprints.labels == 1
    assert_array_equal((labels == 1) | (labels == 2), parent_pixels)
    x = np.arange(SHAPE[1])[None, :].repeat(SHAPE[0], 0)
    assert np.all(labels[parent_pixels & (x < 21)] == 1)
    assert np.all(labels[parent_pixels & (x > 21)] == 2)
    assert np.all(labels[parent_pixels & (x == 21)] == 1)  # ties go to the brighter (first)
    # Unsplit footprints keep their pixels under their source's label.
    assert_array_equal(labels == 3, footprints.labels == 2)
    assert_array_equal(labels == 4, footprints.labels == 3)
    assert not labels[footprints.labels == 0].any()


def test_brighter_child_owns_more_of_the_footprint():
    image = (_blob(15, 25, 300.0) + _blob(27, 25, 100.0)).astype(np.float32)
    footprints = _footprints([(3, 13, 39, 37)], [(0, 15, 25), (0, 27, 25)], image)
    labels = _deblend(image, footprints).labels
    assert (labels == 1).sum() > (labels == 2).sum() > 0
    assert labels[25, 21] == 1  # the midpoint goes to the brighter star


def test_shallow_saddle_keeps_one_source():
    image, footprints = _scene()
    result = _deblend(image, footprints)
    # Footprint 2: the bump dips by less than 5σ towards the star: one source, no child.
    assert (result.parent == 2).sum() == 1 and result.n_child[result.parent == 2] == 0
    # With a threshold below the dip the bump is split off.
    split = _deblend(image, footprints, min_saddle_significance=0.01)
    assert (split.parent == 2).sum() == 2
    assert_array_equal(split.x[split.parent == 2], [72, 78])


def test_no_deblending_and_child_cap_keep_one_source_per_footprint():
    image, footprints = _scene()
    for config in ({"do_deblend": False}, {"max_children": 1}):
        result = _deblend(image, footprints, **config)
        assert_array_equal(result.parent, [0, 1, 2])
        assert_array_equal(result.n_child, [0, 0, 0])
        assert_array_equal(result.x, [15, 48, 72])  # the brightest peak of each
        assert_array_equal(result.labels, footprints.labels)


def test_footprint_without_peaks_has_no_source():
    image, footprints = _scene()
    keep = footprints.peak_footprint != 1
    for name in ("peak_footprint", "peak_x", "peak_y", "peak_significance", "peak_value"):
        setattr(footprints, name, getattr(footprints, name)[keep])
    result = _deblend(image, footprints)
    assert_array_equal(result.parent, [0, 0, 2])
    assert not (result.labels[footprints.labels == 2]).any()
