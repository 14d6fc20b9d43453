"""Measurement kernels against NumPy/SciPy oracles and analytic Gaussians."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from promptcal.kernels import fluxes as fk
from promptcal.kernels import measure as mk
from promptcal.kernels import noise as nk
from promptcal.kernels.psf import shift_stamp

SKY_SIGMA = 1.0


def _f32(a):
    return np.ascontiguousarray(a, np.float32)


def _disk_labels(shape, centres, radius, start=1):
    """Footprint labels: disks of ``radius`` around each (x, y), labels start, start+1, …"""
    labels = np.zeros(shape, np.int32)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i, (cx, cy) in enumerate(centres):
        labels[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = start + i
    return labels


def _star_field(seed, shape=(64, 72), n=4, sigma=1.7, flux=(2e3, 2e4)):
    """Noisy Gaussian stars in separate disk footprints, a noise image and the truth."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(14, nx - 15, 2), np.linspace(14, ny - 15, (n + 1) // 2))
    xs = gx.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    ys = gy.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    fl = rng.uniform(*flux, n)
    image = sum(
        oracles.gaussian(shape, x, y, f, sigma**2) for x, y, f in zip(xs, ys, fl, strict=True)
    )
    image = image + rng.normal(0, SKY_SIGMA, shape)
    variance = np.full(shape, SKY_SIGMA**2) * rng.uniform(0.8, 1.2, shape)
    labels = _disk_labels(shape, list(zip(xs, ys, strict=True)), 9)
    noise = rng.normal(0, SKY_SIGMA, shape) * (labels > 0)
    own = np.arange(1, n + 1, dtype=np.int32)
    return _f32(image), _f32(variance), _f32(noise), labels, own, xs, ys, fl


# ------------------------------------------------------------------ pixel access


def test_pixel_reads_other_footprints_as_noise():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    noise = -image - 100
    labels = np.array([[0, 1, 1, 2], [0, 1, 2, 2], [3, 0, 0, 2]], np.int32)
    for y in range(3):
        for x in range(4):
            seen = nk.pixel(image, noise, labels, 2, y, x)
            assert seen == (image[y, x] if labels[y, x] in (0, 2) else noise[y, x])


def test_replacement_noise_is_seeded_gaussian_on_footprints_only():
    labels = _disk_labels((80, 80), [(20, 20), (60, 55)], 15)
    a = nk.replacement_noise(labels, 3.0, 42)
    assert a.dtype == np.float32
    assert not a[labels == 0].any()
    values = a[labels > 0]
    assert abs(values.mean()) < 4 * 3.0 / np.sqrt(values.size)
    assert abs(values.std() / 3.0 - 1) < 0.05
    assert_array_equal(a, nk.replacement_noise(labels, 3.0, 42))
    assert not np.array_equal(a, nk.replacement_noise(labels, 3.0, 43))


# ------------------------------------------------------------------ centroids


