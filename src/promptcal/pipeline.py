"""CalibrateImageTask: orchestrates the stages and builds the result Struct."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .adaptive_detection import AdaptiveThresholdConfig
from .apcorr import ApCorrConfig
from .astrometry import AstrometryConfig, PointingHint
from .astrometry_blind import reference_margin_px
from .background import BackgroundConfig
from .calibration_steps import (
    denormalized_matches,
    fit_wcs,
    hint_wcs,
    load_references,
    nearest_ids,
    pixel_scale_arcsec,
    ref_flux_column,
    refit_wcs_on_sources,
    set_coordinates,
)
from .config import Config
from .deblend import DeblendConfig
from .detection import DetectionConfig
from .errors import AlgorithmError, AstrometryError, BadAstrometryFit, InvalidInputError
from .exposure import Exposure
from .ids import IdGenerator
from .measurement import MeasurementConfig, flux_names
from .photometry import PhotometryConfig, calibrate_pixels, resolve_ref_band, run_photometry
from .psf_determiner import PsfDeterminerConfig, StarSelectorConfig
from .psf_phase import compute_psf, measure_aperture_correction
from .repair import RepairConfig
from .sky_sources import SkySourcesConfig
from .snaps import combine_snaps
from .star_phase import (
    DownsampleConfig,
    StarSelectionConfig,
    find_stars,
    match_psf_stars,
    renormalize_calib_flux,
)
from .summary import SummaryConfig, compute_summary_stats
from .task import Struct, Task, time_method


class CalibrateImageConfig(Config):
    """Configuration of :class:`CalibrateImageTask` (defaults follow LSST's legacy path)."""

    initial_psf_fwhm: float = Field(
        4.0, gt=0, description="FWHM of the Gaussian PSF installed when none is known [px]."
    )
    initial_psf_size: int = Field(11, ge=3, description="Stamp width of that PSF [px].")
    psf_iterations: int = Field(
        2, ge=1, description="PSF-phase passes (LSST's legacy path fits the PSF twice) [1]."
    )
    psf_redetect_tolerance: float = Field(
        0.2,
        ge=0,
        description="A PSF pass re-detects only if the PSF σ changed by more than this "
        "fraction since the last detection; 0 re-detects every pass as LSST does. "
        "Footprints of ≥50σ stars barely depend on the smoothing width, so re-detecting "
        "within 20% costs ~0.4 s on a 4k×4k frame for no change in the PSF stars [1].",
    )
    do_adaptive_threshold_detection: bool = Field(
        False,
        description="Adapt the PSF-phase detection threshold to the field (spec A4); off "
        "by default, as in LSST's legacy path used by its tests.",
    )
    adaptive_threshold: AdaptiveThresholdConfig = Field(default_factory=AdaptiveThresholdConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    repair: RepairConfig = Field(default_factory=RepairConfig)
    psf_detection: DetectionConfig = Field(
        default_factory=lambda: DetectionConfig(threshold=10.0, include_threshold_multiplier=5.0),
        description="Detection of bright PSF stars (10σ footprints, 50σ peaks).",
    )
    star_detection: DetectionConfig = Field(
        default_factory=lambda: DetectionConfig(threshold=5.0, include_threshold_multiplier=2.0),
        description="Detection of the star catalog (5σ footprints, 10σ peaks).",
    )
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)
    star_selector: StarSelectorConfig = Field(default_factory=StarSelectorConfig)
    psf: PsfDeterminerConfig = Field(default_factory=PsfDeterminerConfig)
    ap_corr: ApCorrConfig = Field(default_factory=ApCorrConfig)
    sky_sources: SkySourcesConfig = Field(default_factory=SkySourcesConfig)
    downsample: DownsampleConfig = Field(default_factory=DownsampleConfig)
    deblend: DeblendConfig = Field(default_factory=DeblendConfig)
    star_selection: StarSelectionConfig = Field(default_factory=StarSelectionConfig)
    psf_match_radius: float = Field(
        3.0, gt=0, description="psf_stars ↔ stars match radius: max(this, PSF σ) [px]."
    )
    ref_pixel_margin: float = Field(
        250.0, ge=0, description="References are loaded over the bbox padded by this [px]."
    )
    astrometry: AstrometryConfig = Field(default_factory=AstrometryConfig)
    astrometry_min_snr: float = Field(
        40.0, ge=0, description="Astrometric sources need S/N(PsfFlux) above this [1]."
    )
    astrometry_ref_band: str | None = Field(
        None, description="Refcat band whose fluxes rank references (None: photometric band)."
    )
    do_astrometry_refit: bool = Field(
        True,
        description="Refit the WCS on all clean star-phase sources and keep it when it "
        "matches at least as many references as the PSF-star fit.",
    )
    astrometry_refit_min_snr: float = Field(
        10.0, ge=0, description="Refit sources need S/N(PsfFlux) above this [1]."
    )
    astrometry_saturated_fallback_matches: int = Field(
        10,
        ge=0,
        description="If the refit on unsaturated sources matches fewer references than "
        "this, saturated stars are admitted (bright-only refcats) [1].",
    )
    max_mean_astrometric_offset_px: float = Field(
        2.5,
        gt=0,
        description="The mean-offset limit is at least this many pixels (LSST's 0.5 arcsec "
        "is 2.5 px at 0.2 arcsec/px), so coarse pixel scales are not failed [px].",
    )
    max_mean_astrometric_offset: float = Field(
        0.5, gt=0, description="A larger mean match offset fails the fit [arcsec]."
    )
    photometry: PhotometryConfig = Field(default_factory=PhotometryConfig)
    photometry_match_radius_px: float = Field(
        1.25,
        ge=0,
        description="The photometric match radius is at least this many pixels, so coarse "
        "pixel scales keep LSST's 1.25-px radius [px].",
    )
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    do_calibrate_pixels: bool = Field(
        True, description="Scale pixels and background to nJy with the fitted calibration."
    )
    optional_outputs: tuple[str, ...] = Field(
        ("astrometry_matches", "photometry_matches", "mask"),
        description="Outputs produced only when listed.",
    )

    def resolved_ap_corr(self) -> ApCorrConfig:
        """``ap_corr`` with the flux names the measurement configuration produces."""
        aperture, tophat = flux_names(self.measurement)
        return self.ap_corr.model_copy(
            update={
                "aperture_name": self.ap_corr.aperture_name or aperture,
                "tophat_name": self.ap_corr.tophat_name or tophat,
            }
        )


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
    def compute_psf(self, exposure: Exposure, id_generator: IdGenerator | None = None):
        """The PSF phase only (spec A4); returns a Struct like LSST's ``_compute_psf``."""
        id_generator = id_generator or IdGenerator()
        result = compute_psf(self, exposure, id_generator)
        return Struct(
            psf_stars=result.psf_stars,
            psf_stars_footprints=result.footprints,
            background=result.background,
            seeds=result.seeds,
        )

    @time_method
    def measure_aperture_correction(self, exposure: Exposure, psf_stars):
        """Normalise the calibration flux and fit the aperture corrections (spec A5)."""
        return measure_aperture_correction(self, exposure, psf_stars)

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
        try:
            self._run_stages(exposure, id_generator, result, pointing_hint)
        except AlgorithmError as error:
            result.failure = {
                "type": type(error).__name__,
                "message": str(error),
                "metadata": error.metadata,
            }
            self._summarize(exposure, result)
            raise
        return result

    def _run_stages(self, exposure, id_generator, result, hint) -> None:
        config = self.config
        refs, ref_flux = self._load_references(exposure, hint)
        psf_result = self.compute_psf(exposure, id_generator)
        result.psf_stars = psf_result.psf_stars
        result.psf_stars_footprints = psf_result.psf_stars_footprints
        result.background = psf_result.background
        self.measure_aperture_correction(exposure, result.psf_stars)
        astrometry = None
        psf_star_failure = None
        if refs is not None:
            try:
                with self.timer("astrometry"):
                    astrometry, matches = fit_wcs(
                        self, exposure, result.psf_stars, refs, ref_flux, hint
                    )
            except AstrometryError as error:
                # Too few bright stars (small cut-outs): the deeper star phase may do.
                if not (config.do_astrometry_refit and exposure.wcs is not None):
                    raise
                psf_star_failure = error
                self.log.warning("PSF-star astrometry failed (%s); trying all stars", error)
            else:
                for key in ("MEAN", "STD", "MEDIAN"):
                    self.metadata[f"SFM_ASTROM_OFFSET_{key}"] = getattr(
                        astrometry, f"offset_{key.lower()}"
                    )
                if "astrometry_matches" in config.optional_outputs:
                    result.astrometry_matches = matches
        stars = self.find_stars(exposure, result.background, id_generator, len(result.psf_stars))
        exposure.__dict__.pop("_smoothed_variance_cache", None)  # last detection is done
        result.stars = stars.stars
        result.stars_footprints = stars.footprints
        self.match_psf_stars(result.psf_stars, result.stars, exposure)
        ratio = renormalize_calib_flux(result.stars, config.resolved_ap_corr())
        if ratio is not None:
            self.metadata["CALIB_FLUX_NORMALIZATION"] = ratio
        if refs is not None and config.do_astrometry_refit:
            astrometry = self._refit_astrometry(
                exposure, result, stars.sources, refs, ref_flux, astrometry
            )
            if astrometry is None:
                raise psf_star_failure
        set_coordinates(result.stars, exposure.wcs)
        limit = max(
            config.max_mean_astrometric_offset,
            config.max_mean_astrometric_offset_px
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
        if "mask" in config.optional_outputs:
            result.mask = exposure.mask.copy()
        if refs is None:
            self._summarize(exposure, result)
            return
        # LSST's 0.25 arcsec is 1.25 px at 0.2 arcsec/px; keep at least that in pixels.
        radius = max(
            config.photometry.match_radius,
            config.photometry_match_radius_px * pixel_scale_arcsec(exposure.wcs, *exposure.center),
        )
        photometry_config = config.photometry.model_copy(update={"match_radius": radius})
        with self.timer("photometry"):
            photometry = run_photometry(result.stars, refs, exposure.band, photometry_config)
        if "photometry_matches" in config.optional_outputs:
            result.photometry_matches = photometry.matches
        photo_calib = photometry.photo_calib
        exposure.photo_calib = photo_calib
        self._summarize(exposure, result)
        if config.do_calibrate_pixels:
            exposure, result.background = calibrate_pixels(exposure, result.background, photo_calib)
            result.applied_photo_calib = photo_calib

    def _refit_astrometry(self, exposure, result, sources, refs, ref_flux, astrometry):
        """Refit the WCS on all clean star-phase sources; keep it if it matches more."""
        with self.timer("astrometry_refit"):
            refit = refit_wcs_on_sources(self, exposure, sources, refs, ref_flux)
        if refit is None:
            return astrometry
        fit, selected = refit
        if astrometry is not None and len(fit.matches) < len(astrometry.matches):
            return astrometry
        exposure.wcs = fit.wcs
        set_coordinates(result.psf_stars, fit.wcs)
        for key in ("MEAN", "STD", "MEDIAN"):
            self.metadata[f"SFM_ASTROM_OFFSET_{key}"] = getattr(fit, f"offset_{key.lower()}")
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
        return fit

    def _load_references(self, exposure, hint):
        """References over the padded field (spec A2), or (None, None) without a refcat."""
        if self.refcat is None:
            return None, None
        wcs = exposure.wcs
        if wcs is None:
            if hint is None:
                raise InvalidInputError(
                    "the exposure has no WCS; give a pointing hint (RA, Dec, pixel scale)"
                )
            wcs = hint_wcs(hint, exposure)
        epoch = exposure.visit_info.date
        margin = reference_margin_px(self.config, exposure)
        with self.timer("refcat"):
            refs, density = load_references(self.refcat, exposure, wcs, margin, epoch)
        self.metadata["REF_CAT_SOURCE_DENSITY"] = density
        band = resolve_ref_band(exposure.band, self.config.photometry)
        ref_flux = ref_flux_column(refs, self.config.astrometry_ref_band or band)
        return refs, ref_flux

    def _summarize(self, exposure, result) -> None:
        """Summary statistics in instrumental units, with whatever models exist."""
        with self.timer("summary"):
            offsets = (
                self.metadata.get("SFM_ASTROM_OFFSET_MEAN", np.nan),
                self.metadata.get("SFM_ASTROM_OFFSET_STD", np.nan),
            )
            exposure.summary = compute_summary_stats(
                exposure,
                getattr(result, "stars", None),
                getattr(result, "background", None),
                psf=exposure.psf,
                wcs=exposure.wcs,
                photo_calib=exposure.photo_calib,
                config=self.config.summary,
                astrom_offsets=offsets,
                ref_cat_source_density=self.metadata.get("REF_CAT_SOURCE_DENSITY"),
                psf_adaptive=(
                    self.metadata.get("psfAdaptiveThresholdValue", np.nan),
                    self.metadata.get("psfAdaptiveIncludeThresholdMultiplier", np.nan),
                ),
            )
        result.summary = exposure.summary

    @time_method
    def find_stars(self, exposure, background, id_generator, n_psf_stars: int = 0):
        """Detect and measure the star catalog (spec A8)."""
        return find_stars(self, exposure, background, id_generator, first_id=n_psf_stars + 1)

    def match_psf_stars(self, psf_stars, stars, exposure=None) -> None:
        """Copy the PSF-phase flags onto the matching stars (spec A9)."""
        sigma = exposure.psf.determinant_radius(*exposure.center) if exposure is not None else 0
        match_psf_stars(psf_stars, stars, max(self.config.psf_match_radius, sigma))
