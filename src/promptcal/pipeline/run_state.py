"""The state one ``CalibrateImageTask.run()`` hands from step to step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from promptcal.pipeline.astrometry.fitter import AstrometryResult
from promptcal.pipeline.detect.detection import SmoothedVarianceCache


@dataclass
class RunState:
    """What one ``run()`` hands from step to step.

    Nothing travels on the exposure or through the task metadata, which only records
    (LSST's metadata keys are still written, for users).

    Attributes
    ----------
    variance_cache : SmoothedVarianceCache
        The smoothed variance plane, shared by every detection of the run.
    refs : astropy.table.Table or None
        References over the padded field; None without a refcat.
    ref_flux : str or None
        The reference flux column used to rank and match.
    ref_density : float or None
        REF_CAT_SOURCE_DENSITY [deg⁻²].
    psf_detection_sigma : float or None
        Smoothing σ of the PSF phase's last detection [px].
    psf_adaptive : tuple of float
        The adaptive PSF detection's threshold [σ] and include multiplier [1] (NaN
        when not adapted).
    astrometry : AstrometryResult or None
        The WCS fit in use (its offsets go to the summary).
    """

    variance_cache: SmoothedVarianceCache = field(default_factory=SmoothedVarianceCache)
    refs: Table | None = None
    ref_flux: str | None = None
    ref_density: float | None = None
    psf_detection_sigma: float | None = None
    psf_adaptive: tuple[float, float] = (np.nan, np.nan)
    astrometry: AstrometryResult | None = None
