"""Defect interpolation and cosmic-ray masking/repair (spec A4.3 and A4.9)."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.exposure import Exposure
from promptcal.kernels.cosmic_rays import remask_cosmic_rays
from promptcal.kernels.interpolate import interpolate_flagged

log = logging.getLogger(__name__)


class RepairConfig(Config):
    """Cosmic-ray finder and interpolation."""

    do_cosmic_ray: bool = Field(True, description="Find cosmic rays.")
    do_interpolate_defects: bool = Field(True, description="Interpolate BAD pixels.")
    min_sigma: float = Field(6.0, gt=0, description="CR pixel significance [σ].")
    min_dn: float = Field(150.0, ge=0, description="CR pixel minimum value above sky [count].")
    cond3_fac: float = Field(2.0, ge=0, description="Noise allowance of the sharpness test [σ].")
    cond3_fac2: float = Field(
        0.35, gt=0, description="Neighbours below this × PSF prediction mark a CR [1]."
    )
    guess_psf_sigma: float = Field(
        0.6,
        gt=0,
        description="PSF σ the CR finder assumes while the PSF is only the default guess "
        "(no PSF, no PSF_FWHM card): a too-broad guess would flag sharp star cores [px].",
    )
    max_interpolation_distance: int = Field(
        16, ge=1, description="Largest half-gap interpolated across [px]."
    )


def psf_neighbour_ratios(psf, x: float, y: float) -> tuple[float, float]:
    """PSF value one pixel from the centre, along axes and along diagonals, over the centre.

    Taken from the model's own kernel image, so a peaky (e.g. undersampled) PSF is not
    mistaken for cosmic rays the way a Gaussian of the same second moments would be.
    """
    kernel = psf.kernel_image(x, y)
    c = kernel.shape[0] // 2
    centre = kernel[c, c]
    axes = 0.25 * (kernel[c, c - 1] + kernel[c, c + 1] + kernel[c - 1, c] + kernel[c + 1, c])
    diagonals = 0.25 * (
        kernel[c - 1, c - 1] + kernel[c - 1, c + 1] + kernel[c + 1, c - 1] + kernel[c + 1, c + 1]
    )
    return float(axes / centre), float(diagonals / centre)


def repair(
    exposure: Exposure,
    psf,
    config: RepairConfig,
    *,
    keep_crs: bool,
    find_crs: bool = True,
) -> int:
    """Interpolate defects and find cosmic rays; mask them, and repair unless ``keep_crs``.

    ``psf`` is the current PSF model; each search rebuilds the CR plane (the verdict
    depends on the PSF, which improves between passes). ``find_crs=False`` only repairs
    the pixels already in the CR plane.

    Returns
    -------
    int
        Number of CR pixels found.
    """
    mask = exposure.mask
    intrp = np.int32(mask.bit("INTRP"))
    distance = config.max_interpolation_distance
    if config.do_interpolate_defects:
        # BAD pixels not yet interpolated; a no-op (one scan of the mask) without any.
        interpolate_flagged(
            exposure.image, mask.array, np.int32(mask.bit("BAD")), intrp, intrp, distance
        )
    if not config.do_cosmic_ray:
        return 0
    cr_bit = np.int32(mask.bit("CR"))
    if not find_crs:
        n_cr = int(mask.any_set("CR"))
    else:
        # The verdict depends on the PSF, which improves between passes: start afresh
        # (the kernel clears the CR plane as it goes; CR pixels are only interpolated
        # once, in the final pass).
        ratio1, ratio2 = psf_neighbour_ratios(psf, *exposure.center)
        n_cr = remask_cosmic_rays(
            exposure.image,
            exposure.variance,
            mask.array,
            np.int32(mask.bit("SAT", "NO_DATA", "BAD", "INTRP")),
            cr_bit,
            ratio1,
            ratio2,
            config.min_sigma,
            config.min_dn,
            config.cond3_fac,
            config.cond3_fac2,
        )
    if not keep_crs and n_cr:
        interpolate_flagged(exposure.image, mask.array, cr_bit, intrp, intrp, distance)
    log.debug("Found %d cosmic-ray pixels (keep=%s)", n_cr, keep_crs)
    return n_cr
