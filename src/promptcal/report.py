"""The night report: quality and latency of every exposure of a product root.

:func:`collect_night` reads what the worker wrote — ``summary.json`` of every
``<root>/<instrument>/<visit>/<detector>/`` (status, error, summary statistics), the
mid-exposure time from the ``calexp.fits`` primary header (``DATE-AVG``), and the
replay's ``replay/results.jsonl`` (the ``calibrated`` messages' end-to-end latency, the
unreadable snaps). Nothing is recomputed from pixels or catalogs: the quantities are
the products' own numbers, the PSF FWHM converted from ``psfSigma`` exactly as the
worker's ``promptcal_psf_fwhm_arcsec`` gauge does (``psfSigma × 2√(2 ln 2) ×
pixelScale``).

:func:`write_report` writes ``index.html`` (self-contained: CSS inline, figures as
``data:`` URIs), the figures as PNG files beside it, and ``report.json`` with every
number the page shows. See ``docs/replay-and-report.md``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .metrics import FWHM_PER_SIGMA

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
    camera: Any = None  # promptcal.camera.Camera, for the focal-plane maps

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
    from .camera import load_camera
    from .night import read_manifest

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
    from .replay import read_results

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


# -- HTML ---------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:0.9em}
th{background:#f0f0f0} td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.6g}"
    return html.escape(str(value))


def _cell(tag: str, value: Any, left: bool) -> str:
    attr = ' class="l"' if left else ""
    return f"<{tag}{attr}>{value}</{tag}>"


def _table(header: list[str], rows: list[list[Any]], left: int = 0) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (text)."""
    head = "".join(_cell("th", h, i < left) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(_cell("td", _fmt(v), i < left) for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'


def render_html(numbers: dict[str, Any], figures: dict[str, Path], extra: str = "") -> str:
    """The self-contained page (``extra``: HTML of further sections, before Latency)."""
    s = numbers["status"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>promptcal night report"
        f"</title><style>{_CSS}</style></head><body><h1>Night report</h1>",
        f"<p>{numbers['n_exposures']} exposures ({numbers['n_visits']} visits × up to "
        f"{numbers['n_detectors']} detectors), bands {', '.join(numbers['bands']) or '–'}, "
        f"{_fmt(numbers['first_exposure'])} → {_fmt(numbers['last_exposure'])} UTC. "
        f"<b>{s['success']}</b> calibrated, <b>{s['failed']}</b> failed, "
        f"<b>{s['dead_letter']}</b> unreadable. Products: {html.escape(numbers['root'])}</p>",
        "<h2>Quality</h2>",
        _table(
            ["quantity", "unit", "n", "median", "mean", "std", "min", "max"],
            [
                [QUANTITIES[q][1], QUANTITIES[q][2], *[st[k] for k in list(st)]]
                for q, st in numbers["quantities"].items()
            ],
            left=2,
        ),
    ]
    for name in ("timeseries", *[f"focal_plane_{q}" for q in QUANTITIES]):
        if name in figures:
            parts.append(_img(figures[name]))
    lat = numbers["latency"]
    parts += [
        extra,
        "<h2>Latency</h2><p>End-to-end: last snap's image-ready to the calibrated message.</p>",
        _table(
            ["n", *[f"p{p} [s]" for p in PERCENTILES], "max [s]"],
            [[lat["n"], *[lat[f"p{p}"] for p in PERCENTILES], lat["max"]]],
        ),
    ]
    if "latency" in figures:
        parts.append(_img(figures["latency"]))
    failed = [e for e in numbers["exposures"] if e["status"] != "success"]
    parts.append("<h2>Failures</h2>")
    parts.append(
        _table(["error type", "count"], list(numbers["failures_by_type"].items()), left=1)
        if failed
        else "<p>None.</p>"
    )
    if failed:
        parts.append(
            _table(
                ["visit", "detector", "status", "error type", "message"],
                [
                    [e["visit"], e["detector"], e["status"], e["error_type"], e["error_message"]]
                    for e in failed
                ],
                left=5,
            )
        )
    cols = ["visit", "detector", "band", "time", "status", *QUANTITIES, "n_stars", "latency"]
    parts += [
        "<h2>Exposures</h2><details><summary>all exposures</summary>",
        _table(cols, [[e[c] for c in cols] for e in numbers["exposures"]], left=5),
        "</details></body></html>",
    ]
    return "\n".join(parts)


def write_report(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    camera=None,
) -> tuple[Path, dict[str, Any]]:
    """Write the night report of product root ``root``.

    Parameters
    ----------
    root : path
        Product root (the worker's or replay's ``--output``).
    output : path, optional
        Report directory (default ``<root>/report``).
    camera : str or path, optional
        Camera for the focal-plane maps (default: the replayed night's).

    Returns
    -------
    (pathlib.Path, dict)
        ``index.html`` and the numbers it shows (also in ``report.json``).
    """
    from .report_plots import write_figures

    night = collect_night(root, camera=camera)
    out = Path(output) if output is not None else Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    numbers = summarize(night)
    numbers["generated"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    figures = write_figures(night, numbers, out)
    from .report_drift import pointing_section

    extra = pointing_section(night, numbers, out, figures)
    numbers["figures"] = {k: p.name for k, p in figures.items()}
    (out / "report.json").write_text(json.dumps(numbers, indent=1, allow_nan=False) + "\n")
    index = out / "index.html"
    index.write_text(render_html(numbers, figures, extra), encoding="utf-8")
    return index, numbers


def one_screen_summary(numbers: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    s, q, lat = numbers["status"], numbers["quantities"], numbers["latency"]

    def med(name: str, fmt: str) -> str:
        st = q[name]
        if st["median"] is None:
            return "–"
        return f"{st['median']:{fmt}} (range {st['min']:{fmt}} – {st['max']:{fmt}})"

    lines = [
        f"exposures   {numbers['n_exposures']} ({numbers['n_visits']} visits, bands "
        f"{','.join(numbers['bands'])}): {s['success']} calibrated, {s['failed']} failed, "
        f"{s['dead_letter']} unreadable",
        f"zero point  {med('zero_point', '.3f')} mag",
        f"PSF FWHM    {med('psf_fwhm', '.2f')} arcsec",
        f"sky         {med('sky', '.0f')} counts",
        f"astrometry  {med('astrom_scatter', '.3f')} arcsec scatter",
    ]
    if lat["n"]:
        lines.append(
            f"latency     p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, max {lat['max']:.2f} s"
        )
    if numbers["failures_by_type"]:
        lines.append(
            "failures    " + ", ".join(f"{k} × {v}" for k, v in numbers["failures_by_type"].items())
        )
    return "\n".join(lines)
