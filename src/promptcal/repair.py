"""Defect interpolation and cosmic-ray masking/repair (spec A4.3 and A4.9)."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from .config import Config
from .exposure import Exposure
from .kernels.cosmic_rays import interpolate_pixels, mask_cosmic_rays
from .kernels.detect import clear_bits

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
    if config.do_interpolate_defects:
        if mask.any_set("BAD"):
            bad = mask.is_set("BAD") & ~mask.is_set("INTRP")
            if bad.any():
                interpolate_pixels(exposure.image, bad, config.max_interpolation_distance)
                mask.array[bad] |= mask.bit("INTRP")
    if not config.do_cosmic_ray:
        return 0
    if not find_crs:
        n_cr = int(mask.any_set("CR"))
    else:
        # The verdict depends on the PSF, which improves between passes: start afresh
        # (CR pixels are only interpolated once, in the final pass).
        clear_bits(mask.array, np.int32(mask.bit("CR")))
        ratio1, ratio2 = psf_neighbour_ratios(psf, *exposure.center)
        n_cr = mask_cosmic_rays(
            exposure.image,
            exposure.variance,
            mask.array,
            np.int32(mask.bit("SAT", "NO_DATA", "BAD", "INTRP")),
            np.int32(mask.bit("CR")),
            ratio1,
            ratio2,
            config.min_sigma,
            config.min_dn,
            config.cond3_fac,
            config.cond3_fac2,
        )
    if not keep_crs and n_cr:
        cr = mask.is_set("CR") & ~mask.is_set("INTRP")
        interpolate_pixels(exposure.image, cr, config.max_interpolation_distance)
        mask.array[cr] |= mask.bit("INTRP")
    log.debug("Found %d cosmic-ray pixels (keep=%s)", n_cr, keep_crs)
    return n_cr
