"""The ``manifest.json`` of a reference-catalog directory: model, validation, I/O.

The manifest is the single source of truth about a refcat directory: HEALPix
parameters, the epoch of the positions, the bands, the column units and, per shard,
its file name, row count and sha256 checksum (verified when a shard is loaded).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptcal.core.errors import InvalidInputError

#: Version of the on-disk layout; bump on any incompatible change.
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: HEALPix ordering of the shard indices (nested keeps neighbours close in index).
ORDERING = "nested"
#: Band names become column-name prefixes, so they must be plain identifiers.
BAND_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def shard_file_name(nside: int, pixel: int) -> str:
    """File name of the shard holding HEALPix (nested) ``pixel`` at ``nside``."""
    return f"shard_{nside}_{pixel}.parquet"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 digest of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its HEALPix pixel, file name, row count and sha256."""

    pixel: int
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class BandInfo:
    """One photometric band: its output columns and where they came from.

    ``source_unit`` is ``"mag"`` (AB magnitudes converted to nJy) or ``"nJy"``.
    """

    flux_column: str
    flux_err_column: str
    source_column: str
    source_unit: str
    source_err_column: str | None = None


@dataclass(frozen=True)
class Manifest:
    """Contents of ``manifest.json`` (see ``docs/refcat.md`` for the format).

    ``columns`` maps every shard column to its unit string ("" for none);
    ``epoch`` is the Julian year of the positions when proper motions are present;
    ``footprint`` holds ``ra_min, ra_max, dec_min, dec_max`` [deg] of all rows and
    ``max_pm`` the largest total proper motion [mas/yr] (0 without proper motions),
    which the loader uses to pad its shard search when propagating.
    """

    nside: int
    bands: dict[str, BandInfo]
    columns: dict[str, str]
    shards: tuple[ShardInfo, ...]
    total_rows: int
    source: str
    epoch: float | None = None
    has_proper_motion: bool = False
    max_pm: float = 0.0
    n_dropped_nonfinite: int = 0
    footprint: dict[str, float] = field(default_factory=dict)
    ordering: str = ORDERING
    format_version: int = FORMAT_VERSION

    @property
    def pixels(self) -> tuple[int, ...]:
        """HEALPix (nested) indices of the shards that exist, ascending."""
        return tuple(shard.pixel for shard in self.shards)

    def shard(self, pixel: int) -> ShardInfo:
        """The shard of ``pixel``; KeyError if the refcat has no rows there."""
        for shard in self.shards:
            if shard.pixel == pixel:
                return shard
        raise KeyError(pixel)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (key order is stable)."""
        data = asdict(self)
        data["shards"] = [asdict(shard) for shard in self.shards]
        # Version and geometry first, the long shard list last: easier to read.
        first = ("format_version", "nside", "ordering", "epoch", "source", "total_rows")
        ordered = {key: data.pop(key) for key in first}
        shards = data.pop("shards")
        return {**ordered, **data, "shards": shards}

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "manifest") -> Manifest:
        """Validate and build a manifest; InvalidInputError naming what is wrong."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidInputError(
                f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            nside = int(data["nside"])
            bands = {str(name): BandInfo(**info) for name, info in dict(data["bands"]).items()}
            shards = tuple(ShardInfo(**shard) for shard in data["shards"])
            manifest = cls(
                nside=nside,
                bands=bands,
                columns={str(k): str(v) for k, v in dict(data["columns"]).items()},
                shards=shards,
                total_rows=int(data["total_rows"]),
                source=str(data["source"]),
                epoch=None if data.get("epoch") is None else float(data["epoch"]),
                has_proper_motion=bool(data.get("has_proper_motion", False)),
                max_pm=float(data.get("max_pm", 0.0)),
                n_dropped_nonfinite=int(data.get("n_dropped_nonfinite", 0)),
                footprint={str(k): float(v) for k, v in dict(data.get("footprint", {})).items()},
                ordering=str(data["ordering"]),
                format_version=int(version),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{where}: missing or malformed field ({exc!r})") from exc
        manifest.validate(where=where)
        return manifest

    def validate(self, *, where: str = "manifest") -> None:
        """Check internal consistency; InvalidInputError on the first problem."""
        if self.nside < 1 or self.nside & (self.nside - 1):
            raise InvalidInputError(f"{where}: nside must be a power of 2, got {self.nside}")
        if self.ordering != ORDERING:
            raise InvalidInputError(
                f"{where}: ordering {self.ordering!r} not supported (expected {ORDERING!r})"
            )
        if self.has_proper_motion and (self.epoch is None or not math.isfinite(self.epoch)):
            raise InvalidInputError(f"{where}: proper motions present but no finite epoch")
        for required in ("id", "ra", "dec"):
            if required not in self.columns:
                raise InvalidInputError(f"{where}: column {required!r} missing from 'columns'")
        for name, band in self.bands.items():
            for column in (band.flux_column, band.flux_err_column):
                if column not in self.columns:
                    raise InvalidInputError(
                        f"{where}: band {name!r} column {column!r} missing from 'columns'"
                    )
        npix = 12 * self.nside**2
        seen: set[int] = set()
        for shard in self.shards:
            if not 0 <= shard.pixel < npix or shard.pixel in seen:
                raise InvalidInputError(
                    f"{where}: shard pixel {shard.pixel} out of range [0, {npix}) or repeated"
                )
            seen.add(shard.pixel)
            if shard.rows < 1 or Path(shard.file).name != shard.file:
                raise InvalidInputError(f"{where}: bad shard entry {shard}")
        total = sum(shard.rows for shard in self.shards)
        if total != self.total_rows:
            raise InvalidInputError(
                f"{where}: total_rows {self.total_rows} != sum of shard rows {total}"
            )


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    """Write ``manifest.json`` into ``directory`` atomically (tmp file + replace)."""
    path = Path(directory) / MANIFEST_NAME
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/manifest.json``; InvalidInputError if unusable."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise InvalidInputError(
            f"reference catalog {directory}: no {MANIFEST_NAME} (build one with "
            "'promptcal refcat build')"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not readable JSON ({exc})") from exc
    return Manifest.from_dict(data, where=str(path))
