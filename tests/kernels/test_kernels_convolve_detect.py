"""Detection smoothing, peak finding and label spans against NumPy/SciPy oracles."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from promptcal.kernels.components import paint_labels, span_components
from promptcal.kernels.convolve import gaussian_taps, smooth_image, smooth_image_and_variance
from promptcal.kernels.detect import find_peaks_in_spans, label_spans, threshold_spans

NO_IGNORE = np.zeros((1, 1), bool)  # smooth_image's "no ignored pixel"

EIGHT = np.ones((3, 3), bool)


def _smoothed_noise(rng, shape, sigma=1.5):
    """A smooth random field (many local maxima) and a positive variance."""
    image = ndimage.gaussian_filter(rng.normal(size=shape), sigma).astype(np.float32)
    variance = rng.uniform(0.5, 2.0, shape).astype(np.float32) * np.float32(image.std() ** 2)
    return image, variance


# ------------------------------------------------------------------ convolution


@pytest.mark.parametrize("sigma", [0.4, 1.0, 1.5, 2.07, 3.7])
def test_gaussian_taps_follow_lsst_width_rule(sigma):
    taps = gaussian_taps(sigma)
    expected = oracles.gaussian_taps(sigma)
    assert taps.dtype == np.float32
    assert taps.size == expected.size and taps.size % 2 == 1
    assert_allclose(taps, expected, rtol=1e-6)
    assert_allclose(taps.sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("seed", "shape", "taps"),
    [
        (0, (37, 53), gaussian_taps(1.5)),
        (1, (64, 31), gaussian_taps(2.5)),
        # Asymmetric taps pin down the orientation: out[y] = Σ_k taps[k]·data[y + k - half].
        (2, (30, 40), np.array([0.1, 0.2, 0.3, 0.25, 0.15], np.float32)),
        (3, (9, 70), np.array([1.0], np.float32)),
    ],
)
def test_smooth_image_matches_correlate1d(seed, shape, taps):
    data = np.random.default_rng(seed).normal(10.0, 3.0, shape).astype(np.float32)
    out = smooth_image(data, NO_IGNORE, taps)
    expected = oracles.correlate_valid(data, taps)
    assert out.dtype == np.float32 and out.shape == data.shape
    assert_allclose(out, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    half = taps.size // 2
    if half:
        assert not out[:half].any() and not out[-half:].any()
        assert not out[:, :half].any() and not out[:, -half:].any()


def test_smooth_image_with_taps_wider_than_image_is_all_zero():
    data = np.ones((5, 40), np.float32)
    out = smooth_image(data, NO_IGNORE, gaussian_taps(2.0))  # 15 taps > 5 rows
    assert out.shape == data.shape and not out.any()


def test_smooth_image_point_source_gives_outer_product_of_taps():
    taps = gaussian_taps(1.2)
    data = np.zeros((31, 41), np.float32)
    data[15, 20] = 1.0
    half = taps.size // 2
    out = smooth_image(data, NO_IGNORE, taps)
    block = out[15 - half : 16 + half, 20 - half : 21 + half]
    assert_allclose(block, np.outer(taps, taps), atol=1e-7)
    assert_allclose(out.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_image_and_variance_ignores_masked_pixels(seed):
    rng = np.random.default_rng(seed)
    shape = (48, 61)
    image = rng.normal(0.0, 5.0, shape).astype(np.float32)
    variance = rng.uniform(20.0, 30.0, shape).astype(np.float32)
    ignore = rng.random(shape) < 0.1
    ignore[10:30, 20:45] = True  # fully masked region larger than the kernel
    image[ignore] = np.nan  # NO_DATA pixels may hold anything
    variance[ignore] = np.inf
    taps = gaussian_taps(1.3)
    smoothed, smoothed_var = smooth_image_and_variance(image, variance, ignore, taps)
    exp_s, exp_v = oracles.smooth_image_and_variance(image, variance, ignore, taps)
    assert np.all(np.isfinite(smoothed)) and np.all(np.isfinite(smoothed_var))
    assert_allclose(smoothed, exp_s, atol=1e-5 * np.abs(exp_s).max())
    assert_allclose(smoothed_var, exp_v, rtol=1e-5, atol=1e-5 * exp_v.max())
    half = taps.size // 2
    inner = np.s_[10 + half : 30 - half, 20 + half : 45 - half]
    assert not smoothed[inner].any() and not smoothed_var[inner].any()


@pytest.mark.parametrize(
    "shape",
    # Even and odd numbers of output rows (rows are finished in pairs), fewer rows or
    # columns than taps, one more row than taps, and widths that are not a multiple of 4.
    [(40, 53), (41, 53), (13, 30), (14, 30), (12, 30), (30, 12), (3, 3), (1, 100)],
)
@pytest.mark.parametrize("sigma", [0.5, 1.5, 2.3])
def test_smoothing_rounds_exactly_like_an_in_order_float32_loop(shape, sigma):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    image = rng.normal(0.0, 30.0, shape).astype(np.float32)
    variance = rng.uniform(100.0, 900.0, shape).astype(np.float32)
    taps = gaussian_taps(sigma)
    expected = oracles.correlate_valid_float32_in_order(image, taps)
    assert_array_equal(smooth_image(image, NO_IGNORE, taps), expected)
    smoothed, smoothed_var = smooth_image_and_variance(image, variance, NO_IGNORE, taps)
    assert_array_equal(smoothed, expected)
    assert_array_equal(
        smoothed_var, oracles.correlate_valid_float32_in_order(variance, taps * taps)
    )


def test_smoothing_with_ignored_pixels_rounds_like_zeros_in_their_place():
    rng = np.random.default_rng(5)
    shape = (37, 70)
    image = rng.normal(0.0, 30.0, shape).astype(np.float32)
    variance = rng.uniform(100.0, 900.0, shape).astype(np.float32)
    ignore = rng.random(shape) < 0.1
    clean = np.where(ignore, 0.0, image).astype(np.float32)
    clean_var = np.where(ignore, 0.0, variance).astype(np.float32)
    image[ignore] = np.nan
    variance[ignore] = np.inf
    taps = gaussian_taps(1.5)
    smoothed, smoothed_var = smooth_image_and_variance(image, variance, ignore, taps)
    assert_array_equal(smoothed, oracles.correlate_valid_float32_in_order(clean, taps))
    assert_array_equal(
        smoothed_var, oracles.correlate_valid_float32_in_order(clean_var, taps * taps)
    )
    assert_array_equal(smooth_image(image, ignore, taps), smoothed)


def _components(mask):
    labels, n = ndimage.label(mask, structure=EIGHT)
    return labels.astype(np.int32), n


def _find_peaks(labels, core, smoothed, var, polarity, min_significance):
    """``find_peaks_in_spans`` searching the spans of the bool ``core``."""
    spans = oracles.mask_spans(core)
    return find_peaks_in_spans(labels, *spans, smoothed, var, polarity, min_significance)


# ------------------------------------------------------------------ peaks


def _compare_peaks(got, expected):
    for g, e in zip(got[:3], expected[:3], strict=True):
        assert_array_equal(g, e)
    assert_allclose(got[3], expected[3], rtol=1e-6)
    assert_allclose(got[4], expected[4], rtol=1e-6)


@pytest.mark.parametrize(("seed", "polarity"), [(0, 1), (1, -1), (2, 1)])
def test_peaks_matches_maximum_filter(seed, polarity):
    rng = np.random.default_rng(seed)
    smoothed, var = _smoothed_noise(rng, (66, 47), sigma=1.0)
    smoothed *= polarity
    labels, _ = _components(polarity * smoothed > 0.0)
    core = rng.random(smoothed.shape) < 0.9
    var[30:35, 10:20] = 0.0
    for min_sig in (-np.inf, 0.5, 1.5):
        got = _find_peaks(labels, core, smoothed, var, polarity, min_sig)
        expected = oracles.find_peaks(labels, core, smoothed, var, polarity, min_sig)
        _compare_peaks(got, expected)
    assert got.label.size > 3
    # No peak on the outermost rows/columns, none where the variance is zero.
    _, x, y = _find_peaks(labels, core, smoothed, var, polarity, -np.inf)[:3]
    assert x.min() >= 1 and y.min() >= 1 and x.max() <= 45 and y.max() <= 64
    assert not np.any((y >= 30) & (y < 35) & (x >= 10) & (x < 20))


def test_peaks_breaks_ties_by_raster_order():
    smoothed = np.zeros((12, 14), np.float32)
    smoothed[2:4, 2:5] = 5.0  # 2×3 plateau: only its first pixel is a peak
    smoothed[7, 9] = smoothed[8, 8] = 4.0  # diagonal tie: the upper-right pixel is earlier
    smoothed[6, 2] = smoothed[6, 4] = 3.0  # not adjacent: both are peaks
    var = np.ones_like(smoothed)
    labels = np.ones(smoothed.shape, np.int32)
    core = smoothed > 0
    got = _find_peaks(labels, core, smoothed, var, 1, 1.0)
    _compare_peaks(got, oracles.find_peaks(labels, core, smoothed, var, 1, 1.0))
    assert list(zip(got.y, got.x, strict=True)) == [(2, 2), (6, 2), (6, 4), (7, 9)]


def test_peaks_returns_more_than_the_initial_buffer():
    # A lattice of isolated maxima: 39 × 39 = 1521 peaks > the 1024 pre-allocated.
    smoothed = np.zeros((80, 80), np.float32)
    smoothed[1:-1:2, 1:-1:2] = np.arange(1, 39 * 39 + 1, dtype=np.float32).reshape(39, 39)
    var = np.ones_like(smoothed)
    labels = np.ones(smoothed.shape, np.int32)
    core = np.ones(smoothed.shape, bool)
    got = _find_peaks(labels, core, smoothed, var, 1, 0.5)
    assert got.label.size == 39 * 39
    _compare_peaks(got, oracles.find_peaks(labels, core, smoothed, var, 1, 0.5))


def test_peaks_empty():
    z = np.zeros((10, 10), np.float32)
    got = _find_peaks(np.zeros((10, 10), np.int32), np.ones((10, 10), bool), z, z + 1, 1, 0.0)
    assert all(a.size == 0 for a in got)


def test_detection_chain_finds_a_faint_star_at_its_position():
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:50, 0:64]
    star = 400.0 * np.exp(-((x - 40.3) ** 2 + (y - 12.8) ** 2) / (2 * 1.5**2)) / (2 * np.pi * 2.25)
    image = (star + rng.normal(0.0, 3.0, star.shape)).astype(np.float32)
    variance = np.full(star.shape, 9.0, np.float32)
    taps = gaussian_taps(1.5)
    sm, sv = smooth_image_and_variance(image, variance, np.zeros(star.shape, bool), taps)
    above = threshold_spans(sm, sv, 5.0, 1)
    spans = (above.row_start, above.x0, above.x1)
    component, n = span_components(*spans)
    assert n == 1
    labels = paint_labels(*spans, component, star.shape[1])
    lab, x_pk, y_pk, sig, _ = find_peaks_in_spans(labels, *spans, sm, sv, 1, 5.0)
    assert lab.tolist() == [1] and sig[0] > 10
    assert abs(x_pk[0] - 40.3) <= 1 and abs(y_pk[0] - 12.8) <= 1


# ------------------------------------------------------------------ spans


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_spans_match_run_lengths(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (23, 37)).astype(np.int32)  # adjacent different labels
    labels[:, -1] = 2  # runs touching the right edge
    labels[5] = 0  # an empty row
    got = label_spans(labels)
    expected = oracles.label_spans(labels)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == np.int64
        assert_array_equal(g, e)
    # The spans rebuild the label image exactly.
    rebuilt = np.zeros_like(labels)
    for lab, y, x0, x1 in zip(*got, strict=True):
        assert np.all(rebuilt[y, x0 : x1 + 1] == 0)
        rebuilt[y, x0 : x1 + 1] = lab
    assert_array_equal(rebuilt, labels)


def test_label_spans_of_empty_and_full_images():
    assert all(a.size == 0 for a in label_spans(np.zeros((6, 9), np.int32)))
    lab, y, x0, x1 = label_spans(np.full((3, 5), 7, np.int32))
    assert_array_equal(lab, [7, 7, 7])
    assert_array_equal(y, [0, 1, 2])
    assert_array_equal(x0, [0, 0, 0])
    assert_array_equal(x1, [4, 4, 4])
