"""Reference catalogs: HEALPix-sharded Parquet files plus ``manifest.json``.

Build one with :func:`build_refcat` (or ``promptcal refcat build``) and read regions
with :class:`RefcatLoader`. The format is described in ``docs/refcat.md``.
"""

from __future__ import annotations

from promptcal.refcat.build import build_refcat, mag_err_to_njy, mag_to_njy
from promptcal.refcat.geometry import in_padded_polygon, propagate_proper_motion
from promptcal.refcat.loader import RefcatCoverageError, RefcatLoader, ref_cat_source_density
from promptcal.refcat.manifest import FORMAT_VERSION, BandInfo, Manifest, ShardInfo, read_manifest

__all__ = [
    "FORMAT_VERSION",
    "BandInfo",
    "Manifest",
    "RefcatCoverageError",
    "RefcatLoader",
    "ShardInfo",
    "build_refcat",
    "in_padded_polygon",
    "mag_err_to_njy",
    "mag_to_njy",
    "propagate_proper_motion",
    "read_manifest",
    "ref_cat_source_density",
]
