"""The star phase of CalibrateImageTask (spec A8–A9): deeper detection, sky sources, deblending,
measurement (PSF shapes, extendedness), aperture corrections, selection, psf_stars ↔ stars."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from promptcal.core.background_model import BackgroundList
from promptcal.core.catalog import SourceCatalog
from promptcal.core.config import Config
from promptcal.core.errors import NoPsfStarsToStarsMatchError
from promptcal.core.exposure import Exposure
from promptcal.core.footprints import Footprints
from promptcal.core.ids import IdGenerator
from promptcal.kernels.components import label_bboxes
from promptcal.pipeline.apcorr import NORMALIZED_CALIB, ApCorrConfig, apply_ap_corr
from promptcal.pipeline.background import BackgroundConfig, subtract_background
from promptcal.pipeline.detect.deblend import DeblendConfig, deblend
from promptcal.pipeline.detect.detection import (
    DetectionConfig,
    SmoothedVarianceCache,
    detect_footprints,
    smooth_for_detection,
)
from promptcal.pipeline.detect.sky_sources import (
    SkySourcesConfig,
    paint_sky_footprints,
    place_sky_sources,
)
from promptcal.pipeline.measurement import MeasurementConfig, SourceSeeds, measure_sources
from promptcal.pipeline.psf.phase import StageTimer

log = logging.getLogger(__name__)

#: Flags copied from psf_stars onto their matched stars.
PSF_FLAGS_TO_COPY = (
    "calib_psf_candidate",
    "calib_psf_used",
    "calib_psf_reserved",
    "calib_astrometry_used",
    "apcorr_slot_CalibFlux_used",
    "apcorr_base_GaussianFlux_used",
    "apcorr_base_PsfFlux_used",
)


class StarSelectionConfig(Config):
    """Selection of the output star catalog (spec A8, widened; see docs/architecture.md)."""

    max_extendedness: float = Field(0.1, ge=0, description="Unresolved if below this [1].")
    min_snr: float = Field(10.0, ge=0, description="Minimum S/N of slot_CalibFlux [1].")
    min_psf_snr: float | None = Field(
        15.0,
        ge=0,
        description="A source also passes the S/N cut when S/N(PsfFlux) exceeds this: the "
        "12-px compensated tophat has ~4× the noise of the PSF fit, so CalibFlux alone "
        "drops most stars with S/N < 40. None restores LSST's CalibFlux-only cut [1].",
    )
    max_shape_deviation: float | None = Field(
        0.05,
        ge=0,
        description="Reject sources whose ellipticity differs from the PSF's by more than "
        "max(this, shape_deviation_snr_scale / S/N): unresolved pairs are elongated but not "
        "much larger. None disables [1].",
    )
    shape_deviation_snr_scale: float = Field(
        7.0, ge=0, description="Noise allowance of the ellipticity test (≈3.5σ) [1]."
    )
    size_snr_scale: float | None = Field(
        6.0,
        ge=0,
        description="Also unresolved when T − T_PSF < this × T_PSF / S/N(PsfFlux) (≈3σ of "
        "the trace T = Ixx + Iyy): the size test without noise rejects faint stars. "
        "None restores the extendedness-only test [1].",
    )
    bad_flags: tuple[str, ...] = Field(
        (
            "base_PixelFlags_flag_edgeCenter",
            "base_PixelFlags_flag_nodata",
            "base_PixelFlags_flag_saturated",
            "base_PsfFlux_flag",
        ),
        description="Sources with any of these flags are rejected.",
    )


class DownsampleConfig(Config):
    """Random downsampling of the footprints to measure (AP uses it)."""

    do_downsample: bool = Field(False, description="Keep at most max_footprints footprints.")
    max_footprints: int = Field(1000, ge=1, description="Footprints kept [1].")


class StarPhaseConfig(Config):
    """The star phase's part of :class:`~promptcal.pipeline.config.CalibrateImageConfig`
    (built by its ``star_phase_config()``; the fields are documented there)."""

    psf_redetect_tolerance: float = Field(description="Reuse the PSF-phase σ within this [1].")
    detection: DetectionConfig
    background: BackgroundConfig
    sky_sources: SkySourcesConfig
    downsample: DownsampleConfig
    deblend: DeblendConfig
    measurement: MeasurementConfig
    ap_corr: ApCorrConfig = Field(description="With its flux names resolved.")
    star_selection: StarSelectionConfig


@dataclass
class StarPhaseResult:
    """Outputs of :func:`find_stars`.

    Attributes
    ----------
    stars : SourceCatalog
        Selected stars plus sky sources.
    footprints : Footprints
        Footprints of the selected stars (labels ``i + 1`` for row ``i``).
    sources : SourceCatalog
        Every measured source before selection (for the astrometric refit).
    """

    stars: SourceCatalog
    footprints: Footprints
    sources: SourceCatalog


def psf_shape_columns(cat: SourceCatalog, psf, bbox, grid: int = 5) -> None:
    """Add ``ext_shapeHSM_HsmPsfMoments_xx/yy/xy`` from the PSF model.

    The PSF's moments are evaluated on a ``grid`` × ``grid`` lattice and interpolated
    linearly: they vary slowly, and per-source evaluation would dominate the phase.
    """
    from scipy.interpolate import RegularGridInterpolator  # deferred: DEFERRED_IMPORTS

    x_min, y_min, x_max, y_max = bbox
    gx = np.linspace(x_min, x_max, grid)
    gy = np.linspace(y_min, y_max, grid)
    values = np.array([[psf.shape(x, y) for x in gx] for y in gy])  # (gy, gx, 3)
    x = np.clip(np.asarray(cat["slot_Centroid_x"], float), x_min, x_max)
    y = np.clip(np.asarray(cat["slot_Centroid_y"], float), y_min, y_max)
    for k, suffix in enumerate(("xx", "yy", "xy")):
        interp = RegularGridInterpolator((gy, gx), values[:, :, k])
        cat[f"ext_shapeHSM_HsmPsfMoments_{suffix}"] = interp(np.column_stack([y, x]))
    cat["ext_shapeHSM_HsmPsfMoments_flag"] = np.zeros(len(cat), bool)


def extendedness(cat: SourceCatalog) -> None:
    """ClassificationSizeExtendedness: 1 − exp(−χ²/2), χ² = ((T − T_psf)/√T_psf)²."""
    t_obj = np.asarray(cat["slot_Shape_xx"], float) + np.asarray(cat["slot_Shape_yy"], float)
    t_psf = np.asarray(cat["slot_PsfShape_xx"], float) + np.asarray(cat["slot_PsfShape_yy"], float)
    chi2 = ((t_obj - t_psf) / np.sqrt(t_psf)) ** 2
    value = 1.0 - np.exp(-0.5 * chi2)
    cat["base_ClassificationSizeExtendedness_value"] = value
    cat["base_ClassificationSizeExtendedness_flag"] = ~np.isfinite(value)


def select_stars(cat: SourceCatalog, config: StarSelectionConfig) -> np.ndarray:
    """Unresolved, clean, S/N(CalibFlux) > min_snr — or sky sources (strict comparisons)."""
    good = np.ones(len(cat), bool)
    for flag in config.bad_flags:
        good &= ~np.asarray(cat[flag], bool)
    ext = np.asarray(cat["base_ClassificationSizeExtendedness_value"], float)
    unresolved = ext < config.max_extendedness
    snr = np.asarray(cat["slot_CalibFlux_instFlux"], float) / np.asarray(
        cat["slot_CalibFlux_instFluxErr"], float
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        psf_snr = np.asarray(cat["slot_PsfFlux_instFlux"], float) / np.asarray(
            cat["slot_PsfFlux_instFluxErr"], float
        )
    if config.size_snr_scale is not None:
        t_obj = np.asarray(cat["slot_Shape_xx"], float) + np.asarray(cat["slot_Shape_yy"], float)
        t_psf = np.asarray(cat["slot_PsfShape_xx"], float) + np.asarray(
            cat["slot_PsfShape_yy"], float
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            unresolved |= t_obj - t_psf < config.size_snr_scale * t_psf / np.abs(psf_snr)
    good &= unresolved
    bright = snr > config.min_snr
    if config.min_psf_snr is not None:
        bright |= psf_snr > config.min_psf_snr
    good &= bright
    if config.max_shape_deviation is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = config.shape_deviation_snr_scale / np.abs(psf_snr)
            good &= shape_deviation(cat) <= np.maximum(config.max_shape_deviation, noise)
    return good | np.asarray(cat["sky_source"], bool)


def _ellipticity(xx, yy, xy):
    trace = xx + yy
    return (xx - yy) / trace, 2.0 * xy / trace


def shape_deviation(cat: SourceCatalog) -> np.ndarray:
    """|e_source − e_PSF| from the adaptive moments of the source and the PSF model [1]."""
    e1, e2 = _ellipticity(*(np.asarray(cat[f"slot_Shape_{k}"], float) for k in ("xx", "yy", "xy")))
    p1, p2 = _ellipticity(
        *(np.asarray(cat[f"slot_PsfShape_{k}"], float) for k in ("xx", "yy", "xy"))
    )
    return np.hypot(e1 - p1, e2 - p2)


def _downsample(footprints: Footprints, config: DownsampleConfig, n_sky: int, seed: int):
    if not config.do_downsample or footprints.n <= config.max_footprints:
        return footprints
    rng = np.random.default_rng(seed & 0xFFFFFFFF)
    keep = np.sort(rng.choice(footprints.n, config.max_footprints, replace=False))
    log.info(
        "Downsampling from %d to %d non-sky-source footprints.",
        footprints.n + n_sky,
        keep.size + n_sky,
    )
    return footprints.subset(keep)


# Long: the star phase in LSST's order (detect, sky sources, deblend, measure, correct,
# select), a third of it the docstring; one place to read the sequence.
def find_stars(
    exposure: Exposure,
    background: BackgroundList,
    id_generator: IdGenerator,
    first_id: int,
    config: StarPhaseConfig,
    timer: StageTimer,
    *,
    psf_detection_sigma: float | None = None,
    variance_cache: SmoothedVarianceCache | None = None,
) -> StarPhaseResult:
    """Detect, deblend and measure the star catalog (spec A8).

    Parameters
    ----------
    exposure : Exposure
        After the PSF phase and aperture corrections (PSF and ap-corr map attached).
    background : BackgroundList
        Appended to when the background is re-estimated.
    id_generator : IdGenerator
        Source ids (from ``first_id``) and noise seeds.
    config : StarPhaseConfig
        The phase's configuration.
    timer : StageTimer
        Records ``star_detection`` and ``star_measurement``.
    psf_detection_sigma : float, optional
        Smoothing σ of the PSF phase's last detection [px].
    variance_cache : SmoothedVarianceCache, optional
        The run's smoothed-variance cache.
    """
    psf = exposure.psf
    sigma = psf.determinant_radius(*exposure.center)
    # A matched filter is flat near its optimum: within the re-detection tolerance the
    # PSF phase's smoothing width loses < 1% S/N and its smoothed variance is reused.
    smoothing_sigma = psf_detection_sigma if psf_detection_sigma is not None else sigma
    if abs(sigma / smoothing_sigma - 1.0) > config.psf_redetect_tolerance:
        smoothing_sigma = sigma
    with timer("star_detection"):
        smoothed = smooth_for_detection(exposure, smoothing_sigma, variance_cache)
        detected = detect_footprints(exposure, sigma, config.detection, smoothed=smoothed)
        if config.detection.do_re_estimate_background:
            background.append(subtract_background(exposure, config.background))
        sky = place_sky_sources(exposure, config.sky_sources, id_generator.catalog_seed)
        footprints = _downsample(
            detected.positive, config.downsample, len(sky), exposure.visit_info.exposure_id
        )
        blends = deblend(footprints, smoothed[0], smoothed[1], sigma, config.deblend)
        labels = blends.labels
        n_objects = blends.x.size
        paint_sky_footprints(labels, sky, config.sky_sources.radius, n_objects + 1)
    n = n_objects + len(sky)
    bbox = label_bboxes(labels, n)
    empty = np.zeros(0, np.int64)
    source_footprints = Footprints(
        labels, bbox, empty, empty, empty, empty.astype(float), empty.astype(float), exposure.xy0
    )
    seeds = SourceSeeds(
        np.arange(n, dtype=np.int64),
        np.concatenate([blends.x, sky[:, 0].astype(float)]),
        np.concatenate([blends.y, sky[:, 1].astype(float)]),
    )
    ids = id_generator.source_ids(n + footprints.n, start=first_id)
    with timer("star_measurement"):
        cat = measure_sources(
            exposure,
            source_footprints,
            seeds,
            psf,
            config.measurement,
            ids=ids[:n],
            seed=id_generator.catalog_seed + 2000,
        )
        parent_ids = ids[n:][blends.parent]
        cat["parent"][:n_objects] = np.where(blends.n_child > 0, parent_ids, 0)
        cat["deblend_nChild"] = np.zeros(n, np.int64)
        cat["deblend_parentNChild"] = np.concatenate([blends.n_child, np.zeros(len(sky), int)])
        cat["sky_source"] = np.arange(n) >= n_objects
        cat["detect_isPrimary"] = np.ones(n, bool)
        psf_shape_columns(cat, psf, exposure.bbox)
        extendedness(cat)
        apply_calibration_normalization(cat, exposure.ap_corr_map, config.ap_corr.tophat_name)
        apply_ap_corr(cat, exposure.ap_corr_map, config.ap_corr.fluxes_to_correct)
    selected = select_stars(cat, config.star_selection)
    keep = np.flatnonzero(selected)
    stars = cat[keep]
    stars.meta["slots"] = dict(cat.meta["slots"])
    log.info("Star phase: %d sources (%d sky), %d selected", n, len(sky), keep.size)
    return StarPhaseResult(stars, source_footprints.subset(keep), cat)


def apply_calibration_normalization(cat: SourceCatalog, ap_corr_map, tophat_name: str) -> None:
    """Add the normalised compensated-tophat flux and point slot_CalibFlux at it."""
    ratio = ap_corr_map[f"{tophat_name}_instFlux"].evaluate(
        np.asarray(cat["slot_Centroid_x"], float), np.asarray(cat["slot_Centroid_y"], float)
    )
    cat[f"{NORMALIZED_CALIB}_instFlux"] = np.asarray(cat[f"{tophat_name}_instFlux"], float) * ratio
    cat[f"{NORMALIZED_CALIB}_instFluxErr"] = (
        np.asarray(cat[f"{tophat_name}_instFluxErr"], float) * ratio
    )
    cat[f"{NORMALIZED_CALIB}_flag"] = np.asarray(cat[f"{tophat_name}_flag"], bool)
    cat.set_slot("slot_CalibFlux", NORMALIZED_CALIB)


def renormalize_calib_flux(stars: SourceCatalog, ap_corr_config) -> float | None:
    """Re-derive the aperture/tophat normalisation from the star-phase PSF stars.

    The PSF phase replaces only ≥10σ neighbours by noise, so fainter neighbours
    contaminate its tophat annulus more than the star phase's (5σ) measurement; a ratio
    taken there over-scales the star catalog's CalibFlux by 1–4% in dense fields. The
    same PSF stars measured in the star phase give the consistent ratio. Returns it, or
    None (PSF-phase ratio kept) when no PSF star is bright enough.
    """
    tophat, aperture = ap_corr_config.tophat_name, ap_corr_config.aperture_name
    used = np.asarray(stars["calib_psf_used"], bool) & ~np.asarray(stars["sky_source"], bool)
    flux = np.asarray(stars[f"{tophat}_instFlux"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(stars[f"{aperture}_instFlux"], float) / flux
        snr = flux / np.asarray(stars[f"{tophat}_instFluxErr"], float)
    good = used & np.isfinite(ratio) & ~np.asarray(stars[f"{tophat}_flag"], bool)
    for limit in (ap_corr_config.normalization_min_snr, ap_corr_config.fallback_min_snr):
        if limit is not None and np.count_nonzero(good & (snr > limit)) >= 1:
            value = float(np.median(ratio[good & (snr > limit)]))
            break
    else:
        return None
    stars[f"{NORMALIZED_CALIB}_instFlux"] = flux * value
    stars[f"{NORMALIZED_CALIB}_instFluxErr"] = (
        np.asarray(stars[f"{tophat}_instFluxErr"], float) * value
    )
    return value


def match_psf_stars(psf_stars: SourceCatalog, stars: SourceCatalog, radius: float) -> None:
    """Copy PSF-phase flags onto the closest star within ``radius`` [px] (spec A9).

    Raises
    ------
    NoPsfStarsToStarsMatchError
        When no PSF star has a counterpart.
    """
    n_psf, n_stars = len(psf_stars), len(stars)
    eligible = np.ones(n_stars, bool)
    if "deblend_nChild" in stars.colnames:
        eligible &= np.asarray(stars["deblend_nChild"]) == 0
    if "sky_source" in stars.colnames:
        eligible &= ~np.asarray(stars["sky_source"], bool)
    star_xy = np.column_stack(
        [np.asarray(stars["slot_Centroid_x"], float), np.asarray(stars["slot_Centroid_y"], float)]
    )
    psf_xy = np.column_stack(
        [
            np.asarray(psf_stars["slot_Centroid_x"], float),
            np.asarray(psf_stars["slot_Centroid_y"], float),
        ]
    )
    for flag in PSF_FLAGS_TO_COPY:
        stars[flag] = np.zeros(n_stars, bool)
    stars["psf_id"] = np.zeros(n_stars, np.int64)
    stars["psf_max_value"] = np.full(n_stars, np.nan)
    idx = np.flatnonzero(eligible)
    if idx.size == 0 or n_psf == 0:
        raise NoPsfStarsToStarsMatchError(n_psf, n_stars)
    from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

    tree = cKDTree(star_xy[idx])
    distance, nearest = tree.query(psf_xy, k=1, distance_upper_bound=radius)
    matched = np.isfinite(distance)
    if not matched.any():
        raise NoPsfStarsToStarsMatchError(n_psf, n_stars)
    target = idx[nearest[matched]]
    source = np.flatnonzero(matched)
    for flag in PSF_FLAGS_TO_COPY:
        if psf_stars.has(flag):
            stars[flag][target] = np.asarray(psf_stars[flag], bool)[source]
    stars["psf_id"][target] = np.asarray(psf_stars["id"], np.int64)[source]
    if "psf_max_value" in psf_stars.colnames:
        stars["psf_max_value"][target] = np.asarray(psf_stars["psf_max_value"], float)[source]
