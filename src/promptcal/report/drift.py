"""The "Pointing and astrometry" section of the night report (figures and HTML).

``drift.png``: against the mid-exposure time, the solved centre's offset from the
header pointing (east and north components and the total) [arcmin], the pixel scale
[″/px], the astrometric match count, the zero point with its error bars [mag], the PSF
FWHM [″] and the sky [count]; solved frames filled, calibrated-but-not-solved frames
hollow, failed frames as red crosses on the zero line. ``drift_track.png``: the offsets
on the sky (east left, as on a sky image), coloured by time. The table lists every
frame that did not solve, with the reason.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from promptcal.report.pointing import PointingRow, parse_time, pointing_numbers

#: (attribute, axis label) of the drift figure's panels after the offsets.
PANELS = (
    ("pixel_scale", 'pixel scale ["/px]'),
    ("n_matches", "astrometric matches"),
    ("zero_point", "zero point [mag]"),
    ("psf_fwhm", 'PSF FWHM ["]'),
    ("sky", "sky [count]"),
)


def _save(fig: Figure, path: Path) -> Path:
    from promptcal.report.plots import _save as save

    return save(fig, path)


def _series(rows: list[PointingRow], attr: str, solved: bool):
    pts = [
        (parse_time(r.time), getattr(r, attr), r)
        for r in rows
        if r.time and r.solved == solved and getattr(r, attr) is not None
    ]
    return pts


def plot_drift(rows: list[PointingRow], path: Path) -> Path | None:
    """Offsets, scale, matches, zero point, FWHM and sky against time."""
    # Every frame with a solution or a result is drawn: a frame whose photometry failed
    # after its astrometry solved still has its offset, scale and matches.
    calibrated = [r for r in rows if r.time and (r.status == "success" or r.n_matches)]
    if not calibrated:
        return None
    fig = Figure(figsize=(11, 13), layout="constrained")
    axes = fig.subplots(len(PANELS) + 1, 1, sharex=True)
    for attr, colour, label in (
        ("offset_east", "#0072b2", "east"),
        ("offset_north", "#d55e00", "north"),
        ("offset", "#444444", "total"),
    ):
        for solved in (True, False):
            pts = _series(calibrated, attr, solved)
            if pts:
                t, v, _ = zip(*pts, strict=True)
                face = colour if solved else "none"
                axes[0].plot(t, v, "o", ms=4, mec=colour, mfc=face,
                             label=label if solved else None)  # fmt: skip
    failed = [r for r in rows if r.status != "success" and r.time]
    if failed:  # failed calibrations: a cross at their offset, on the zero line if unsolved
        t = [parse_time(r.time) for r in failed]
        v = [r.offset if r.offset is not None and r.solved else 0.0 for r in failed]
        axes[0].plot(t, v, "x", ms=5, c="#cc3311", label="failed")
    axes[0].set_ylabel("offset from header\npointing [arcmin]")
    axes[0].legend(loc="best", fontsize="small")
    for ax, (attr, label) in zip(axes[1:], PANELS, strict=True):
        for solved in (True, False):
            pts = _series(calibrated, attr, solved)
            if not pts:
                continue
            t, v, rs = zip(*pts, strict=True)
            face = "#4477aa" if solved else "none"
            if attr == "zero_point":
                err = [r.zero_point_err or 0.0 for r in rs]
                ax.errorbar(t, v, yerr=err, fmt="o", ms=4, mec="#4477aa", mfc=face,
                            ecolor="#999999", elinewidth=1)  # fmt: skip
            else:
                ax.plot(t, v, "o", ms=4, mec="#4477aa", mfc=face)
        ax.set_ylabel(label)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("mid-exposure time [UTC]  (filled: solved; hollow: not solved)")
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_track(rows: list[PointingRow], path: Path) -> Path | None:
    """The drift track on the sky: offsets from the header pointing, coloured by time."""
    pts = [r for r in rows if r.solved and r.time and r.offset_east is not None]
    if not pts:
        return None
    t0 = parse_time(pts[0].time)
    hours = [(parse_time(r.time) - t0).total_seconds() / 3600.0 for r in pts]
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    sc = ax.scatter([r.offset_east for r in pts], [r.offset_north for r in pts], c=hours,
                    cmap="viridis", s=18)  # fmt: skip
    ax.plot([r.offset_east for r in pts], [r.offset_north for r in pts], "-", lw=0.5, c="#bbb")
    ax.plot([0], [0], "+", ms=12, c="k", label="header pointing")
    ax.invert_xaxis()  # east to the left, as on the sky
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("east offset [arcmin]")
    ax.set_ylabel("north offset [arcmin]")
    ax.legend(loc="best", fontsize="small")
    fig.colorbar(sc, ax=ax, label=f"hours since {t0:%H:%M} UTC")
    return _save(fig, path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def render_section(numbers: dict[str, Any], images: list[str]) -> str:
    """HTML of the section (``images``: ``<img>`` tags of the figures)."""
    d = numbers["definition"]
    parts = [
        "<h2>Pointing and astrometry</h2>",
        f"<p><b>{numbers['n_solved']}</b> of {numbers['n_exposures']} exposures solved "
        f"(an astrometric solution with ≥ {d['min_matches']} matches, median match residual "
        f"≤ {d['max_median_residual_px']} px, pixel scale within "
        f"{100 * d['scale_tolerance']:.0f} % of the night's median "
        f"{_fmt(numbers['median_pixel_scale'], 5)} ″/px). Largest distance between "
        f"consecutive solved centres: {_fmt(numbers['max_consecutive_distance_arcmin'])} "
        f"arcmin{_gap_text(numbers.get('gaps') or [])}; largest offset from the header pointing: "
        f"{_fmt(numbers['max_header_offset_arcmin'])} arcmin.</p>",
        *images,
    ]
    for key, title in (("not_solved", "why not solved"), ("failed", "why the calibration failed")):
        if numbers.get(key):
            parts.append(_reason_table(numbers[key], title))
    return "\n".join(parts)


def _gap_text(gaps: list[dict[str, Any]]) -> str:
    """The gaps in the archive, whose drift is not a consecutive step."""
    if not gaps:
        return ""
    items = ", ".join(
        f"{_fmt(g['distance_arcmin'])}′ over {_fmt(g['minutes'])} min before {_fmt(g['before'])}"
        for g in gaps
    )
    return f" (gaps in the archive, not counted: {items})"


def _reason_table(entries: list[dict[str, Any]], title: str) -> str:
    """A table of exposures (visit, detector, file) with one reason each."""
    body = "".join(
        f"<tr><td>{_fmt(m['visit'])}</td><td>{_fmt(m['detector'])}</td>"
        f'<td class="l">{_fmt(m["file"])}</td><td class="l">{_fmt(m["reason"])}</td></tr>'
        for m in entries
    )
    return (
        '<table><tr><th>visit</th><th>detector</th><th class="l">file</th>'
        f'<th class="l">{title}</th></tr>{body}</table>'
    )


def pointing_section(night, numbers: dict[str, Any], out: Path, figures: dict) -> str:
    """Add ``numbers["pointing"]`` and the section's figures; returns the section's HTML."""
    from promptcal.report.plots import img_tag

    section, rows = pointing_numbers(night)
    numbers["pointing"] = section
    drawn = {"drift": plot_drift(rows, out / "drift.png")}
    drawn["drift_track"] = plot_track(rows, out / "drift_track.png")
    figures.update({k: v for k, v in drawn.items() if v is not None})
    return render_section(section, [img_tag(p) for p in drawn.values() if p is not None])
