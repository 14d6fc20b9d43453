"""The night manifest: the visits of a night and one record per snap file, as
``promptcal replay`` reads them (``manifest.json``).

Written by :func:`promptcal.night.simulate.simulate_night` for a synthetic night.
Times are UTC; relative file paths start at the manifest's directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from promptcal.core.errors import InvalidInputError

#: Version of the manifest format written by :func:`write_manifest`.
MANIFEST_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VisitRecord(_Record):
    """One visit of the night, with the truth it was simulated from (None: archived)."""

    visit: int = Field(ge=0, description="Visit id (YYYYMMDDsssss).")
    group_id: str = Field(description="Observatory group id.")
    band: str = Field(description="Band.")
    boresight_ra: float = Field(ge=0, lt=360, description="Boresight RA [deg].")
    boresight_dec: float = Field(ge=-90, le=90, description="Boresight Dec [deg].")
    rotation_angle: float = Field(description="Sky rotation angle (rotation_system SKY) [deg].")
    start_time: dt.datetime = Field(description="Shutter opening of the first snap (UTC).")
    exposure_time: float = Field(gt=0, description="Open-shutter time per snap [s].")
    n_snaps: int = Field(ge=1, le=2, description="Snaps in the visit.")
    seeing: float | None = Field(None, gt=0, description="True PSF FWHM [arcsec].")
    sky: float | None = Field(None, ge=0, description="True sky level of the visit [count/px].")
    transparency: float | None = Field(None, gt=0, description="True transparency [-].")
    calibration: float | None = Field(None, gt=0, description="True calibration [nJy/count].")
    zero_point: float | None = Field(
        None, description="True zero point [AB mag] (31.4 - 2.5 log10 cal)."
    )


class ExposureRecord(_Record):
    """One snap file of one (visit, detector)."""

    visit: int = Field(ge=0, description="Visit id.")
    detector: int = Field(ge=0, description="Detector id.")
    snap: int = Field(ge=0, description="Snap index.")
    uri: str = Field(description="The file: a path relative to the manifest, or a URI.")
    mid_exposure_time: dt.datetime = Field(description="Middle of this snap (UTC).")
    ready_time: dt.datetime = Field(description="When the file is in storage (UTC).")
    band: str = Field(description="Band.")
    boresight_ra: float = Field(description="Boresight RA [deg].")
    boresight_dec: float = Field(description="Boresight Dec [deg].")
    rotation_angle: float = Field(description="Sky rotation angle [deg].")
    seed: int | None = Field(None, ge=0, description="Seed of the simulated (visit, detector).")
    pixel_scale: float | None = Field(
        None, gt=0, description="Pixel-scale hint [\"/px]; None: the camera's (archives set it)."
    )
    weight_uri: str | None = Field(None, description="Inverse-variance weight file, if any.")
    mask_uri: str | None = Field(None, description="Mask/DQ file, if any.")


class SkippedFile(_Record):
    """A file ``promptcal archive index`` could not use."""

    path: str = Field(description="The file, relative to the manifest when possible.")
    reason: str = Field(description="Why, in one line.")


class NightManifest(_Record):
    """Everything ``promptcal replay`` needs to replay a night (``manifest.json``)."""

    format_version: Literal[1] = Field(MANIFEST_VERSION, description="Format version.")
    instrument: str = Field(description="Instrument name.")
    camera: str = Field(description="Camera JSON file, relative to the manifest.")
    refcat: str = Field(description="Reference-catalog directory, relative to the manifest.")
    next_visit_lead: float = Field(ge=0, description="next-visit before shutter open [s].")
    config: dict = Field(description="The NightConfig simulated.")
    visits: tuple[VisitRecord, ...] = Field(description="Visits in time order.")
    exposures: tuple[ExposureRecord, ...] = Field(description="Snap files.")
    partition_key: Literal["detector", "visit-detector"] = Field(
        "detector",
        description="Kafka key of next-visit/image-ready: the detector (design default), or "
        "visit:detector so that a one-detector night spreads over the partitions.",
    )
    skipped: tuple[SkippedFile, ...] = Field(
        (), description="Files of the archive that were not indexed, with the reason."
    )

    def visit(self, visit: int) -> VisitRecord:
        """The record of one visit."""
        for record in self.visits:
            if record.visit == visit:
                return record
        raise InvalidInputError(f"visit {visit} is not in the manifest")


def write_manifest(manifest: NightManifest, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest.json`` (indented JSON)."""
    path = Path(path)
    path.write_text(manifest.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return path


def read_manifest(path: str | os.PathLike[str]) -> tuple[NightManifest, Path]:
    """Read a manifest; returns it and its directory (where relative paths start).

    ``path`` may be the file or the directory that holds ``manifest.json``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return NightManifest.model_validate(data), path.parent.resolve()
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"night manifest {path}: {exc}") from exc


def resolve_uri(uri: str, base: Path) -> str:
    """``file://`` URI of a manifest entry (relative paths start at ``base``)."""
    if "://" in uri:
        return uri
    path = Path(uri)
    return (path if path.is_absolute() else base / path).resolve().as_uri()
