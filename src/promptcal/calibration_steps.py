"""Reference-catalog loading, astrometry and photometry steps of CalibrateImageTask
(spec A2, A6, A10, A11), between the stage modules and the task's ``run``."""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from .astrometry import PointingHint, fit_astrometry, sky_coordinates
from .astrometry_blind import blind_brightness
from .astrometry_fit import wcs_pixel_to_icrs
from .astrometry_solve import local_scale
from .catalog import SourceCatalog
from .errors import AstrometryError, InvalidInputError
from .exposure import Exposure
from .refcat import ref_cat_source_density

log = logging.getLogger(__name__)

ASTROMETRY_BAD_FLAGS = (
    "base_PixelFlags_flag_edge",
    "base_PixelFlags_flag_nodata",
    "base_PixelFlags_flag_interpolatedCenter",
    "base_PixelFlags_flag_saturated",
    "base_SdssCentroid_flag",
)


def hint_wcs(hint: PointingHint, exposure: Exposure) -> WCS:
    """A TAN WCS at the hint's pointing and scale (north up, east left), for loading refs."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [hint.ra_deg, hint.dec_deg]
    wcs.wcs.crpix = [exposure.center[0] + 1.0, exposure.center[1] + 1.0]
    scale = hint.pixel_scale_arcsec / 3600.0
    angle = np.radians(hint.rotation_deg or 0.0)
    c, s = np.cos(angle), np.sin(angle)
    wcs.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    return wcs


def icrs_deg(wcs: WCS, x, y) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (RA, Dec) [deg] of parent pixels through any celestial WCS (e.g. Galactic)."""
    ra, dec = wcs_pixel_to_icrs(wcs, x, y)
    return np.degrees(ra), np.degrees(dec)


def pixel_scale_arcsec(wcs: WCS, x: float, y: float) -> float:
    """Geometric-mean pixel scale of ``wcs`` at parent (x, y) [arcsec/px]."""
    return float(np.degrees(local_scale(wcs, x, y)) * 3600.0)


def load_references(loader, exposure: Exposure, wcs: WCS, pixel_margin: float, epoch):
    """References over the bbox padded by ``pixel_margin`` [px], and their density.

    Returns
    -------
    refs : astropy.table.Table
        Rows with finite coordinates (``id``, ``ra``, ``dec`` [deg], fluxes [nJy]).
    density : float
        REF_CAT_SOURCE_DENSITY [deg⁻²] around the bbox centre (spec A2).
    """
    x_min, y_min, x_max, y_max = exposure.bbox
    xs = np.array([x_min - 0.5, x_max + 0.5, x_max + 0.5, x_min - 0.5])
    ys = np.array([y_min - 0.5, y_min - 0.5, y_max + 0.5, y_max + 0.5])
    cx, cy = exposure.center
    scale = pixel_scale_arcsec(wcs, cx, cy)
    ra_v, dec_v = icrs_deg(wcs, xs, ys)
    refs = loader.load_region(ra_v, dec_v, margin_deg=pixel_margin * scale / 3600.0, epoch=epoch)
    finite = np.isfinite(np.asarray(refs["ra"], float)) & np.isfinite(
        np.asarray(refs["dec"], float)
    )
    refs = refs[finite]
    ra_c, dec_c = icrs_deg(wcs, [cx], [cy])
    radius = 0.5 * np.hypot(exposure.width, exposure.height) * scale / 3600.0
    density = ref_cat_source_density(
        np.asarray(refs["ra"], float), np.asarray(refs["dec"], float), ra_c[0], dec_c[0], radius
    )
    return refs, density


def ref_flux_column(refs: Table, band: str | None) -> str:
    """The ``<band>_flux`` column to use, or the first flux column when ``band`` is None."""
    if band is not None:
        name = f"{band}_flux"
        if name not in refs.colnames:
            bands = sorted(c[:-5] for c in refs.colnames if c.endswith("_flux"))
            raise InvalidInputError(f"band {band!r} is not in the refcat; it has {bands}")
        return name
    names = [c for c in refs.colnames if c.endswith("_flux")]
    if not names:
        raise InvalidInputError("the refcat has no flux column")
    return names[0]


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


#: A frame without a WCS is solved blind; on bright-only refcats (small telescopes) the
#: reference stars are the saturated ones, whose flat cores also set the centroid flag.
#: Their centroids are good to a pixel, well within the blind solver's match radius.
BLIND_BAD_FLAGS = tuple(
    f
    for f in REFIT_BAD_FLAGS
    if f not in ("base_PixelFlags_flag_saturated", "base_SdssCentroid_flag")
)


