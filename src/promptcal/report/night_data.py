"""The night report's numbers: quality and latency of every exposure of a product root.

:func:`collect_night` reads what the worker wrote — ``summary.json`` of every
``<root>/<instrument>/<visit>/<detector>/`` (status, error, summary statistics), the
mid-exposure time from the ``calexp.fits`` primary header (``DATE-AVG``), and the
replay's ``replay/results.jsonl`` (the ``calibrated`` messages' end-to-end latency, the
unreadable snaps). Nothing is recomputed from pixels or catalogs: the quantities are
the products' own numbers, the PSF FWHM converted from ``psfSigma`` exactly as the
worker's ``promptcal_psf_fwhm_arcsec`` gauge does (``psfSigma × 2√(2 ln 2) ×
pixelScale``).

:mod:`promptcal.report.html` turns them into the page. See ``docs/replay-and-report.md``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from promptcal.core.constants import FWHM_PER_SIGMA
from promptcal.core.errors import InvalidInputError

#: Quantity -> (summary key, label, unit) shown in the report.
QUANTITIES: dict[str, tuple[str, str, str]] = {
    "zero_point": ("zeroPoint", "zero point", "mag"),
    "psf_fwhm": ("psfSigma", "PSF FWHM", "arcsec"),
    "sky": ("skyBg", "sky background", "count"),
    "astrom_scatter": ("astromOffsetStd", "astrometric scatter", "arcsec"),
}

#: Latency percentiles reported [%].
PERCENTILES = (50, 90, 95, 99)


@dataclass
class ExposureRow:
    """One (visit, detector) of the night, as its products describe it."""

    instrument: str
    visit: int
    detector: int
    status: str  # success, failed, dead_letter
    band: str | None = None
    time: str | None = None  # mid-exposure, ISO 8601 UTC
    zero_point: float | None = None
    psf_fwhm: float | None = None
    sky: float | None = None
    astrom_scatter: float | None = None
    n_stars: int | None = None
    latency: float | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass
class NightData:
    """Every exposure of a product root, plus what the report needs to draw them."""

    root: str
    rows: list[ExposureRow] = field(default_factory=list)
    camera: Any = None  # promptcal.core.camera.Camera, for the focal-plane maps

    def values(self, quantity: str) -> np.ndarray:
        """Finite values of a quantity over the successful exposures."""
        vals = [getattr(r, quantity) for r in self.rows if r.status == "success"]
        return np.array([v for v in vals if v is not None and math.isfinite(v)], float)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _mid_time(calexp: Path) -> str | None:
    """Mid-exposure time (UTC, ISO 8601) from the calexp's ``DATE-AVG``/``TIMESYS``."""
    from astropy.io import fits
    from astropy.time import Time

    try:
        header = fits.getheader(calexp, 0)
        scale = str(header.get("TIMESYS", "UTC")).lower()
        return Time(header["DATE-AVG"], scale=scale).utc.isot + "Z"
    except (OSError, KeyError, ValueError):
        return None


def row_from_summary(instrument: str, directory: Path, document: dict) -> ExposureRow:
    """The report row of one product directory's ``summary.json``."""
    stats = document.get("summary") or {}
    error = document.get("error") or {}
    sigma, scale = _finite(stats.get("psfSigma")), _finite(stats.get("pixelScale"))
    return ExposureRow(
        instrument=instrument,
        visit=int(directory.parent.name),
        detector=int(directory.name),
        status=document.get("status", "failed"),
        band=document.get("band"),
        time=_mid_time(directory / "calexp.fits"),
        zero_point=_finite(stats.get("zeroPoint")),
        psf_fwhm=None if sigma is None or scale is None else sigma * FWHM_PER_SIGMA * scale,
        sky=_finite(stats.get("skyBg")),
        astrom_scatter=_finite(stats.get("astromOffsetStd")),
        n_stars=document.get("n_stars"),
        error_type=error.get("type"),
        error_message=error.get("message"),
    )


