"""Defect interpolation and cosmic-ray masking/repair (spec A4.3 and A4.9)."""

from __future__ import annotations

import logging

from pydantic import Field

from .config import Config
from .exposure import Exposure
from .kernels.cosmic_rays import find_cosmic_rays, interpolate_pixels

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


def repair(exposure: Exposure, psf_sigma: float, config: RepairConfig, *, keep_crs: bool) -> int:
    """Interpolate defects and find cosmic rays; mask them, and repair unless ``keep_crs``.

    Returns
    -------
    int
        Number of CR pixels found.
    """
    mask = exposure.mask
    if config.do_interpolate_defects:
        bad = mask.is_set("BAD") & ~mask.is_set("INTRP")
        if bad.any():
            interpolate_pixels(exposure.image, bad, config.max_interpolation_distance)
            mask.array[bad] |= mask.bit("INTRP")
    if not config.do_cosmic_ray:
        return 0
    skip = mask.is_set("SAT", "NO_DATA", "BAD", "INTRP")
    cr = find_cosmic_rays(
        exposure.image,
        exposure.variance,
        skip,
        psf_sigma,
        config.min_sigma,
        config.min_dn,
        config.cond3_fac,
        config.cond3_fac2,
    )
    cr |= mask.is_set("CR")
    mask.array[cr] |= mask.bit("CR")
    n_cr = int(cr.sum())
    if not keep_crs and n_cr:
        interpolate_pixels(exposure.image, cr, config.max_interpolation_distance)
        mask.array[cr] |= mask.bit("INTRP")
    log.debug("Found %d cosmic-ray pixels (keep=%s)", n_cr, keep_crs)
    return n_cr