def refit_wcs_on_sources(task, exposure, sources, refs, ref_flux):
    """Refit the WCS on the deeper star-phase sources, starting from the current WCS.

    LSST fits on the PSF stars only (≥50σ peaks); the star phase has several times more
    sources, which tightens the solution and lets sparse or shallow frames reach
    enough matches. When clean sources give fewer than
    ``astrometry_saturated_fallback_matches`` matches (bright-only refcats on small
    telescopes), saturated stars are admitted too. Returns ``(fit, selected)``, or None
    when no refit succeeds (the PSF-star WCS stays).
    """
    config = task.config
    best = _refit(task, exposure, sources, refs, ref_flux, REFIT_BAD_FLAGS, {})
    n_best = 0 if best is None else len(best[0].matches)
    if n_best < config.astrometry_saturated_fallback_matches:
        # Saturated cores are flat, so their centroid flag is set too; their positions
        # are still good to a pixel or two, which is what such frames need.
        relaxed = ("base_PixelFlags_flag_saturated", "base_SdssCentroid_flag")
        flags = tuple(f for f in REFIT_BAD_FLAGS if f not in relaxed)
        # Their fluxes are clipped, so magnitude-outlier rejection would drop them all.
        no_mag = {"do_magnitude_outlier_rejection": False}
        fallback = _refit(task, exposure, sources, refs, ref_flux, flags, no_mag)
        if fallback is not None and len(fallback[0].matches) > n_best:
            log.info("astrometric refit admits saturated stars (%d matches)", n_best)
            best = fallback
    return best


def _refit(task, exposure, sources, refs, ref_flux, bad_flags, overrides):
    config = task.config
    good = astrometric_sources(sources, config.astrometry_refit_min_snr, bad_flags)
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
            config=config.astrometry.model_copy(
                update={"do_recovery": False, "trusted_wcs_tolerance_px": 2.0, **overrides}
            ),
        ), selected
    except AstrometryError as error:
        log.warning("astrometric refit on %d sources failed: %s", selected.size, error)
        return None


def fit_wcs(task, exposure, psf_stars, refs, ref_flux, hint):
    """Fit the WCS on ``psf_stars`` (spec A6); updates the exposure and the catalog.

    Returns
    -------
    AstrometryResult, astropy.table.Table
        The fit and the denormalized astrometry matches (``ref_*``, ``src_*``).
    """
    config = task.config
    blind = exposure.wcs is None  # solved from a pointing hint: see BLIND_BAD_FLAGS
    flags = BLIND_BAD_FLAGS if blind else ASTROMETRY_BAD_FLAGS
    selected = np.flatnonzero(astrometric_sources(psf_stars, config.astrometry_min_snr, flags))
    if selected.size == 0:
        raise AstrometryError(
            "no PSF star passed the astrometric source selection "
            f"(S/N > {config.astrometry_min_snr}, clean, centroid errors < 3 px)",
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
        config=config.astrometry.model_copy(
            update={"do_magnitude_outlier_rejection": False} if blind else {}
        ),
        pointing_hint=hint,
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


def set_coordinates(cat: SourceCatalog, wcs: WCS | None) -> None:
    """``coord_ra/dec`` [rad] with errors for every row (NaN without a WCS)."""
    n = len(cat)
    if wcs is None:
        ra = dec = ra_err = dec_err = np.full(n, np.nan)
    else:
        ra, dec, ra_err, dec_err = sky_coordinates(
            wcs,
            np.asarray(cat["slot_Centroid_x"], float),
            np.asarray(cat["slot_Centroid_y"], float),
            np.asarray(cat["slot_Centroid_xErr"], float),
            np.asarray(cat["slot_Centroid_yErr"], float),
        )
    for name, values in (
        ("coord_ra", ra),
        ("coord_dec", dec),
        ("coord_raErr", ra_err),
        ("coord_decErr", dec_err),
    ):
        cat[name] = u.Quantity(np.asarray(values, float), u.rad)


def denormalized_matches(refs: Table, sources: SourceCatalog, distance_arcsec) -> Table:
    """A match table with ``ref_<col>`` and ``src_<col>`` columns plus ``distance``."""
    out = Table()
    for name in refs.colnames:
        out[f"ref_{name}"] = refs[name]
    for name in sources.colnames:
        out[f"src_{name}"] = sources[name]
    for slot in sources.meta.get("slots", {}):
        for suffix in ("_x", "_y", "_instFlux", "_instFluxErr", "_flag"):
            alias = slot + suffix
            if sources.has(alias) and f"src_{alias}" not in out.colnames:
                out[f"src_{alias}"] = sources[alias]
    out["distance"] = u.Quantity(distance_arcsec, u.arcsec)
    return out


def nearest_ids(reference: SourceCatalog, cat: SourceCatalog, radius: float) -> np.ndarray:
    """Id of the closest ``reference`` row within ``radius`` [px] of each row (0 if none)."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(cat), np.int64)
    if len(reference) == 0 or len(cat) == 0:
        return out
    ref_xy = np.column_stack(
        [
            np.asarray(reference["slot_Centroid_x"], float),
            np.asarray(reference["slot_Centroid_y"], float),
        ]
    )
    xy = np.column_stack(
        [np.asarray(cat["slot_Centroid_x"], float), np.asarray(cat["slot_Centroid_y"], float)]
    )
    distance, index = cKDTree(ref_xy).query(xy, k=1, distance_upper_bound=radius)
    hit = np.isfinite(distance)
    out[hit] = np.asarray(reference["id"], np.int64)[index[hit]]
    return out
