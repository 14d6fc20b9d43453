"""Parquet catalogs with units and slot aliases, and JSON-safe values.

Catalogs are written through pyarrow (astropy needs pandas to read Parquet back):
units and descriptions go into the field metadata, the slot map into the schema
metadata, and every column reachable through a slot is also written under its alias
name (marked ``alias_of``) so plain Parquet readers see e.g. ``slot_PsfFlux_flux``;
:func:`read_catalog` drops those copies again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.table import MaskedColumn, Table

from promptcal.core.catalog import SourceCatalog
from promptcal.core.errors import InvalidInputError
from promptcal.io.files import atomic_write

_SLOTS_KEY = b"promptcal.slots"
_META_KEY = b"promptcal.meta"


# ----------------------------------------------------------------------------- JSON


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays made plain and non-finite floats made None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, u.Quantity):
        return json_safe(value.value)
    if value is None or isinstance(value, str):
        return value
    return str(value)


# ----------------------------------------------------------------------------- catalogs


def _arrow_column(column) -> tuple[pa.Array, dict[bytes, bytes]]:
    data = np.asarray(column)
    mask = None
    if isinstance(column, MaskedColumn) and np.any(column.mask):
        mask = np.asarray(column.mask, bool)
        data = np.asarray(column.filled(0 if data.dtype.kind in "iub" else np.nan))
    if data.dtype.kind == "O":
        raise InvalidInputError(f"column {column.name!r} has object dtype; cannot write it")
    if data.ndim == 1:
        array = pa.array(data, mask=mask)
    elif data.ndim == 2 and mask is None:
        flat = pa.array(np.ascontiguousarray(data).ravel())
        array = pa.FixedSizeListArray.from_arrays(flat, data.shape[1])
    else:
        raise InvalidInputError(f"column {column.name!r} of shape {data.shape} is not supported")
    meta: dict[bytes, bytes] = {}
    if getattr(column, "unit", None) is not None:
        meta[b"unit"] = column.unit.to_string().encode()
    if getattr(column, "description", None):
        meta[b"description"] = str(column.description).encode()
    return array, meta


def catalog_to_arrow(table: Table) -> pa.Table:
    """An Arrow table of ``table`` with units in the field metadata.

    For a catalog with ``meta["slots"]``, every column reachable through a slot alias is
    also written under the alias name (field metadata ``alias_of``), so Parquet readers
    without promptcal see ``slot_PsfFlux_flux`` etc.
    """
    fields, arrays = [], []
    for name in table.colnames:
        array, meta = _arrow_column(table[name])
        fields.append(pa.field(name, array.type, metadata=meta or None))
        arrays.append(array)
    slots = dict(table.meta.get("slots", {}))
    seen = set(table.colnames)
    for slot, target in slots.items():
        for name in table.colnames:
            if name != target and not name.startswith(target + "_"):
                continue
            alias = slot + name[len(target) :]
            if alias in seen:
                continue
            seen.add(alias)
            array, meta = _arrow_column(table[name])
            meta[b"alias_of"] = name.encode()
            fields.append(pa.field(alias, array.type, metadata=meta))
            arrays.append(array)
    schema_meta = {_SLOTS_KEY: json.dumps(slots, sort_keys=True).encode()}
    other = {k: v for k, v in table.meta.items() if k != "slots"}
    if other:
        schema_meta[_META_KEY] = json.dumps(json_safe(other), sort_keys=True).encode()
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema_meta))


def write_catalog(table: Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` to Parquet atomically (units and slot aliases kept).

    Only string columns are dictionary-encoded: measurement columns are floats with
    few repeats, where trying a dictionary first doubles the encoding time (on a
    3,000-star catalog) and makes the file larger.
    """
    arrow = catalog_to_arrow(table)
    strings = [
        f.name
        for f in arrow.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    return atomic_write(path, lambda tmp: pq.write_table(arrow, tmp, use_dictionary=strings))


def _numpy_column(array: pa.ChunkedArray) -> np.ndarray | np.ma.MaskedArray:
    array = array.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), array.type.list_size)
    if array.null_count:
        values = array.to_numpy(zero_copy_only=False)
        return np.ma.masked_array(
            np.asarray([0 if v is None else v for v in values]),
            mask=np.asarray(array.is_null()),
        )
    values = array.to_numpy(zero_copy_only=False)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return values.astype(str)
    return values


def read_table(path: str | os.PathLike[str], *, cls: type[Table] = Table) -> Table:
    """Read a Parquet product into ``cls`` with units; alias columns are dropped.

    Raises
    ------
    InvalidInputError
        The file is missing or not a readable Parquet file.
    """
    name = os.fspath(path)
    try:
        with pq.ParquetFile(name) as parquet:  # not read_table: no pyarrow.dataset import
            arrow = parquet.read()
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"{name}: not a readable Parquet file ({exc})") from exc
    schema_meta = arrow.schema.metadata or {}
    out = cls()
    for field, column in zip(arrow.schema, arrow.columns, strict=True):
        meta = field.metadata or {}
        if b"alias_of" in meta:
            continue
        values = _numpy_column(column)
        unit = meta.get(b"unit")
        out[field.name] = values
        if unit is not None:
            out[field.name].unit = u.Unit(unit.decode(), parse_strict="silent")
        if b"description" in meta:
            out[field.name].description = meta[b"description"].decode()
    if _META_KEY in schema_meta:
        out.meta.update(json.loads(schema_meta[_META_KEY]))
    if _SLOTS_KEY in schema_meta:
        slots = json.loads(schema_meta[_SLOTS_KEY])
        if slots or not isinstance(out, SourceCatalog):
            out.meta["slots"] = slots
    return out


def read_catalog(path: str | os.PathLike[str]) -> SourceCatalog:
    """Read ``stars.parquet``/``psf_stars.parquet`` into a SourceCatalog (slots restored)."""
    return read_table(path, cls=SourceCatalog)


# ----------------------------------------------------------------------------- footprints


def footprint_ids(footprints, catalog: Table) -> np.ndarray:
    """Source id of each footprint (0 where no catalog row owns it).

    Footprint ``i`` belongs to row ``i`` when the counts agree (the pipeline keeps them
    aligned); otherwise ownership is looked up at each row's rounded centroid.
    """
    ids = np.asarray(catalog["id"], np.int64)
    if footprints.n == len(catalog):
        return ids
    out = np.zeros(footprints.n, np.int64)
    x = np.rint(np.asarray(catalog["slot_Centroid_x"], float)) - footprints.xy0[0]
    y = np.rint(np.asarray(catalog["slot_Centroid_y"], float)) - footprints.xy0[1]
    h, w = footprints.labels.shape
    inside = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0) & (x < w) & (y < h)
    labels = footprints.labels[y[inside].astype(int), x[inside].astype(int)]
    owned = labels > 0
    out[labels[owned] - 1] = ids[inside][owned]
    return out


def footprint_spans(footprints, catalog: Table) -> Table:
    """Span table ``id, y, x0, x1`` (parent pixels, x1 inclusive), sorted by id, y, x0."""
    spans = footprints.spans_table(footprint_ids(footprints, catalog))
    order = np.lexsort((spans["x0"], spans["y"], spans["id"]))
    spans = spans[order]
    for name in ("y", "x0", "x1"):
        spans[name].unit = u.pix
    return spans
