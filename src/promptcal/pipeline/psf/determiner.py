"""PSF star selection (objectSize k-means) and the pixel-basis PSF fit (spec A4.7)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.errors import NonfinitePsfShapeError, NoPsfStarsError
from promptcal.core.exposure import Exposure
from promptcal.core.footprints import Footprints
from promptcal.core.psf_model import PixelPsf, polynomial_terms, stamp_size_for
from promptcal.kernels.psf import registered_stamps
from promptcal.pipeline.measurement import SourceSeeds, boxed_noise

log = logging.getLogger(__name__)

SELECTOR_BAD_FLAGS = (
    "base_PixelFlags_flag_edge",
    "base_PixelFlags_flag_nodata",
    "base_PixelFlags_flag_interpolatedCenter",
    "base_PixelFlags_flag_saturatedCenter",
    "base_PixelFlags_flag_crCenter",
    "base_PixelFlags_flag_bad",
    "base_SdssCentroid_flag",
)


class PsfStarSelectorConfig(Config):
    """Selection of PSF candidates by size (LSST's objectSize star selector); the final star
    catalog is selected by :class:`~promptcal.pipeline.star_phase.StarSelectionConfig`."""

    min_width: float = Field(
        0.5,
        gt=0,
        description="Minimum √((Ixx+Iyy)/2) [px]; LSST uses 0.9, which rejects every star of "
        "an undersampled PSF (FWHM < 2.1 px); CRs are excluded by their mask anyway.",
    )
    max_width: float = Field(10.0, gt=0, description="Maximum √((Ixx+Iyy)/2) [px].")
    min_snr: float = Field(50.0, ge=0, description="Minimum PsfFlux S/N [1].")
    n_clusters: int = Field(4, ge=1, description="k-means clusters on width [1].")
    width_std_allowed: float = Field(0.15, gt=0, description="Width tolerance of the cluster [px].")
    cluster_nsigma: float = Field(2.0, gt=0, description="Clip of the stellar cluster [σ].")
    max_candidates: int = Field(300, ge=1, description="At most this many (brightest) [1].")


class PsfDeterminerConfig(Config):
    """Pixel-basis PSF model with polynomial spatial variation."""

    spatial_order: int = Field(2, ge=0, le=4, description="Polynomial order in x, y [1].")
    stars_per_term: float = Field(
        2.0, gt=0, description="The order is lowered until N_stars ≥ this × n_terms [1]."
    )
    stamp_size: int = Field(
        0, ge=0, description="Model width [px], odd; 0 chooses ±5σ clipped to [15, 41]."
    )
    n_iterations: int = Field(3, ge=1, description="Fit/reject iterations [1].")
    reject_nsigma: float = Field(3.0, gt=0, description="Star rejection on χ² [σ (nMAD)].")
    min_stars: int = Field(1, ge=1, description="Minimum stars to fit a model [1].")


def select_psf_candidates(cat, config: PsfStarSelectorConfig) -> np.ndarray:
    """Boolean mask of PSF candidates (objectSize selector)."""
    xx = np.asarray(cat["slot_Shape_xx"], float)
    yy = np.asarray(cat["slot_Shape_yy"], float)
    width = np.sqrt(0.5 * (xx + yy))
    snr = np.asarray(cat["slot_PsfFlux_instFlux"] / cat["slot_PsfFlux_instFluxErr"], float)
    good = np.isfinite(width) & (width > config.min_width) & (width < config.max_width)
    good &= np.isfinite(snr) & (snr > config.min_snr)
    for flag in SELECTOR_BAD_FLAGS:
        good &= ~np.asarray(cat[flag], bool)
    chosen = np.zeros(len(cat), bool)
    idx = np.flatnonzero(good)
    if idx.size == 0:
        return chosen
    members = _stellar_cluster(width[idx], config)
    idx = idx[members]
    if idx.size > config.max_candidates:
        idx = idx[np.argsort(-snr[idx])[: config.max_candidates]]
    chosen[idx] = True
    return chosen


def _stellar_cluster(width: np.ndarray, config: PsfStarSelectorConfig) -> np.ndarray:
    """k-means (medians) on width; return members of the smallest-width cluster, clipped."""
    mean0 = np.sort(width)[width.size // 10]
    delta = mean0 * config.width_std_allowed * 2.0
    centers = mean0 + delta * np.arange(config.n_clusters)
    assign = np.full(width.size, -1)
    for _ in range(30):
        new_assign = np.argmin(np.abs(width[:, None] - centers[None, :]), axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for k in range(config.n_clusters):
            if np.any(assign == k):
                centers[k] = np.median(width[assign == k])
    cluster = int(
        np.argmin(np.where(np.bincount(assign, minlength=centers.size) > 0, centers, np.inf))
    )
    members = assign == cluster
    for _ in range(3):
        center = np.median(width[members])
        spread = np.std(width[members]) if members.sum() > 1 else 0.0
        distance = np.abs(width - center)
        updated = (distance < config.cluster_nsigma * spread) | (
            distance < config.width_std_allowed
        )
        if np.array_equal(updated, members):
            break
        members = updated
    return members


@dataclass
class PsfFitResult:
    """Outcome of :func:`fit_psf`.

    Attributes
    ----------
    psf : PixelPsf
        The fitted model.
    used : numpy.ndarray
        bool per catalog row: star kept by the final fit.
    order : int
        Spatial order actually used.
    """

    psf: PixelPsf
    used: np.ndarray
    order: int


def fit_psf(
    exposure: Exposure,
    footprints: Footprints,
    seeds: SourceSeeds,
    cat,
    candidates: np.ndarray,
    config: PsfDeterminerConfig,
    sigma_guess: float,
    seed: int,
) -> PsfFitResult:
    """Fit a :class:`PixelPsf` to the candidate stars.

    Raises
    ------
    NoPsfStarsError
        Fewer than ``config.min_stars`` usable candidates.
    NonfinitePsfShapeError
        The model's size is not finite.
    """
    idx = np.flatnonzero(candidates)
    size = config.stamp_size or stamp_size_for(sigma_guess)
    x0, y0 = exposure.xy0
    xc = np.asarray(cat["slot_Centroid_x"], float)[idx] - x0
    yc = np.asarray(cat["slot_Centroid_y"], float)[idx] - y0
    own = (seeds.footprint[idx] + 1).astype(np.int32)
    noise_values, noise_table = boxed_noise(exposure, footprints, seed)
    cutouts = registered_stamps(
        exposure.image, exposure.variance, noise_values, noise_table, footprints.labels,
        own, xc, yc, size, 3,
    )  # fmt: skip
    stamps, variances = cutouts.stamps, cutouts.variances
    flux = np.asarray(cat["slot_ApFlux_instFlux"], float)[idx]
    usable = ~cutouts.off_image & np.isfinite(flux) & (flux > 0)
    usable &= np.all(np.isfinite(variances), axis=(1, 2))
    if usable.sum() < config.min_stars:
        raise NoPsfStarsError(
            f"only {int(usable.sum())} usable PSF stars (need {config.min_stars})",
            n_candidates=int(idx.size),
            n_usable=int(usable.sum()),
        )
    data = stamps / flux[:, None, None]
    weights = flux[:, None, None] ** 2 / np.maximum(variances, 1e-30)
    width = exposure.width / 2.0
    height = exposure.height / 2.0
    center = exposure.center
    active = usable.copy()
    order = 0
    model = None
    for _ in range(config.n_iterations):
        order = _usable_order(int(active.sum()), config)
        model = _solve(
            data[active],
            weights[active],
            xc[active] + x0,
            yc[active] + y0,
            order,
            center,
            (width, height),
            sigma_guess,
        )
        chi2 = _reduced_chi2(model, data, weights, xc + x0, yc + y0)
        live = chi2[active]
        limit = np.median(live) + config.reject_nsigma * 1.4826 * np.median(
            np.abs(live - np.median(live))
        )
        new_active = usable & (chi2 <= max(limit, np.median(live)))
        if new_active.sum() < config.min_stars or np.array_equal(new_active, active):
            break
        active = new_active
    sigma = model.determinant_radius(*center)
    if not np.isfinite(sigma):
        raise NonfinitePsfShapeError(
            "the fitted PSF model has a non-finite size", n_stars=int(active.sum())
        )
    used = np.zeros(len(cat), bool)
    used[idx[active]] = True
    log.debug("PSF fitted to %d of %d candidates, order %d", active.sum(), idx.size, order)
    return PsfFitResult(model, used, order)


def _usable_order(n_stars: int, config: PsfDeterminerConfig) -> int:
    order = config.spatial_order
    while order > 0 and n_stars < config.stars_per_term * len(polynomial_terms(order)):
        order -= 1
    return order


def _solve(data, weights, x, y, order, center, scale, sigma_guess) -> PixelPsf:
    n_stars, size, _ = data.shape
    proto = PixelPsf(
        np.zeros((len(polynomial_terms(order)), size, size)), order, center, scale, sigma_guess
    )
    terms = proto.term_values(x, y)  # (n_terms, n_stars)
    w = weights.reshape(n_stars, -1)
    d = data.reshape(n_stars, -1)
    normal = np.einsum("sp,is,js->pij", w, terms, terms)
    rhs = np.einsum("sp,is,sp->pi", w, terms, d)
    normal += (
        np.eye(terms.shape[0])[None] * 1e-12 * np.trace(normal, axis1=1, axis2=2)[:, None, None]
    )
    coeffs = np.linalg.solve(normal, rhs[..., None])[..., 0]  # (P, n_terms)
    return PixelPsf(coeffs.T.reshape(-1, size, size), order, center, scale, sigma_guess)


def _reduced_chi2(model: PixelPsf, data, weights, x, y) -> np.ndarray:
    terms = model.term_values(x, y)
    predicted = np.tensordot(terms.T, model.coefficients, axes=1)
    resid = (data - predicted) ** 2 * weights
    return resid.reshape(resid.shape[0], -1).mean(axis=1)
