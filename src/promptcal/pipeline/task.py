"""CalibrateImageTask: orchestrates the stages and builds the result Struct."""

from __future__ import annotations

import numpy as np

from promptcal.core.errors import (
    AlgorithmError,
    AstrometryError,
    BadAstrometryFit,
    InvalidInputError,
)
from promptcal.core.exposure import Exposure
from promptcal.core.ids import IdGenerator
from promptcal.core.task import Struct, Task, time_method
from promptcal.pipeline.astrometry.fitter import AstrometryResult, PointingHint
from promptcal.pipeline.astrometry.steps import fit_wcs, refit_wcs_on_sources
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.pipeline.detect.detection import SmoothedVarianceCache
from promptcal.pipeline.matches import denormalized_matches, nearest_ids, set_coordinates
from promptcal.pipeline.photometry import (
    calibrate_pixels,
    resolve_ref_band,
    run_photometry,
)
from promptcal.pipeline.psf.phase import compute_psf, measure_aperture_correction
from promptcal.pipeline.references import (
    hint_wcs,
    load_references,
    pixel_scale_arcsec,
    ref_flux_column,
    reference_margin_px,
)
from promptcal.pipeline.run_state import RunState
from promptcal.pipeline.snaps import combine_snaps
from promptcal.pipeline.star_phase import (
    find_stars,
    match_psf_stars,
    renormalize_calib_flux,
)
from promptcal.pipeline.summary.statistics import compute_summary_stats


