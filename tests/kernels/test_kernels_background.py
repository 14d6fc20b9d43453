"""Background kernels: clipped means per bin, order statistics, separable subtraction."""

from __future__ import annotations

import numpy as np
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.core.exposure import DEFAULT_MASK_PLANES
from promptcal.kernels.background import (
    binned_clipped_mean_strided,
    clipped_mean_into,
    subtract_separable,
)
from promptcal.kernels.order_statistics import order_statistics_into, quartiles_into, workspace
from promptcal.pipeline.background import bin_edges

DETECTED = 1 << DEFAULT_MASK_PLANES["DETECTED"]
BAD = 1 << DEFAULT_MASK_PLANES["BAD"]


def _clipped_mean(buf, n, n_sigma, n_iter):
    return clipped_mean_into(buf, n, n_sigma, n_iter, *workspace(n, buf))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_clipped_mean_matches_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    height, width = 71, 53
    image = rng.normal(100.0, 5.0, (height, width)).astype(np.float32)
    # Outliers (unmasked "stars" and cosmic rays) that the clipping must reject.
    hot = rng.random((height, width)) < 0.03
    image[hot] += rng.uniform(50, 5000, hot.sum()).astype(np.float32)
    image[rng.random((height, width)) < 0.01] = np.nan
    mask = np.where(rng.random((height, width)) < 0.3, DETECTED, 0).astype(np.int32)
    mask |= np.where(rng.random((height, width)) < 0.05, 1 << 12, 0).astype(np.int32)
    y_edges, x_edges = bin_edges(height, 16), bin_edges(width, 16)
    # A fully masked bin and a bin whose only valid pixel is a single value.
    mask[y_edges[1] : y_edges[2], x_edges[2] : x_edges[3]] = BAD
    mask[y_edges[3] : y_edges[4], x_edges[0] : x_edges[1]] = BAD
    mask[y_edges[3], x_edges[0]] = 0
    image[y_edges[3], x_edges[0]] = 42.0
    bits = DETECTED | BAD

    got = binned_clipped_mean_strided(image, mask, bits, y_edges, x_edges, 1, 3.0, 3)
    want = om.binned_clipped_mean(image, mask, bits, y_edges, x_edges, 3.0, 3)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert np.isnan(got[0][1, 2]) and got[2][1, 2] == 0
    assert got[0][3, 0] == 42.0 and got[2][3, 0] == 1
    # The clipped means sit near the true level despite 3 % outliers up to 5000.
    finite = np.isfinite(got[0]) & (got[2] > 50)
    assert np.all(np.abs(got[0][finite] - 100.0) < 3.0)


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(3).normal(0.0, 1.0, 5000),  # histogram path
        np.random.default_rng(4).normal(0.0, 1.0, 101),  # small-n fallback
        np.concatenate([np.random.default_rng(5).normal(0, 1, 3000), np.full(700, 1e6)]),
        np.random.default_rng(6).integers(0, 4, 4000).astype(np.float64),  # many ties
        np.full(1000, 7.25),  # constant
        np.concatenate([np.full(999, 3.0), [1e9]]),  # zero spread in the subsample
        # A few far outliers: the histogram is placed on the bulk, not on their spread.
        np.concatenate([np.random.default_rng(7).normal(0, 1, 4000), np.geomspace(1e2, 1e5, 40)]),
        # A bulk without spread: the refinement keeps the plain spread.
        np.concatenate([np.full(3000, 5.0), np.random.default_rng(8).normal(0, 1e3, 100)]),
    ],
)
def test_order_statistics_and_quartiles_match_numpy(data):
    ranks = np.array([0, 1, data.size // 4, data.size // 2, data.size - 2, data.size - 1])
    got = np.empty(ranks.size)
    order_statistics_into(data.copy(), data.size, ranks, got, *workspace(data.size, data))
    np.testing.assert_array_equal(got, np.sort(data)[ranks])
    q = quartiles_into(data.copy(), data.size, *workspace(data.size, data))
    np.testing.assert_allclose(q, np.quantile(data, [0.25, 0.5, 0.75]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("shape", [(71, 53), (128, 256), (4, 9)])
def test_strided_bins_equal_the_bins_of_the_subsampled_copy(stride, shape):
    rng = np.random.default_rng(stride * 1000 + shape[0])
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    image[rng.random(shape) < 0.02] += 3000.0
    image[rng.random(shape) < 0.01] = np.nan
    image[rng.random(shape) < 0.01] = np.inf
    mask = np.where(rng.random(shape) < 0.3, DETECTED, 0).astype(np.int32)
    # Edges in subsampled pixels, as estimate_background derives them (ceil division).
    y_edges = -(-bin_edges(shape[0], 32) // stride)
    x_edges = -(-bin_edges(shape[1], 32) // stride)
    got = binned_clipped_mean_strided(image, mask, DETECTED, y_edges, x_edges, stride, 3.0, 3)
    sub_image = np.ascontiguousarray(image[::stride, ::stride])
    sub_mask = np.ascontiguousarray(mask[::stride, ::stride])
    want = binned_clipped_mean_strided(sub_image, sub_mask, DETECTED, y_edges, x_edges, 1, 3.0, 3)
    oracle = om.binned_clipped_mean(sub_image, sub_mask, DETECTED, y_edges, x_edges, 3.0, 3)
    for g, w, o in zip(got, want, oracle, strict=True):
        np.testing.assert_array_equal(g, w)  # bit for bit
        np.testing.assert_allclose(g, o, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert np.all(got[2] > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_mean_keeps_the_pixel_order_of_its_sums(dtype):
    # The clipped sums run over the buffer in its order (two interleaved accumulators):
    # the histogram search for the quartiles must not reorder it.
    rng = np.random.default_rng(12)
    values = rng.normal(1000.0, 7.0, 4096).astype(dtype)
    values[rng.random(values.size) < 0.03] += 500.0
    buf = values.copy()
    mean, stdev = _clipped_mean(buf, buf.size, 3.0, 3)
    np.testing.assert_array_equal(buf, values)
    e_mean, e_stdev = _clipped_mean(values.astype(np.float64), values.size, 3.0, 3)
    assert (mean, stdev) == (e_mean, e_stdev)  # float32 storage changes no rounding
    assert abs(mean - 1000.0) < 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 301, 2001])
@pytest.mark.parametrize("n_iter", [0, 1, 3])
def test_clipped_mean_matches_meanclip(n, n_iter):
    rng = np.random.default_rng(n)
    values = rng.normal(50.0, 3.0, n)
    values[rng.random(n) < 0.05] += rng.uniform(100, 1e4)  # outliers to clip
    buf = np.concatenate([values, np.full(17, 1e9)])  # only buf[:n] is read
    mean, stdev = _clipped_mean(buf.copy(), n, 3.0, n_iter)
    e_mean, e_stdev = om.clipped_mean(values, 3.0, n_iter)
    assert_allclose(mean, e_mean, rtol=1e-12)
    assert_array_equal(np.isnan(stdev), np.isnan(e_stdev))
    assert_allclose(stdev, e_stdev, rtol=1e-9)
    if n_iter == 0:
        assert mean == np.median(values) and np.isnan(stdev)
    if n > 100 and n_iter > 0:
        assert abs(mean - 50.0) < 1.0 and abs(stdev - 3.0) < 0.5


def test_subtract_separable_matches_numpy_oracle():
    rng = np.random.default_rng(8)
    image = rng.normal(100.0, 5.0, (37, 53)).astype(np.float32)
    ty = rng.normal(size=(37, 4)).astype(np.float32)
    rows = rng.normal(size=(4, 53)).astype(np.float32)
    expected = image.astype(np.float64) - ty.astype(np.float64) @ rows.astype(np.float64)
    subtract_separable(image, ty, rows)
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-4)