@pytest.mark.parametrize(("star_sigma", "weight_sigma"), [(1.0, 1.0), (1.5, 1.5), (2.0, 1.6)])
def test_weighted_centroid_recovers_subpixel_gaussian(star_sigma, weight_sigma):
    rng = np.random.default_rng(3)
    shape = (40, 48)
    xs, ys = 20 + rng.uniform(-0.5, 0.5, 3), 19 + rng.uniform(-0.5, 0.5, 3)
    for x0, y0 in zip(xs, ys, strict=True):
        image = _f32(oracles.gaussian(shape, x0, y0, 1e4, star_sigma**2))
        var = np.ones(shape, np.float32)
        labels = np.zeros(shape, np.int32)
        x, y, xe, ye, flags = mk.weighted_centroids(
            image, var, image, labels, np.zeros(1, np.int32),
            np.array([np.floor(x0 + 0.5) + 1.0]), np.array([np.floor(y0 + 0.5) - 1.0]),
            weight_sigma, 50,
        )  # fmt: skip
        assert flags[0] == 0
        assert abs(x[0] - x0) < 1e-3 and abs(y[0] - y0) < 1e-3
        assert 0 < xe[0] < 0.01 and 0 < ye[0] < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_centroids_match_oracle(seed):
    image, var, noise, labels, own, xs, ys, _ = _star_field(seed)
    x_start, y_start = np.floor(xs + 0.5), np.floor(ys + 0.5)
    x, y, xe, ye, flags = mk.weighted_centroids(
        image, var, noise, labels, own, x_start, y_start, 1.7, 100
    )
    for i in range(own.size):
        ex, ey, exe, eye = oracles.weighted_centroid(
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
    image = _f32(truth + rng.normal(0, SKY_SIGMA, shape))
    var = np.full(shape, SKY_SIGMA**2, np.float32)
    labels = np.zeros(shape, np.int32)
    own = np.zeros(xs.size, np.int32)
    x, y, xe, ye, _ = mk.weighted_centroids(
        image, var, image, labels, own, np.floor(xs + 0.5), np.floor(ys + 0.5), sigma, 50
    )
    pull = np.concatenate([(x - xs) / xe, (y - ys) / ye])
    assert abs(np.std(pull) - 1.0) < 0.15
    assert abs(np.mean(pull)) < 0.25


def test_weighted_centroid_near_edge_is_flagged_and_keeps_start():
    shape = (30, 30)
    image = _f32(oracles.gaussian(shape, 2.2, 15.0, 1e4, 2.25))
    var = np.ones(shape, np.float32)
    x, y, _, _, flags = mk.weighted_centroids(
        image, var, image, np.zeros(shape, np.int32), np.zeros(1, np.int32),
        np.array([2.0]), np.array([15.0]), 1.5, 20,
    )  # fmt: skip
    assert flags[0] & mk.CENTROID_EDGE and flags[0] & mk.CENTROID_FAILED
    assert (x[0], y[0]) == (2.0, 15.0)


def test_weighted_centroid_never_reads_across_the_image_edge():
    # The last allowed iteration moves the centre 1 px towards the left edge, so the
    # weight box of the error pass (half-width 6) starts at column -1. That column must
    # not be read (negative indices wrap to the right edge): flag EDGE or stay on-image.
    shape = (40, 40)
    image = _f32(oracles.gaussian(shape, 5.0, 20.0, 1e4, 2.25))
    var = np.ones(shape, np.float32)
    var[:, -1] = 1e12
    x, _, xe, _, flags = mk.weighted_centroids(
        image, var, image, np.zeros(shape, np.int32), np.zeros(1, np.int32),
        np.array([6.0]), np.array([20.0]), 1.5, 1,
    )  # fmt: skip
    assert abs(x[0] - 5.0) < 0.05  # the one step did reach the star
    assert flags[0] & mk.CENTROID_EDGE or xe[0] < 1.0


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
    return _f32(img + rng.normal(0, SKY_SIGMA, shape)), ix, iy


def _central_hole(image, ix, iy, nsigma=5.0):
    var = np.full(image.shape, SKY_SIGMA**2, np.float32)
    labels = np.zeros(image.shape, np.int32)
    got = mk.central_hole(image, var, image, labels, 0, ix, iy, nsigma)
    assert got == oracles.central_hole(image, var, image, labels, 0, ix, iy, nsigma)
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
    image = _f32(rng.normal(0, 1, (30, 30)))
    var = np.ones_like(image)
    labels = _disk_labels(image.shape, [(12, 12)], 3)
    noise = _f32(rng.normal(5, 1, image.shape))  # neighbour pixels read as bright noise
    for nsigma in (0.0, 0.5, 1.0, 2.0):
        for own in (0, 1):
            got = mk.central_hole(image, var, noise, labels, own, 14, 14, nsigma)
            assert got == oracles.central_hole(image, var, noise, labels, own, 14, 14, nsigma)


def test_weighted_centroid_flags_a_scooped_star():
    # The weight-smoothed image of a star with a hollow 3×3 core has its maxima on the
    # ring around the hole, so the centroid must not be reported as a clean maximum.
    scooped, ix, iy = _hole_fraction((36, 40), 1, 1e3, "scooped")
    *_, flags = mk.weighted_centroids(
        scooped, np.ones_like(scooped), scooped, np.zeros(scooped.shape, np.int32),
        np.zeros(1, np.int32), np.array([float(ix)]), np.array([float(iy)]), 1.5, 20,
    )  # fmt: skip
    assert flags[0] & mk.CENTROID_NOT_AT_MAXIMUM


# ------------------------------------------------------------------ adaptive moments


@pytest.mark.parametrize(
    ("ixx", "iyy", "ixy"), [(2.25, 2.25, 0.0), (4.0, 2.25, 1.0), (1.5, 6.0, -1.2), (9.0, 9.0, 7.0)]
)
def test_adaptive_moments_recover_gaussian_shape(ixx, iyy, ixy):
    rng = np.random.default_rng(4)
    shape = (50, 44)
    xc, yc = 21 + rng.uniform(-0.5, 0.5), 25 + rng.uniform(-0.5, 0.5)
    image = _f32(oracles.gaussian(shape, xc, yc, 1e5, ixx, iyy, ixy))
    got = mk.adaptive_moments(
        image, image, np.zeros(shape, np.int32), np.zeros(1, np.int32),
        np.array([xc]), np.array([yc]), 1.5, 100, 1e-9,
    )  # fmt: skip
    assert got[3][0] == 0
    assert_allclose([got[0][0], got[1][0]], [ixx, iyy], rtol=0.01)
    assert abs(got[2][0] - ixy) < 0.01 * np.sqrt(ixx * iyy)


@pytest.mark.parametrize("seed", [0, 1])
def test_adaptive_moments_match_oracle(seed):
    image, _, noise, labels, own, xs, ys, _ = _star_field(seed, flux=(5e3, 2e4))
    xx, yy, xy, flags = mk.adaptive_moments(image, noise, labels, own, xs, ys, 2.0, 200, 1e-11)
    for i in range(own.size):
        expected = oracles.adaptive_moments(image, noise, labels, own[i], xs[i], ys[i], 2.0)
        assert flags[i] == 0
        assert_allclose([xx[i], yy[i], xy[i]], expected, rtol=1e-6, atol=1e-7)


def test_adaptive_moments_flags():
    shape = (40, 40)
    star = _f32(oracles.gaussian(shape, 2.0, 20.0, 1e4, 2.25))
    neg = -star
    args = (np.zeros(shape, np.int32), np.zeros(1, np.int32), np.array([2.0]), np.array([20.0]))
    *_, flags = mk.adaptive_moments(star, star, *args, 1.5, 100, 1e-9)
    assert flags[0] & mk.SHAPE_EDGE
    xx, _, _, flags = mk.adaptive_moments(neg, neg, *args, 1.5, 100, 1e-9)
    assert flags[0] & mk.SHAPE_FAILED and np.isnan(xx[0])
    centred = _f32(oracles.gaussian(shape, 20.0, 20.0, 1e4, 2.25, 9.0, 0.0))
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
    flux, err, trunc = fk.naive_aperture_fluxes(image, var, image, labels, own, xs, ys, radii)
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
    image, var, noise, labels, own, xs, ys, _ = _star_field(5)
    radii = np.array([3.0, 4.5, 12.0, 17.0])
    flux, err, _ = fk.naive_aperture_fluxes(image, var, noise, labels, own, xs, ys, radii)
    for i in range(own.size):
        for k, r in enumerate(radii):
            expected = oracles.aperture_sums(image, var, noise, labels, own[i], xs[i], ys[i], r)
            assert_allclose([flux[i, k], err[i, k]], expected, rtol=1e-10)


def test_gaussian_and_psf_flux_of_noiseless_star():
    shape, sigma = (48, 52), 1.8
    xs, ys = np.array([24.31, 20.77]), np.array([22.64, 25.08])
    for x0, y0 in zip(xs, ys, strict=True):
        image = _f32(oracles.gaussian(shape, x0, y0, 5e4, sigma**2))
        var = np.ones(shape, np.float32)
        labels = np.zeros(shape, np.int32)
        own, xc, yc = np.zeros(1, np.int32), np.array([x0]), np.array([y0])
        wxx, wyy, wxy, _ = mk.adaptive_moments(image, image, labels, own, xc, yc, 2.0, 100, 1e-9)
        g, g_err = fk.gaussian_fluxes(image, var, image, labels, own, xc, yc, wxx, wyy, wxy)
        assert abs(g[0] / 5e4 - 1) < 0.005 and g_err[0] > 0
        # PSF model: a centred Gaussian stamp shifted by the sub-pixel offset (Lanczos3).
        size = 25
        ix, iy = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
        centred = oracles.gaussian((size, size), size // 2, size // 2, 1.0, sigma**2)
        stamp = shift_stamp(centred, x0 - ix, y0 - iy, 3)
        stamp /= stamp.sum()
        p, p_err, trunc = fk.psf_fluxes(
            image, var, image, labels, own, stamp[None],
            np.array([ix - size // 2]), np.array([iy - size // 2]),
        )  # fmt: skip
        assert abs(p[0] / 5e4 - 1) < 0.005 and not trunc[0]
        assert_allclose(p_err[0], 1 / np.sqrt(np.sum(stamp**2)), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_and_psf_fluxes_match_oracle(seed):
    image, var, noise, labels, own, xs, ys, _ = _star_field(seed)
    rng = np.random.default_rng(seed + 100)
    n = own.size
    wxx, wyy = rng.uniform(2, 5, n), rng.uniform(2, 5, n)
    wxy = rng.uniform(-1, 1, n)
    wxx[0], wyy[0], wxy[0] = 1.0, 1.0, 2.0  # invalid shape -> NaN
    g, g_err = fk.gaussian_fluxes(image, var, noise, labels, own, xs, ys, wxx, wyy, wxy)
    assert np.isnan(g[0]) and np.isnan(g_err[0])
    for i in range(1, n):
        expected = oracles.gaussian_flux(
            image, var, noise, labels, own[i], xs[i], ys[i], wxx[i], wyy[i], wxy[i]
        )
        assert_allclose([g[i], g_err[i]], expected, rtol=1e-8)
    size = 15
    stamps = rng.uniform(0, 1, (n, size, size))
    stamps /= stamps.sum(axis=(1, 2), keepdims=True)
    x0 = np.floor(xs).astype(np.int64) - 7
    y0 = np.floor(ys).astype(np.int64) - 7
    x0[1], y0[1] = -4, image.shape[0] - 10  # part of the stamp off the image
    p, p_err, trunc = fk.psf_fluxes(image, var, noise, labels, own, stamps, x0, y0)
    for i in range(n):
        ef, ee, et = oracles.psf_flux(image, var, noise, labels, own[i], stamps[i], x0[i], y0[i])
        assert_allclose([p[i], p_err[i]], [ef, ee], rtol=1e-8)
        assert trunc[i] == et
    assert trunc.tolist() == [False, True] + [False] * (n - 2)


def test_mask_or_matches_oracle():
    rng = np.random.default_rng(12)
    shape = (33, 47)
    mask = np.where(rng.random(shape) < 0.05, 1 << rng.integers(0, 20, shape), 0).astype(np.int32)
    labels = _disk_labels(shape, [(10, 10), (30, 20), (46, 0)], 5)
    mask[0, 45] |= 1 << 30  # a bit in footprint 3 only, on the image corner
    own = np.array([1, 2, 3, 4], np.int32)  # label 4 has no pixels
    xs, ys = np.array([10.4, 29.6, 46.2, 0.0]), np.array([9.5, 20.2, 0.3, 32.0])
    bbox = np.array([[5, 5, 15, 15], [25, 15, 35, 25], [41, 0, 46, 5], [0, 0, 0, 0]], np.int64)
    fp, cb = fk.mask_or(mask, labels, own, bbox, xs, ys)
    for i in range(own.size):
        assert (fp[i], cb[i]) == oracles.mask_or(mask, labels, own[i], xs[i], ys[i])
    assert fp[2] & (1 << 30) and not (fp[:2] & (1 << 30)).any()
    assert fp[:2].all() and fp[3] == 0 and cb[2] & (1 << 30)


# ------------------------------------------------------------------ noise replacement


def _measure_all(image, var, noise, labels, own, x0, y0):
    xc, yc, _, _, cflags = mk.weighted_centroids(
        image, var, noise, labels, own, np.floor(x0 + 0.5), np.floor(y0 + 0.5), 1.7, 50
    )
    wxx, wyy, wxy, _ = mk.adaptive_moments(image, noise, labels, own, xc, yc, 1.7, 100, 1e-9)
    ap, _, _ = fk.naive_aperture_fluxes(
        image, var, noise, labels, own, xc, yc, np.array([3.0, 6.0, 12.0])
    )
    g, _ = fk.gaussian_fluxes(image, var, noise, labels, own, xc, yc, wxx, wyy, wxy)
    return np.array([xc[0], yc[0], wxx[0], wyy[0], wxy[0], *ap[0], g[0]]), cflags


def test_neighbour_footprint_does_not_change_measurement():
    rng = np.random.default_rng(21)
    shape = (40, 60)
    x0, y0 = np.array([18.3]), np.array([20.6])
    sky = rng.normal(0, SKY_SIGMA, shape)
    alone = _f32(oracles.gaussian(shape, x0[0], y0[0], 5e3, 1.7**2) + sky)
    var = np.full(shape, SKY_SIGMA**2, np.float32)
    own = np.array([1], np.int32)
    labels = _disk_labels(shape, [(x0[0], y0[0])], 6)
    ref, ref_flags = _measure_all(alone, var, alone, labels, own, x0, y0)
    assert ref_flags[0] == 0
    # A neighbour 100× brighter whose light lies entirely within its footprint
    # (a truncated profile), 16 px away: with the "noise" equal to the pixels the
    # isolated image holds there, every measurement must be identical.
    nb_labels = _disk_labels(shape, [(34.5, 22.0)], 9, start=2)
    neighbour = oracles.gaussian(shape, 34.5, 22.0, 5e5, 2.0**2) * (nb_labels > 0)
    both = _f32(alone + neighbour)
    labels2 = np.maximum(labels, nb_labels)
    got, _ = _measure_all(both, var, alone, labels2, own, x0, y0)
    assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    # Control: without its footprint the neighbour does bias the source.
    biased, _ = _measure_all(both, var, alone, labels, own, x0, y0)
    assert np.max(np.abs(biased - ref) / np.abs(ref)) > 0.01
    # With real replacement noise and an untruncated neighbour the changes are at
    # the level of the statistical errors.
    full = _f32(alone + oracles.gaussian(shape, 34.5, 22.0, 5e5, 2.0**2))
    noise = nk.replacement_noise(labels2, SKY_SIGMA, 7)
    got, _ = _measure_all(full, var, noise, labels2, own, x0, y0)
    assert abs(got[0] - ref[0]) < 0.02 and abs(got[1] - ref[1]) < 0.02
    assert_allclose(got[2:5], ref[2:5], atol=0.05)
    assert_allclose(got[5:], ref[5:], rtol=0.01)
