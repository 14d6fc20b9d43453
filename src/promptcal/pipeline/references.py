"""Reference catalog of an exposure (spec A2): the references over its footprint, their
density, the reference flux column, and the WCS a pointing hint implies."""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Exposure
from promptcal.pipeline.astrometry.fitter import PointingHint
from promptcal.pipeline.astrometry.solver import local_scale
from promptcal.pipeline.astrometry.tan_sip import wcs_pixel_to_icrs
from promptcal.refcat import ref_cat_source_density


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


def reference_margin_px(task_config, exposure) -> float:
    """Padding of the exposure's box [px] over which to load references.

    With a WCS, the task's ``ref_pixel_margin``. Without one the frame is solved blind,
    and the references must cover every footprint the solver searches: the largest
    pointing error plus the growth of the chip by the scale tolerance.

    Parameters
    ----------
    task_config : promptcal.pipeline.task.CalibrateImageConfig
        Uses ``ref_pixel_margin`` [px] and ``astrometry.blind``.
    exposure : promptcal.core.exposure.Exposure
    """
    margin = task_config.ref_pixel_margin
    if exposure.wcs is not None:
        return margin
    c = task_config.astrometry.blind
    width, height = exposure.width, exposure.height
    blind = c.max_offset_fraction * math.hypot(width, height)
    return max(margin, blind + 0.5 * c.max_scale_error * max(width, height))
