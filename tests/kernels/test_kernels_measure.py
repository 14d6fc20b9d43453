"""Adaptive moments, flux and mask-bit kernels against NumPy/SciPy oracles and known truth.

The per-source flux kernels run inside ``measure_core`` in the pipeline;
:mod:`per_source` calls them at the positions a test chooses.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_measure as om
import per_source as ps
import pytest
from numpy.testing import assert_allclose
from scenes import SKY_SIGMA, disk_labels, f32, star_field

from promptcal.kernels import fluxes as fk
from promptcal.kernels import measure as mk
from promptcal.kernels.psf import shift_stamp

# ------------------------------------------------------------------ adaptive moments


@pytest.mark.parametrize(
    ("ixx", "iyy", "ixy"), [(2.25, 2.25, 0.0), (4.0, 2.25, 1.0), (1.5, 6.0, -1.2), (9.0, 9.0, 7.0)]
)
def test_adaptive_moments_recover_gaussian_shape(ixx, iyy, ixy):
    rng = np.random.default_rng(4)
    shape = (50, 44)
    xc, yc = 21 + rng.uniform(-0.5, 0.5), 25 + rng.uniform(-0.5, 0.5)
    image = f32(oracles.gaussian(shape, xc, yc, 1e5, ixx, iyy, ixy))
    got = mk.adaptive_moments(
        image, image, np.zeros(shape, np.int32), np.zeros(1, np.int32),
        np.array([xc]), np.array([yc]), 1.5, 100, 1e-9,
    )  # fmt: skip
    assert got.flags[0] == 0
    assert_allclose([got.ixx[0], got.iyy[0]], [ixx, iyy], rtol=0.01)
    assert abs(got.ixy[0] - ixy) < 0.01 * np.sqrt(ixx * iyy)


@pytest.mark.parametrize("seed", [0, 1])
def test_adaptive_moments_match_oracle(seed):
    image, _, noise, labels, own, xs, ys, _ = star_field(seed, flux=(5e3, 2e4))
    xx, yy, xy, flags = mk.adaptive_moments(image, noise, labels, own, xs, ys, 2.0, 200, 1e-11)
    for i in range(own.size):
        expected = om.adaptive_moments(image, noise, labels, own[i], xs[i], ys[i], 2.0)
        assert flags[i] == 0
        assert_allclose([xx[i], yy[i], xy[i]], expected, rtol=1e-6, atol=1e-7)


def test_adaptive_moments_flags():
    shape = (40, 40)
    star = f32(oracles.gaussian(shape, 2.0, 20.0, 1e4, 2.25))
    neg = -star
    args = (np.zeros(shape, np.int32), np.zeros(1, np.int32), np.array([2.0]), np.array([20.0]))
    *_, flags = mk.adaptive_moments(star, star, *args, 1.5, 100, 1e-9)
    assert flags[0] & mk.SHAPE_EDGE
    xx, _, _, flags = mk.adaptive_moments(neg, neg, *args, 1.5, 100, 1e-9)
    assert flags[0] & mk.SHAPE_FAILED and np.isnan(xx[0])
    centred = f32(oracles.gaussian(shape, 20.0, 20.0, 1e4, 2.25, 9.0, 0.0))
    args = (np.zeros(shape, np.int32), np.zeros(1, np.int32), np.array([20.0]), np.array([20.0]))
    xx, _, _, flags = mk.adaptive_moments(centred, centred, *args, 1.0, 2, 1e-12)
    assert flags[0] == mk.SHAPE_NO_CONVERGENCE and np.isfinite(xx[0])


# ------------------------------------------------------------------ fluxes


def test_naive_apertures_equal_numpy_mask_sums_exactly():
    rng = np.random.default_rng(9)
    shape = (41, 57)
    image = rng.integers(-50, 200, shape).astype(np.float32)  # integer sums are exact
    var = rng.integers(1, 20, shape).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    xs = np.array([20.3, 28.0, 1.7, 55.2, 30.5])
    ys = np.array([18.6, 20.0, 20.2, 40.1, 0.5])
    radii = np.array([1.0, 2.5, 3.0, 6.0, 12.0])
    own = np.zeros(xs.size, np.int32)
    flux, err, trunc = ps.aperture_fluxes(image, var, image, labels, own, xs, ys, radii)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i in range(xs.size):
        for k, r in enumerate(radii):
            inside = (x - xs[i]) ** 2 + (y - ys[i]) ** 2 <= r * r
            assert flux[i, k] == image[inside].astype(np.float64).sum()
            assert err[i, k] == np.sqrt(var[inside].astype(np.float64).sum())
            # Truncated when some pixel centre within r lies off the image.
            py, px = np.mgrid[-20 : shape[0] + 20, -20 : shape[1] + 20]
            near = (px - xs[i]) ** 2 + (py - ys[i]) ** 2 <= r * r
            off = (px < 0) | (py < 0) | (px >= shape[1]) | (py >= shape[0])
            assert trunc[i, k] == np.any(near & off), (i, r)
    assert trunc[2].tolist() == [False, False, True, True, True]
    assert not trunc[0].any() and trunc[3, 0] and trunc[4, 1] and not trunc[4, 0]


def test_naive_apertures_with_noise_replacement_match_oracle():
    image, var, noise, labels, own, xs, ys, _ = star_field(5)
    radii = np.array([3.0, 4.5, 12.0, 17.0])
    flux, err, _ = ps.aperture_fluxes(image, var, noise, labels, own, xs, ys, radii)
    for i in range(own.size):
        for k, r in enumerate(radii):
            expected = om.aperture_sums(image, var, noise, labels, own[i], xs[i], ys[i], r)
            assert_allclose([flux[i, k], err[i, k]], expected, rtol=1e-10)


def test_gaussian_and_psf_flux_of_noiseless_star():
    shape, sigma = (48, 52), 1.8
    xs, ys = np.array([24.31, 20.77]), np.array([22.64, 25.08])
    for x0, y0 in zip(xs, ys, strict=True):
        image = f32(oracles.gaussian(shape, x0, y0, 5e4, sigma**2))
        var = np.ones(shape, np.float32)
        labels = np.zeros(shape, np.int32)
        own, xc, yc = np.zeros(1, np.int32), np.array([x0]), np.array([y0])
        wxx, wyy, wxy, _ = mk.adaptive_moments(image, image, labels, own, xc, yc, 2.0, 100, 1e-9)
        g, g_err = ps.gaussian_fluxes(image, var, image, labels, own, xc, yc, wxx, wyy, wxy)
        assert abs(g[0] / 5e4 - 1) < 0.005 and g_err[0] > 0
        # PSF model: a centred Gaussian stamp shifted by the sub-pixel offset (Lanczos3).
        size = 25
        ix, iy = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
        centred = oracles.gaussian((size, size), size // 2, size // 2, 1.0, sigma**2)
        stamp = shift_stamp(centred, x0 - ix, y0 - iy, 3)
        stamp /= stamp.sum()
        p, p_err, trunc = ps.psf_fluxes(
            image, var, image, labels, own, stamp[None],
            np.array([ix - size // 2]), np.array([iy - size // 2]),
        )  # fmt: skip
        assert abs(p[0] / 5e4 - 1) < 0.005 and not trunc[0]
        assert_allclose(p_err[0], 1 / np.sqrt(np.sum(stamp**2)), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_and_psf_fluxes_match_oracle(seed):
    image, var, noise, labels, own, xs, ys, _ = star_field(seed)
    rng = np.random.default_rng(seed + 100)
    n = own.size
    wxx, wyy = rng.uniform(2, 5, n), rng.uniform(2, 5, n)
    wxy = rng.uniform(-1, 1, n)
    wxx[0], wyy[0], wxy[0] = 1.0, 1.0, 2.0  # invalid shape -> NaN
    g, g_err = ps.gaussian_fluxes(image, var, noise, labels, own, xs, ys, wxx, wyy, wxy)
    assert np.isnan(g[0]) and np.isnan(g_err[0])
    for i in range(1, n):
        expected = om.gaussian_flux(
            image, var, noise, labels, own[i], xs[i], ys[i], wxx[i], wyy[i], wxy[i]
        )
        assert_allclose([g[i], g_err[i]], expected, rtol=1e-8)
    size = 15
    stamps = rng.uniform(0, 1, (n, size, size))
    stamps /= stamps.sum(axis=(1, 2), keepdims=True)
    x0 = np.floor(xs).astype(np.int64) - 7
    y0 = np.floor(ys).astype(np.int64) - 7
    x0[1], y0[1] = -4, image.shape[0] - 10  # part of the stamp off the image
    p, p_err, trunc = ps.psf_fluxes(image, var, noise, labels, own, stamps, x0, y0)
    for i in range(n):
        ef, ee, et = om.psf_flux(image, var, noise, labels, own[i], stamps[i], x0[i], y0[i])
        assert_allclose([p[i], p_err[i]], [ef, ee], rtol=1e-8)
        assert trunc[i] == et
    assert trunc.tolist() == [False, True] + [False] * (n - 2)


def test_mask_or_matches_oracle():
    rng = np.random.default_rng(12)
    shape = (33, 47)
    mask = np.where(rng.random(shape) < 0.05, 1 << rng.integers(0, 20, shape), 0).astype(np.int32)
    labels = disk_labels(shape, [(10, 10), (30, 20), (46, 0)], 5)
    mask[0, 45] |= 1 << 30  # a bit in footprint 3 only, on the image corner
    own = np.array([1, 2, 3, 4], np.int32)  # label 4 has no pixels
    xs, ys = np.array([10.4, 29.6, 46.2, 0.0]), np.array([9.5, 20.2, 0.3, 32.0])
    bbox = np.array([[5, 5, 15, 15], [25, 15, 35, 25], [41, 0, 46, 5], [0, 0, 0, 0]], np.int64)
    fp, cb = fk.mask_or(mask, labels, own, bbox, xs, ys)
    for i in range(own.size):
        assert (fp[i], cb[i]) == om.mask_or(mask, labels, own[i], xs[i], ys[i])
    assert fp[2] & (1 << 30) and not (fp[:2] & (1 << 30)).any()
    assert fp[:2].all() and fp[3] == 0 and cb[2] & (1 << 30)


# ------------------------------------------------------------------ noise replacement


def _measure_all(image, var, noise, labels, own, x0, y0):
    xc, yc, _, _, cflags = ps.centroids(
        image, var, noise, labels, own, np.floor(x0 + 0.5), np.floor(y0 + 0.5), 1.7, 50
    )
    wxx, wyy, wxy, _ = mk.adaptive_moments(image, noise, labels, own, xc, yc, 1.7, 100, 1e-9)
    ap, _, _ = ps.aperture_fluxes(
        image, var, noise, labels, own, xc, yc, np.array([3.0, 6.0, 12.0])
    )
    g, _ = ps.gaussian_fluxes(image, var, noise, labels, own, xc, yc, wxx, wyy, wxy)
    return np.array([xc[0], yc[0], wxx[0], wyy[0], wxy[0], *ap[0], g[0]]), cflags


def test_neighbour_footprint_does_not_change_measurement():
    rng = np.random.default_rng(21)
    shape = (40, 60)
    x0, y0 = np.array([18.3]), np.array([20.6])
    sky = rng.normal(0, SKY_SIGMA, shape)
    alone = f32(oracles.gaussian(shape, x0[0], y0[0], 5e3, 1.7**2) + sky)
    var = np.full(shape, SKY_SIGMA**2, np.float32)
    own = np.array([1], np.int32)
    labels = disk_labels(shape, [(x0[0], y0[0])], 6)
    ref, ref_flags = _measure_all(alone, var, alone, labels, own, x0, y0)
    assert ref_flags[0] == 0
    # A neighbour 100× brighter whose light lies entirely within its footprint
    # (a truncated profile), 16 px away: with the "noise" equal to the pixels the
    # isolated image holds there, every measurement must be identical.
    nb_labels = disk_labels(shape, [(34.5, 22.0)], 9, start=2)
    neighbour = oracles.gaussian(shape, 34.5, 22.0, 5e5, 2.0**2) * (nb_labels > 0)
    both = f32(alone + neighbour)
    labels2 = np.maximum(labels, nb_labels)
    got, _ = _measure_all(both, var, alone, labels2, own, x0, y0)
    assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    # Control: without its footprint the neighbour does bias the source.
    biased, _ = _measure_all(both, var, alone, labels, own, x0, y0)
    assert np.max(np.abs(biased - ref) / np.abs(ref)) > 0.01
    # With real replacement noise and an untruncated neighbour the changes are at
    # the level of the statistical errors.
    full = f32(alone + oracles.gaussian(shape, 34.5, 22.0, 5e5, 2.0**2))
    noise = f32(rng.normal(0, SKY_SIGMA, shape) * (labels2 > 0))
    got, _ = _measure_all(full, var, noise, labels2, own, x0, y0)
    assert abs(got[0] - ref[0]) < 0.02 and abs(got[1] - ref[1]) < 0.02
    assert_allclose(got[2:5], ref[2:5], atol=0.05)
    assert_allclose(got[5:], ref[5:], rtol=0.01)
