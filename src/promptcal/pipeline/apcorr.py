"""Aperture corrections (spec A5): the normalised compensated-tophat calibration flux
and spatial Chebyshev fits of CalibFlux/flux for PsfFlux and GaussianFlux."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from promptcal.core.apcorr_map import ApCorrMap, ChebyshevField, n_params
from promptcal.core.config import Config
from promptcal.core.errors import MeasureApCorrError, NormalizedCalibrationFluxError

log = logging.getLogger(__name__)

NORMALIZED_CALIB = "base_NormalizedCompensatedTophatFlux"


class ApCorrConfig(Config):
    """Aperture-correction measurement."""

    tophat_name: str | None = Field(
        None,
        description="Flux normalised to the aperture flux; None: the measured "
        "compensated tophat (base_CompensatedTophatFlux_<r>).",
    )
    aperture_name: str | None = Field(
        None,
        description="Reference aperture flux; None: the measured circular aperture "
        "(base_CircularApertureFlux_<r>).",
    )
    normalization_min_snr: float = Field(200.0, ge=0, description="Tophat S/N cut [1].")
    fluxes_to_correct: tuple[str, ...] = Field(
        ("base_PsfFlux", "base_GaussianFlux"), description="Fluxes to correct."
    )
    min_snr: float = Field(200.0, ge=0, description="S/N cut of the corrected flux [1].")
    fallback_min_snr: float | None = Field(
        50.0,
        ge=0,
        description="When fewer than 1 + min_degrees_of_freedom PSF stars pass min_snr, use "
        "those above this instead (None: fail as LSST does) [1].",
    )
    order: int = Field(2, ge=0, description="Chebyshev order (triangular) [1].")
    n_iterations: int = Field(4, ge=0, description="Clipping rounds [1].")
    clip_nsigma: float = Field(4.0, gt=0, description="Clip at this × normalised MAD [1].")
    min_degrees_of_freedom: int = Field(1, ge=0, description="N − n_params at least [1].")
    allow_failure: bool = Field(
        False,
        description="When a flux has too few stars, install an identity correction "
        "(1.0) with a warning instead of raising MeasureApCorrError (small cut-outs).",
    )


def _snr(cat, name):
    return np.asarray(cat[f"{name}_instFlux"], float) / np.asarray(
        cat[f"{name}_instFluxErr"], float
    )


def normalize_calib_flux(cat, used: np.ndarray, config: ApCorrConfig, bbox) -> ChebyshevField:
    """Add ``base_NormalizedCompensatedTophatFlux`` and point ``slot_CalibFlux`` at it.

    Returns the fitted (order-0) ratio field aperture/tophat.
    """
    tophat = np.asarray(cat[f"{config.tophat_name}_instFlux"], float)
    aperture = np.asarray(cat[f"{config.aperture_name}_instFlux"], float)
    ratio = aperture / tophat
    good = (
        used & np.isfinite(ratio) & (_snr(cat, config.tophat_name) > config.normalization_min_snr)
    )
    good &= ~np.asarray(cat[f"{config.tophat_name}_flag"], bool)
    if good.sum() >= 1:
        # Median: a few psf stars with undetected neighbours inside 12 px bias a mean.
        value = float(np.median(ratio[good]))
    else:
        fallback = used & np.isfinite(ratio) & (tophat > 0)
        if not fallback.any():
            raise NormalizedCalibrationFluxError(
                "no PSF star has a usable compensated-tophat / aperture flux ratio",
                n_psf_stars=int(used.sum()),
            )
        value = float(np.median(ratio[fallback]))
    cat[f"{NORMALIZED_CALIB}_instFlux"] = tophat * value
    cat[f"{NORMALIZED_CALIB}_instFluxErr"] = np.asarray(
        cat[f"{config.tophat_name}_instFluxErr"], float
    ) * abs(value)
    cat[f"{NORMALIZED_CALIB}_flag"] = np.asarray(cat[f"{config.tophat_name}_flag"], bool)
    cat.set_slot("slot_CalibFlux", NORMALIZED_CALIB)
    return ChebyshevField(np.array([[value]]), bbox)


def measure_ap_corr(cat, used: np.ndarray, config: ApCorrConfig, bbox) -> ApCorrMap:
    """Fit CalibFlux/flux for every flux in ``config.fluxes_to_correct``.

    Raises
    ------
    MeasureApCorrError
        Too few stars for even a constant with ``min_degrees_of_freedom``.
    """
    x = np.asarray(cat["slot_Centroid_x"], float)
    y = np.asarray(cat["slot_Centroid_y"], float)
    calib = np.asarray(cat["slot_CalibFlux_instFlux"], float)
    result = ApCorrMap()
    for name in config.fluxes_to_correct:
        flux = np.asarray(cat[f"{name}_instFlux"], float)
        z = calib / flux
        clean = used & np.isfinite(z)
        clean &= ~np.asarray(cat[f"{name}_flag"], bool) & ~np.asarray(
            cat["slot_CalibFlux_flag"], bool
        )
        good = clean & (_snr(cat, name) > config.min_snr)
        if good.sum() < 1 + config.min_degrees_of_freedom and config.fallback_min_snr is not None:
            # Shallow or small frames may have no PSF star above the LSST cut.
            good = clean & (_snr(cat, name) > config.fallback_min_snr)
        n = int(good.sum())
        order = config.order
        while order >= 0 and n - n_params(order) < config.min_degrees_of_freedom:
            order -= 1
        if order < 0 and config.allow_failure:
            log.warning("aperture correction of %s: only %d stars; using 1.0", name, n)
            result[f"{name}_instFlux"] = ChebyshevField(np.array([[1.0]]), bbox)
            result[f"{name}_instFluxErr"] = ChebyshevField(np.array([[0.0]]), bbox)
            cat[f"apcorr_{name}_used"] = np.zeros(len(cat), bool)
            continue
        if order < 0:
            raise MeasureApCorrError(
                f"Unable to measure aperture correction for '{name}': only {n} sources, "
                f"but require at least {config.min_degrees_of_freedom + 1}.",
                name=name,
                n_sources=n,
                ndof=n - 1,
            )
        xs, ys, zs = x[good], y[good], z[good]
        keep = np.ones(n, bool)
        field = ChebyshevField(np.array([[np.median(zs)]]), bbox)
        for _ in range(config.n_iterations):
            resid = zs - field.evaluate(xs, ys)
            mad = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep])))
            new_keep = np.abs(resid) <= config.clip_nsigma * mad if mad > 0 else keep
            if n_params(order) + config.min_degrees_of_freedom > new_keep.sum():
                break
            keep = new_keep
            field = ChebyshevField.fit(xs[keep], ys[keep], zs[keep], order, bbox)
        resid = zs[keep] - field.evaluate(xs[keep], ys[keep])
        field.coefficients[0, 0] += np.median(resid)
        mad = 1.4826 * np.median(np.abs(resid - np.median(resid)))
        result[f"{name}_instFlux"] = field
        result[f"{name}_instFluxErr"] = ChebyshevField(np.array([[mad]]), bbox)
        cat[f"apcorr_{name}_used"] = np.zeros(len(cat), bool)
        cat[f"apcorr_{name}_used"][np.flatnonzero(good)[keep]] = True
    return result


def apply_ap_corr(cat, ap_corr_map: ApCorrMap, names) -> None:
    """Multiply fluxes by their corrections; adds `_apCorr`, `_apCorrErr` and `_flag_apCorr`."""
    x = np.asarray(cat["slot_Centroid_x"], float)
    y = np.asarray(cat["slot_Centroid_y"], float)
    for name in names:
        key = f"{name}_instFlux"
        if key not in ap_corr_map:
            continue
        corr = ap_corr_map[key].evaluate(x, y)
        corr_err = ap_corr_map[f"{name}_instFluxErr"].evaluate(x, y)
        flux = np.asarray(cat[key], float)
        err = np.asarray(cat[f"{name}_instFluxErr"], float)
        cat[key] = flux * corr
        cat[f"{name}_instFluxErr"] = np.abs(err * corr)
        cat[f"{name}_apCorr"] = corr
        cat[f"{name}_apCorrErr"] = corr_err
        cat[f"{name}_flag_apCorr"] = ~np.isfinite(corr) | (corr <= 0)
