"""repair(): defect interpolation and cosmic-ray masking/repair against NumPy oracles."""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.core.exposure import Exposure, Mask
from promptcal.core.psf_model import GaussianPsf
from promptcal.pipeline.repair import RepairConfig, psf_neighbour_ratios, repair


def _scene(seed, shape=(60, 150)):
    """Sky + stars + hot pixels, a few BAD columns and a saturated block."""
    rng = np.random.default_rng(seed)
    sigma = 10.0
    image = rng.normal(0.0, sigma, shape)
    for _ in range(6):
        image += oracles.gaussian(
            shape,
            rng.uniform(5, shape[1] - 5),
            rng.uniform(5, shape[0] - 5),
            rng.uniform(1e3, 1e5),
            2.0**2,
        )
    hits = rng.integers(0, image.size, 40)
    image.ravel()[hits] += rng.uniform(300, 3000, hits.size)
    mask = Mask(np.zeros(shape, np.int32))
    bad = np.zeros(shape, bool)
    bad[:, [17, 90, 91]] = True
    bad[25:27, 120] = True
    image[bad] = -500.0
    mask.array[bad] |= mask.bit("BAD")
    mask.array[40:44, 60:64] |= mask.bit("SAT")
    mask.array[3, 3] |= mask.bit("CR")  # stale, from an earlier pass
    variance = np.full(shape, sigma**2, np.float32)
    return Exposure(image.astype(np.float32), variance, mask)


def _expected(exposure, psf, config, keep_crs):
    """The same steps done with the oracles on copies."""
    image = exposure.image.astype(np.float64)
    mask = exposure.mask.array.copy()
    bit = exposure.mask.bit
    bad = ((mask & bit("BAD")) != 0) & ((mask & bit("INTRP")) == 0)
    image, _ = om.interpolate_pixels(image, bad, config.max_interpolation_distance)
    mask[bad] |= bit("INTRP")
    r1, r2 = psf_neighbour_ratios(psf, *exposure.center)
    skip_bits = np.int32(bit("SAT", "NO_DATA", "BAD", "INTRP"))
    cr_args = {
        "min_sigma": config.min_sigma,
        "min_dn": config.min_dn,
        "fac": config.cond3_fac,
        "fac2": config.cond3_fac2,
    }
    mask, n_cr = om.mask_cosmic_rays(
        image.astype(np.float32),
        exposure.variance,
        mask & ~bit("CR"),
        skip_bits,
        np.int32(bit("CR")),
        r1,
        r2,
        **cr_args,
    )
    if not keep_crs:
        cr = ((mask & bit("CR")) != 0) & ((mask & bit("INTRP")) == 0)
        image, _ = om.interpolate_pixels(image, cr, config.max_interpolation_distance)
        mask[cr] |= bit("INTRP")
    return image, mask, n_cr


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("keep_crs", [True, False])
def test_repair_matches_oracle_steps(seed, keep_crs):
    exposure = _scene(seed)
    psf = GaussianPsf(1.5)
    config = RepairConfig(max_interpolation_distance=2)
    e_image, e_mask, e_n = _expected(exposure, psf, config, keep_crs)
    n_cr = repair(exposure, psf, config, keep_crs=keep_crs)
    assert n_cr == e_n > 10
    assert_array_equal(exposure.mask.array, e_mask)
    assert_allclose(exposure.image, e_image, rtol=1e-6, atol=1e-3)
    assert not exposure.mask.array[3, 3] & exposure.mask.bit("CR")  # the stale bit is gone


def test_repair_twice_interpolates_each_pixel_once_and_keeps_crs_when_asked():
    exposure = _scene(3)
    psf = GaussianPsf(1.5)
    config = RepairConfig()
    n_first = repair(exposure, psf, config, keep_crs=True)
    cr_bit, intrp = exposure.mask.bit("CR"), exposure.mask.bit("INTRP")
    cr = (exposure.mask.array & cr_bit) != 0
    assert n_first == cr.sum() > 10
    assert not (exposure.mask.array[cr] & intrp).any()  # kept: not interpolated yet
    after_first = exposure.image.copy()
    # Repair only (no new search): the CR pixels are interpolated and marked.
    assert repair(exposure, psf, config, keep_crs=False, find_crs=False) == 1
    assert (exposure.mask.array[cr] & intrp).all()
    assert not np.array_equal(exposure.image[cr], after_first[cr])
    assert_array_equal(
        exposure.image[~cr & ((exposure.mask.array & 1) == 0)],
        after_first[~cr & ((exposure.mask.array & 1) == 0)],
    )
    # A further repair changes nothing: every BAD and CR pixel already carries INTRP.
    before = exposure.image.copy()
    repair(exposure, psf, config, keep_crs=False, find_crs=False)
    assert_array_equal(exposure.image, before)


def test_repair_without_cosmic_rays_only_interpolates_defects():
    exposure = _scene(4)
    config = RepairConfig(do_cosmic_ray=False)
    bad = (exposure.mask.array & exposure.mask.bit("BAD")) != 0
    assert repair(exposure, GaussianPsf(1.5), config, keep_crs=False) == 0
    assert (exposure.mask.array[bad] & exposure.mask.bit("INTRP")).all()
    assert np.all(exposure.image[bad] > -400.0)  # the -500 defects were bridged
    assert exposure.mask.array[3, 3] & exposure.mask.bit("CR")  # CR plane untouched
