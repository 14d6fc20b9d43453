"""Background estimation: recovery of known backgrounds, model I/O (kernels: tests/kernels)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from promptcal.core.background_model import BackgroundList, BackgroundModel
from promptcal.core.errors import AlgorithmError
from promptcal.core.exposure import DEFAULT_MASK_PLANES, Exposure, Mask
from promptcal.pipeline.background import (
    BackgroundConfig,
    bin_edges,
    estimate_background,
    fill_invalid_bins,
    subtract_background,
)

DETECTED = 1 << DEFAULT_MASK_PLANES["DETECTED"]
BAD = 1 << DEFAULT_MASK_PLANES["BAD"]
IMPLEMENTATIONS = ["numba", "sep"]


def test_bin_edges_follow_afw_layout():
    np.testing.assert_array_equal(bin_edges(201, 128), [0, 101, 201])
    np.testing.assert_array_equal(bin_edges(100, 128), [0, 100])
    edges = bin_edges(4072, 128)
    assert edges.size == 33 and edges[-1] == 4072
    assert set(np.diff(edges)) <= {127, 128}


# --------------------------------------------------------------- recovery tests


def make_scene(height, width, background, sigma, n_stars, seed):
    """Noise + Gaussian stars on ``background``; stars above 0.5σ masked DETECTED."""
    rng = np.random.default_rng(seed)
    stars = np.zeros((height, width))
    yy, xx = np.mgrid[:height, :width]
    for _ in range(n_stars):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        flux = 10 ** rng.uniform(3, 5)
        box = np.s_[max(0, int(y0) - 10) : int(y0) + 11, max(0, int(x0) - 10) : int(x0) + 11]
        r2 = (xx[box] - x0) ** 2 + (yy[box] - y0) ** 2
        stars[box] += flux / (2 * np.pi * 4.0) * np.exp(-0.5 * r2 / 4.0)
    image = (background + stars + rng.normal(0.0, sigma, (height, width))).astype(np.float32)
    mask = np.where(stars > 0.5 * sigma, DETECTED, 0).astype(np.int32)
    return image, mask


def smooth_background(kind, height, width):
    yy, xx = np.mgrid[:height, :width]
    u, v = xx / width - 0.5, yy / height - 0.5
    if kind == "constant":
        return np.full((height, width), 800.0)
    if kind == "linear":
        return 800.0 + 60.0 * u - 35.0 * v
    return 800.0 + 30.0 * u - 20.0 * v + 40.0 * u * u - 25.0 * u * v + 30.0 * v * v


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", ["constant", "linear", "quadratic"])
def test_recovers_smooth_background_with_stars(kind, implementation):
    height, width, sigma = 520, 777, 10.0
    truth = smooth_background(kind, height, width)
    image, mask = make_scene(height, width, truth, sigma, n_stars=150, seed=11)
    config = BackgroundConfig(implementation=implementation)
    model = estimate_background(image, mask, DETECTED, config)
    assert model.values.shape == (5, 7)
    assert (model.order_x, model.order_y) == (6, 4)
    resid = model.evaluate() - truth
    assert np.sqrt(np.mean(resid**2)) < 0.1 * sigma
    # Without the DETECTED mask the stars bias the bins upward: the mask must matter.
    unmasked = estimate_background(image, mask, 0, config).evaluate() - truth
    assert np.mean(unmasked) > np.mean(resid)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_constant_500_on_small_image(implementation):
    rng = np.random.default_rng(1)
    image = (500.0 + rng.normal(0.0, 10.0, (201, 181))).astype(np.float32)
    mask = np.zeros(image.shape, np.int32)
    model = estimate_background(image, mask, 0, BackgroundConfig(implementation=implementation))
    assert model.values.shape == (2, 2)
    assert (model.order_x, model.order_y) == (1, 1)  # reduced from 6 to fit 2x2 bins
    evaluated = model.evaluate()
    assert evaluated.dtype == np.float32 and evaluated.shape == (201, 181)
    assert np.max(np.abs(evaluated - 500.0)) < 0.5


def test_single_row_of_bins_reduces_y_order_only():
    image = np.full((100, 1000), 3.0, np.float32)
    model = estimate_background(image, np.zeros(image.shape, np.int32), 0)
    assert model.values.shape == (1, 8)
    assert (model.order_x, model.order_y) == (6, 0)
    np.testing.assert_allclose(model.evaluate(), 3.0, rtol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fully_masked_bins_give_finite_model(implementation):
    height, width = 400, 520
    truth = smooth_background("linear", height, width)
    rng = np.random.default_rng(2)
    image = (truth + rng.normal(0.0, 5.0, (height, width))).astype(np.float32)
    y_edges, x_edges = bin_edges(height, 128), bin_edges(width, 128)  # 4 x 5 bins
    mask = np.zeros((height, width), np.int32)
    # Whole bins: a corner and an interior one. (A partly masked bin is biased by the
    # gradient times the shift of its valid pixels' centroid; see docs/background.md.)
    mask[: y_edges[1], : x_edges[1]] = BAD
    mask[y_edges[2] : y_edges[3], x_edges[2] : x_edges[3]] = BAD
    image[mask != 0] = np.nan  # masked pixels may hold anything, even NaN
    model = estimate_background(image, mask, BAD, BackgroundConfig(implementation=implementation))
    evaluated = model.evaluate()
    assert np.all(np.isfinite(model.values)) and np.all(np.isfinite(evaluated))
    assert np.sqrt(np.mean((evaluated - truth) ** 2)) < 0.1 * 5.0


def test_fill_invalid_bins_extends_planes_and_falls_back_to_mean():
    j, i = np.mgrid[:4, :5]
    plane = 10.0 + 2.0 * i - 3.0 * j
    valid = np.ones(plane.shape, bool)
    valid[1, 2] = False  # interior
    valid[3, 3:] = False  # two bins at the corner: filled by extrapolating the plane
    values = np.where(valid, plane, np.nan)
    filled = fill_invalid_bins(values, valid)
    np.testing.assert_allclose(filled, plane, rtol=1e-12)
    # With a single valid bin there is no plane at first: every bin ends up at its value.
    lone = np.zeros(plane.shape, bool)
    lone[2, 1] = True
    np.testing.assert_allclose(fill_invalid_bins(values, lone), plane[2, 1], rtol=1e-12)


def test_all_masked_raises_algorithm_error():
    image = np.ones((50, 60), np.float32)
    mask = np.full(image.shape, BAD, np.int32)
    for implementation in IMPLEMENTATIONS:
        with pytest.raises(AlgorithmError, match="valid pixels"):
            estimate_background(image, mask, BAD, BackgroundConfig(implementation=implementation))


# ------------------------------------------------------------- model operations


def quadratic_model():
    height, width = 300, 410
    image = smooth_background("quadratic", height, width).astype(np.float32)
    return estimate_background(image, np.zeros((height, width), np.int32), 0)


def test_scaled_model_evaluates_to_factor_times():
    model = quadratic_model()
    factor = 12.3
    np.testing.assert_allclose(
        model.scaled(factor).evaluate(), factor * model.evaluate(), rtol=1e-5
    )
    np.testing.assert_array_equal(model.scaled(factor).values, model.values * factor)
    bg_list = BackgroundList([model, model.scaled(0.5)])
    np.testing.assert_allclose(bg_list.scaled(2.0).image(), 2.0 * bg_list.image(), rtol=1e-5)
    np.testing.assert_allclose(bg_list.image(), 1.5 * model.evaluate(), rtol=1e-5)


def test_hdu_round_trip_through_fits_file(tmp_path):
    model = quadratic_model()
    rng = np.random.default_rng(0)
    image = (200.0 + rng.normal(0, 3, (201, 181))).astype(np.float32)
    sep_model = estimate_background(
        image, np.zeros(image.shape, np.int32), 0, BackgroundConfig(implementation="sep")
    )
    original = BackgroundList([model, sep_model, model.scaled(-0.25)])
    hdus = original.to_hdus()
    assert [h.name for h in hdus] == ["BKGD0", "BKGD1", "BKGD2"]
    path = tmp_path / "bkg.fits"
    other = fits.ImageHDU(np.zeros((2, 2)), name="IMAGE")
    fits.HDUList([fits.PrimaryHDU(), other, *hdus]).writeto(path)
    with fits.open(path) as hdul:
        restored = BackgroundList.from_hdus(hdul)
    assert len(restored) == 3
    for a, b in zip(original, restored, strict=True):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.x_centers, b.x_centers)
        np.testing.assert_array_equal(a.y_centers, b.y_centers)
        assert (a.shape, a.bin_size, a.order_x, a.order_y) == (
            b.shape,
            b.bin_size,
            b.order_x,
            b.order_y,
        )
        np.testing.assert_array_equal(a.evaluate(), b.evaluate())


def test_median_binned_sum():
    centers_x, centers_y = np.arange(3) * 10.0, np.arange(2) * 10.0
    a = BackgroundModel(
        10, [[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]], centers_x, centers_y, (20, 30), 1, 1
    )
    b = BackgroundModel(
        10, [[np.nan, -1.0, 7.0], [2.0, np.nan, 0.0]], centers_x, centers_y, (20, 30), 1, 1
    )
    # Medians: a -> 3.5, b (finite only: -1, 7, 2, 0) -> 1.0.
    assert BackgroundList([a, b]).median_binned_sum() == pytest.approx(4.5)
    assert BackgroundList([a]).scaled(2.0).median_binned_sum() == pytest.approx(7.0)


def test_subtract_background_in_place():
    height, width, sigma = 260, 300, 10.0
    truth = smooth_background("linear", height, width)
    image, det = make_scene(height, width, truth, sigma, n_stars=20, seed=5)
    mask = Mask(det)
    exposure = Exposure(image, np.full(image.shape, sigma**2, np.float32), mask)
    original = exposure.image.copy()
    model = subtract_background(exposure)
    # Subtraction is fused row by row (float32), so it equals the explicit difference
    # to float32 rounding of the summed terms, not bit for bit.
    np.testing.assert_allclose(exposure.image, original - model.evaluate(), rtol=0, atol=1e-3)
    sky = exposure.image[det == 0]
    assert abs(np.mean(sky)) < 0.1 * sigma
    # Naming only an unrelated plane leaves the stars in: the bins come out higher.
    fresh = Exposure(original.copy(), exposure.variance.copy(), Mask(det.copy()))
    unmasked = subtract_background(fresh, mask_planes=["SAT"])
    assert np.mean(unmasked.values) > np.mean(model.values)
