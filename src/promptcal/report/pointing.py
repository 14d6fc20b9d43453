"""The astrometric side of a night report: drift, scale, matches, and which frames solved.

For archived nights the header pointing is only a hint (MicroObservatory's drifts by up
to half a field during the night), so the report shows, per exposure and against
time, the solved frame centre's offset from where the header pointing and the camera
geometry put the detector's centre (the drift track), the
pixel scale, the astrometric match count and median match residual, the zero point
with its error, the PSF FWHM and the sky, and which frames count as *solved*:

- an astrometric solution on disk (``astrometry_matches.parquet``), whatever failed
  after it (a frame whose only unsaturated reference is missing still has its WCS);
- at least :data:`MIN_MATCHES` astrometric matches;
- median match residual at most :data:`MAX_RESIDUAL_PX` pixels;
- pixel scale within :data:`SCALE_TOLERANCE` of the night's median (over the
  solved frames).

Failed frames (``status == "failed"``, solved or not) are listed with their reason.

Everything is read from the products: ``summary.json`` (``ra``/``dec`` of the centre,
``pixelScale``, ``zeroPoint``, ``skyBg``, ``psfSigma``, the applied calibration and its
error), ``astrometry_matches.parquet`` (``distance``), and the replayed manifest
(header pointing, file, mid-exposure time) found through ``replay/run.json``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from promptcal.qa.solved_frame import MAX_MEDIAN_RESIDUAL_PX as MAX_RESIDUAL_PX
from promptcal.qa.solved_frame import MIN_MATCHES, SCALE_TOLERANCE

#: 2.5 / ln 10: magnitude error of a relative flux error.
MAG_PER_REL_FLUX = 2.5 / math.log(10.0)


@dataclass
class PointingRow:
    """The astrometric and photometric record of one exposure."""

    visit: int
    detector: int
    status: str
    time: str | None = None  # mid-exposure, ISO 8601 UTC
    file: str | None = None
    header_ra: float | None = None  # detector centre predicted from the header [deg]
    header_dec: float | None = None  # [deg]
    ra: float | None = None  # solved centre [deg]
    dec: float | None = None  # [deg]
    offset_east: float | None = None  # solved − header, east [arcmin]
    offset_north: float | None = None  # [arcmin]
    offset: float | None = None  # [arcmin]
    pixel_scale: float | None = None  # ["/px]
    n_matches: int | None = None
    median_residual_px: float | None = None
    zero_point: float | None = None  # [mag]
    zero_point_err: float | None = None  # [mag]
    psf_fwhm: float | None = None  # ["]
    sky: float | None = None  # [count]
    solved: bool = False
    reason: str | None = None  # why not solved
    failure: str | None = None  # why the calibration failed (status "failed")


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def sky_offset(ra0: float, dec0: float, ra: float, dec: float) -> tuple[float, float, float]:
    """(east, north, total) offset of (ra, dec) from (ra0, dec0) on the tangent plane
    at (ra0, dec0), and the great-circle distance [arcmin]."""
    a0, d0, a, d = map(math.radians, (ra0, dec0, ra, dec))
    cos_c = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
    east = math.cos(d) * math.sin(a - a0) / cos_c
    north = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cos_c
    total = math.acos(max(-1.0, min(1.0, cos_c)))
    return tuple(math.degrees(v) * 60.0 for v in (east, north, total))  # type: ignore[return-value]


def manifest_exposures(root: Path) -> dict[tuple[int, int], Any]:
    """(visit, detector) -> ExposureRecord (first snap) of the replayed manifest, if any."""
    from promptcal.core.errors import InvalidInputError
    from promptcal.night.manifest import read_manifest

    try:
        run = json.loads((root / "replay" / "run.json").read_text(encoding="utf-8"))
        manifest, _ = read_manifest(run["manifest"])
    except (OSError, ValueError, KeyError, InvalidInputError):
        return {}
    out: dict[tuple[int, int], Any] = {}
    for record in manifest.exposures:
        out.setdefault((record.visit, record.detector), record)
    return out


def _residual_px(directory: Path, scale: float | None) -> tuple[int | None, float | None]:
    """(match count, median match residual [px]) from ``astrometry_matches.parquet``."""
    import pyarrow.parquet as pq

    path = directory / "astrometry_matches.parquet"
    try:
        distance = pq.read_table(path, columns=["distance"]).column(0).to_numpy()
    except (OSError, KeyError, ValueError):
        return None, None
    distance = np.asarray(distance, float)
    if distance.size == 0 or scale is None:
        return int(distance.size), None
    return int(distance.size), float(np.median(distance)) / scale


def expected_centre(camera, record) -> tuple[float, float]:
    """Where the header pointing puts the detector's centre [deg]: through the camera
    geometry when it knows the detector (archive cameras centre it on the boresight)."""
    from promptcal.core.camera import predict_detector_wcs
    from promptcal.core.errors import InvalidInputError

    ra, dec = record.boresight_ra, record.boresight_dec
    if camera is None:
        return ra, dec
    try:
        det = camera.detector(record.detector)
        wcs = predict_detector_wcs(camera, det.id, ra, dec, record.rotation_angle)
    except InvalidInputError:
        return ra, dec
    c_ra, c_dec = wcs.pixel_to_world_values((det.width - 1) / 2.0, (det.height - 1) / 2.0)
    return float(c_ra) % 360.0, float(c_dec)


def pointing_row(directory: Path, row, record, camera=None) -> PointingRow:
    """The :class:`PointingRow` of one exposure (``row``: its report ExposureRow)."""
    out = PointingRow(row.visit, row.detector, row.status, time=row.time)
    if row.status != "success":
        out.failure = f"{row.error_type or row.status}: {row.error_message or 'no message'}"
    out.zero_point, out.psf_fwhm, out.sky = row.zero_point, row.psf_fwhm, row.sky
    if record is not None:
        out.file = Path(record.uri).name
        out.header_ra, out.header_dec = expected_centre(camera, record)
        out.time = out.time or record.mid_exposure_time.isoformat().replace("+00:00", "Z")
    try:
        document = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = {}
    stats = document.get("summary") or {}
    out.ra, out.dec = _finite(stats.get("ra")), _finite(stats.get("dec"))
    out.pixel_scale = _finite(stats.get("pixelScale"))
    calib = document.get("applied_calibration") or {}
    mean, error = _finite(calib.get("mean")), _finite(calib.get("error"))
    if mean and error is not None and out.zero_point is not None:
        out.zero_point_err = MAG_PER_REL_FLUX * error / mean
    out.n_matches, out.median_residual_px = _residual_px(directory, out.pixel_scale)
    if None not in (out.ra, out.dec, out.header_ra, out.header_dec):
        east, north, total = sky_offset(out.header_ra, out.header_dec, out.ra, out.dec)
        out.offset_east, out.offset_north, out.offset = east, north, total
    return out


def judge(rows: list[PointingRow]) -> float | None:
    """Set ``solved``/``reason`` of every row; returns the night's median pixel scale."""
    scales = [r.pixel_scale for r in rows if r.n_matches and r.pixel_scale]
    median = float(np.median(scales)) if scales else None
    for r in rows:
        if r.n_matches is None:
            r.reason = r.failure or "no astrometric solution"
        elif (r.n_matches or 0) < MIN_MATCHES:
            r.reason = f"{r.n_matches or 0} astrometric matches < {MIN_MATCHES}"
        elif r.median_residual_px is None or r.median_residual_px > MAX_RESIDUAL_PX:
            r.reason = f"median match residual {r.median_residual_px} px > {MAX_RESIDUAL_PX}"
        elif median is None or r.pixel_scale is None:
            r.reason = "no pixel scale"
        elif abs(r.pixel_scale / median - 1.0) > SCALE_TOLERANCE:
            r.reason = f"pixel scale {r.pixel_scale:.4f} is > 1% from the median {median:.4f}"
        r.solved = r.reason is None
    return median


