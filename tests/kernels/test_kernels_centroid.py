"""The centroid and hollow-centre kernels against NumPy/SciPy oracles and known truth.

The pipeline runs ``centroid_one`` inside ``measure_core``; :mod:`per_source` calls it
per source at the start positions a test chooses.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_measure as om
import per_source as ps
import pytest
from numpy.testing import assert_allclose
from scenes import SKY_SIGMA, disk_labels, f32, star_field
from scipy import ndimage

from promptcal.kernels import centroid as ck

# ------------------------------------------------------------------ centroids


@pytest.mark.parametrize(("star_sigma", "weight_sigma"), [(1.0, 1.0), (1.5, 1.5), (2.0, 1.6)])
def test_weighted_centroid_recovers_subpixel_gaussian(star_sigma, weight_sigma):
    rng = np.random.default_rng(3)
    shape = (40, 48)
    xs, ys = 20 + rng.uniform(-0.5, 0.5, 3), 19 + rng.uniform(-0.5, 0.5, 3)
    for x0, y0 in zip(xs, ys, strict=True):
        image = f32(oracles.gaussian(shape, x0, y0, 1e4, star_sigma**2))
        var = np.ones(shape, np.float32)
        labels = np.zeros(shape, np.int32)
        x, y, xe, ye, flags = ps.centroids(
            image, var, image, labels, np.zeros(1, np.int32),
            np.array([np.floor(x0 + 0.5) + 1.0]), np.array([np.floor(y0 + 0.5) - 1.0]),
            weight_sigma, 50,
        )  # fmt: skip
        assert flags[0] == 0
        assert abs(x[0] - x0) < 1e-3 and abs(y[0] - y0) < 1e-3
        assert 0 < xe[0] < 0.01 and 0 < ye[0] < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_centroids_match_oracle(seed):
    image, var, noise, labels, own, xs, ys, _ = star_field(seed)
    x_start, y_start = np.floor(xs + 0.5), np.floor(ys + 0.5)
    x, y, xe, ye, flags = ps.centroids(image, var, noise, labels, own, x_start, y_start, 1.7, 100)
    for i in range(own.size):
        ex, ey, exe, eye = om.weighted_centroid(
            image, var, noise, labels, own[i], x_start[i], y_start[i], 1.7
        )
        assert flags[i] == 0
        assert_allclose([x[i], y[i]], [ex, ey], atol=2e-5)
        assert_allclose([xe[i], ye[i]], [exe, eye], rtol=1e-4)
        assert abs(x[i] - xs[i]) < 5 * xe[i] + 1e-3 and abs(y[i] - ys[i]) < 5 * ye[i] + 1e-3


def test_weighted_centroid_errors_match_scatter():
    rng = np.random.default_rng(17)
    shape, sigma, n_side = (200, 200), 1.6, 10
    centres = [(10 + 20 * i + rng.uniform(-0.5, 0.5), 10 + 20 * j + rng.uniform(-0.5, 0.5))
               for j in range(n_side) for i in range(n_side)]  # fmt: skip
    xs, ys = np.array(centres).T
    truth = sum(oracles.gaussian(shape, x, y, 300.0, sigma**2) for x, y in centres)
    image = f32(truth + rng.normal(0, SKY_SIGMA, shape))
    var = np.full(shape, SKY_SIGMA**2, np.float32)
    labels = np.zeros(shape, np.int32)
    own = np.zeros(xs.size, np.int32)
    x, y, xe, ye, _ = ps.centroids(
        image, var, image, labels, own, np.floor(xs + 0.5), np.floor(ys + 0.5), sigma, 50
    )
    pull = np.concatenate([(x - xs) / xe, (y - ys) / ye])
    assert abs(np.std(pull) - 1.0) < 0.15
    assert abs(np.mean(pull)) < 0.25


def test_weighted_centroid_near_edge_is_flagged_and_keeps_start():
    shape = (30, 30)
    image = f32(oracles.gaussian(shape, 2.2, 15.0, 1e4, 2.25))
    var = np.ones(shape, np.float32)
    x, y, _, _, flags = ps.centroids(
        image, var, image, np.zeros(shape, np.int32), np.zeros(1, np.int32),
        np.array([2.0]), np.array([15.0]), 1.5, 20,
    )  # fmt: skip
    assert flags[0] & ck.CENTROID_EDGE and flags[0] & ck.CENTROID_FAILED
    assert (x[0], y[0]) == (2.0, 15.0)


def test_weighted_centroid_never_reads_across_the_image_edge():
    # The last allowed iteration moves the centre 1 px towards the left edge, so the
    # weight box of the error pass (half-width 6) starts at column -1. That column must
    # not be read (negative indices wrap to the right edge): flag EDGE or stay on-image.
    shape = (40, 40)
    image = f32(oracles.gaussian(shape, 5.0, 20.0, 1e4, 2.25))
    var = np.ones(shape, np.float32)
    var[:, -1] = 1e12
    x, _, xe, _, flags = ps.centroids(
        image, var, image, np.zeros(shape, np.int32), np.zeros(1, np.int32),
        np.array([6.0]), np.array([20.0]), 1.5, 1,
    )  # fmt: skip
    assert abs(x[0] - 5.0) < 0.05  # the one step did reach the star
    assert flags[0] & ck.CENTROID_EDGE or xe[0] < 1.0


# ------------------------------------------------------------------ central hole


def _hole_fraction(shape, seed, snr, kind):
    """An object with its centre at a random sub-pixel position; returns image, ix, iy."""
    rng = np.random.default_rng(seed)
    xc, yc = 20 + rng.uniform(-0.5, 0.5), 18 + rng.uniform(-0.5, 0.5)
    if kind in ("star", "scooped"):
        sigma = 1.0 + seed % 3 * 0.5
        flux = snr * SKY_SIGMA * np.sqrt(4 * np.pi) * sigma
        img = oracles.gaussian(shape, xc, yc, flux, sigma**2)
    else:  # smooth elliptical galaxy: exponential disk convolved with a Gaussian PSF
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
        c, s = np.cos(0.5 + seed), np.sin(0.5 + seed)
        u, v = c * (x - xc) + s * (y - yc), (-s * (x - xc) + c * (y - yc)) / 0.5
        img = ndimage.gaussian_filter(np.exp(-np.hypot(u, v) / 2.0), 1.2)
        img *= snr * SKY_SIGMA * np.sqrt(np.sum(img > 0.1 * img.max())) / img.sum()
    ix, iy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
    if kind == "scooped":
        img[iy - 1 : iy + 2, ix - 1 : ix + 2] -= img[iy - 1 : iy + 2, ix - 1 : ix + 2] / 1.1
    elif kind == "zeroed":
        img[iy, ix] = 0.0
    return f32(img + rng.normal(0, SKY_SIGMA, shape)), ix, iy


def _central_hole(image, ix, iy, nsigma=5.0):
    var = np.full(image.shape, SKY_SIGMA**2, np.float32)
    labels = np.zeros(image.shape, np.int32)
    got = ps.central_hole(image, var, image, labels, 0, ix, iy, nsigma)
    assert got == om.central_hole(image, var, image, labels, 0, ix, iy, nsigma)
    return got


@pytest.mark.parametrize("snr", [20, 100, 1e3, 1e4])
@pytest.mark.parametrize("kind", ["star", "galaxy"])
def test_central_hole_not_flagged_for_smooth_profiles(kind, snr):
    for seed in range(4):
        image, ix, iy = _hole_fraction((36, 40), seed, snr, kind)
        assert not _central_hole(image, ix, iy)


@pytest.mark.parametrize("snr", [100, 1e3, 1e4])
@pytest.mark.parametrize("kind", ["scooped", "zeroed"])
def test_central_hole_flags_hollow_centres(kind, snr):
    for seed in range(4):
        image, ix, iy = _hole_fraction((36, 40), seed, snr, kind)
        assert _central_hole(image, ix, iy)


def test_central_hole_matches_oracle_on_noise_and_sets_centroid_flag():
    rng = np.random.default_rng(8)
    image = f32(rng.normal(0, 1, (30, 30)))
    var = np.ones_like(image)
    labels = disk_labels(image.shape, [(12, 12)], 3)
    noise = f32(rng.normal(5, 1, image.shape))  # neighbour pixels read as bright noise
    for nsigma in (0.0, 0.5, 1.0, 2.0):
        for own in (0, 1):
            got = ps.central_hole(image, var, noise, labels, own, 14, 14, nsigma)
            assert got == om.central_hole(image, var, noise, labels, own, 14, 14, nsigma)


def test_weighted_centroid_flags_a_scooped_star():
    # The weight-smoothed image of a star with a hollow 3×3 core has its maxima on the
    # ring around the hole, so the centroid must not be reported as a clean maximum.
    scooped, ix, iy = _hole_fraction((36, 40), 1, 1e3, "scooped")
    *_, flags = ps.centroids(
        scooped, np.ones_like(scooped), scooped, np.zeros(scooped.shape, np.int32),
        np.zeros(1, np.int32), np.array([float(ix)]), np.array([float(iy)]), 1.5, 20,
    )  # fmt: skip
    assert flags[0] & ck.CENTROID_NOT_AT_MAXIMUM
