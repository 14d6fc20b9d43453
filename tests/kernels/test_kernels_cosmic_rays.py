"""The cosmic-ray kernel against the NumPy oracle and synthetic truth.

``remask_cosmic_rays`` clears the CR plane and sets it on pixels too sharp for the
PSF, given by its neighbour/centre ratios; ``_gaussian_crs`` uses a Gaussian PSF's.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_array_equal

from promptcal.kernels.cosmic_rays import remask_cosmic_rays

# LSST-like cosmic-ray settings (RepairConfig defaults).
CR_ARGS = {"min_sigma": 6.0, "min_dn": 150.0, "fac": 2.0, "fac2": 0.35}
SKIP, CR = np.int32(1), np.int32(1 << 3)


def _f32(a):
    return np.ascontiguousarray(a, np.float32)


def _sharp(image, variance, skip, ratio1, ratio2, **cr_args):
    """The CR plane that ``remask_cosmic_rays`` sets when ``skip`` is the only other bit."""
    mask = np.where(skip, SKIP, 0).astype(np.int32)
    before = image.copy()
    count = remask_cosmic_rays(image, variance, mask, SKIP, CR, ratio1, ratio2, **cr_args)
    cr = (mask & CR) != 0
    assert count == cr.sum()
    assert_array_equal((mask & SKIP) != 0, skip)  # no other bit changes
    assert_array_equal(image, before)  # the image itself is not touched
    return cr


def _gaussian_crs(image, variance, skip, psf_sigma, **cr_args):
    """:func:`_sharp` with the ratios of a Gaussian PSF of σ ``psf_sigma`` [px]."""
    r1, r2 = np.exp(-0.5 / psf_sigma**2), np.exp(-1.0 / psf_sigma**2)
    return _sharp(image, variance, skip, r1, r2, **cr_args)


# ------------------------------------------------------------------ Gaussian PSF


def _sky(rng, shape, sigma=10.0):
    image = rng.normal(0, sigma, shape).astype(np.float32)
    return image, np.full(shape, sigma**2, np.float32)


def test_gaussian_psf_flags_hot_pixel_and_tracks():
    rng = np.random.default_rng(3)
    image, var = _sky(rng, (60, 70))
    skip = np.zeros(image.shape, bool)
    image[10, 12] += 2000.0
    track_h = (np.full(15, 40), np.arange(20, 35))
    track_v = (np.arange(5, 20), np.full(15, 55))
    track_d = (np.arange(30, 45), np.arange(45, 60))
    for ty, tx in (track_h, track_v, track_d):
        image[ty, tx] += rng.uniform(500, 1500, ty.size).astype(np.float32)
    cr = _gaussian_crs(image, var, skip, 1.5, **CR_ARGS)
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
    assert_array_equal(cr, om.find_cosmic_rays(image, var, skip, 1.5, **CR_ARGS))


@pytest.mark.parametrize("psf_sigma", [1.0, 1.5, 2.5])
@pytest.mark.parametrize("star_sigma", [1.0, 1.3, 2.0, 3.0])
def test_gaussian_psf_ignores_noiseless_gaussian_stars(star_sigma, psf_sigma):
    if star_sigma < psf_sigma:
        star_sigma = psf_sigma  # stars are never sharper than the PSF
    rng = np.random.default_rng(4)
    shape = (40, 44)
    var = np.full(shape, 25.0, np.float32)
    skip = np.zeros(shape, bool)
    for flux in (1e2, 1e3, 1e4, 1e5, 1e6, 1e7):
        x0, y0 = 21 + rng.uniform(-0.5, 0.5), 19 + rng.uniform(-0.5, 0.5)
        image = _f32(oracles.gaussian(shape, x0, y0, flux, star_sigma**2))
        assert not _gaussian_crs(image, var, skip, psf_sigma, **CR_ARGS).any()


def test_gaussian_psf_sigma_one_star_with_wider_assumed_psf_is_not_a_cr():
    # Even a σ = 1 px star is smooth enough when the assumed PSF is much wider.
    shape = (30, 30)
    image = _f32(oracles.gaussian(shape, 15.2, 14.7, 1e6, 1.0))
    cr = _gaussian_crs(
        image, np.full(shape, 25.0, np.float32), np.zeros(shape, bool), 3.0, **CR_ARGS
    )
    assert not cr.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_psf_match_oracle(seed):
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
        cr = _gaussian_crs(image, var, skip, 1.5, **args)
        assert_array_equal(cr, om.find_cosmic_rays(image, var, skip, 1.5, **args))
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


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cr_in_skip", [False, True])
@pytest.mark.parametrize("ratios", [(0.8, 0.64), (0.3, 0.1)])
def test_remask_cosmic_rays_equals_clearing_the_plane_first(seed, cr_in_skip, ratios):
    image, var, rng = _wide_cr_scene(seed)
    bad, cr_bit, other = (np.int32(1 << b) for b in (0, 3, 8))
    mask = np.where(rng.random(image.shape) < 0.03, bad, 0).astype(np.int32)
    mask |= np.where(rng.random(image.shape) < 0.2, other, 0).astype(np.int32)
    mask |= np.where(rng.random(image.shape) < 0.05, cr_bit, 0).astype(np.int32)  # stale
    # With the CR plane among the skipped ones, a stale CR bit must not hide a pixel.
    skip_bits = np.int32(bad | cr_bit) if cr_in_skip else bad
    work = mask.copy()
    count = remask_cosmic_rays(image, var, work, skip_bits, cr_bit, *ratios, **CR_ARGS)
    cleared = mask & ~cr_bit
    e_mask, e_count = om.mask_cosmic_rays(
        image, var, cleared, skip_bits, cr_bit, *ratios, **CR_ARGS
    )
    assert_array_equal(work, e_mask)
    assert count == e_count > 5
    assert_array_equal(work & ~cr_bit, cleared)


# ------------------------------------------------------------------ PSF given by its ratios


def _cr_scene(seed, shape=(55, 67)):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 10.0, shape)
    var = np.full(shape, 100.0) * rng.uniform(0.5, 1.5, shape)
    for _ in range(4):  # stars
        image += oracles.gaussian(shape, *rng.uniform(5, 50, 2), rng.uniform(1e3, 1e5), 2.0)
    hy, hx = rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)  # hot pixels
    clear = ~((hy >= 36) & (hy < 46) & (hx >= 7) & (hx < 18))  # room for a test star
    image[hy[clear], hx[clear]] += rng.uniform(100, 3000, clear.sum())
    image[30:36, 30:36] = 1e5  # a saturated block
    skip = rng.random(shape) < 0.03
    skip[30:36, 30:36] = True
    return _f32(image), _f32(var), skip, rng


@pytest.mark.parametrize("seed", [0, 1])
def test_psf_ratios_match_oracle_and_the_gaussian_oracle(seed):
    image, var, skip, _ = _cr_scene(seed)
    image += _f32(oracles.gaussian(image.shape, 12.3, 40.6, 3e4, 0.6**2))  # a very sharp star
    skip[38:44, 9:16] = False
    for psf_sigma in (1.0, 1.5, 2.5):
        r1, r2 = np.exp(-0.5 / psf_sigma**2), np.exp(-1.0 / psf_sigma**2)
        got = _sharp(image, var, skip, r1, r2, **CR_ARGS)
        assert_array_equal(got, om.find_cosmic_rays(image, var, skip, psf_sigma, **CR_ARGS))
    n_flagged = []
    for r1, r2 in ((0.9, 0.85), (0.5, 0.2), (0.3, 0.1), (0.6, 0.05)):
        got = _sharp(image, var, skip, r1, r2, **CR_ARGS)
        assert_array_equal(got, om.find_sharp_pixels(image, var, skip, r1, r2, **CR_ARGS))
        assert not got[skip].any()
        n_flagged.append(got.sum())
        if r1 in (0.9, 0.3):  # a PSF that sharp explains the star, a broad one does not
            assert got[38:44, 9:16].any() == (r1 == 0.9)
    assert n_flagged[0] > n_flagged[2] > 0


def _peaky_star(shape, x, y, flux):
    """Double Gaussian: 80 % of the flux in a σ = 0.5 px core, 20 % in a σ = 3 px halo."""
    return oracles.gaussian(shape, x, y, 0.8 * flux, 0.25) + oracles.gaussian(
        shape, x, y, 0.2 * flux, 9.0
    )


def test_peaky_psf_ratios_spare_a_sharp_star():
    shape = (31, 33)
    psf = _peaky_star(shape, 16, 15, 1.0)
    r1 = 0.25 * (psf[15, 15] + psf[15, 17] + psf[14, 16] + psf[16, 16]) / psf[15, 16]
    r2 = 0.25 * (psf[14, 15] + psf[14, 17] + psf[16, 15] + psf[16, 17]) / psf[15, 16]
    sigma_moments = np.sqrt(0.8 * 0.25 + 0.2 * 9.0)  # Gaussian with the same 2nd moments
    var = np.full(shape, 25.0, np.float32)
    skip = np.zeros(shape, bool)
    rng = np.random.default_rng(40)
    flagged_as_gaussian = 0
    for flux in (1e3, 1e4, 1e5, 1e6, 1e7):
        x0, y0 = 16 + rng.uniform(-0.3, 0.3), 15 + rng.uniform(-0.3, 0.3)
        image = _f32(_peaky_star(shape, x0, y0, flux))
        assert not _sharp(image, var, skip, r1, r2, **CR_ARGS).any()
        flagged_as_gaussian += _gaussian_crs(image, var, skip, sigma_moments, **CR_ARGS).any()
    # Control: judged against a Gaussian of the same second moments, the star is a CR.
    assert flagged_as_gaussian >= 3
    # And a real hot pixel next to it is still caught with the peaky ratios.
    image = _f32(_peaky_star(shape, 16.2, 15.1, 1e5))
    image[5, 6] += 3000.0
    cr = _sharp(image, var, skip, r1, r2, **CR_ARGS)
    assert cr[5, 6] and not cr[10:21, 11:22].any()
