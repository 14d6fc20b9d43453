"""Earth-orientation parameters for the zenith distance, without parsing IERS text.

Astropy's first ICRS → AltAz transform in a process parses the bundled IERS-A and IERS-B
text tables (~20,000 rows, 0.5–1.7 s on these machines): most of a cold
``promptcal calibrate`` or a new worker's warm-up. The columns the transform uses (UT1 −
UTC, polar motion, nutation corrections and their source flags) are kept in a small
``.npz`` file the first time, keyed by the astropy and IERS-data versions, and later
processes rebuild the same ``IERS_Auto`` table from it in milliseconds: the same numbers,
so the same zenith distances to the last bit.

Cache directory: ``PROMPTCAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/promptcal``, else
``~/.cache/promptcal``. A cache that cannot be read or written only costs the parse.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings
from pathlib import Path

import astropy
import astropy.units as u
import numpy as np
from astropy.utils import iers

log = logging.getLogger(__name__)

#: Columns of the combined IERS table that the transforms read.
COLUMNS = ("MJD", "UT1_UTC", "PM_x", "PM_y", "dX_2000A", "dY_2000A")
FLAG_COLUMNS = ("UT1Flag", "PolPMFlag", "NutFlag")
META_KEYS = ("predictive_index", "predictive_mjd", "data_path", "readme_path")


def cache_dir() -> Path:
    """Where promptcal keeps derived, re-creatable files."""
    if os.environ.get("PROMPTCAL_CACHE_DIR"):
        return Path(os.environ["PROMPTCAL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "promptcal"


def _cache_path() -> Path:
    try:
        from astropy_iers_data import __version__ as data_version
    except ImportError:  # older astropy: the tables ship with astropy itself
        data_version = "bundled"
    return cache_dir() / f"iers-{astropy.__version__}-{data_version}.npz"


def _parse() -> iers.IERS_Auto:
    """The combined table, parsed by astropy from its bundled files (never downloads)."""
    with iers.conf.set_temp("auto_download", False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return iers.IERS_Auto.open()


def _save(table: iers.IERS_Auto, path: Path) -> None:
    arrays = {name: np.asarray(table[name].value, np.float64) for name in COLUMNS}
    arrays.update({name: np.asarray(table[name], "U1") for name in FLAG_COLUMNS})
    arrays.update({f"meta_{key}": np.asarray(table.meta[key]) for key in META_KEYS})
    arrays["units"] = np.asarray([str(table[name].unit) for name in COLUMNS])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.savez(handle, **arrays)
    os.replace(handle.name, path)


def _load(path: Path) -> iers.IERS_Auto:
    with np.load(path, allow_pickle=False) as data:
        units = [u.Unit(text) for text in data["units"]]
        columns = {name: data[name] * unit for name, unit in zip(COLUMNS, units, strict=True)}
        columns.update({name: data[name] for name in FLAG_COLUMNS})
        meta = {key: data[f"meta_{key}"].item() for key in META_KEYS}
    return iers.IERS_Auto(columns, meta=meta)


@functools.cache
def earth_orientation_table() -> iers.IERS_Auto:
    """The IERS table for this process: from the cache file, else parsed (and cached)."""
    path = _cache_path()
    try:
        return _load(path)
    except (OSError, KeyError, ValueError) as error:
        log.debug("no usable IERS cache at %s (%s); parsing the bundled tables", path, error)
    table = _parse()
    try:
        _save(table, path)
    except OSError as error:
        log.debug("cannot write the IERS cache %s: %s", path, error)
    return table
