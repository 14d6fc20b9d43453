"""Single-frame measurement (spec A4.6): pixel flags, centroid, adaptive moments,
aperture, Gaussian, PSF and compensated-tophat fluxes, with neighbours replaced by noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from promptcal.core.catalog import SourceCatalog
from promptcal.core.config import Config
from promptcal.core.exposure import Exposure
from promptcal.core.footprints import Footprints
from promptcal.kernels import fluxes as fk
from promptcal.kernels import measure as mk
from promptcal.kernels import noise as nk
from promptcal.kernels.centroid import (
    CENTROID_EDGE,
    CENTROID_NO_CONVERGENCE,
    CENTROID_NOT_AT_MAXIMUM,
)

PIXEL_FLAG_PLANES = {
    "edge": "EDGE",
    "interpolated": "INTRP",
    "saturated": "SAT",
    "cr": "CR",
    "bad": "BAD",
    "suspect": "SUSPECT",
    "nodata": "NO_DATA",
}
CENTER_FLAG_PLANES = ("edge", "interpolated", "saturated", "cr", "suspect", "nodata")


class MeasurementConfig(Config):
    """Configuration of the measurement plugins."""

    aperture_radius: float = Field(12.0, gt=0, description="CircularApertureFlux radius [px].")
    tophat_radius: float = Field(12.0, gt=0, description="CompensatedTophat inner radius [px].")
    tophat_outer_factor: float = Field(
        1.7, gt=1, description="Compensated-tophat outer radius / inner radius [1]."
    )
    centroid_max_iterations: int = Field(20, ge=1, description="Centroid iterations [1].")
    shape_max_iterations: int = Field(100, ge=1, description="Adaptive-moment iterations [1].")
    shape_tolerance: float = Field(1e-6, gt=0, description="Adaptive-moment convergence [1].")
    do_replace_neighbours_with_noise: bool = Field(
        True, description="Replace other footprints' pixels by noise while measuring."
    )


@dataclass
class SourceSeeds:
    """Where to measure: one entry per source.

    Attributes
    ----------
    footprint : numpy.ndarray
        int64 footprint index of each source.
    x, y : numpy.ndarray
        float64 starting array positions (peaks) [px].
    """

    footprint: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def brightest_peaks(cls, footprints: Footprints) -> SourceSeeds:
        """One source per footprint, at its brightest peak."""
        first = footprints.first_peak_index()
        valid = first >= 0
        idx = first[valid]
        return cls(
            np.flatnonzero(valid).astype(np.int64),
            footprints.peak_x[idx].astype(np.float64),
            footprints.peak_y[idx].astype(np.float64),
        )


def background_noise_sigma(exposure: Exposure) -> float:
    """Robust σ of undetected, valid pixels [image unit] (sub-sampled for speed)."""
    bad = exposure.mask.bit("DETECTED", "DETECTED_NEGATIVE", "NO_DATA", "BAD", "SAT", "EDGE")
    # A sparse prime stride keeps ~0.5M samples on a 4k×4k image and avoids aliasing.
    stride = max(1, exposure.image.size // 500_000) | 1
    values, has_nan = nk.unmasked_samples(exposure.image, exposure.mask.array, stride, bad)
    if values.size < 10:
        return float(np.sqrt(np.median(exposure.variance[np.isfinite(exposure.variance)])))
    med = _median(values, has_nan)
    mad = _median(np.abs(values - med), has_nan)
    return float(1.4826 * mad)


def _median(values: np.ndarray, has_nan: bool):
    """``np.median(values)`` of a float32 array, exactly, without partitioning it all."""
    if has_nan:
        return np.median(values)
    a, b = nk.middle_values(values)
    # np.median averages the two middle values with np.mean, in the array's dtype.
    return np.mean(np.array([a, b], values.dtype)) if values.size % 2 == 0 else values.dtype.type(a)


def boxed_noise(
    exposure: Exposure, footprints: Footprints, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Noise [image unit] that stands in for footprint pixels, per footprint box.

    Cached per footprint set and seed: the PSF phase measures and fits the same
    footprints several times, and one noise realisation keeps those passes
    consistent and cheap. Returns the values and their table
    (:func:`promptcal.kernels.noise.footprint_noise_boxes`).
    """
    cache = footprints.__dict__.setdefault("_noise_cache", {})
    if seed not in cache:
        sigma = background_noise_sigma(exposure)
        cache[seed] = nk.footprint_noise_boxes(
            footprints.labels, footprints.bbox, sigma, seed & 0x7FFFFFFF
        )
    return cache[seed]


