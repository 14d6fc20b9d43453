"""The PSF phase of CalibrateImageTask (spec A4): background, repair, detection,
measurement and PSF fitting, iterated; then aperture corrections (A5)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from promptcal.core.apcorr_map import ApCorrMap
from promptcal.core.background_model import BackgroundList
from promptcal.core.catalog import SourceCatalog
from promptcal.core.config import Config
from promptcal.core.constants import FWHM_PER_SIGMA
from promptcal.core.errors import AllCentroidsFlaggedError
from promptcal.core.exposure import Exposure
from promptcal.core.footprints import Footprints
from promptcal.core.ids import IdGenerator
from promptcal.core.psf_model import GaussianPsf, PsfModel
from promptcal.pipeline.apcorr import ApCorrConfig, measure_ap_corr, normalize_calib_flux
from promptcal.pipeline.background import BackgroundConfig, subtract_background
from promptcal.pipeline.detect.adaptive import AdaptiveThresholdConfig, adaptive_detect
from promptcal.pipeline.detect.detection import (
    DetectionConfig,
    SmoothedVarianceCache,
    detect_footprints,
)
from promptcal.pipeline.measurement import MeasurementConfig, SourceSeeds, measure_sources
from promptcal.pipeline.psf.determiner import (
    PsfDeterminerConfig,
    PsfStarSelectorConfig,
    fit_psf,
    select_psf_candidates,
)
from promptcal.pipeline.repair import RepairConfig, repair

log = logging.getLogger(__name__)


class PsfPhaseConfig(Config):
    """The PSF phase's part of :class:`~promptcal.pipeline.config.CalibrateImageConfig`
    (built by its ``psf_phase_config()``; the fields are documented there)."""

    initial_psf_fwhm: float = Field(description="Default PSF guess FWHM [px].")
    initial_psf_size: int = Field(description="Stamp width of that guess [px].")
    psf_iterations: int = Field(description="PSF passes [1].")
    psf_redetect_tolerance: float = Field(description="Re-detect above this σ change [1].")
    do_adaptive_threshold_detection: bool = Field(description="Adaptive detection threshold.")
    adaptive_threshold: AdaptiveThresholdConfig
    background: BackgroundConfig
    repair: RepairConfig
    detection: DetectionConfig
    measurement: MeasurementConfig
    psf_star_selector: PsfStarSelectorConfig
    psf: PsfDeterminerConfig


#: ``timer(name)``: a context manager that records the duration of a block as stage
#: ``name`` (:meth:`promptcal.core.task.Task.timer`).
StageTimer = Callable[[str], AbstractContextManager]


@dataclass
class PsfPhaseResult:
    """What the PSF phase produced.

    Attributes
    ----------
    psf_stars : SourceCatalog
        The PSF-phase catalog with ``calib_psf_*`` flags.
    footprints : Footprints
        Their footprints.
    seeds : SourceSeeds
        Source → footprint mapping used for measurement.
    background : BackgroundList
        Background elements subtracted so far.
    psf : PsfModel
        The fitted PSF model.
    detection_sigma : float
        Smoothing σ of the last detection pass [px] (the star phase may reuse it).
    adaptive_threshold, adaptive_multiplier : float
        The adaptive detection's final threshold [σ] and include multiplier [1]
        (NaN when the threshold was not adapted).
    """

    psf_stars: SourceCatalog
    footprints: Footprints
    seeds: SourceSeeds
    background: BackgroundList
    psf: PsfModel
    detection_sigma: float
    adaptive_threshold: float = float("nan")
    adaptive_multiplier: float = float("nan")


def initial_psf(
    exposure: Exposure, default_fwhm: float, default_size: int
) -> tuple[PsfModel, bool]:
    """The exposure's PSF, else a Gaussian from ``PSF_FWHM`` [px], else the default.

    Returns the model and whether it is only the default guess.
    """
    if exposure.psf is not None:
        return exposure.psf, False
    fwhm = exposure.metadata.get("PSF_FWHM")
    if fwhm is not None and np.isfinite(float(fwhm)) and float(fwhm) > 0:
        return GaussianPsf(float(fwhm) / FWHM_PER_SIGMA), False
    return GaussianPsf(default_fwhm / FWHM_PER_SIGMA, default_size), True


def check_centroids(cat: SourceCatalog) -> None:
    """Raise :class:`AllCentroidsFlaggedError` when every centroid is flagged."""
    flags = np.asarray(cat["slot_Centroid_flag"], bool)
    if flags.size and flags.all():
        raise AllCentroidsFlaggedError(int(flags.size))


def _detect(exposure, sigma, config: PsfPhaseConfig, variance_cache, adaptive):
    """Footprints of one PSF pass, and the latest adaptive-detection result."""
    if config.do_adaptive_threshold_detection:
        adaptive = adaptive_detect(
            exposure, sigma, config.detection, config.adaptive_threshold,
            config.background, variance_cache,
        )  # fmt: skip
        return adaptive.detection.positive, adaptive
    detected = detect_footprints(exposure, sigma, config.detection, variance_cache=variance_cache)
    return detected.positive, adaptive


# Long: the PSF phase in LSST's order (background, [repair, detect, measure, fit] × N,
# final repair, re-measure), a third of it the docstring; one place to read the sequence.
def compute_psf(
    exposure: Exposure,
    id_generator: IdGenerator,
    config: PsfPhaseConfig,
    timer: StageTimer,
    variance_cache: SmoothedVarianceCache | None = None,
) -> PsfPhaseResult:
    """Run the PSF phase on ``exposure`` (modified in place: background, masks, CRs).

    Parameters
    ----------
    exposure : Exposure
        The (combined) exposure.
    id_generator : IdGenerator
        Source ids and the noise seeds of measurement.
    config : PsfPhaseConfig
        The phase's configuration.
    timer : StageTimer
        Records the duration of each stage (``background``, ``repair``, ...).
    variance_cache : SmoothedVarianceCache, optional
        Shared with later detections of the same run.
    """
    background = BackgroundList()
    psf, guessed = initial_psf(exposure, config.initial_psf_fwhm, config.initial_psf_size)
    center = exposure.center
    with timer("background"):
        background.append(subtract_background(exposure, config.background))

    def measure(footprints, seeds, psf, ids, for_psf_fit=False):
        # One noise realisation (seed) per footprint set keeps the passes consistent.
        with timer("measurement"):
            cat = measure_sources(
                exposure, footprints, seeds, psf, config.measurement,
                ids=ids, seed=id_generator.catalog_seed, for_psf_fit=for_psf_fit,
            )  # fmt: skip
        check_centroids(cat)
        return cat

    fit = None
    detected_sigma = None
    adaptive = None
    for iteration in range(config.psf_iterations):
        sigma = psf.determinant_radius(*center)
        with timer("repair"):
            # A guessed PSF may be far broader than the truth; assume a sharp one for CRs.
            cr_psf = GaussianPsf(config.repair.guess_psf_sigma) if guessed else psf
            repair(exposure, cr_psf, config.repair, keep_crs=True)
        with timer("detection"):
            # Footprints found with a smoothing σ within the tolerance are the same
            # footprints; re-detecting would only cost time.
            if detected_sigma is None or (
                abs(sigma / detected_sigma - 1.0) > config.psf_redetect_tolerance
            ):
                footprints, adaptive = _detect(exposure, sigma, config, variance_cache, adaptive)
                detected_sigma = sigma
            if config.detection.do_re_estimate_background:
                model = subtract_background(exposure, config.background)
                background.append(model)
        seeds = SourceSeeds.brightest_peaks(footprints)
        ids = id_generator.source_ids(seeds.x.size)
        # Only the selection and the fit read this catalog; the final pass measures all.
        cat = measure(footprints, seeds, psf, ids, for_psf_fit=True)
        with timer("psf"):
            candidates = select_psf_candidates(cat, config.psf_star_selector)
            fit = fit_psf(exposure, footprints, seeds, cat, candidates, config.psf, sigma,
                          id_generator.catalog_seed)  # fmt: skip
        fitted_sigma = fit.psf.determinant_radius(*center)
        log.info(
            "PSF iteration %d: %d sources, %d candidates, %d used, σ = %.3f px",
            iteration,
            len(cat),
            candidates.sum(),
            fit.used.sum(),
            fitted_sigma,
        )
        guessed = False
        if iteration < config.psf_iterations - 1:
            psf = GaussianPsf(fitted_sigma)
        else:
            psf = fit.psf
    with timer("repair"):
        repair(exposure, psf, config.repair, keep_crs=False)
    cat = measure(footprints, seeds, psf, ids)
    cat["calib_psf_candidate"] = candidates
    cat["calib_psf_used"] = fit.used
    cat["calib_psf_reserved"] = np.zeros(len(cat), bool)
    exposure.psf = psf
    result = PsfPhaseResult(cat, footprints, seeds, background, psf, detected_sigma)
    if adaptive is not None:
        result.adaptive_threshold = adaptive.threshold
        result.adaptive_multiplier = adaptive.multiplier
    return result


def measure_aperture_correction(
    exposure: Exposure, psf_stars: SourceCatalog, config: ApCorrConfig, timer: StageTimer
) -> ApCorrMap:
    """Normalise the calibration flux and fit the aperture corrections (spec A5).

    ``config`` has its flux names resolved (``CalibrateImageConfig.resolved_ap_corr()``).
    """
    x_min, y_min, x_max, y_max = exposure.bbox
    bbox = (x_min - 0.5, y_min - 0.5, x_max + 0.5, y_max + 0.5)
    used = np.asarray(psf_stars["calib_psf_used"], bool)
    with timer("apcorr"):
        ratio = normalize_calib_flux(psf_stars, used, config, bbox)
        ap_corr_map = measure_ap_corr(psf_stars, used, config, bbox)
    ap_corr_map[f"{config.tophat_name}_instFlux"] = ratio
    ap_corr_map[f"{config.tophat_name}_instFluxErr"] = type(ratio)(np.zeros((1, 1)), bbox)
    exposure.ap_corr_map = ap_corr_map
    return ap_corr_map