def _load_camera(root: Path, camera: str | os.PathLike[str] | None):
    from promptcal.core.camera import load_camera
    from promptcal.night.manifest import read_manifest

    if camera is not None:
        return load_camera(camera if str(camera) in ("toy3x3", "lsstcam-like") else Path(camera))
    run = root / "replay" / "run.json"
    try:
        manifest, base = read_manifest(json.loads(run.read_text())["manifest"])
        return load_camera(base / manifest.camera)
    except (OSError, ValueError, KeyError, InvalidInputError):
        return None


def collect_night(root: str | os.PathLike[str], *, camera=None) -> NightData:
    """Read the products (and the replay's results log) under ``root``."""
    from promptcal.replay.jobs import read_results

    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"report: {root} is not a directory")
    rows: dict[tuple[str, int, int], ExposureRow] = {}
    for path in sorted(root.glob("*/*/*/summary.json")):
        directory = path.parent
        if not (directory.name.isdigit() and directory.parent.name.isdigit()):
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        row = row_from_summary(directory.parent.parent.name, directory, document)
        rows[(row.instrument, row.visit, row.detector)] = row
    latencies: dict[tuple[int, int], float | None] = {}
    for record in read_results(root):
        key = (int(record["visit"]), int(record["detector"]))
        message = record.get("message") or {}
        if record["kind"] == "calibrated":
            latencies[key] = _finite(message.get("end_to_end_latency"))
        elif record["kind"] == "dead_letter" and not any(k[1:] == key for k in rows):
            known = sorted({k[0] for k in rows})
            instrument = message.get("instrument") or (known[0] if len(known) == 1 else "?")
            rows[(instrument, *key)] = ExposureRow(
                instrument,
                *key,
                status="dead_letter",
                error_type=message.get("error_type"),
                error_message=message.get("error_message"),
            )
    for (_instrument, visit, det), row in rows.items():
        row.latency = latencies.get((visit, det))
    if not rows:
        raise InvalidInputError(f"report: no products (*/VISIT/DETECTOR/summary.json) in {root}")
    ordered = sorted(rows.values(), key=lambda r: (r.time or "", r.visit, r.detector))
    return NightData(str(root), ordered, _load_camera(root, camera))


def statistics(values: np.ndarray) -> dict[str, float | int | None]:
    """``n, median, mean, std, min, max`` (None when empty)."""
    if values.size == 0:
        return {"n": 0, "median": None, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": int(values.size),
        "median": float(np.median(values)),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def summarize(night: NightData) -> dict[str, Any]:
    """Every number of the report (what ``report.json`` holds)."""
    by_status = {s: sum(r.status == s for r in night.rows) for s in ("success", "failed")}
    by_status["dead_letter"] = sum(r.status == "dead_letter" for r in night.rows)
    latencies = np.array([r.latency for r in night.rows if r.latency is not None], float)
    failures: dict[str, int] = {}
    for r in night.rows:
        if r.status != "success":
            failures[r.error_type or "?"] = failures.get(r.error_type or "?", 0) + 1
    times = [r.time for r in night.rows if r.time]
    return {
        "root": night.root,
        "n_exposures": len(night.rows),
        "n_visits": len({r.visit for r in night.rows}),
        "n_detectors": len({r.detector for r in night.rows}),
        "status": by_status,
        "bands": sorted({r.band for r in night.rows if r.band}),
        "first_exposure": min(times) if times else None,
        "last_exposure": max(times) if times else None,
        "quantities": {q: statistics(night.values(q)) for q in QUANTITIES},
        "latency": {
            **statistics(latencies),
            **{
                f"p{p}": (float(np.percentile(latencies, p)) if latencies.size else None)
                for p in PERCENTILES
            },
        },
        "failures_by_type": dict(sorted(failures.items())),
        "exposures": [asdict(r) for r in night.rows],
    }
