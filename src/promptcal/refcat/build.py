"""Build a HEALPix-sharded Parquet reference catalog from a CSV/FITS/VOTable/Parquet file.

Magnitudes are taken to be AB: ``flux [nJy] = 10**(-0.4 (mag - 31.4))`` (31.4 is the
AB magnitude of 1 nJy), and ``fluxErr = 0.4 ln(10) flux magErr`` (first-order error
propagation). Rows with a non-finite RA or Dec are dropped and counted; rows with a
non-finite magnitude keep a NaN flux, so positions remain usable for astrometry.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy_healpix import HEALPix

from promptcal.core.errors import InvalidInputError
from promptcal.refcat.manifest import (
    BAND_NAME_RE,
    MANIFEST_NAME,
    BandInfo,
    Manifest,
    ShardInfo,
    sha256_file,
    shard_file_name,
    write_manifest,
)
from promptcal.refcat.readers import read_columns

log = logging.getLogger(__name__)

#: AB magnitude of a 1 nJy source: -2.5 log10(1e-9 Jy / 3631 Jy).
AB_MAG_OF_1_NJY = 31.4
BAND_UNITS = ("mag", "nJy")
MAX_NSIDE = 2**13


def mag_to_njy(mag: np.ndarray) -> np.ndarray:
    """AB magnitude -> flux [nJy]."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - AB_MAG_OF_1_NJY))


def mag_err_to_njy(flux_njy: np.ndarray, mag_err: np.ndarray) -> np.ndarray:
    """Magnitude error [mag] -> flux error [nJy] for a flux [nJy]: 0.4 ln10 flux magErr."""
    return 0.4 * math.log(10.0) * np.asarray(flux_njy) * np.asarray(mag_err, dtype=np.float64)


