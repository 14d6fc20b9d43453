"""PSF resampling and cosmic-ray kernels against NumPy oracles and analytic truth."""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.kernels.cosmic_rays import find_cosmic_rays, mask_cosmic_rays, remask_cosmic_rays
from promptcal.kernels.interpolate import flagged_pixels, interpolate_flagged, interpolate_pixels
from promptcal.kernels.noise import flat, plane_table
from promptcal.kernels.psf import lanczos_weights, registered_stamps, shift_stamp

# LSST-like cosmic-ray settings (RepairConfig defaults).
CR_ARGS = {"min_sigma": 6.0, "min_dn": 150.0, "fac": 2.0, "fac2": 0.35}


def _f32(a):
    return np.ascontiguousarray(a, np.float32)


# ------------------------------------------------------------------ Lanczos


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("offset", [0.0, 1e-13, 0.1, 0.5, 0.73, 0.999])
def test_lanczos_weights_match_sinc_formula(order, offset):
    w = lanczos_weights(offset, order)
    taps = np.arange(-order + 1, order + 1)
    expected = oracles.lanczos(offset - taps, order)
    assert_allclose(w, expected / expected.sum(), rtol=1e-9, atol=1e-12)
    assert_allclose(w.sum(), 1.0, rtol=1e-12)
    if offset == 0.0:
        assert_allclose(w, np.eye(2 * order)[order - 1], atol=1e-15)


@pytest.mark.parametrize(
    ("dx", "dy"), [(0.3, -0.2), (-0.9, 0.45), (1.7, -2.3), (0.0, 0.0), (2.0, -1.0)]
)
def test_shift_stamp_matches_lanczos_matrix(dx, dy):
    rng = np.random.default_rng(1)
    stamp = rng.normal(size=(21, 27))
    out = shift_stamp(stamp, dx, dy, 3)
    assert out.shape == stamp.shape
    assert_allclose(out, oracles.shift_stamp(stamp, dx, dy, 3), atol=1e-12)
    if dx == int(dx) and dy == int(dy):  # integer shifts translate exactly, zeros enter
        expected = np.zeros_like(stamp)
        sx, sy = int(dx), int(dy)
        h, w = stamp.shape
        dst = np.s_[max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)]
        src = np.s_[max(-sy, 0) : h - max(sy, 0), max(-sx, 0) : w - max(sx, 0)]
        expected[dst] = stamp[src]
        assert_allclose(out, expected, atol=1e-14)


def test_shift_stamp_of_gaussian_matches_analytic_shift():
    # Normalised Lanczos-3 is good to 3.7e-3 of the peak here: its weights have a first
    # moment of 0.282 for an offset of 0.3 (a 0.018 px bias). This pins that accuracy;
    # a better resampler (quintic spline, FFT) is a documented follow-up.
    dx, dy = 0.3, -0.2
    size, c, sigma = 31, 15.0, 2.0
    stamp = oracles.gaussian((size, size), c, c, 1.0, sigma**2)
    out = shift_stamp(stamp, dx, dy, 3)
    truth = oracles.gaussian((size, size), c + dx, c + dy, 1.0, sigma**2)
    assert np.max(np.abs(out - truth)) < 4e-3 * truth.max()
    # The centroid moves by the shift, within Lanczos-3's bias.
    y, x = np.mgrid[0:size, 0:size]
    assert_allclose([np.sum(out * x) / out.sum(), np.sum(out * y) / out.sum()],
                    [c + dx, c + dy], atol=0.02)  # fmt: skip


