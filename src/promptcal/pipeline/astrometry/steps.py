"""Astrometry steps of CalibrateImageTask (spec A6): source selection, the fit on the
PSF stars and the refit on the deeper star-phase sources."""

from __future__ import annotations

import logging

import numpy as np

from promptcal.core.catalog import SourceCatalog
from promptcal.core.errors import AstrometryError
from promptcal.pipeline.astrometry.fitter import AstrometryConfig, fit_astrometry
from promptcal.pipeline.matches import denormalized_matches, set_coordinates

log = logging.getLogger(__name__)

ASTROMETRY_BAD_FLAGS = (
    "base_PixelFlags_flag_edge",
    "base_PixelFlags_flag_nodata",
    "base_PixelFlags_flag_interpolatedCenter",
    "base_PixelFlags_flag_saturated",
    "base_SdssCentroid_flag",
)


#: The refit keeps sources whose footprint touches the border band if the centroid is
#: good: in crowded fields many blended children do, and their positions are fine.
REFIT_BAD_FLAGS = tuple(f for f in ASTROMETRY_BAD_FLAGS if f != "base_PixelFlags_flag_edge")


def astrometric_sources(
    psf_stars: SourceCatalog, min_snr: float, bad_flags=ASTROMETRY_BAD_FLAGS
) -> np.ndarray:
    """Spec A6 selection: S/N(PsfFlux) > min_snr, clean, centroid errors < 3 px."""
    snr = np.asarray(psf_stars["slot_PsfFlux_instFlux"], float) / np.asarray(
        psf_stars["slot_PsfFlux_instFluxErr"], float
    )
    good = np.isfinite(snr) & (snr > min_snr)
    for flag in bad_flags:
        good &= ~np.asarray(psf_stars[flag], bool)
    for err in ("slot_Centroid_xErr", "slot_Centroid_yErr"):
        value = np.asarray(psf_stars[err], float)
        good &= np.isfinite(value) & (value < 3.0)
    return good


def blind_brightness(catalog) -> np.ndarray:
    """Brightness ranking the sources of a blind solve [count]: the aperture flux where
    measured (saturation clips it far less than the PSF flux, so saturated stars stay at
    the top of the list), else the PSF flux.

    Parameters
    ----------
    catalog : promptcal.core.catalog.SourceCatalog
        Measured sources with ``slot_PsfFlux`` and, if measured, ``slot_ApFlux``.
    """
    psf = np.asarray(catalog["slot_PsfFlux_instFlux"], float)
    if not catalog.has("slot_ApFlux_instFlux"):
        return psf
    aperture = np.asarray(catalog["slot_ApFlux_instFlux"], float)
    return np.where(np.isfinite(aperture), aperture, psf)


#: A frame without a WCS is solved blind; on bright-only refcats (small telescopes) the
#: reference stars are the saturated ones, whose flat cores also set the centroid flag.
#: Their centroids are good to a pixel, well within the blind solver's match radius.
BLIND_BAD_FLAGS = tuple(
    f
    for f in REFIT_BAD_FLAGS
    if f not in ("base_PixelFlags_flag_saturated", "base_SdssCentroid_flag")
)


def refit_wcs_on_sources(config: AstrometryConfig, exposure, sources, refs, ref_flux):
    """Refit the WCS on the deeper star-phase sources, starting from the current WCS.

    LSST fits on the PSF stars only (≥50σ peaks); the star phase has several times more
    sources, which tightens the solution and lets sparse or shallow frames reach
    enough matches. When clean sources give fewer than
    ``config.saturated_fallback_matches`` matches (bright-only refcats on small
    telescopes), saturated stars are admitted too. Returns ``(fit, selected)``, or None
    when no refit succeeds (the PSF-star WCS stays).
    """
    best = _refit(config, exposure, sources, refs, ref_flux, REFIT_BAD_FLAGS, {})
    n_best = 0 if best is None else len(best[0].matches)
    if n_best < config.saturated_fallback_matches:
        # Saturated cores are flat, so their centroid flag is set too; their positions
        # are still good to a pixel or two, which is what such frames need.
        relaxed = ("base_PixelFlags_flag_saturated", "base_SdssCentroid_flag")
        flags = tuple(f for f in REFIT_BAD_FLAGS if f not in relaxed)
        # Their fluxes are clipped, so magnitude-outlier rejection would drop them all.
        no_mag = {"do_magnitude_outlier_rejection": False}
        fallback = _refit(config, exposure, sources, refs, ref_flux, flags, no_mag)
        if fallback is not None and len(fallback[0].matches) > n_best:
            log.info("astrometric refit admits saturated stars (%d matches)", n_best)
            best = fallback
    return best


