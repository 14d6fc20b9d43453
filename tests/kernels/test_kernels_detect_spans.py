"""Span-based detection kernels against the per-pixel oracles.

The detection chain labels, grows and searches run-length spans instead of full images
(spans of row ``y`` are ``row_start[y]:row_start[y + 1]``, columns ``x0..x1``). Each
span kernel is checked against the pixel oracles of ``oracles``/``oracles_more``, and
``detect_footprints`` as a whole against the per-pixel chain composed from them.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from promptcal.core.exposure import Exposure, Mask
from promptcal.kernels.components import (
    label_bboxes,
    paint_labels,
    relabel,
    select_spans,
    span_bboxes,
    span_components,
)
from promptcal.kernels.detect import (
    component_peaks,
    find_peaks_in_spans,
    grow_spans,
    threshold_spans,
)
from promptcal.kernels.maskops import clear_and_set_bits, set_bits_on_spans
from promptcal.pipeline.detect.detection import (
    DetectionConfig,
    detect_footprints,
    smooth_for_detection,
)

SIGN_BIT = np.int32(-(2**31))


def _spans_as_rows(row_start, x0, x1):
    """(y, x0, x1) rows of a span set, checking that it is well formed."""
    assert row_start.dtype == x0.dtype == x1.dtype == np.int64
    assert row_start[0] == 0 and row_start[-1] == x0.size == x1.size
    assert np.all(np.diff(row_start) >= 0)
    y = np.repeat(np.arange(row_start.size - 1), np.diff(row_start))
    assert np.all(x1 >= x0)
    # Maximal runs: spans of one row are sorted and separated by at least one pixel.
    same_row = y[1:] == y[:-1]
    assert np.all(x0[1:][same_row] >= x1[:-1][same_row] + 2)
    return y


def _expected_runs(mask):
    """Oracle runs (y, x0, x1) of a bool mask."""
    _, y, x0, x1 = oracles.label_spans(mask.astype(np.int32))
    return y, x0, x1


def _random_blobs(rng, shape, level):
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    return smooth > level * smooth.std()


# ------------------------------------------------------------------ components


def test_span_components_paint_and_boxes_match_scipy():
    rng = np.random.default_rng(3)
    mask = _random_blobs(rng, (61, 83), 0.6)
    mask[0, :] = mask[:, -1] = True  # components on the image border
    spans = oracles.mask_spans(mask)
    component, n = span_components(*spans)
    labels = paint_labels(*spans, component, 83)
    e_labels, e_n, e_bbox = om.label_components(mask)
    assert n == e_n > 5
    assert labels.dtype == np.int32
    assert_array_equal(labels, e_labels)
    assert_array_equal(span_bboxes(*spans, component, n, 83), e_bbox)
    # A label without spans has the empty box (W, H, -1, -1).
    assert span_bboxes(*spans, component, n + 1, 83)[n].tolist() == [83, 61, -1, -1]


# ------------------------------------------------------------------ threshold


@pytest.mark.parametrize("polarity", [1, -1])
@pytest.mark.parametrize("width", [13, 64, 70])
def test_threshold_spans_match_the_significance_oracle(polarity, width):
    rng = np.random.default_rng(width + polarity)
    smoothed = ndimage.gaussian_filter(rng.normal(size=(48, width)), 1.2).astype(np.float32)
    var = rng.uniform(0.5, 2.0, smoothed.shape).astype(np.float32) * smoothed.var()
    var[:4] = 0.0  # the unsmoothed border
    var[6:9, :5] = -1.0
    threshold = 1.0
    row_start, x0, x1, peak = threshold_spans(smoothed, var, threshold, polarity)
    y = _spans_as_rows(row_start, x0, x1)
    above = oracles.significance_above(smoothed, var, threshold, polarity)
    assert above.sum() > 20
    for got, expected in zip((y, x0, x1), _expected_runs(above), strict=True):
        assert_array_equal(got, expected)
    sig = oracles.significance(smoothed, var, polarity)
    expected_peak = [sig[r, a : b + 1].max() for r, a, b in zip(y, x0, x1, strict=True)]
    assert peak.dtype == np.float64
    assert_allclose(peak, expected_peak, rtol=1e-6)
    assert np.all(peak > threshold)


def test_threshold_spans_grow_past_their_first_buffer():
    smoothed = np.zeros((40, 301), np.float32)
    smoothed[:, ::2] = 5.0  # 151 runs per row, 6040 in all
    spans = threshold_spans(smoothed, np.ones_like(smoothed), 1.0, 1)
    _spans_as_rows(*spans[:3])
    assert spans.x0.size == 40 * 151
    assert_array_equal(oracles.paint_mask(*spans[:3], 301), smoothed > 0)
    assert np.all(spans.peak == 5.0)


def test_component_peaks_and_select_spans():
    rng = np.random.default_rng(8)
    mask = _random_blobs(rng, (50, 47), 0.5)
    row_start, x0, x1 = oracles.mask_spans(mask)
    component, n = span_components(row_start, x0, x1)
    span_peak = rng.normal(size=x0.size)
    peak, size = component_peaks(component, n, span_peak, x0, x1)
    labels, _, _ = om.label_components(mask)
    assert_array_equal(size, np.bincount(labels.ravel(), minlength=n + 1)[1:])
    expected = np.full(n, -np.inf)
    np.maximum.at(expected, component - 1, span_peak)
    assert_array_equal(peak, expected)

    keep = rng.random(n) < 0.5
    kept = select_spans(row_start, x0, x1, keep[component - 1])
    _spans_as_rows(*kept)
    assert_array_equal(
        oracles.paint_mask(*kept, 47), (labels > 0) & keep[np.maximum(labels - 1, 0)]
    )


# ------------------------------------------------------------------ growth


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 6])
@pytest.mark.parametrize("seed", [0, 1])
def test_grow_spans_match_disk_dilation(radius, seed):
    rng = np.random.default_rng(seed)
    mask = _random_blobs(rng, (59, 45), 1.3)
    mask[0, :3] = mask[-1, -2:] = mask[20:24, 0] = mask[30, -1] = True  # on the edges
    mask[40, 20] = True  # a single pixel
    grown = grow_spans(*oracles.mask_spans(mask), radius, 45)
    _spans_as_rows(*grown)
    expected = mask if radius == 0 else ndimage.binary_dilation(mask, oracles.disk(radius))
    assert_array_equal(oracles.paint_mask(*grown, 45), expected)


def test_grow_spans_of_a_single_pixel_is_the_disk():
    mask = np.zeros((21, 25), bool)
    mask[10, 12] = True
    grown = oracles.paint_mask(*grow_spans(*oracles.mask_spans(mask), 4, 25), 25)
    assert_array_equal(grown[6:15, 8:17], oracles.disk(4))
    assert grown.sum() == oracles.disk(4).sum()


def test_grow_spans_of_many_points_needs_more_room_than_its_input():
    # Points every 3 columns on every 9th row: growth by 2 turns each into 5 rows of
    # spans (neighbours merge along a row), far more than the input count + 1024.
    mask = np.zeros((90, 400), bool)
    mask[4::9, 1::3] = True
    spans = oracles.mask_spans(mask)
    grown = grow_spans(*spans, 2, 400)
    assert grown[1].size > spans[1].size + 1024
    _spans_as_rows(*grown)
    assert_array_equal(
        oracles.paint_mask(*grown, 400), ndimage.binary_dilation(mask, oracles.disk(2))
    )


# ------------------------------------------------------------------ peaks


@pytest.mark.parametrize("polarity", [1, -1])
def test_find_peaks_in_spans_matches_the_oracle(polarity):
    rng = np.random.default_rng(21)
    smoothed = ndimage.gaussian_filter(rng.normal(size=(52, 61)), 1.0).astype(np.float32)
    var = rng.uniform(0.5, 2.0, smoothed.shape).astype(np.float32) * smoothed.var()
    var[20:24, 30:40] = 0.0
    core = polarity * smoothed > 0.0
    labels, _, _ = om.label_components(ndimage.binary_dilation(core))
    labels[:, 50:] = 0  # core pixels outside any footprint are never peaks
    spans = oracles.mask_spans(core)
    for min_sig in (-np.inf, 0.5):
        got = find_peaks_in_spans(labels, *spans, smoothed, var, polarity, min_sig)
        expected = oracles.find_peaks(labels, core, smoothed, var, polarity, min_sig)
        for g, e in zip(got[:3], expected[:3], strict=True):
            assert g.dtype == np.int64
            assert_array_equal(g, e)
        assert_allclose(got[3], expected[3], rtol=1e-6)
        assert_allclose(got[4], expected[4], rtol=1e-6)
    assert got[0].size > 5


# ------------------------------------------------------------------ mask planes


def test_set_and_clear_bits_on_spans():
    rng = np.random.default_rng(4)
    shape = (30, 41)
    mask = rng.integers(0, 2**10, shape).astype(np.int32)
    mask[10:15] &= ~np.int32(0b110000)  # rows without the bits to clear
    mask[3, 7] |= SIGN_BIT
    spans_mask = _random_blobs(rng, shape, 0.8)
    spans = oracles.mask_spans(spans_mask)
    for clear, bit in ((np.int32(0b110000), np.int32(1 << 5)), (SIGN_BIT, SIGN_BIT)):
        out = mask.copy()
        assert clear_and_set_bits(out, clear, *spans, bit) is None  # in place
        assert_array_equal(out, np.where(spans_mask, (mask & ~clear) | bit, mask & ~clear))
        out = mask.copy()
        assert set_bits_on_spans(out, *spans, bit) is None
        assert_array_equal(out, np.where(spans_mask, mask | bit, mask))


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize("width", [1, 2, 29, 30])
def test_relabel_and_label_bboxes_on_odd_and_even_widths(width):
    rng = np.random.default_rng(width)
    labels = rng.integers(0, 6, (17, width)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.5] = 0
    labels[-1, -1] = 5  # the unpaired last pixel of an odd-sized row
    n = 5
    assert_array_equal(label_bboxes(labels, n)[4], om.label_bboxes(labels, n)[4])
    present = om.label_bboxes(labels, n)[:, 0] >= 0
    assert_array_equal(label_bboxes(labels, n)[present], om.label_bboxes(labels, n)[present])
    mapping = np.array([7, 3, 0, 9, 1, 2], np.int32)
    out = labels.copy()
    relabel(out, mapping)
    assert_array_equal(out, np.where(labels != 0, mapping[labels], 0))


# ------------------------------------------------------------------ whole detection


def _reference_footprints(smoothed, var, polarity, config, radius):
    """The per-pixel detection chain, composed from the oracles."""
    threshold = config.threshold
    above = oracles.significance_above(smoothed, var, threshold, polarity)
    labels, n, _ = om.label_components(above)
    peak, _, _ = oracles.label_peak_significance(labels, n, smoothed, var, polarity)
    keep = peak > threshold * config.include_threshold_multiplier
    keep &= np.bincount(labels.ravel(), minlength=n + 1)[1:] >= config.min_pixels
    final, _, bbox = om.label_components(oracles.grow_mask(labels, keep, radius))
    core = (labels > 0) & keep[np.maximum(labels - 1, 0)]
    label, x, y, sig, value = oracles.find_peaks(final, core, smoothed, var, polarity, threshold)
    order = np.lexsort((-value, label))
    return final, bbox, label[order] - 1, x[order], y[order], sig[order], value[order]


def _sky(seed, shape=(181, 203)):
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 10.0, shape).astype(np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    centres = [(20.3, 15.7), (23.9, 18.2), (100.1, 90.4), (2.0, 60.0), (150.5, 178.8)]
    centres += [(rng.uniform(0, shape[1]), rng.uniform(0, shape[0])) for _ in range(25)]
    for k, (x, y) in enumerate(centres):
        flux = (1 if k % 3 else -1) * rng.uniform(400.0, 8000.0)
        image += (flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5) / 14.1).astype(np.float32)
    variance = np.full(shape, 100.0, np.float32)
    mask = Mask(np.zeros(shape, np.int32))
    mask.array[rng.random(shape) < 0.01] |= mask.bit("DETECTED")  # stale planes to clear
    mask.array[rng.random(shape) < 0.01] |= mask.bit("DETECTED_NEGATIVE")
    mask.array[5:9, 5:30] |= mask.bit("SAT")
    return Exposure(image, variance, mask)


@pytest.mark.parametrize(
    "config",
    [
        DetectionConfig(threshold=3.0, polarity="both", min_pixels=4),
        DetectionConfig(threshold=4.0, include_threshold_multiplier=2.0, polarity="both"),
        DetectionConfig(threshold=2.5, polarity="negative", n_sigma_to_grow=0.0),
        DetectionConfig(threshold=5.0, polarity="positive", n_sigma_to_grow=4.0),
    ],
)
def test_detect_footprints_equals_the_per_pixel_chain(config):
    psf_sigma = 1.5
    exposure = _sky(int(config.threshold * 10))
    before = exposure.mask.array.copy()
    smoothed = smooth_for_detection(exposure, psf_sigma)
    result = detect_footprints(exposure, psf_sigma, config, smoothed=smoothed)
    radius = int(config.n_sigma_to_grow * psf_sigma + 0.5)
    planes = {}
    for name, polarity, bit in (("positive", 1, "DETECTED"), ("negative", -1, "DETECTED_NEGATIVE")):
        fp = getattr(result, name)
        if config.polarity not in (name, "both"):
            assert fp is None
            planes[bit] = np.zeros(before.shape, bool)
            continue
        labels, bbox, owner, x, y, sig, value = _reference_footprints(
            smoothed[0], smoothed[1], polarity, config, radius
        )
        assert fp.n > 3 and fp.peak_x.size >= fp.n
        assert fp.labels.dtype == np.int32
        assert_array_equal(fp.labels, labels)
        assert_array_equal(fp.bbox, bbox)
        for got, expected in ((fp.peak_footprint, owner), (fp.peak_x, x), (fp.peak_y, y)):
            assert got.dtype == np.int64
            assert_array_equal(got, expected)
        assert_allclose(fp.peak_significance, sig, rtol=1e-6)
        assert_allclose(fp.peak_value, value, rtol=1e-6)
        planes[bit] = labels > 0
    mask = exposure.mask
    for bit, expected in planes.items():
        assert_array_equal(mask.is_set(bit), expected)
    # Other planes are untouched, apart from the EDGE border of the smoothing.
    others = ~np.int32(mask.bit("DETECTED", "DETECTED_NEGATIVE", "EDGE"))
    assert_array_equal(mask.array & others, before & others)
    half = smoothed[2]
    edge = np.ones(before.shape, bool)
    edge[half:-half, half:-half] = False
    assert_array_equal(mask.is_set("EDGE"), edge)