def _float_column(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind not in "fiu":
        raise InvalidInputError(f"column {name!r} must be numeric, got dtype {values.dtype}")
    return np.asarray(np.ma.filled(values.astype(np.float64), np.nan), dtype=np.float64)


def _id_column(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind not in "iu" or np.ma.is_masked(values):
        raise InvalidInputError(
            f"id column {name!r} must hold integers without missing values (dtype {values.dtype})"
        )
    ids = np.asarray(values).astype(np.int64)
    if np.unique(ids).size != ids.size:
        raise InvalidInputError(f"id column {name!r} has repeated values")
    return ids


def _check_bands(bands: Mapping[str, tuple[str, str]], band_errors: Mapping[str, str]) -> None:
    if not bands:
        raise InvalidInputError("at least one band (NAME=COLUMN) is required")
    for name, spec in bands.items():
        if not BAND_NAME_RE.match(name):
            raise InvalidInputError(
                f"band name {name!r} must start with a letter and hold only letters, digits and '_'"
            )
        if len(spec) != 2 or spec[1] not in BAND_UNITS:
            raise InvalidInputError(
                f"band {name!r}: expected (column, unit) with unit in {BAND_UNITS}, got {spec!r}"
            )
    unknown = sorted(set(band_errors) - set(bands))
    if unknown:
        raise InvalidInputError(f"--band-err given for unknown band(s) {unknown}")


# Long: a documented, linear build (read, convert, propagate, shard, write, manifest),
# half of it the numpydoc docstring of its many parameters.
def build_refcat(
    catalog_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    ra_col: str,
    dec_col: str,
    bands: Mapping[str, tuple[str, str]],
    band_errors: Mapping[str, str] | None = None,
    pm_ra_col: str | None = None,
    pm_dec_col: str | None = None,
    epoch: float | None = None,
    nside: int = 32,
    input_format: str | None = None,
    id_col: str | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Convert a catalog file into a sharded reference-catalog directory.

    Parameters
    ----------
    catalog_path : path
        Input catalog: CSV, FITS binary table, VOTable or Parquet.
    output_dir : path
        Directory to create; it must not exist or be empty unless ``overwrite``.
    ra_col, dec_col : str
        Columns of ICRS RA and Dec [deg].
    bands : mapping
        Band name -> (column, ``"mag"`` (AB) or ``"nJy"``).
    band_errors : mapping, optional
        Band name -> column of the error, in the unit of that band's column.
    pm_ra_col, pm_dec_col : str, optional
        Proper-motion columns [mas/yr]; RA is mu_alpha* = mu_alpha cos(dec) (as Gaia).
    epoch : float, optional
        Julian year of the positions (e.g. 2016.0); required with proper motions.
    nside : int
        HEALPix nside of the shards (a power of 2); 32 gives 1.8 deg pixels.
    input_format : str, optional
        ``csv``, ``fits``, ``votable`` or ``parquet``; detected when None.
    id_col : str, optional
        Integer id column; when None the id is the row index in the input file.
    overwrite : bool
        Replace an existing refcat directory.

    Returns
    -------
    Manifest
        The manifest written to ``output_dir/manifest.json``.
    """
    catalog_path, output_dir = Path(catalog_path), Path(output_dir)
    band_errors = dict(band_errors or {})
    _check_bands(bands, band_errors)
    if (pm_ra_col is None) != (pm_dec_col is None):
        raise InvalidInputError("give both proper-motion columns (RA and Dec) or neither")
    has_pm = pm_ra_col is not None
    if has_pm and (epoch is None or not math.isfinite(float(epoch))):
        raise InvalidInputError("proper motions need the catalog epoch (Julian year, e.g. 2016.0)")
    if not isinstance(nside, int | np.integer) or not 1 <= nside <= MAX_NSIDE:
        raise InvalidInputError(f"nside must be a power of 2 in [1, {MAX_NSIDE}], got {nside}")
    if nside & (nside - 1):
        raise InvalidInputError(f"nside must be a power of 2, got {nside}")

    wanted = [ra_col, dec_col, *(col for col, _ in bands.values()), *band_errors.values()]
    wanted += [c for c in (pm_ra_col, pm_dec_col, id_col) if c is not None]
    raw = read_columns(catalog_path, wanted, input_format)
    n_input = len(raw[ra_col])
    if n_input == 0:
        raise InvalidInputError(f"catalog {catalog_path} has no rows")

    ids = _id_column(raw[id_col], id_col) if id_col else np.arange(n_input, dtype=np.int64)
    columns: dict[str, np.ndarray] = {
        "id": ids,
        "ra": _float_column(raw[ra_col], ra_col),
        "dec": _float_column(raw[dec_col], dec_col),
    }
    units = {"id": "", "ra": "deg", "dec": "deg"}
    if has_pm:
        columns["pm_ra"] = _float_column(raw[pm_ra_col], pm_ra_col)
        columns["pm_dec"] = _float_column(raw[pm_dec_col], pm_dec_col)
        units.update(pm_ra="mas / yr", pm_dec="mas / yr")
    band_info: dict[str, BandInfo] = {}
    for name, (col, unit) in bands.items():
        values = _float_column(raw[col], col)
        err_col = band_errors.get(name)
        err = _float_column(raw[err_col], err_col) if err_col else np.full(n_input, np.nan)
        flux = mag_to_njy(values) if unit == "mag" else values
        flux_err = mag_err_to_njy(flux, err) if unit == "mag" else err
        columns[f"{name}_flux"], columns[f"{name}_fluxErr"] = flux, flux_err
        units[f"{name}_flux"] = units[f"{name}_fluxErr"] = "nJy"
        band_info[name] = BandInfo(f"{name}_flux", f"{name}_fluxErr", col, unit, err_col)

    good = np.isfinite(columns["ra"]) & np.isfinite(columns["dec"])
    n_dropped = int(n_input - good.sum())
    if n_dropped:
        log.warning("dropping %d of %d rows with non-finite RA/Dec", n_dropped, n_input)
    columns = {key: value[good] for key, value in columns.items()}
    if columns["ra"].size == 0:
        raise InvalidInputError(f"catalog {catalog_path}: no row has a finite RA and Dec")
    bad_dec = np.abs(columns["dec"]) > 90.0
    if bad_dec.any():
        raise InvalidInputError(
            f"catalog {catalog_path}: {int(bad_dec.sum())} rows have |Dec| > 90 deg "
            f"(column {dec_col!r} must be Dec in degrees)"
        )
    columns["ra"] = columns["ra"] % 360.0

    pixels = HEALPix(nside=nside, order="nested").lonlat_to_healpix(
        columns["ra"] * u.deg, columns["dec"] * u.deg
    )
    max_pm = 0.0
    if has_pm:
        total_pm = np.hypot(columns["pm_ra"], columns["pm_dec"])
        max_pm = float(np.nanmax(total_pm)) if np.isfinite(total_pm).any() else 0.0
    footprint = {
        "ra_min": float(columns["ra"].min()),
        "ra_max": float(columns["ra"].max()),
        "dec_min": float(columns["dec"].min()),
        "dec_max": float(columns["dec"].max()),
    }

    tmp_dir = _make_tmp_dir(output_dir, overwrite)
    try:
        shards = _write_shards(tmp_dir, columns, pixels, nside)
        manifest = Manifest(
            nside=int(nside),
            bands=band_info,
            columns=units,
            shards=tuple(shards),
            total_rows=int(columns["ra"].size),
            source=catalog_path.name,
            epoch=float(epoch) if has_pm else None,
            has_proper_motion=has_pm,
            max_pm=max_pm,
            n_dropped_nonfinite=n_dropped,
            footprint=footprint,
        )
        manifest.validate(where=f"new refcat from {catalog_path.name}")
        write_manifest(manifest, tmp_dir)
        _install(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info(
        "built refcat %s: %d rows in %d shards (nside %d), %d dropped",
        output_dir,
        manifest.total_rows,
        len(shards),
        nside,
        n_dropped,
    )
    return manifest


def _write_shards(
    directory: Path, columns: dict[str, np.ndarray], pixels: np.ndarray, nside: int
) -> list[ShardInfo]:
    """Write one Parquet file per occupied pixel; rows keep their input order."""
    order = np.argsort(pixels, kind="stable")
    sorted_pixels = pixels[order]
    starts = np.flatnonzero(np.r_[True, sorted_pixels[1:] != sorted_pixels[:-1]])
    ends = np.r_[starts[1:], sorted_pixels.size]
    shards = []
    for start, end in zip(starts, ends, strict=True):
        rows = order[start:end]
        pixel = int(sorted_pixels[start])
        table = pa.table({key: pa.array(value[rows]) for key, value in columns.items()})
        name = shard_file_name(nside, pixel)
        pq.write_table(table, directory / name)
        shards.append(ShardInfo(pixel, name, int(rows.size), sha256_file(directory / name)))
    return shards


def _make_tmp_dir(output_dir: Path, overwrite: bool) -> Path:
    if output_dir.exists():
        if not output_dir.is_dir():
            raise InvalidInputError(f"output {output_dir} exists and is not a directory")
        if any(output_dir.iterdir()) and not overwrite:
            raise InvalidInputError(
                f"output directory {output_dir} is not empty (use --overwrite to replace it)"
            )
        if overwrite and any(output_dir.iterdir()) and not (output_dir / MANIFEST_NAME).exists():
            raise InvalidInputError(
                f"refusing to overwrite {output_dir}: it is not a reference catalog "
                f"(no {MANIFEST_NAME})"
            )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-"))


def _install(tmp_dir: Path, output_dir: Path) -> None:
    """Move the finished directory into place (rename; the old one is removed after)."""
    old = None
    if output_dir.exists():
        old = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.old-"))
        os.rmdir(old)
        os.replace(output_dir, old)
    os.replace(tmp_dir, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
