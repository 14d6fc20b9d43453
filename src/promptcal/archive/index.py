"""``promptcal archive index``: a directory of FITS files → a replayable night manifest.

Steps (``docs/archive.md``):

1. list the files matching the glob (hidden files and the index's own outputs aside);
2. read only their headers (:func:`promptcal.io.fits_scan.scan_fits`) and apply the
   header mapping (:func:`promptcal.archive.mapping.extract`); weight and mask
   companions named by the mapping are attached to their image;
3. group the frames into visits: by the exposure-id card when the mapping has one,
   else by start time (files starting within ``visit_tolerance`` are one visit, one
   detector each); visit ids without a card are Rubin-like ``YYYYMMDDsssss``, the
   observing day (UTC − 12 h) and the seconds since its noon, so they do not change
   when files are added or removed;
4. write ``camera.json`` (one detector per detector id, centred on the optical axis, as
   large as its largest frame) and the :class:`~promptcal.night.plan.NightManifest`.

Every file that cannot be used is kept in :attr:`IndexResult.skipped` (and in the
manifest's ``skipped``) with a one-line reason: unreadable, truncated, not FITS, no
image HDU, not a science exposure, undatable, no pointing, a second file for the same
visit and detector, another instrument.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from promptcal.archive.extract import FrameInfo, SkipFile, extract
from promptcal.archive.mapping import HeaderMapping, companion_of
from promptcal.core.errors import InvalidInputError
from promptcal.io.fits_scan import scan_fits

logger = logging.getLogger(__name__)

#: File names the index writes next to the manifest (never indexed themselves).
CAMERA_FILE = "camera.json"


@dataclass
class IndexResult:
    """What an index run found and wrote."""

    manifest_path: Path | None = None
    frames: list[FrameInfo] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    n_files: int = 0
    scan_time: float = 0.0  # reading headers and applying the mapping [s]
    n_visits: int = 0
    instrument: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        """Header-reading rate over every file looked at [1/s]."""
        return self.n_files / self.scan_time if self.scan_time > 0 else float("inf")


def list_files(directory: Path, pattern: str, exclude: set[Path]) -> list[Path]:
    """Regular, non-hidden files matching ``pattern`` under ``directory``, sorted."""
    if not directory.is_dir():
        raise InvalidInputError(f"archive directory {directory} does not exist")
    return sorted(
        p
        for p in directory.glob(pattern)
        if p.is_file() and not p.name.startswith(".") and p.resolve() not in exclude
    )


def scan_directory(files: list[Path], mapping: HeaderMapping, result: IndexResult):
    """Frames and companions (``{image name: {role: path}}``) of ``files``."""
    frames: list[FrameInfo] = []
    companions: dict[str, dict[str, Path]] = {}
    start = time.perf_counter()
    for path in files:
        try:
            scanned = scan_fits(path)
            role = companion_of(path.name, mapping)
            if role is not None:
                if scanned.image_hdu() is None:
                    raise SkipFile(f"{role[0]} file without a 2-D image HDU")
                companions.setdefault(role[1], {})[role[0]] = path
                continue
            frames.append(extract(path, scanned, mapping))
        except (InvalidInputError, SkipFile) as exc:
            result.skipped.append((path, str(exc)))
    result.scan_time = time.perf_counter() - start
    result.n_files = len(files)
    return frames, companions


def visit_id_from_time(start: dt.datetime) -> int:
    """``YYYYMMDDsssss``: observing day (UTC − 12 h) and seconds since its noon (UTC)."""
    day_obs = (start - dt.timedelta(hours=12)).date()
    noon = dt.datetime(day_obs.year, day_obs.month, day_obs.day, 12, tzinfo=dt.UTC)
    return int(f"{day_obs:%Y%m%d}{int((start - noon).total_seconds()):05d}")


def group_visits(frames: list[FrameInfo], tolerance: float, result: IndexResult):
    """``[(visit id, frames of distinct detectors)]`` in time order."""
    frames = sorted(frames, key=lambda f: (f.start_time, f.detector, f.path.name))
    groups: dict[int, list[FrameInfo]] = {}
    cluster_start: dt.datetime | None = None
    cluster_id = 0
    for frame in frames:
        if frame.visit is not None:
            key = frame.visit
        else:
            gap = None if cluster_start is None else (frame.start_time - cluster_start)
            if gap is None or gap.total_seconds() > tolerance:
                cluster_start = frame.start_time
                cluster_id = visit_id_from_time(frame.start_time)
            key = cluster_id
        members = groups.setdefault(key, [])
        twin = next((m for m in members if m.detector == frame.detector), None)
        if twin is not None:
            result.skipped.append(
                (frame.path, f"same visit {key} and detector {frame.detector} as {twin.path.name}")
            )
            continue
        members.append(frame)
    return sorted(groups.items(), key=lambda item: (item[1][0].start_time, item[0]))


def _uri(path: Path, base: Path) -> str:
    """Path relative to the manifest's directory when the file is below it, else absolute."""
    path = path.resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _one_instrument(frames: list[FrameInfo], result: IndexResult) -> list[FrameInfo]:
    counts = Counter(f.instrument for f in frames)
    name = counts.most_common(1)[0][0]
    for frame in frames:
        if frame.instrument != name:
            result.skipped.append(
                (frame.path, f"instrument {frame.instrument}, the night's is {name} "
                 "(index it separately, or set 'instrument' in the mapping)")
            )  # fmt: skip
    result.instrument = name
    return [f for f in frames if f.instrument == name]


