"""The real catalogs and small helpers shared by the reference-catalog tests (tests/refcat)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.wcs import WCS
from realdata import REAL

SPITZER_CSV = REAL / "spitzer-glimpse-irac2" / "spitzer_example_catalog_icrs.derived.csv"
SPITZER_XML = REAL / "spitzer-glimpse-irac2" / "spitzer_example_catalog.xml"
MICROOBS_CSV = REAL / "microobs-hatp32" / "gaia_dr3_g10_hatp32_r1.5deg.csv"
MICROOBS_WCS = REAL / "microobs-hatp32" / "HATP-32171220013343.derived_wcs.hdr"
GAIA_FITS = REAL / "decam-legacypipe-n6" / "gaia-dr2-chunk-05483.fits"


def csv_columns(path: Path) -> dict[str, np.ndarray]:
    """Every column of a CSV file as a NumPy array."""
    table = pacsv.read_csv(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def read_all_shards(directory: Path) -> pa.Table:
    """All rows of a built reference catalog, shard after shard."""
    manifest = json.loads((directory / "manifest.json").read_text())
    return pa.concat_tables([pq.read_table(directory / s["file"]) for s in manifest["shards"]])


def box_corners(ra0: float, dec0: float, half: float, angle_deg: float = 0.0):
    """Corners of a square of half-size ``half`` [deg] on the tangent plane, rotated."""
    wcs = tan_wcs(ra0, dec0)
    t = np.radians(angle_deg)
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    rot = local @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    world = wcs.pixel_to_world_values(rot[:, 0], rot[:, 1])
    return np.asarray(world[0]), np.asarray(world[1])


def tan_wcs(ra0: float, dec0: float) -> WCS:
    """TAN projection at (ra0, dec0) [deg] whose "pixels" are degrees on the tangent plane."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.crpix = [1.0, 1.0]  # FITS is 1-based: pixel (0, 0) is the tangent point
    wcs.wcs.cdelt = [-1.0, 1.0]  # 1 "pixel" = 1 deg on the tangent plane
    return wcs
