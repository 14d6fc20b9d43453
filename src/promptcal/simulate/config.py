"""Configuration of the synthetic sky (:class:`SkyConfig`).

Every field's description carries its unit in brackets. Pixel positions are
parent-frame, 0-based, pixel centres at integers (see :mod:`promptcal.core.exposure`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from promptcal.core.config import Config


class SkyConfig(Config):
    """What :func:`promptcal.simulate.simulate_exposure` draws."""

    # --- geometry -------------------------------------------------------------------
    width: int = Field(2048, ge=8, le=8192, description="Image width [px].")
    height: int = Field(2000, ge=8, le=8192, description="Image height [px].")
    x0: int = Field(0, description="Parent x of pixel [0, 0] (xy0) [px].")
    y0: int = Field(0, description="Parent y of pixel [0, 0] (xy0) [px].")

    # --- visit and detector ------------------------------------------------------------
    exposure_id: int = Field(1, ge=0, description="Exposure (visit) id; snap i gets id + i [-].")
    detector_id: int = Field(0, ge=0, description="Detector number [-].")
    detector_name: str = Field("SIM_S00", description="Detector name [-].")
    band: str = Field("r", description="Band / physical filter name [-].")
    exposure_time: float = Field(30.0, gt=0, description="Open-shutter time of the visit [s].")
    mjd: float = Field(60000.5, description="Mid-exposure time of the visit [MJD, TAI].")
    gain: float = Field(1.0, gt=0, description="Gain [e-/count].")
    read_noise: float = Field(5.0, ge=0, description="Read noise [e-].")
    saturation: float | None = Field(
        60000.0, gt=0, description="Saturation level of one readout [count]; None: no saturation."
    )

    # --- stars ---------------------------------------------------------------------------
    n_stars: int = Field(500, ge=0, description="Number of stars [-].")
    star_flux_min: float = Field(300.0, gt=0, description="Faintest star total flux [count].")
    star_flux_max: float = Field(3.0e5, gt=0, description="Brightest star total flux [count].")
    star_flux_power: float = Field(
        2.0, description="Power-law index p of the flux distribution dN/dF ∝ F^-p [-]."
    )
    star_mag_range: tuple[float, float] | None = Field(
        None,
        description="(bright, faint) AB magnitudes [mag]; when set, replaces star_flux_min/max "
        "through `calibration`.",
    )

    # --- PSF -----------------------------------------------------------------------------
    psf_model: Literal["gaussian", "moffat"] = Field("gaussian", description="PSF profile [-].")
    psf_fwhm: float = Field(
        4.0, gt=0, description="PSF FWHM where the variation parameter is 0 (low x / y edge) [px]."
    )
    psf_fwhm_max: float | None = Field(
        None, gt=0, description="PSF FWHM at the far edge of the variation [px]; None: constant."
    )
    psf_variation: Literal["x", "y", "xy"] = Field(
        "x",
        description="Direction of the linear FWHM variation: 'x', 'y' or 'xy' (mean of both "
        "normalised coordinates) [-].",
    )
    psf_beta: float = Field(2.5, gt=1.0, description="Moffat beta (psf_model='moffat') [-].")
    psf_e1: float = Field(0.0, gt=-0.9, lt=0.9, description="PSF ellipticity e1=(Ixx-Iyy)/T [-].")
    psf_e2: float = Field(0.0, gt=-0.9, lt=0.9, description="PSF ellipticity e2=2Ixy/T [-].")
    psf_supersample: int = Field(
        1, ge=1, le=9, description="Sub-pixel samples per axis within 3 FWHM of a source [-]."
    )

    # --- background and noise --------------------------------------------------------------
    background: float = Field(1000.0, ge=0, description="Sky level at the image centre [count].")
    background_gradient_x: float = Field(0.0, description="Sky gradient along x [count/px].")
    background_gradient_y: float = Field(0.0, description="Sky gradient along y [count/px].")
    do_poisson: bool = Field(
        True, description="Poisson noise on electrons (else Gaussian of the same variance) [-]."
    )
    calibration: float = Field(20.0, gt=0, description="Truth photometric calibration [nJy/count].")

    # --- WCS -------------------------------------------------------------------------------
    ra: float = Field(150.0, ge=0, lt=360, description="RA of the bbox centre [deg].")
    dec: float = Field(2.0, ge=-90, le=90, description="Dec of the bbox centre [deg].")
    pixel_scale: float = Field(0.2, gt=0, description="Pixel scale at the centre [arcsec/px].")
    rotation: float = Field(
        0.0, description="Position angle of the +y pixel axis, north through east [deg]."
    )
    sip_order: Literal[0, 2, 3] = Field(3, description="SIP distortion order; 0: pure TAN [-].")
    sip_amplitude: float = Field(
        1.0, ge=0, description="Distortion displacement at the farthest bbox corner [px]."
    )
    pointing_error: float = Field(
        2.0, ge=0, description="Header WCS offset from the truth at the bbox centre [arcsec]."
    )
    pointing_error_angle: float = Field(
        30.0, description="Position angle of the header pointing offset, N through E [deg]."
    )
    rotation_error: float = Field(0.05, description="Header rotation minus true rotation [deg].")
    header_has_sip: bool = Field(
        False, description="Header WCS carries the true SIP terms (else TAN only) [-]."
    )

    # --- galaxies --------------------------------------------------------------------------
    n_galaxies: int = Field(0, ge=0, description="Number of extended galaxies [-].")
    galaxy_flux_min: float = Field(2000.0, gt=0, description="Faintest galaxy flux [count].")
    galaxy_flux_max: float = Field(1.0e5, gt=0, description="Brightest galaxy flux [count].")
    galaxy_hlr_min: float = Field(
        1.5, gt=0, description="Smallest half-light semi-major axis [px]."
    )
    galaxy_hlr_max: float = Field(6.0, gt=0, description="Largest half-light semi-major axis [px].")
    galaxy_axis_ratio_min: float = Field(
        0.3, gt=0, le=1, description="Smallest axis ratio b/a (uniform up to 1) [-]."
    )
    galaxy_sersic_index: float = Field(
        1.0, ge=0.5, le=4.0, description="Sersic index (0.5 Gaussian, 1 exponential) [-]."
    )

    # --- artefacts ---------------------------------------------------------------------------
    n_cosmic_rays: int = Field(0, ge=0, description="Number of cosmic-ray tracks [-].")
    cr_length_min: float = Field(1.0, ge=0, description="Shortest track length [px].")
    cr_length_max: float = Field(3.0, ge=0, description="Longest track length [px].")
    cr_amplitude_min: float = Field(500.0, gt=0, description="Smallest CR pixel deposit [count].")
    cr_amplitude_max: float = Field(5000.0, gt=0, description="Largest CR pixel deposit [count].")
    do_mask_cosmic_rays: bool = Field(
        False, description="Set the CR mask plane on CR pixels (an ISR does not) [-]."
    )
    n_bad_columns: int = Field(0, ge=0, description="Number of bad columns (BAD mask) [-].")
    bad_column_max_value: float = Field(
        2.0e4, description="Bad-column pixels are uniform in [0, this) [count]."
    )
    n_snaps: Literal[1, 2] = Field(1, description="Readouts per visit, each half the time [-].")

    # --- rendering and truth rules -------------------------------------------------------------
    stamp_threshold: float = Field(
        0.1, gt=0, description="Stamps extend until the profile is below this × sky noise [sigma]."
    )
    max_stamp_radius: int = Field(150, ge=4, description="Largest stamp radius [px].")
    moffat_wing_fraction: float = Field(
        1e-3, gt=0, lt=1, description="Moffat stamps also enclose all but this flux fraction [-]."
    )
    isolation_radius: float = Field(
        3.0,
        gt=0,
        description="Isolation aperture radius = this × (FWHM + hlr for galaxies) [FWHM].",
    )
    isolation_max_blend: float = Field(
        0.01,
        ge=0,
        description="Isolated: other sources add less than this × own flux in the aperture [-].",
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> SkyConfig:
        pairs = [
            ("star_flux_min", "star_flux_max"),
            ("galaxy_flux_min", "galaxy_flux_max"),
            ("galaxy_hlr_min", "galaxy_hlr_max"),
            ("cr_length_min", "cr_length_max"),
            ("cr_amplitude_min", "cr_amplitude_max"),
        ]
        for lo, hi in pairs:
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo}={getattr(self, lo)} exceeds {hi}={getattr(self, hi)}")
        if self.star_mag_range is not None and self.star_mag_range[0] > self.star_mag_range[1]:
            raise ValueError(f"star_mag_range {self.star_mag_range} must be (bright, faint)")
        corner = abs(self.background_gradient_x) * self.width / 2
        corner += abs(self.background_gradient_y) * self.height / 2
        if corner > self.background:
            raise ValueError(
                f"background {self.background} with gradients ({self.background_gradient_x}, "
                f"{self.background_gradient_y}) goes negative at a corner"
            )
        return self