# Long: one pass over every source in LSST's plugin order, most of it the numpydoc
# docstring and the column bookkeeping of each plugin; split, the order would scatter.
def measure_sources(
    exposure: Exposure,
    footprints: Footprints,
    seeds: SourceSeeds,
    psf,
    config: MeasurementConfig,
    *,
    ids: np.ndarray,
    seed: int,
    for_psf_fit: bool = False,
) -> SourceCatalog:
    """Measure every seed source on ``exposure`` (background-subtracted, counts).

    Parameters
    ----------
    exposure : Exposure
        The pixels; unchanged.
    footprints : Footprints
        Footprints the seeds belong to (their pixels are noise-replaced for others).
    seeds : SourceSeeds
        Sources to measure.
    psf : PsfModel
        Current PSF model (centroid weight, PsfFlux).
    config : MeasurementConfig
        Plugin settings.
    ids : numpy.ndarray
        int64 source ids.
    seed : int
        Seed of the noise replacer.
    for_psf_fit : bool
        Only the columns that the PSF star selection and fit read (centroid, shape,
        PsfFlux, the circular aperture, pixel flags): the Gaussian and
        compensated-tophat fluxes are left out, which saves the widest aperture.
        Every column that is made has the values of a full measurement.

    Returns
    -------
    SourceCatalog
        LSST-named columns in parent pixel coordinates.
    """
    image, variance, mask = exposure.image, exposure.variance, exposure.mask
    labels = footprints.labels
    own = (seeds.footprint + 1).astype(np.int32)
    if config.do_replace_neighbours_with_noise and footprints.n > 1:
        noise, table = boxed_noise(exposure, footprints, seed)
    else:
        noise, table = nk.flat(image), nk.plane_table(image)
    x0, y0 = exposure.xy0
    cx, cy = exposure.center
    sigma = psf.determinant_radius(cx, cy)
    r_in = config.tophat_radius
    r_out = r_in * config.tophat_outer_factor
    radii = np.array([config.aperture_radius, r_in, r_out], np.float64)
    if for_psf_fit:
        radii = radii[:1]
    core = mk.measure_core(
        image, variance, noise, table, labels, own, seeds.x, seeds.y, sigma, radii,
        config.centroid_max_iterations, config.shape_max_iterations, config.shape_tolerance,
        gaussian=not for_psf_fit,
    )  # fmt: skip
    xc, yc, xe, ye = core.centroid
    ixx, iyy, ixy = core.shape
    cflags, sflags = core.centroid_flags, core.shape_flags
    ap_flux, ap_err, ap_trunc = core.ap_flux, core.ap_err, core.ap_truncated
    g_flux, g_err = core.gaussian
    stamps, sx0, sy0 = psf.stamps(xc + x0, yc + y0, exposure.xy0)
    psf_fluxes = fk.boxed_psf_fluxes(image, variance, noise, table, labels, own, stamps, sx0, sy0)
    bbox = footprints.bbox[seeds.footprint]
    fp_bits, c_bits = fk.mask_or(mask.array, labels, own, bbox, xc, yc)

    cat = SourceCatalog()
    cat["id"] = np.asarray(ids, np.int64)
    cat["parent"] = np.zeros(len(ids), np.int64)
    cat["base_SdssCentroid_x"] = xc + x0
    cat["base_SdssCentroid_y"] = yc + y0
    cat["base_SdssCentroid_xErr"] = xe
    cat["base_SdssCentroid_yErr"] = ye
    cat["base_SdssCentroid_flag"] = cflags != 0
    cat["base_SdssCentroid_flag_edge"] = (cflags & CENTROID_EDGE) != 0
    cat["base_SdssCentroid_flag_notAtMaximum"] = (cflags & CENTROID_NOT_AT_MAXIMUM) != 0
    cat["base_SdssCentroid_flag_noConvergence"] = (cflags & CENTROID_NO_CONVERGENCE) != 0
    cat["base_Peak_x"] = seeds.x + x0
    cat["base_Peak_y"] = seeds.y + y0
    for suffix, values in (("xx", ixx), ("yy", iyy), ("xy", ixy)):
        cat[f"ext_shapeHSM_HsmSourceMoments_{suffix}"] = values
    cat["ext_shapeHSM_HsmSourceMoments_flag"] = (sflags & (mk.SHAPE_FAILED)) != 0
    cat["ext_shapeHSM_HsmSourceMoments_flag_no_convergence"] = (
        sflags & mk.SHAPE_NO_CONVERGENCE
    ) != 0
    ap_name, tophat_name = flux_names(config)
    cat.set_slot("slot_ApFlux", ap_name)
    cat.set_slot("slot_CalibFlux", ap_name)
    _flux_columns(cat, ap_name, ap_flux[:, 0], ap_err[:, 0], ap_trunc[:, 0])
    cat[f"{ap_name}_flag_apertureTruncated"] = ap_trunc[:, 0]
    if not for_psf_fit:
        _flux_columns(cat, "base_GaussianFlux", g_flux, g_err, ~np.isfinite(g_flux))
    psf_bad = psf_fluxes.truncated | ~np.isfinite(psf_fluxes.flux) | (cflags != 0)
    _flux_columns(cat, "base_PsfFlux", psf_fluxes.flux, psf_fluxes.flux_err, psf_bad)
    cat["base_PsfFlux_flag_edge"] = psf_fluxes.truncated
    if not for_psf_fit:
        _tophat_columns(cat, tophat_name, config, ap_flux, ap_err, ap_trunc)
    for flag, plane in PIXEL_FLAG_PLANES.items():
        bit = mask.bit(plane)
        cat[f"base_PixelFlags_flag_{flag}"] = (fp_bits & bit) != 0
        if flag in CENTER_FLAG_PLANES:
            cat[f"base_PixelFlags_flag_{flag}Center"] = (c_bits & bit) != 0
    height, width = image.shape
    cat["base_PixelFlags_flag_offimage"] = (
        (xc < -0.5) | (yc < -0.5) | (xc > width - 0.5) | (yc > height - 0.5)
    )
    return cat


