"""Defect interpolation and cosmic-ray masking/repair (spec A4.3 and A4.9)."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from .config import Config
from .exposure import Exposure
from .kernels.cosmic_rays import interpolate_pixels, mask_cosmic_rays

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
    max_interpolation_distance: int = Field(
        16, ge=1, description="Largest half-gap interpolated across [px]."
    )


def repair(
    exposure: Exposure,
    psf_sigma: float,
    config: RepairConfig,
    *,
    keep_crs: bool,
    find_crs: bool = True,
) -> int:
    """Interpolate defects and find cosmic rays; mask them, and repair unless ``keep_crs``.

    ``find_crs=False`` only repairs the pixels already in the CR plane (the final
    repair of the PSF phase runs on pixels the finder has just searched).

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
        n_cr = mask_cosmic_rays(
            exposure.image,
            exposure.variance,
            mask.array,
            np.int32(mask.bit("SAT", "NO_DATA", "BAD", "INTRP")),
            np.int32(mask.bit("CR")),
            psf_sigma,
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