def test_registered_stamps_match_oracle_with_noise_replacement():
    rng = np.random.default_rng(2)
    shape = (50, 64)
    image = _f32(rng.normal(size=shape) * 10)
    variance = _f32(rng.uniform(1, 2, shape))
    labels = np.zeros(shape, np.int32)
    labels[10:25, 10:30] = 1
    labels[20:40, 25:45] = 2
    noise = _f32(rng.normal(size=shape))
    xc = np.array([20.3, 33.8, 3.2, 60.5, 48.0])
    yc = np.array([17.6, 30.1, 25.0, 25.0, 45.9])
    own = np.array([1, 2, 1, 2, 0], np.int32)
    size, order = 15, 3
    stamps, variances, off = registered_stamps(
        image, variance, flat(noise), plane_table(noise), labels, own, xc, yc, size, order
    )
    assert off.tolist() == [False, False, True, True, True]
    assert not stamps[off].any() and not variances[off].any()
    for i in np.flatnonzero(~off):
        e_stamp, e_var = oracles.registered_stamp(
            image, variance, noise, labels, own[i], xc[i], yc[i], size, order
        )
        assert_allclose(stamps[i], e_stamp, atol=1e-10)
        assert_array_equal(variances[i], e_var)


def test_registered_stamps_flags_only_cutouts_that_need_off_image_pixels():
    shape, size, order = (40, 40), 11, 3
    image = np.ones(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    # Lowest centre whose taps start at pixel 0: floor(x) - 5 - 2 = 0.
    xc = np.array([7.0, 6.99, 20.0, 20.0])
    yc = np.array([20.0, 20.0, 7.5, 6.5])
    stamps, _, off = registered_stamps(
        image, image, flat(image), plane_table(image), labels, np.zeros(4, np.int32),
        xc, yc, size, order,
    )  # fmt: skip
    assert off.tolist() == [False, True, False, True]
    assert_allclose(stamps[~off], 1.0, rtol=1e-12)  # normalised weights keep a flat image flat


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_registered_stamps_recentre_a_subpixel_star(seed):
    rng = np.random.default_rng(seed)
    shape, sigma, size = (48, 56), 1.8, 21
    x0, y0 = 27 + rng.uniform(-0.5, 0.5), 22 + rng.uniform(-0.5, 0.5)
    image = _f32(oracles.gaussian(shape, x0, y0, 1e4, sigma**2))
    var = np.ones(shape, np.float32)
    stamps, _, off = registered_stamps(
        image, var, flat(image), plane_table(image), np.zeros(shape, np.int32),
        np.zeros(1, np.int32),
        np.array([x0]), np.array([y0]), size, 3,
    )  # fmt: skip
    truth = oracles.gaussian((size, size), size // 2, size // 2, 1e4, sigma**2)
    assert not off[0]
    assert np.unravel_index(np.argmax(stamps[0]), stamps[0].shape) == (size // 2, size // 2)
    # Lanczos-3 limits the accuracy to ~5e-3 of the peak and ~0.02 px (its weights' bias).
    assert np.max(np.abs(stamps[0] - truth)) < 5e-3 * truth.max()
    y, x = np.mgrid[0:size, 0:size]
    centre = [np.sum(stamps[0] * x) / stamps[0].sum(), np.sum(stamps[0] * y) / stamps[0].sum()]
    assert_allclose(centre, [size // 2, size // 2], atol=0.025)


# ------------------------------------------------------------------ cosmic rays


def _sky(rng, shape, sigma=10.0):
    image = rng.normal(0, sigma, shape).astype(np.float32)
    return image, np.full(shape, sigma**2, np.float32)


def test_find_cosmic_rays_flags_hot_pixel_and_tracks():
    rng = np.random.default_rng(3)
    image, var = _sky(rng, (60, 70))
    skip = np.zeros(image.shape, bool)
    image[10, 12] += 2000.0
    track_h = (np.full(15, 40), np.arange(20, 35))
    track_v = (np.arange(5, 20), np.full(15, 55))
    track_d = (np.arange(30, 45), np.arange(45, 60))
    for ty, tx in (track_h, track_v, track_d):
        image[ty, tx] += rng.uniform(500, 1500, ty.size).astype(np.float32)
    cr = find_cosmic_rays(image, var, skip, 1.5, **CR_ARGS)
    assert cr[10, 12]
    for ty, tx in (track_h, track_v, track_d):
        assert cr[ty, tx].all()
    expected = np.zeros(image.shape, bool)
    expected[10, 12] = True
    for ty, tx in (track_h, track_v, track_d):
        expected[ty, tx] = True
    # Nothing else but neighbours grown into (those must be > fac σ).
    extra = cr & ~expected
    assert np.all(image[extra] > CR_ARGS["fac"] * 10.0)
    assert_array_equal(cr, oracles.find_cosmic_rays(image, var, skip, 1.5, **CR_ARGS))


@pytest.mark.parametrize("psf_sigma", [1.0, 1.5, 2.5])
@pytest.mark.parametrize("star_sigma", [1.0, 1.3, 2.0, 3.0])
def test_find_cosmic_rays_ignores_noiseless_gaussian_stars(star_sigma, psf_sigma):
    if star_sigma < psf_sigma:
        star_sigma = psf_sigma  # stars are never sharper than the PSF
    rng = np.random.default_rng(4)
    shape = (40, 44)
    var = np.full(shape, 25.0, np.float32)
    skip = np.zeros(shape, bool)
    for flux in (1e2, 1e3, 1e4, 1e5, 1e6, 1e7):
        x0, y0 = 21 + rng.uniform(-0.5, 0.5), 19 + rng.uniform(-0.5, 0.5)
        image = _f32(oracles.gaussian(shape, x0, y0, flux, star_sigma**2))
        assert not find_cosmic_rays(image, var, skip, psf_sigma, **CR_ARGS).any()


def test_find_cosmic_rays_sigma_one_star_with_wider_assumed_psf_is_not_a_cr():
    # Even a σ = 1 px star is smooth enough when the assumed PSF is much wider.
    shape = (30, 30)
    image = _f32(oracles.gaussian(shape, 15.2, 14.7, 1e6, 1.0))
    cr = find_cosmic_rays(
        image, np.full(shape, 25.0, np.float32), np.zeros(shape, bool), 3.0, **CR_ARGS
    )
    assert not cr.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_find_cosmic_rays_match_oracle(seed):
    rng = np.random.default_rng(seed)
    shape = (55, 67)
    image, var = _sky(rng, shape)
    var *= rng.uniform(0.5, 1.5, shape).astype(np.float32)
    for _ in range(4):  # stars
        image += _f32(oracles.gaussian(shape, *rng.uniform(5, 50, 2), rng.uniform(1e3, 1e5), 2.0))
    hits = rng.integers(0, shape[0] * shape[1], 40)  # hot pixels, some on the border
    image.ravel()[hits] += rng.uniform(100, 3000, hits.size).astype(np.float32)
    image[0, 5] = image[-1, 9] = image[20, 0] = 5000.0
    skip = rng.random(shape) < 0.03
    skip[30:36, 30:36] = True  # a saturated block
    image[30:36, 30:36] = 1e5
    for fac2 in (0.35, 0.6):
        args = {**CR_ARGS, "fac2": fac2}
        cr = find_cosmic_rays(image, var, skip, 1.5, **args)
        assert_array_equal(cr, oracles.find_cosmic_rays(image, var, skip, 1.5, **args))
        assert cr.sum() > 10
        assert not cr[skip].any()


def _wide_cr_scene(seed, shape=(47, 150)):
    """Sky, stars and hot pixels over several 64-pixel blocks and a partial one."""
    rng = np.random.default_rng(seed)
    image, var = _sky(rng, shape)
    var *= rng.uniform(0.5, 1.5, shape).astype(np.float32)
    for _ in range(6):
        image += _f32(
            oracles.gaussian(
                shape,
                rng.uniform(3, shape[1] - 3),
                rng.uniform(3, shape[0] - 3),
                rng.uniform(1e3, 1e5),
                2.0,
            )
        )
    hits = rng.integers(0, image.size, 60)  # hot pixels, some on the border
    image.ravel()[hits] += rng.uniform(100, 3000, hits.size).astype(np.float32)
    image[[0, -1, 20, 33], [5, 9, 0, -1]] = 5000.0
    image[10, 70] = np.nan  # NaN pixels pass the cheap tests and fail the sharp one
    var[11, 100] = np.nan
    return image, var, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_cosmic_rays_matches_oracle_across_blocks(seed):
    image, var, rng = _wide_cr_scene(seed)
    sat, bad, cr_bit, other = (np.int32(1 << b) for b in (1, 0, 3, 8))
    mask = np.where(rng.random(image.shape) < 0.03, bad, 0).astype(np.int32)
    mask |= np.where(rng.random(image.shape) < 0.2, other, 0).astype(np.int32)
    mask[5, 60:70] |= cr_bit  # from an earlier pass
    skip_bits = np.int32(sat | bad)
    for r1, r2 in ((0.8, 0.64), (0.3, 0.1)):
        work = mask.copy()
        count = mask_cosmic_rays(image, var, work, skip_bits, cr_bit, r1, r2, **CR_ARGS)
        e_mask, e_count = om.mask_cosmic_rays(
            image, var, mask, skip_bits, cr_bit, r1, r2, **CR_ARGS
        )
        assert_array_equal(work, e_mask)
        assert count == e_count
        assert np.count_nonzero((work & ~mask) & cr_bit) > 5


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cr_in_skip", [False, True])
def test_remask_cosmic_rays_equals_clearing_the_plane_first(seed, cr_in_skip):
    image, var, rng = _wide_cr_scene(seed)
    bad, cr_bit, other = (np.int32(1 << b) for b in (0, 3, 8))
    mask = np.where(rng.random(image.shape) < 0.03, bad, 0).astype(np.int32)
    mask |= np.where(rng.random(image.shape) < 0.2, other, 0).astype(np.int32)
    mask |= np.where(rng.random(image.shape) < 0.05, cr_bit, 0).astype(np.int32)  # stale
    # With the CR plane among the skipped ones, a stale CR bit must not hide a pixel.
    skip_bits = np.int32(bad | cr_bit) if cr_in_skip else bad
    work = mask.copy()
    count = remask_cosmic_rays(image, var, work, skip_bits, cr_bit, 0.3, 0.1, **CR_ARGS)
    cleared = mask & ~cr_bit
    e_mask, e_count = om.mask_cosmic_rays(
        image, var, cleared, skip_bits, cr_bit, 0.3, 0.1, **CR_ARGS
    )
    assert_array_equal(work, e_mask)
    assert count == e_count > 5
    assert_array_equal(work & ~cr_bit, cleared)


def test_flagged_pixels_lists_bits_without_excluded_ones_in_row_major_order():
    rng = np.random.default_rng(9)
    mask = np.where(rng.random((30, 200)) < 0.02, 1 << 3, 0).astype(np.int32)
    mask |= np.where(rng.random(mask.shape) < 0.3, 1 << 2, 0).astype(np.int32)
    mask[-1, -1] = 1 << 3  # the very last pixel, in a partial block
    ys, xs = flagged_pixels(mask, np.int32(1 << 3), np.int32(1 << 2))
    e_ys, e_xs = np.nonzero(((mask & (1 << 3)) != 0) & ((mask & (1 << 2)) == 0))
    assert_array_equal(ys, e_ys)
    assert_array_equal(xs, e_xs)
    assert ys.size > 20
    none = flagged_pixels(np.zeros((5, 70), np.int32), np.int32(1), np.int32(0))
    assert none[0].size == none[1].size == 0


@pytest.mark.parametrize("max_distance", [1, 3])
def test_interpolate_flagged_equals_interpolate_pixels_and_marks(max_distance):
    rng = np.random.default_rng(max_distance)
    y, x = np.mgrid[0:40, 0:90]
    image = (5 * x - 3 * y + 400 + rng.normal(0, 2, x.shape)).astype(np.float32)
    bits, without, mark = np.int32(1 << 3), np.int32(1 << 2), np.int32(1 << 2)
    mask = np.where(rng.random(image.shape) < 0.08, bits, 0).astype(np.int32)
    mask[rng.random(image.shape) < 0.3] |= without  # already interpolated: not bad
    mask[10:18, 20:40] = bits  # too long to bridge either way
    mask |= np.where(rng.random(image.shape) < 0.1, 1 << 8, 0).astype(np.int32)
    bad = ((mask & bits) != 0) & ((mask & without) == 0)
    expected = image.copy()
    e_failed = interpolate_pixels(expected, bad, max_distance)
    work, work_mask = image.copy(), mask.copy()
    n_bad, n_failed = interpolate_flagged(work, work_mask, bits, without, mark, max_distance)
    assert_array_equal(work, expected)
    assert (n_bad, n_failed) == (bad.sum(), e_failed.sum())
    assert 0 < n_failed < n_bad
    assert_array_equal(work_mask, np.where(bad, mask | mark, mask))


# ------------------------------------------------------------------ interpolation


def test_interpolate_pixels_reproduces_linear_ramp_across_masked_columns():
    y, x = np.mgrid[0:30, 0:41]
    ramp = (8 * x + 3 * y + 100).astype(np.float32)  # integer values: exact arithmetic
    for x0, x1 in ((10, 11), (20, 23), (40, 41)):  # 1- and 3-column gaps, one on the border
        image = ramp.copy()
        bad = np.zeros(ramp.shape, bool)
        bad[:, x0:x1] = True
        image[bad] = -1e6
        failed = interpolate_pixels(image, bad, 16)
        if x1 < 41:
            assert not failed.any()
            assert_array_equal(image, ramp)
        else:  # no good pixel to the right of the last column
            assert_array_equal(failed, bad)
            assert np.all(image[bad] == -1e6)
            assert_array_equal(image[~bad], ramp[~bad])


def test_interpolate_pixels_reproduces_a_plane_in_a_masked_block():
    y, x = np.mgrid[0:30, 0:40]
    plane = (4 * x - 8 * y + 500).astype(np.float32)
    image = plane.copy()
    bad = np.zeros(plane.shape, bool)
    bad[10:13, 14:17] = True  # both directions give an estimate: the mean is exact
    image[bad] = 0
    assert not interpolate_pixels(image, bad, 4).any()
    assert_array_equal(image, plane)


@pytest.mark.parametrize("seed", [0, 1])
def test_interpolate_pixels_match_oracle(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, (37, 52)).astype(np.float32)
    bad = rng.random(image.shape) < 0.12
    bad[5:9, 0:6] = True  # touching the border
    original = image.copy()
    failed = interpolate_pixels(image, bad, 16)
    expected, e_failed = oracles.interpolate_pixels(original, bad, 16)
    assert_array_equal(failed, e_failed)
    assert_allclose(image, expected, rtol=1e-6)
    assert_array_equal(image[~bad], original[~bad])


@pytest.mark.parametrize("max_distance", [1, 2, 3])
def test_interpolate_pixels_gap_width_limit(max_distance):
    # Docstring: a gap wider than 2 × max_distance in one direction is skipped, so gaps
    # of up to 2·max_distance pixels are filled completely and wider ones not at all.
    _, x = np.mgrid[0:7, 0:40]
    ramp = (6 * x).astype(np.float32)
    for width in range(1, 2 * max_distance + 3):
        image = ramp.copy()
        bad = np.zeros(ramp.shape, bool)
        bad[:, 10 : 10 + width] = True  # full-height: only the rows can interpolate
        image[bad] = -1.0
        failed = interpolate_pixels(image, bad, max_distance)
        if width <= 2 * max_distance:
            assert not failed.any(), f"gap of {width} px not filled"
            assert_allclose(image, ramp, rtol=1e-6)
        else:
            assert_array_equal(failed, bad, err_msg=f"gap of {width} px partly filled")
            assert np.all(image[bad] == -1.0)