def flux_names(config: MeasurementConfig) -> tuple[str, str]:
    """Column prefixes of the circular aperture and the compensated tophat (LSST names)."""
    aperture = f"base_CircularApertureFlux_{config.aperture_radius:.1f}".replace(".", "_")
    tophat = f"base_CompensatedTophatFlux_{round(config.tophat_radius)}"
    return aperture, tophat


def _tophat_columns(cat, name, config: MeasurementConfig, ap_flux, ap_err, ap_trunc) -> None:
    """The compensated tophat from apertures 1 (inner) and 2 (outer) [image unit]."""
    scale = 1.0 / (config.tophat_outer_factor**2 - 1.0)
    tophat = ap_flux[:, 1] - (ap_flux[:, 2] - ap_flux[:, 1]) * scale
    # tophat = A_in − scale × A_annulus, and the two sums are independent.
    with np.errstate(invalid="ignore"):  # inf − inf where NO_DATA pixels are summed
        annulus_var = np.maximum(ap_err[:, 2] ** 2 - ap_err[:, 1] ** 2, 0)
    tophat_err = np.sqrt(ap_err[:, 1] ** 2 + annulus_var * scale**2)
    _flux_columns(cat, name, tophat, tophat_err, ap_trunc[:, 2])


def _flux_columns(cat, name, flux, err, flag) -> None:
    cat[f"{name}_instFlux"] = flux
    cat[f"{name}_instFluxErr"] = err
    cat[f"{name}_flag"] = np.asarray(flag, bool) | ~np.isfinite(flux)
