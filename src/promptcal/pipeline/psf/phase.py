"""The PSF phase of CalibrateImageTask (spec A4): background, repair, detection,
measurement and PSF fitting, iterated; then aperture corrections (A5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from promptcal.core.apcorr_map import ApCorrMap
from promptcal.core.background_model import BackgroundList
from promptcal.core.catalog import SourceCatalog
from promptcal.core.constants import FWHM_PER_SIGMA
from promptcal.core.errors import AllCentroidsFlaggedError
from promptcal.core.exposure import Exposure
from promptcal.core.footprints import Footprints
from promptcal.core.ids import IdGenerator
from promptcal.core.psf_model import GaussianPsf, PsfModel
from promptcal.pipeline.apcorr import measure_ap_corr, normalize_calib_flux
from promptcal.pipeline.background import subtract_background
from promptcal.pipeline.detect.adaptive import adaptive_detect
from promptcal.pipeline.detect.detection import detect_footprints
from promptcal.pipeline.measurement import SourceSeeds, measure_sources
from promptcal.pipeline.psf.determiner import fit_psf, select_psf_candidates
from promptcal.pipeline.repair import repair

log = logging.getLogger(__name__)


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
    """

    psf_stars: SourceCatalog
    footprints: Footprints
    seeds: SourceSeeds
    background: BackgroundList
    psf: PsfModel


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


def compute_psf(task, exposure: Exposure, id_generator: IdGenerator) -> PsfPhaseResult:
    """Run the PSF phase on ``exposure`` (modified in place: background, masks, CRs).

    Parameters
    ----------
    task : CalibrateImageTask
        Supplies the configuration and the stage timers.
    """
    config = task.config
    background = BackgroundList()
    psf, guessed = initial_psf(exposure, config.initial_psf_fwhm, config.initial_psf_size)
    center = exposure.center
    with task.timer("background"):
        background.append(subtract_background(exposure, config.background))

    def measure(footprints, seeds, psf, ids):
        # One noise realisation (seed) per footprint set keeps the passes consistent.
        with task.timer("measurement"):
            cat = measure_sources(
                exposure, footprints, seeds, psf, config.measurement,
                ids=ids, seed=id_generator.catalog_seed,
            )  # fmt: skip
        check_centroids(cat)
        return cat

    fit = None
    detected_sigma = None
    for iteration in range(config.psf_iterations):
        sigma = psf.determinant_radius(*center)
        with task.timer("repair"):
            # A guessed PSF may be far broader than the truth; assume a sharp one for CRs.
            cr_psf = GaussianPsf(config.repair.guess_psf_sigma) if guessed else psf
            repair(exposure, cr_psf, config.repair, keep_crs=True)
        with task.timer("detection"):
            # Footprints found with a smoothing σ within the tolerance are the same
            # footprints; re-detecting would only cost time.
            if detected_sigma is None or (
                abs(sigma / detected_sigma - 1.0) > config.psf_redetect_tolerance
            ):
                if config.do_adaptive_threshold_detection:
                    adaptive = adaptive_detect(
                        exposure, sigma, config.psf_detection, config.adaptive_threshold,
                        config.background,
                    )  # fmt: skip
                    footprints = adaptive.detection.positive
                    task.metadata["psfAdaptiveThresholdValue"] = adaptive.threshold
                    task.metadata["psfAdaptiveIncludeThresholdMultiplier"] = adaptive.multiplier
                else:
                    footprints = detect_footprints(exposure, sigma, config.psf_detection).positive
                detected_sigma = sigma
                exposure.__dict__["_psf_detection_sigma"] = sigma
            if config.psf_detection.do_re_estimate_background:
                model = subtract_background(exposure, config.background)
                background.append(model)
        seeds = SourceSeeds.brightest_peaks(footprints)
        ids = id_generator.source_ids(seeds.x.size)
        cat = measure(footprints, seeds, psf, ids)
        with task.timer("psf"):
            candidates = select_psf_candidates(cat, config.star_selector)
            fit = fit_psf(
                exposure,
                footprints,
                seeds,
                cat,
                candidates,
                config.psf,
                sigma,
                id_generator.catalog_seed,
            )
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
    with task.timer("repair"):
        repair(exposure, psf, config.repair, keep_crs=False)
    cat = measure(footprints, seeds, psf, ids)
    cat["calib_psf_candidate"] = candidates
    cat["calib_psf_used"] = fit.used
    cat["calib_psf_reserved"] = np.zeros(len(cat), bool)
    exposure.psf = psf
    return PsfPhaseResult(cat, footprints, seeds, background, psf)


def measure_aperture_correction(task, exposure: Exposure, psf_stars: SourceCatalog) -> ApCorrMap:
    """Normalise the calibration flux and fit the aperture corrections (spec A5)."""
    config = task.config.resolved_ap_corr()
    x_min, y_min, x_max, y_max = exposure.bbox
    bbox = (x_min - 0.5, y_min - 0.5, x_max + 0.5, y_max + 0.5)
    used = np.asarray(psf_stars["calib_psf_used"], bool)
    with task.timer("apcorr"):
        ratio = normalize_calib_flux(psf_stars, used, config, bbox)
        ap_corr_map = measure_ap_corr(psf_stars, used, config, bbox)
    ap_corr_map[f"{config.tophat_name}_instFlux"] = ratio
    ap_corr_map[f"{config.tophat_name}_instFluxErr"] = type(ratio)(np.zeros((1, 1)), bbox)
    exposure.ap_corr_map = ap_corr_map
    return ap_corr_map