def _refit(config: AstrometryConfig, exposure, sources, refs, ref_flux, bad_flags, overrides):
    good = astrometric_sources(sources, config.refit_min_snr, bad_flags)
    if "sky_source" in sources.colnames:
        good &= ~np.asarray(sources["sky_source"], bool)
    selected = np.flatnonzero(good)
    if selected.size < 3:
        return None
    cols = ["slot_Centroid_x", "slot_Centroid_y", "slot_PsfFlux_instFlux"]
    x, y, flux = (np.asarray(sources[c], float)[selected] for c in cols)
    try:
        return fit_astrometry(
            x,
            y,
            flux,
            np.asarray(sources["slot_Centroid_xErr"], float)[selected],
            np.asarray(sources["slot_Centroid_yErr"], float)[selected],
            np.asarray(refs["ra"], float),
            np.asarray(refs["dec"], float),
            np.asarray(refs[ref_flux], float),
            initial_wcs=exposure.wcs,
            bbox=exposure.bbox,
            config=config.model_copy(
                update={"do_recovery": False, "trusted_wcs_tolerance_px": 2.0, **overrides}
            ),
        ), selected
    except AstrometryError as error:
        log.warning("astrometric refit on %d sources failed: %s", selected.size, error)
        return None


def _n_saturated_left_out(catalog, selected: np.ndarray) -> int:
    """Saturated sources of ``catalog`` that are not among the ``selected`` rows."""
    saturated = np.asarray(catalog["base_PixelFlags_flag_saturated"], bool).copy()
    saturated[selected] = False
    return int(saturated.sum())


def fit_wcs(config: AstrometryConfig, exposure, psf_stars, refs, ref_flux, hint):
    """Fit the WCS on ``psf_stars`` (spec A6); updates the exposure and the catalog.

    Returns
    -------
    AstrometryResult, astropy.table.Table
        The fit and the denormalized astrometry matches (``ref_*``, ``src_*``).
    """
    blind = exposure.wcs is None  # solved from a pointing hint: see BLIND_BAD_FLAGS
    flags = BLIND_BAD_FLAGS if blind else ASTROMETRY_BAD_FLAGS
    selected = np.flatnonzero(astrometric_sources(psf_stars, config.source_min_snr, flags))
    if selected.size == 0:
        raise AstrometryError(
            "no PSF star passed the astrometric source selection "
            f"(S/N > {config.source_min_snr}, clean, centroid errors < 3 px)",
            n_psf_stars=len(psf_stars),
        )
    cols = ["slot_Centroid_x", "slot_Centroid_y", "slot_PsfFlux_instFlux"]
    x, y, flux = (np.asarray(psf_stars[c], float)[selected] for c in cols)
    if blind:
        flux = blind_brightness(psf_stars)[selected]
    x_err = np.asarray(psf_stars["slot_Centroid_xErr"], float)[selected]
    y_err = np.asarray(psf_stars["slot_Centroid_yErr"], float)[selected]
    result = fit_astrometry(
        x,
        y,
        flux,
        x_err,
        y_err,
        np.asarray(refs["ra"], float),
        np.asarray(refs["dec"], float),
        np.asarray(refs[ref_flux], float),
        initial_wcs=exposure.wcs,
        bbox=exposure.bbox,
        # Clipped fluxes of saturated stars would all be magnitude outliers.
        config=config.model_copy(update={"do_magnitude_outlier_rejection": False} if blind else {}),
        pointing_hint=hint,
        n_saturated=_n_saturated_left_out(psf_stars, selected),
    )
    exposure.wcs = result.wcs
    used = np.zeros(len(psf_stars), bool)
    used[selected[np.asarray(result.matches["src_index"], int)]] = True
    psf_stars["calib_astrometry_used"] = used
    set_coordinates(psf_stars, result.wcs)
    matches = denormalized_matches(
        refs[np.asarray(result.matches["ref_index"], int)],
        psf_stars[selected[np.asarray(result.matches["src_index"], int)]],
        np.asarray(result.matches["distance"], float),
    )
    return result, matches
