"""Exposure summary statistics (spec C), LSST ``ExposureSummaryStats`` field names.

Computed before the pixels are calibrated, so fluxes, sky and variance are in counts.
Every input that may be missing after a failure (PSF, WCS, photometric calibration,
background, stars, detector) turns the fields depending on it into NaN, never into an
exception. Costs are kept to tens of milliseconds on a 4k × 4k detector: image
statistics use a strided pixel sample and the PSF grids are coarse (see
:mod:`promptcal.pipeline.summary.psf_robustness`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, SkyCoord
from astropy.time import Time
from astropy.utils import iers
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.exposure import Exposure, PhotoCalib, VisitInfo
from promptcal.pipeline.summary.earth_orientation import earth_orientation_table
from promptcal.pipeline.summary.psf_robustness import (
    ap_corr_sigma_scaled_delta,
    grid_points,
    max_distance_to_nearest_psf,
    psf_image_deltas,
    psf_star_stats,
)

NAN = float("nan")
IQR_TO_SIGMA = 0.741
BANDS = ("u", "g", "r", "i", "z", "y")

#: Fields never computed here (shapelet focus QA and HSM higher-order moments).
NAN_FIELDS = (
    "shapeletsOnlyIqScore",
    "shapeletsIqScore",
    "centroidDiffShapeletsVsSlotMedian",
    "shapeletsStarEMedian",
    "shapeletsStarUnNormalizedEMedian",
    "starComa1Median",
    "starComa2Median",
    "starTrefoil1Median",
    "starTrefoil2Median",
    "starKurtosisMedian",
    "starE41Median",
    "starE42Median",
)


def _per_band(values) -> dict[str, float]:
    return dict(zip(BANDS, values, strict=True))


class SummaryConfig(Config):
    """Summary statistics (LSST ComputeExposureSummaryStatsConfig, LSSTCam fiducials)."""

    sigma_clip: float = Field(3.0, gt=0, description="Clip for skyNoise and meanVar [σ].")
    clip_iterations: int = Field(2, ge=0, description="Clipping iterations [1].")
    bad_mask_planes: tuple[str, ...] = Field(
        ("NO_DATA", "SUSPECT"), description="Pixels ignored by skyNoise and meanVar."
    )
    image_stats_max_pixels: int = Field(
        1_000_000,
        ge=1,
        description="skyNoise/meanVar sample every n-th pixel along both axes, n the "
        "smallest stride leaving about this many pixels (n = 4 on a 4k × 4k detector) [px].",
    )
    star_selection: str = Field("calib_psf_used", description="Flag of the PSF stars.")
    star_shape: str = Field("slot_Shape", description="Prefix of the star moments.")
    psf_shape: str = Field("slot_PsfShape", description="Prefix of the PSF-model moments.")
    psf_stats_min_snr: float = Field(50.0, description="PSF-star stats need S/N(PsfFlux) > [1].")
    psf_stats_max_snr: float = Field(1000.0, description="... and S/N(PsfFlux) < this [1].")
    psf_sampling: int = Field(8, ge=1, description="Grid of maxDistToNearestPsf [px].")
    psf_grid_sampling: int = Field(96, ge=1, description="Grid of the PSF robustness stats [px].")
    psf_shape_grid_points: int = Field(
        10, ge=2, description="Trace radius uses ≤ this² points of the robustness grid [1]."
    )
    min_psf_ap_radius: float = Field(2.0, gt=0, description="psfApFluxDelta radius floor [px].")
    psf_ap_corr_field: str = Field(
        "base_PsfFlux_instFlux", description="Aperture correction of psfApCorrSigmaScaledDelta."
    )
    psf_bad_mask_planes: tuple[str, ...] = Field(
        ("BAD", "CR", "EDGE", "INTRP", "NO_DATA", "SAT", "SUSPECT"),
        description="Grid points on these planes are skipped.",
    )
    fiducial_psf_sigma: dict[str, float] = Field(
        default_factory=lambda: _per_band((1.72, 1.63, 1.56, 1.51, 1.47, 1.44)),
        description="Fiducial PSF σ per band [px].",
    )
    fiducial_zero_point: dict[str, float] = Field(
        default_factory=lambda: _per_band((25.96, 27.95, 27.80, 27.61, 27.22, 26.26)),
        description="Fiducial zero point for a 1 s exposure per band [mag].",
    )
    fiducial_sky_background: dict[str, float] = Field(
        default_factory=lambda: _per_band((0.90, 9.20, 19.62, 31.51, 47.26, 53.91)),
        description="Fiducial sky background per band [count / s].",
    )
    fiducial_read_noise: dict[str, float] = Field(
        default_factory=dict,
        description="Read noise used when the detector's is not finite, per band [e⁻].",
    )
    fiducial_exp_time: dict[str, float] = Field(
        default_factory=dict, description="Fiducial exposure time per band [s]."
    )
    fiducial_mag_lim: dict[str, float] = Field(
        default_factory=dict, description="Fiducial 5σ point-source depth per band [mag]."
    )
    default_psf_sigma: float = Field(1.0, gt=0, description="σ_fid of other bands [px].")
    default_zero_point: float = Field(25.0, description="zp_fid of other bands [mag].")
    default_sky_background: float = Field(1.0, gt=0, description="Sky_fid, other bands [count/s].")
    default_read_noise: float = Field(9.0, ge=0, description="Read-noise fallback [e⁻].")
    default_exp_time: float = Field(30.0, gt=0, description="t_fid of other bands [s].")
    default_mag_lim: float = Field(25.0, description="magLim_fid of other bands [mag].")
    max_effective_transparency: float = Field(
        float("inf"), gt=0, description="Cap of effTimeZeroPointScale [1]."
    )
    mag_lim_snr: float = Field(5.0, gt=0, description="S/N of magLim [1].")

    def fiducial(self, name: str, band: str | None) -> float:
        """Fiducial ``name`` (e.g. ``"psf_sigma"``) of ``band``, or the task default."""
        table = getattr(self, f"fiducial_{name}")
        return float(table[band]) if band in table else float(getattr(self, f"default_{name}"))


def clipped_mean_std(values: np.ndarray, nsigma: float, n_iter: int) -> tuple[float, float]:
    """afw-style MEANCLIP and STDEVCLIP of finite ``values``.

    Starts at the median with half-width nσ·0.741·IQR (of ≤ ~500 000 evenly spaced
    values), then ``n_iter`` times keeps
    ``|v − centre| ≤ half-width`` and moves to the kept mean, with half-width nσ·std.
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NAN, NAN
    # The quartiles only seed the clip: ~250 000 values pin them down well enough.
    seed = values[:: max(1, values.size // 250_000)]
    q25, q50, q75 = np.quantile(seed, [0.25, 0.5, 0.75])
    centre, half_width = float(q50), nsigma * IQR_TO_SIGMA * float(q75 - q25)
    mean, std = centre, NAN
    for _ in range(n_iter):
        kept = values[np.abs(values - centre) <= half_width]
        if kept.size == 0:
            break
        mean = float(kept.mean(dtype=np.float64))
        if kept.size > 1:
            std = float(kept.std(dtype=np.float64, ddof=1))
            half_width = nsigma * std
        centre = mean
    return mean, std


def _image_stats(exposure: Exposure, config: SummaryConfig) -> dict[str, float]:
    s = max(1, int(math.sqrt(exposure.image.size / config.image_stats_max_pixels)))
    good = (exposure.mask.array[::s, ::s] & exposure.mask.bit(*config.bad_mask_planes)) == 0
    _, sky_noise = clipped_mean_std(
        exposure.image[::s, ::s][good], config.sigma_clip, config.clip_iterations
    )
    mean_var, _ = clipped_mean_std(
        exposure.variance[::s, ::s][good], config.sigma_clip, config.clip_iterations
    )
    return {"skyNoise": sky_noise, "meanVar": mean_var}


def _sky_positions(wcs, x, y) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    return np.asarray(ra, np.float64), np.asarray(dec, np.float64)


def _unit(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.deg2rad(ra_deg), np.deg2rad(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def pixel_scale(wcs, x: float, y: float) -> float:
    """√(sky area of one pixel) at parent (x, y), from central differences [arcsec/px]."""
    ra, dec = _sky_positions(wcs, [x - 0.5, x + 0.5, x, x], [y, y, y - 0.5, y + 0.5])
    v = _unit(ra, dec)
    area = np.linalg.norm(np.cross(v[1] - v[0], v[3] - v[2]))
    return float(np.degrees(np.sqrt(area)) * 3600.0)


def zenith_distance(ra: float, dec: float, visit_info: VisitInfo) -> float:
    """Zenith distance of (ra, dec) [deg] at the visit's date and observatory [deg].

    No refraction (pressure 0, as LSST). IERS tables are the bundled ones (a worker
    must never block on a download), read through a cache
    (:mod:`~promptcal.pipeline.summary.earth_orientation`).
    """
    date, site = visit_info.date, visit_info.observatory
    if date is None or site is None or not (math.isfinite(ra) and math.isfinite(dec)):
        return NAN
    table = earth_orientation_table()
    with (
        warnings.catch_warnings(),
        iers.conf.set_temp("auto_download", False),
        iers.earth_orientation_table.set(table),
    ):
        warnings.simplefilter("ignore")
        frame = AltAz(obstime=Time(date, location=site), location=site)
        altaz = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(frame)
    return float(90.0 - altaz.alt.to_value(u.deg))


def compute_magnitude_limit(psf_area, sky_bg, zero_point, read_noise, gain, snr) -> float:
    """Point-source magnitude at S/N ``snr`` (SMTN-002 / LSE-40) [mag].

    ``B = (sky_bg/g + read_noise²)·psf_area``; source counts solve
    ``snr = C / √(C/g + B)``. sky_bg, zero_point and read_noise share one unit
    (counts here) and the zero point includes the exposure time.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        background = (sky_bg / gain + read_noise**2) * psf_area
        source = snr**2 / (2.0 * gain) + np.sqrt(snr**4 / (4.0 * gain**2) + snr**2 * background)
        return float(zero_point - 2.5 * np.log10(source))


def _mag_lim(stats: dict, exposure: Exposure, config: SummaryConfig) -> float:
    det = exposure.detector
    if det is None or not math.isfinite(det.gain) or det.gain <= 0:
        return NAN
    gain = float(det.gain)
    if str(exposure.metadata.get("LSST ISR UNITS", "adu")).lower() == "electron":
        gain = 1.0
    read_noise = float(det.read_noise)
    if not math.isfinite(read_noise):
        read_noise = config.fiducial("read_noise", exposure.band)
    return compute_magnitude_limit(
        stats["psfArea"], stats["skyBg"], stats["zeroPoint"], read_noise / gain, gain,
        config.mag_lim_snr,
    )  # fmt: skip


def _eff_time(stats: dict, band: str | None, config: SummaryConfig) -> dict[str, float]:
    out = dict.fromkeys(
        ("effTime", "effTimePsfSigmaScale", "effTimeSkyBgScale", "effTimeZeroPointScale"), NAN
    )
    t = stats["expTime"]
    if band is None:
        return out
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out["effTimePsfSigmaScale"] = float(
            (stats["psfSigma"] / config.fiducial("psf_sigma", band)) ** -2
        )
        if t > 0:
            out["effTimeSkyBgScale"] = float(
                config.fiducial("sky_background", band) / (stats["skyBg"] / t)
            )
            zp_1s = stats["zeroPoint"] - 2.5 * np.log10(t)
            c_eff = 10.0 ** (-0.8 * (config.fiducial("zero_point", band) - zp_1s))
            out["effTimeZeroPointScale"] = float(min(c_eff, config.max_effective_transparency))
        out["effTime"] = float(
            10.0 ** (0.8 * (stats["magLim"] - config.fiducial("mag_lim", band)))
            * config.fiducial("exp_time", band)
        )
    return out


# Long: one assignment per LSST summary field, grouped as in the spec; a flat list is
# easier to check against ExposureSummaryStats than helpers would be.
def compute_summary_stats(
    exposure: Exposure,
    stars,
    background,
    *,
    psf=None,
    wcs=None,
    photo_calib: PhotoCalib | None = None,
    config: SummaryConfig | None = None,
    astrom_offsets: tuple[float, float] = (NAN, NAN),
    ref_cat_source_density: float | None = None,
    psf_adaptive: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Summary statistics of an exposure in instrumental units.

    Parameters
    ----------
    exposure : Exposure
        Background-subtracted, not yet calibrated; its mask, visit info, detector,
        band, metadata and ``ap_corr_map`` are read.
    stars : SourceCatalog or None
        Star catalog with ``calib_psf_used``, slot shapes and PsfFlux.
    background : BackgroundList or None
        Subtracted background [count].
    psf, wcs, photo_calib : optional
        Fitted models; None (after a failure) makes the dependent fields NaN.
    config : SummaryConfig, optional
    astrom_offsets : (float, float)
        Mean and standard deviation of the astrometric match offsets [arcsec].
    ref_cat_source_density : float, optional
        Reference sources per deg² over the detector [deg⁻²].
    psf_adaptive : (float, float), optional
        Adaptive PSF-detection threshold and include multiplier.

    Returns
    -------
    dict
        LSST ExposureSummaryStats keys -> float (NaN when unknown), int or list.
    """
    config = config or SummaryConfig()
    cx, cy = exposure.center
    x_min, y_min, x_max, y_max = exposure.bbox
    s: dict[str, Any] = {}
    s["psfSigma"] = s["psfArea"] = s["psfIxx"] = s["psfIyy"] = s["psfIxy"] = NAN
    if psf is not None:
        s["psfIxx"], s["psfIyy"], s["psfIxy"] = (float(v) for v in psf.shape(cx, cy))
        s["psfSigma"] = float((s["psfIxx"] * s["psfIyy"] - s["psfIxy"] ** 2) ** 0.25)
        kernel = np.asarray(psf.kernel_image(cx, cy), np.float64)
        s["psfArea"] = float(kernel.sum() ** 2 / np.sum(kernel**2))
    s["ra"] = s["dec"] = s["pixelScale"] = s["zenithDistance"] = NAN
    s["raCorners"], s["decCorners"] = [NAN] * 4, [NAN] * 4
    if wcs is not None:
        xs = [cx, x_min - 0.5, x_max + 0.5, x_max + 0.5, x_min - 0.5]
        ys = [cy, y_min - 0.5, y_min - 0.5, y_max + 0.5, y_max + 0.5]
        ra, dec = _sky_positions(wcs, xs, ys)
        s["ra"], s["dec"] = float(ra[0]), float(dec[0])
        s["raCorners"], s["decCorners"] = ra[1:].tolist(), dec[1:].tolist()
        s["pixelScale"] = pixel_scale(wcs, cx, cy)
        s["zenithDistance"] = zenith_distance(s["ra"], s["dec"], exposure.visit_info)
    s["expTime"] = float(exposure.visit_info.exposure_time)
    cal = NAN if photo_calib is None else float(photo_calib.mean)
    s["zeroPoint"] = float(2.5 * np.log10(3631e9 / cal)) if cal > 0 else NAN
    s["skyBg"] = float(background.median_binned_sum()) if background else NAN
    s.update(_image_stats(exposure, config))
    s["raCorners"] = [float(v) for v in s["raCorners"]]
    s["decCorners"] = [float(v) for v in s["decCorners"]]
    adaptive = psf_adaptive if psf_adaptive is not None else (NAN, NAN)
    s["psfAdaptiveThresholdValue"] = float(adaptive[0])
    s["psfAdaptiveIncludeThresholdMultiplier"] = float(adaptive[1])
    s["nShapeletsStar"] = 0
    s["shapeletsCoeffs"] = []
    s.update(dict.fromkeys(NAN_FIELDS, NAN))
    s["refCatSourceDensity"] = (
        NAN if ref_cat_source_density is None else float(ref_cat_source_density)
    )
    s["astromOffsetMean"], s["astromOffsetStd"] = (float(v) for v in astrom_offsets)

    # As LSST: without a PSF model the PSF-star statistics are reset too.
    star_stats, selected = psf_star_stats(stars if psf is not None else None, config)
    s.update(star_stats)
    s.update(_psf_robustness(exposure, stars, selected, psf, s["psfSigma"], config))
    s["magLim"] = _mag_lim(s, exposure, config)
    s.update(_eff_time(s, exposure.band, config))
    return s


def _psf_robustness(exposure, stars, selected, psf, psf_sigma, config) -> dict[str, float]:
    out = dict.fromkeys(
        (
            "maxDistToNearestPsf",
            "psfTraceRadiusDelta",
            "psfApFluxDelta",
            "psfApCorrSigmaScaledDelta",
        ),
        NAN,
    )
    if psf is None:
        return out
    mask, planes = exposure.mask, config.psf_bad_mask_planes
    if stars is not None and selected.any():
        _, _, good = grid_points(mask, planes, config.psf_sampling, exposure.xy0)
        sx = np.asarray(stars["slot_Centroid_x"], np.float64)[selected]
        sy = np.asarray(stars["slot_Centroid_y"], np.float64)[selected]
        out["maxDistToNearestPsf"] = max_distance_to_nearest_psf(
            good, config.psf_sampling, exposure.xy0, sx, sy
        )
    gx, gy, good = grid_points(mask, planes, config.psf_grid_sampling, exposure.xy0)
    ap_radius = max(config.min_psf_ap_radius, 3.0 * psf_sigma)
    out["psfTraceRadiusDelta"], out["psfApFluxDelta"] = psf_image_deltas(
        psf, good, config.psf_grid_sampling, exposure.xy0, ap_radius, config.psf_shape_grid_points
    )
    ap_corr_map = exposure.ap_corr_map
    if ap_corr_map is not None:
        field = ap_corr_map.get(config.psf_ap_corr_field)
        out["psfApCorrSigmaScaledDelta"] = ap_corr_sigma_scaled_delta(field, gx, gy, psf_sigma)
    return out