class CalibrateImageTask(Task):
    """Compute the PSF, aperture corrections, astrometric and photometric calibrations
    and summary statistics of one exposure (LSST's CalibrateImageTask).

    Parameters
    ----------
    config : CalibrateImageConfig, optional
        Configuration; defaults when omitted.
    refcat : RefcatLoader, optional
        Reference-catalog loader used for astrometry and photometry.
    """

    ConfigClass = CalibrateImageConfig
    _DefaultName = "calibrateImage"

    def __init__(self, config=None, *, refcat=None, name=None, parent_task=None, **kwargs):
        super().__init__(config, name=name, parent_task=parent_task, **kwargs)
        self.refcat = refcat

    @staticmethod
    def _as_exposure(exposures) -> Exposure:
        if isinstance(exposures, Exposure):
            return exposures
        exposures = list(exposures)
        if not exposures:
            raise InvalidInputError("expected 1 or 2 snaps, got 0")
        return combine_snaps(exposures)

    @time_method
    def compute_psf(
        self,
        exposure: Exposure,
        id_generator: IdGenerator | None = None,
        *,
        variance_cache: SmoothedVarianceCache | None = None,
    ):
        """The PSF phase only (spec A4); returns a Struct like LSST's ``_compute_psf``
        (plus ``detection_sigma`` [px] and the adaptive ``adaptive_threshold`` [σ] and
        ``adaptive_multiplier``)."""
        id_generator = id_generator or IdGenerator()
        result = compute_psf(
            exposure, id_generator, self.config.psf_phase_config(), self.timer, variance_cache
        )
        if np.isfinite(result.adaptive_threshold):
            self.metadata["psfAdaptiveThresholdValue"] = result.adaptive_threshold
            self.metadata["psfAdaptiveIncludeThresholdMultiplier"] = result.adaptive_multiplier
        return Struct(
            psf_stars=result.psf_stars,
            psf_stars_footprints=result.footprints,
            background=result.background,
            seeds=result.seeds,
            detection_sigma=result.detection_sigma,
            adaptive_threshold=result.adaptive_threshold,
            adaptive_multiplier=result.adaptive_multiplier,
        )

    @time_method
    def measure_aperture_correction(self, exposure: Exposure, psf_stars):
        """Normalise the calibration flux and fit the aperture corrections (spec A5)."""
        return measure_aperture_correction(
            exposure, psf_stars, self.config.resolved_ap_corr(), self.timer
        )

    @time_method
    def run(
        self,
        *,
        exposures,
        id_generator: IdGenerator | None = None,
        result: Struct | None = None,
        pointing_hint: PointingHint | None = None,
    ) -> Struct:
        """Calibrate one exposure (or combine two snaps first).

        Parameters
        ----------
        exposures : Exposure or list of Exposure
            One exposure or 1–2 snaps; a single exposure is modified in place.
        id_generator : IdGenerator, optional
            Source-id generator for (visit, detector).
        result : Struct, optional
            Filled in place as stages complete, so partial outputs survive an error.
        pointing_hint : PointingHint, optional
            Pointing and pixel scale for exposures without a usable WCS.

        Raises
        ------
        AlgorithmError
            After filling ``result`` with the partial outputs and ``result.failure``.
        """
        result = result if result is not None else Struct()
        exposure = self._as_exposure(exposures)
        if id_generator is None:
            detector = exposure.detector.id if exposure.detector is not None else 0
            id_generator = IdGenerator(visit=exposure.visit_info.exposure_id, detector=detector)
        result.output_exposure = exposure
        result.applied_photo_calib = None
        exposure.metadata["LSST CALIB ILLUMCORR APPLIED"] = False
        state = RunState()
        try:
            self._run_stages(exposure, id_generator, result, pointing_hint, state)
        except AlgorithmError as error:
            result.failure = {
                "type": type(error).__name__,
                "message": str(error),
                "metadata": error.metadata,
            }
            self._summarize(exposure, result, state)
            raise
        return result

    def _run_stages(self, exposure, id_generator, result, hint, state: RunState) -> None:
        config = self.config
        self._load_references(exposure, hint, state)
        refs = state.refs
        psf_result = self.compute_psf(exposure, id_generator, variance_cache=state.variance_cache)
        result.psf_stars = psf_result.psf_stars
        result.psf_stars_footprints = psf_result.psf_stars_footprints
        result.background = psf_result.background
        state.psf_detection_sigma = psf_result.detection_sigma
        state.psf_adaptive = (psf_result.adaptive_threshold, psf_result.adaptive_multiplier)
        self.measure_aperture_correction(exposure, result.psf_stars)
        psf_star_failure = self._fit_psf_star_astrometry(exposure, result, hint, state)
        stars = self.find_stars(
            exposure,
            result.background,
            id_generator,
            len(result.psf_stars),
            psf_detection_sigma=state.psf_detection_sigma,
            variance_cache=state.variance_cache,
        )
        state.variance_cache = SmoothedVarianceCache()  # the last detection is done
        result.stars = stars.stars
        result.stars_footprints = stars.footprints
        self.match_psf_stars(result.psf_stars, result.stars, exposure)
        ratio = renormalize_calib_flux(result.stars, config.resolved_ap_corr())
        if ratio is not None:
            self.metadata["CALIB_FLUX_NORMALIZATION"] = ratio
        if refs is not None and config.astrometry.do_refit:
            self._refit_astrometry(exposure, result, stars.sources, state)
            if state.astrometry is None:
                raise psf_star_failure
        set_coordinates(result.stars, exposure.wcs)
        self._check_astrometry(exposure, result, state)
        if "mask" in config.optional_outputs:
            result.mask = exposure.mask.copy()
        if refs is None:
            self._summarize(exposure, result, state)
            return
        self._calibrate_photometry(exposure, result, state)

    def _fit_psf_star_astrometry(self, exposure, result, hint, state: RunState):
        """Fit the WCS on the PSF stars (spec A6); returns the error when that fails but
        the star-phase refit may still succeed (None otherwise)."""
        config = self.config
        if state.refs is None:
            return None
        try:
            with self.timer("astrometry"):
                fit, matches = fit_wcs(
                    config.astrometry, exposure, result.psf_stars, state.refs, state.ref_flux, hint
                )
        except AstrometryError as error:
            # Too few bright stars (small cut-outs): the deeper star phase may do.
            if not (config.astrometry.do_refit and exposure.wcs is not None):
                raise
            self.log.warning("PSF-star astrometry failed (%s); trying all stars", error)
            return error
        self._use_astrometry(state, fit)
        if "astrometry_matches" in config.optional_outputs:
            result.astrometry_matches = matches
        return None

    def _check_astrometry(self, exposure, result, state: RunState) -> None:
        """Fail (and drop the WCS) when the mean match offset exceeds the limit."""
        config = self.config
        astrometry = state.astrometry
        limit = max(
            config.astrometry.max_mean_offset_arcsec,
            config.astrometry.max_mean_offset_px
            * pixel_scale_arcsec(exposure.wcs, *exposure.center)
            if exposure.wcs is not None
            else 0.0,
        )
        if astrometry is not None and astrometry.offset_mean > limit:
            exposure.wcs = None
            set_coordinates(result.stars, None)
            raise BadAstrometryFit(
                f"mean astrometric offset {astrometry.offset_mean:.3f} arcsec exceeds "
                f"{limit:.3f} arcsec",
                offset_mean=astrometry.offset_mean,
                n_matches=len(astrometry.matches),
            )

    def _calibrate_photometry(self, exposure, result, state: RunState) -> None:
        """Zero point and calibrated fluxes (A10–A11), the summary, pixels to nJy."""
        config = self.config
        # LSST's 0.25 arcsec is 1.25 px at 0.2 arcsec/px; keep at least that in pixels.
        radius = max(
            config.photometry.match_radius,
            config.photometry_match_radius_px * pixel_scale_arcsec(exposure.wcs, *exposure.center),
        )
        photometry_config = config.photometry.model_copy(update={"match_radius": radius})
        with self.timer("photometry"):
            photometry = run_photometry(result.stars, state.refs, exposure.band, photometry_config)
        if "photometry_matches" in config.optional_outputs:
            result.photometry_matches = photometry.matches
        photo_calib = photometry.photo_calib
        exposure.photo_calib = photo_calib
        self._summarize(exposure, result, state)
        if config.do_calibrate_pixels:
            exposure, result.background = calibrate_pixels(exposure, result.background, photo_calib)
            result.applied_photo_calib = photo_calib

    def _use_astrometry(self, state: RunState, fit: AstrometryResult) -> None:
        """Make ``fit`` the run's WCS solution (and record its offsets, as LSST does)."""
        state.astrometry = fit
        for key in ("MEAN", "STD", "MEDIAN"):
            self.metadata[f"SFM_ASTROM_OFFSET_{key}"] = getattr(fit, f"offset_{key.lower()}")

    def _refit_astrometry(self, exposure, result, sources, state: RunState) -> None:
        """Refit the WCS on all clean star-phase sources; keep it if it matches more."""
        refs, astrometry = state.refs, state.astrometry
        with self.timer("astrometry_refit"):
            refit = refit_wcs_on_sources(
                self.config.astrometry, exposure, sources, refs, state.ref_flux
            )
        if refit is None:
            return
        fit, selected = refit
        if astrometry is not None and len(fit.matches) < len(astrometry.matches):
            return
        exposure.wcs = fit.wcs
        set_coordinates(result.psf_stars, fit.wcs)
        self._use_astrometry(state, fit)
        matched = selected[np.asarray(fit.matches["src_index"], int)]
        used_ids = set(np.asarray(sources["id"])[matched].tolist())
        result.stars["calib_astrometry_used"] = np.isin(
            np.asarray(result.stars["id"]), list(used_ids)
        )
        if "astrometry_matches" in self.config.optional_outputs:
            matched_sources = sources[matched]
            set_coordinates(matched_sources, fit.wcs)
            matched_sources["psf_id"] = nearest_ids(
                result.psf_stars, matched_sources, self.config.psf_match_radius
            )
            result.astrometry_matches = denormalized_matches(
                refs[np.asarray(fit.matches["ref_index"], int)],
                matched_sources,
                np.asarray(fit.matches["distance"], float),
            )

    def _load_references(self, exposure, hint, state: RunState) -> None:
        """References over the padded field (spec A2) into ``state`` (none without a
        refcat)."""
        if self.refcat is None:
            return
        wcs = exposure.wcs
        if wcs is None:
            if hint is None:
                raise InvalidInputError(
                    "the exposure has no WCS; give a pointing hint (RA, Dec, pixel scale)"
                )
            wcs = hint_wcs(hint, exposure)
        epoch = exposure.visit_info.date
        with self.timer("refcat"):
            refs, density = load_references(
                self.refcat, exposure, wcs, reference_margin_px(self.config, exposure), epoch
            )
        self.metadata["REF_CAT_SOURCE_DENSITY"] = density
        band = resolve_ref_band(exposure.band, self.config.photometry)
        state.refs, state.ref_density = refs, density
        state.ref_flux = ref_flux_column(refs, self.config.astrometry.ref_band or band)

    def _summarize(self, exposure, result, state: RunState) -> None:
        """Summary statistics in instrumental units, with whatever models exist."""
        with self.timer("summary"):
            fit = state.astrometry
            offsets = (fit.offset_mean, fit.offset_std) if fit is not None else (np.nan, np.nan)
            exposure.summary = compute_summary_stats(
                exposure,
                getattr(result, "stars", None),
                getattr(result, "background", None),
                psf=exposure.psf,
                wcs=exposure.wcs,
                photo_calib=exposure.photo_calib,
                config=self.config.summary,
                astrom_offsets=offsets,
                ref_cat_source_density=state.ref_density,
                psf_adaptive=state.psf_adaptive,
            )
        result.summary = exposure.summary

    @time_method
    def find_stars(
        self,
        exposure,
        background,
        id_generator,
        n_psf_stars: int = 0,
        *,
        psf_detection_sigma: float | None = None,
        variance_cache: SmoothedVarianceCache | None = None,
    ):
        """Detect and measure the star catalog (spec A8)."""
        return find_stars(
            exposure,
            background,
            id_generator,
            n_psf_stars + 1,
            self.config.star_phase_config(),
            self.timer,
            psf_detection_sigma=psf_detection_sigma,
            variance_cache=variance_cache,
        )

    def match_psf_stars(self, psf_stars, stars, exposure=None) -> None:
        """Copy the PSF-phase flags onto the matching stars (spec A9)."""
        sigma = exposure.psf.determinant_radius(*exposure.center) if exposure is not None else 0
        match_psf_stars(psf_stars, stars, max(self.config.psf_match_radius, sigma))
