"""The night report as a page: ``index.html`` (self-contained: CSS inline, figures as
``data:`` URIs), the figures as PNG files beside it, and ``report.json`` with every
number the page shows (:func:`write_report`); and a few lines for the terminal
(:func:`one_screen_summary`). The numbers come from :mod:`promptcal.report.night_data`."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from pathlib import Path
from typing import Any

from promptcal.report.drift import pointing_section
from promptcal.report.night_data import PERCENTILES, QUANTITIES, collect_night, summarize
from promptcal.report.plots import img_tag, write_figures

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
            parts.append(img_tag(figures[name]))
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
        parts.append(img_tag(figures["latency"]))
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
    night = collect_night(root, camera=camera)
    out = Path(output) if output is not None else Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    numbers = summarize(night)
    numbers["generated"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    figures = write_figures(night, numbers, out)
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
