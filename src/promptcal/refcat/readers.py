"""Read the columns of an input catalog (CSV, FITS binary table, VOTable, Parquet).

Only the requested columns are converted to NumPy, so a wide catalog (e.g. a Gaia
chunk with 30+ columns) is cheap to build from. Masked values become NaN for float
columns; masked integers (ids) are an error reported by the caller.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promptcal.core.errors import InvalidInputError

FORMATS = ("csv", "fits", "votable", "parquet")

_EXTENSIONS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".xml": "votable",
    ".vot": "votable",
    ".votable": "votable",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: Path) -> str:
    """The input format of ``path``, from its extension or else its first bytes."""
    name = path.name.lower()
    for ext, fmt in sorted(_EXTENSIONS.items(), key=lambda item: -len(item[0])):
        if name.endswith(ext):
            return fmt
    try:
        with open(path, "rb") as stream:
            head = stream.read(2048)
    except OSError as exc:
        raise InvalidInputError(f"cannot read catalog {path}: {exc}") from exc
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip().lower()
    if text.startswith(b"<?xml") or text.startswith(b"<votable"):
        return "votable"
    first_line = head.split(b"\n", 1)[0]
    if b"," in first_line and not any(byte < 9 for byte in first_line):
        return "csv"
    raise InvalidInputError(
        f"cannot tell the format of catalog {path}: expected one of {', '.join(FORMATS)} "
        "(by extension or content); pass the format explicitly"
    )


def _resolve(name: str, available: Sequence[str], path: Path) -> str:
    """The actual column name for ``name`` (exact, else unique case-insensitive match)."""
    if name in available:
        return name
    folded = [col for col in available if col.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    shown = ", ".join(list(available)[:60]) + (" ..." if len(available) > 60 else "")
    raise InvalidInputError(f"catalog {path.name} has no column {name!r}; columns are: {shown}")


def _to_numpy(values) -> np.ndarray:
    """A plain ndarray; masked floats become NaN, masked entries of others stay masked."""
    if isinstance(values, np.ma.MaskedArray):
        if values.dtype.kind == "f" and np.ma.is_masked(values):
            return values.filled(np.nan)
        if not np.ma.is_masked(values):
            return np.asarray(values.data)
        return values
    return np.asarray(values)


def read_columns(path: Path, names: Sequence[str], fmt: str | None = None) -> dict[str, np.ndarray]:
    """Read ``names`` from the catalog at ``path``.

    Parameters
    ----------
    path : Path
        Catalog file.
    names : sequence of str
        Wanted column names (exact, or a unique case-insensitive match).
    fmt : str, optional
        One of ``FORMATS``; detected from the extension or content when None.

    Returns
    -------
    dict
        Requested name -> 1-D array (all the same length).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"catalog {path} does not exist or is not a file")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown catalog format {fmt!r}; expected one of {FORMATS}")
    reader = {"csv": _read_csv, "fits": _read_fits, "votable": _read_votable}.get(
        fmt, _read_parquet
    )
    try:
        return reader(path, list(dict.fromkeys(names)))
    except InvalidInputError:
        raise
    except Exception as exc:  # any parser failure means the file is not usable as given
        raise InvalidInputError(f"cannot read {path} as {fmt}: {exc}") from exc


def _read_csv(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.csv as pacsv

    # Read the header first so a missing column is reported with the available ones.
    reader = pacsv.open_csv(path)
    available = reader.schema.names
    reader.close()
    resolved = {name: _resolve(name, available, path) for name in names}
    table = pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(include_columns=sorted(set(resolved.values())))
    )
    return {name: _arrow_to_numpy(table.column(col)) for name, col in resolved.items()}


def _read_parquet(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    available = pq.read_schema(path).names
    resolved = {name: _resolve(name, available, path) for name in names}
    table = pq.read_table(path, columns=sorted(set(resolved.values())))
    return {name: _arrow_to_numpy(table.column(col)) for name, col in resolved.items()}


def _arrow_to_numpy(column) -> np.ndarray:
    """Arrow column -> ndarray; nulls become NaN (floats) or a masked array (others)."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count == 0:
        return column.to_numpy(zero_copy_only=False)
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        as_float = column.cast(pa.float64()).fill_null(np.nan).to_numpy()
        if pa.types.is_floating(column.type):
            return as_float
        return np.ma.MaskedArray(np.nan_to_num(as_float).astype(np.int64), mask=np.isnan(as_float))
    return np.ma.MaskedArray(column.to_numpy(zero_copy_only=False))


def _read_fits(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        tables = [hdu for hdu in hdus if isinstance(hdu, fits.BinTableHDU | fits.TableHDU)]
        if not tables:
            raise InvalidInputError(f"FITS catalog {path.name} has no table extension")
        hdu = tables[0]  # the first table, as astropy's Table.read does
        available = hdu.columns.names
        resolved = {name: _resolve(name, available, path) for name in names}
        data = hdu.data
        out = {}
        for name, col in resolved.items():
            if data is None:
                raise InvalidInputError(f"FITS catalog {path.name} has an empty table")
            values = np.array(data[col])  # copy: the HDU is closed afterwards
            out[name] = values.astype(values.dtype.newbyteorder("="))
        return out


def _read_votable(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    from astropy.io.votable import parse_single_table

    # verify="ignore": non-standard units or UCDs (e.g. "arcs") do not matter here, only
    # the column values do; VOTable conformance warnings would otherwise be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = parse_single_table(str(path), verify="ignore").array
    available = list(table.dtype.names or ())
    resolved = {name: _resolve(name, available, path) for name in names}
    return {name: _to_numpy(table[col]) for name, col in resolved.items()}