def parse_time(text: str) -> dt.datetime:
    """A row's ISO 8601 UTC time (``Z`` suffix allowed)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


#: Consecutive frames further apart than this × the night's median interval are across a
#: gap in the archive (e.g. the telescope stopped): their drift is reported separately.
GAP_FACTOR = 3.0


def consecutive_steps(rows: list[PointingRow]) -> list[tuple[float, float, PointingRow]]:
    """(distance [arcmin], interval [min], later row) between the centres of consecutive
    solved frames, in time order."""

    def minutes(text: str) -> float:
        return parse_time(text).timestamp() / 60.0

    solved = sorted((r for r in rows if r.solved and r.time), key=lambda r: r.time)
    return [
        (sky_offset(a.ra, a.dec, b.ra, b.dec)[2], minutes(b.time) - minutes(a.time), b)
        for a, b in itertools.pairwise(solved)
        if None not in (a.ra, a.dec, b.ra, b.dec)
    ]


def split_at_gaps(steps):
    """(steps within the cadence, steps across gaps): a gap is an interval over
    :data:`GAP_FACTOR` × the median interval."""
    if not steps:
        return [], []
    limit = GAP_FACTOR * float(np.median([interval for _, interval, _ in steps]))
    return (
        [s for s in steps if s[1] <= limit],
        [s for s in steps if s[1] > limit],
    )


def pointing_numbers(night) -> tuple[dict[str, Any], list[PointingRow]]:
    """The numbers of the section (``report.json["pointing"]``) and the rows."""
    root = Path(night.root)
    records = manifest_exposures(root)
    rows = [
        pointing_row(
            root / r.instrument / str(r.visit) / str(r.detector),
            r,
            records.get((r.visit, r.detector)),
            night.camera,
        )
        for r in night.rows
    ]
    median = judge(rows)
    steps, gaps = split_at_gaps(consecutive_steps(rows))
    offsets = [r.offset for r in rows if r.solved and r.offset is not None]
    numbers = {
        "definition": {
            "min_matches": MIN_MATCHES,
            "max_median_residual_px": MAX_RESIDUAL_PX,
            "scale_tolerance": SCALE_TOLERANCE,
        },
        "n_exposures": len(rows),
        "n_solved": sum(r.solved for r in rows),
        "median_pixel_scale": median,
        "max_consecutive_distance_arcmin": max(d for d, _, _ in steps) if steps else None,
        "gaps": [
            {
                "before": row.file,
                "minutes": interval,
                "distance_arcmin": distance,
                "arcmin_per_minute": distance / interval,
            }
            for distance, interval, row in gaps
        ],
        "max_header_offset_arcmin": max(offsets) if offsets else None,
        "not_solved": [
            {"visit": r.visit, "detector": r.detector, "file": r.file, "reason": r.reason}
            for r in rows
            if not r.solved
        ],
        "failed": [
            {"visit": r.visit, "detector": r.detector, "file": r.file, "reason": r.failure}
            for r in rows
            if r.failure is not None
        ],
        "rows": [asdict(r) for r in rows],
    }
    return numbers, rows
