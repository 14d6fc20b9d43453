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
from promptcal.pipeline.psf.determiner import PsfDeterminerConfig, PsfStarSelectorConfig
from promptcal.pipeline.psf.phase import PsfPhaseConfig
from promptcal.pipeline.repair import RepairConfig
from promptcal.pipeline.star_phase import (
    DownsampleConfig,
    StarPhaseConfig,
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
    psf_star_selector: PsfStarSelectorConfig = Field(
        default_factory=PsfStarSelectorConfig,
        description="Selection of PSF candidates by size in the PSF phase.",
    )
    psf: PsfDeterminerConfig = Field(default_factory=PsfDeterminerConfig)
    ap_corr: ApCorrConfig = Field(default_factory=ApCorrConfig)
    sky_sources: SkySourcesConfig = Field(default_factory=SkySourcesConfig)
    downsample: DownsampleConfig = Field(default_factory=DownsampleConfig)
    deblend: DeblendConfig = Field(default_factory=DeblendConfig)
    star_selection: StarSelectionConfig = Field(
        default_factory=StarSelectionConfig,
        description="Selection of the output star catalog in the star phase.",
    )
    psf_match_radius: float = Field(
        3.0, gt=0, description="psf_stars ↔ stars match radius: max(this, PSF σ) [px]."
    )
    ref_pixel_margin: float = Field(
        250.0, ge=0, description="References are loaded over the bbox padded by this [px]."
    )
    astrometry: AstrometryConfig = Field(default_factory=AstrometryConfig)
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

    def psf_phase_config(self) -> PsfPhaseConfig:
        """The fields the PSF phase uses (:func:`~promptcal.pipeline.psf.phase.compute_psf`)."""
        return PsfPhaseConfig(**self._view(PsfPhaseConfig, detection="psf_detection"))

    def star_phase_config(self) -> StarPhaseConfig:
        """The fields the star phase uses (:func:`~promptcal.pipeline.star_phase.find_stars`)."""
        view = self._view(StarPhaseConfig, detection="star_detection")
        return StarPhaseConfig(**{**view, "ap_corr": self.resolved_ap_corr()})

    def _view(self, model: type[Config], **renamed: str) -> dict:
        """This config's values of ``model``'s fields (``renamed``: field -> our name)."""
        return {name: getattr(self, renamed.get(name, name)) for name in model.model_fields}
