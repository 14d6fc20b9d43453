"""CalibrateImageConfig: the configuration of every step of CalibrateImageTask."""

from __future__ import annotations

from pydantic import Field

from promptcal.core.config import Config
from promptcal.pipeline.apcorr import ApCorrConfig
from promptcal.pipeline.astrometry.fitter import AstrometryConfig
from promptcal.pipeline.background import BackgroundConfig
from promptcal.pipeline.detect.adaptive import AdaptiveThresholdConfig
from promptcal.pipeline.detect.deblend import DeblendConfig
from promptcal.pipeline.detect.detection import DetectionConfig
from promptcal.pipeline.detect.sky_sources import SkySourcesConfig
from promptcal.pipeline.measurement import MeasurementConfig, flux_names
from promptcal.pipeline.photometry import (
    PhotometryConfig,
)
from promptcal.pipeline.psf.determiner import PsfDeterminerConfig, StarSelectorConfig
from promptcal.pipeline.repair import RepairConfig
from promptcal.pipeline.star_phase import (
    DownsampleConfig,
    StarSelectionConfig,
)
from promptcal.pipeline.summary.statistics import SummaryConfig


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
