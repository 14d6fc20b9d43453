"""Sky coordinates of catalog rows, denormalized match tables, and nearest-neighbour ids
between two catalogs (spec A6, A8, A11 outputs)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from promptcal.core.catalog import SourceCatalog
from promptcal.pipeline.astrometry.fitter import sky_coordinates


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
    from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

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