def build_camera(instrument: str, frames: list[FrameInfo], mapping: HeaderMapping):
    """One detector per id at the focal-plane centre, as large as its largest frame."""
    from promptcal.core.camera import Camera, DetectorGeometry

    detectors = []
    for det in sorted({f.detector for f in frames}):
        mine = [f for f in frames if f.detector == det]
        saturations = [f.saturation for f in mine if f.saturation is not None]
        detectors.append(
            DetectorGeometry(
                id=det,
                name=f"D{det}",
                width=max(f.width for f in mine),
                height=max(f.height for f in mine),
                center_x_mm=0.0,
                center_y_mm=0.0,
                saturation=min(saturations) if saturations else None,
            )
        )
    scale = statistics.median(f.pixel_scale for f in frames)
    return Camera(name=instrument, pixel_scale_arcsec=scale, detectors=tuple(detectors))


def build_manifest(groups, mapping: HeaderMapping, base: Path, refcat: str, companions, config,
                   skipped=()):  # fmt: skip
    """The :class:`~promptcal.night.plan.NightManifest` of the grouped frames."""
    from promptcal.night.manifest import ExposureRecord, NightManifest, SkippedFile, VisitRecord

    visits, exposures = [], []
    for visit_id, members in groups:
        first = members[0]
        start = min(f.start_time for f in members)
        visits.append(
            VisitRecord(
                visit=visit_id,
                group_id=start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                band=first.band,
                boresight_ra=first.ra,
                boresight_dec=first.dec,
                rotation_angle=first.rotation,
                start_time=start,
                exposure_time=first.exposure_time,
                n_snaps=1,
            )
        )
        for frame in members:
            extra = companions.get(frame.path.name, {})
            closed = frame.mid_time + dt.timedelta(seconds=frame.exposure_time / 2.0)
            exposures.append(
                ExposureRecord(
                    visit=visit_id,
                    detector=frame.detector,
                    snap=0,
                    uri=_uri(frame.path, base),
                    mid_exposure_time=frame.mid_time,
                    ready_time=closed + dt.timedelta(seconds=mapping.readout_time),
                    band=frame.band,
                    boresight_ra=frame.ra,
                    boresight_dec=frame.dec,
                    rotation_angle=frame.rotation,
                    pixel_scale=frame.pixel_scale,
                    weight_uri=_uri(extra["weight"], base) if "weight" in extra else None,
                    mask_uri=_uri(extra["mask"], base) if "mask" in extra else None,
                )
            )
    n_detectors = len({e.detector for e in exposures})
    return NightManifest(
        instrument=groups[0][1][0].instrument,
        camera=CAMERA_FILE,
        refcat=refcat,
        next_visit_lead=30.0,
        config=config,
        visits=tuple(visits),
        exposures=tuple(sorted(exposures, key=lambda e: (e.ready_time, e.detector))),
        # One detector would put the whole night on one partition, i.e. one worker.
        partition_key="visit-detector" if n_detectors == 1 else "detector",
        skipped=tuple(SkippedFile(path=_uri(p, base), reason=r) for p, r in skipped),
    )


def index_archive(
    directory: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    mapping: HeaderMapping | None = None,
    pattern: str = "*",
    refcat: str | os.PathLike[str] | None = None,
) -> IndexResult:
    """Index the FITS files of ``directory`` into the night manifest ``output``.

    Parameters
    ----------
    directory : path
        The archive (searched with ``pattern``; ``**/`` patterns recurse).
    output : path
        ``manifest.json`` to write (its directory also gets ``camera.json``).
    mapping : HeaderMapping, optional
        Header mapping (default: standard cards).
    pattern : str
        File-name glob relative to ``directory``.
    refcat : path, optional
        Reference-catalog directory (default ``refcat`` beside the manifest).

    Returns
    -------
    IndexResult
        ``manifest_path`` is None when no file was usable (nothing is written then).
    """
    from promptcal.core.camera import write_camera
    from promptcal.night.manifest import write_manifest

    mapping = mapping or HeaderMapping()
    directory, output = Path(directory).resolve(), Path(output).resolve()
    base = output.parent
    result = IndexResult()
    files = list_files(directory, pattern, {output, base / CAMERA_FILE})
    frames, companions = scan_directory(files, mapping, result)
    if frames:
        frames = _one_instrument(frames, result)
    groups = group_visits(frames, mapping.visit_tolerance, result)
    used = {f.path.name for _, members in groups for f in members}
    for image, roles in companions.items():
        if image not in used:
            for role, path in roles.items():
                result.skipped.append((path, f"{role} file of {image}, which is not indexed"))
    result.skipped.sort(key=lambda item: item[0].name)
    result.frames = [f for _, members in groups for f in members]
    result.n_visits = len(groups)
    if not groups:
        return result
    refcat_path = Path(refcat).resolve() if refcat is not None else base / "refcat"
    if not (refcat_path / "manifest.json").is_file():
        result.warnings.append(
            f"no reference catalog at {refcat_path} yet (build it with `promptcal refcat build`)"
        )
    config = {
        "archive": {
            "directory": str(directory),
            "glob": pattern,
            "files": result.n_files,
            "indexed": len(result.frames),
            "mapping": mapping.model_dump(mode="json"),
        }
    }
    manifest = build_manifest(
        groups, mapping, base, _uri(refcat_path, base), companions, config, result.skipped
    )
    base.mkdir(parents=True, exist_ok=True)
    write_camera(build_camera(manifest.instrument, result.frames, mapping), base / CAMERA_FILE)
    result.manifest_path = write_manifest(manifest, output)
    return result
