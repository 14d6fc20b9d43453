"""Figures of the night report (matplotlib Agg, object API, PNG without dates).

- ``timeseries.png``: zero point, PSF FWHM, sky and astrometric scatter against the
  mid-exposure time, one colour per band;
- ``focal_plane_<quantity>.png``: each detector drawn where the camera puts it, coloured
  by the median of the quantity over the night;
- ``latency.png``: histogram of the end-to-end latency with the percentiles marked.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from promptcal.report.night_data import PERCENTILES, QUANTITIES, NightData

_BAND_COLOURS = {"u": "#56b4e9", "g": "#009e73", "r": "#d55e00", "i": "#cc79a7", "z": "#555555"}
_PNG_METADATA = {"Software": None}


def _save(fig: Figure, path: Path) -> Path:
    from promptcal.io.files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata=_PNG_METADATA))
    return path


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def plot_timeseries(night: NightData, path: Path) -> Path | None:
    """The four quantities against time, coloured by band."""
    rows = [r for r in night.rows if r.status == "success" and r.time]
    if not rows:
        return None
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(len(QUANTITIES), 1, sharex=True)
    for ax, (name, (_key, label, unit)) in zip(axes, QUANTITIES.items(), strict=True):
        for band in sorted({r.band or "?" for r in rows}):
            pts = [(_time(r.time), getattr(r, name)) for r in rows if (r.band or "?") == band]
            pts = [(t, v) for t, v in pts if v is not None]
            if pts:
                t, v = zip(*pts, strict=True)
                ax.plot(t, v, "o", ms=4, color=_BAND_COLOURS.get(band, "k"), label=band)
        ax.set_ylabel(f"{label} [{unit}]")
        ax.grid(alpha=0.3)
    axes[0].legend(title="band", loc="best", fontsize="small")
    axes[-1].set_xlabel("mid-exposure time [UTC]")
    fig.autofmt_xdate()
    return _save(fig, path)


def detector_medians(night: NightData, quantity: str) -> dict[int, float]:
    """Median of a quantity per detector over the successful exposures."""
    values: dict[int, list[float]] = {}
    for r in night.rows:
        value = getattr(r, quantity)
        if r.status == "success" and value is not None:
            values.setdefault(r.detector, []).append(value)
    return {det: float(np.median(v)) for det, v in values.items()}


def plot_focal_plane(night: NightData, quantity: str, path: Path) -> Path | None:
    """Detectors at their focal-plane positions, coloured by the quantity's median."""
    medians = detector_medians(night, quantity)
    if night.camera is None or len(night.camera.detectors) < 2 or not medians:
        return None  # one detector (e.g. an archived night): a map would show one box
    camera = night.camera
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    patches, values, empty = [], [], []
    for det in camera.detectors:
        size = (det.pixel_size_um or camera.pixel_size_um) / 1000.0
        w, h = det.width * size, det.height * size
        rect = Rectangle((det.center_x_mm - w / 2, det.center_y_mm - h / 2), w, h)
        if det.id in medians:
            patches.append(rect)
            values.append(medians[det.id])
            ax.annotate(str(det.id), (det.center_x_mm, det.center_y_mm), ha="center",
                        va="center", fontsize=7)  # fmt: skip
        else:
            empty.append(rect)
    ax.add_collection(PatchCollection(empty, facecolor="none", edgecolor="#bbb", lw=0.5))
    coll = PatchCollection(patches, cmap="viridis", edgecolor="k", lw=0.5)
    coll.set_array(np.asarray(values))
    ax.add_collection(coll)
    _key, label, unit = QUANTITIES[quantity]
    fig.colorbar(coll, ax=ax, label=f"median {label} [{unit}]")
    xs = [d.center_x_mm for d in camera.detectors]
    ys = [d.center_y_mm for d in camera.detectors]
    pad = max(
        d.width * (d.pixel_size_um or camera.pixel_size_um) / 1000.0 for d in camera.detectors
    )
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("focal plane x [mm]")
    ax.set_ylabel("focal plane y [mm]")
    ax.set_title(f"{label}: median per detector")
    return _save(fig, path)


def plot_latency(night: NightData, numbers: dict[str, Any], path: Path) -> Path | None:
    """Histogram of the end-to-end latencies with the percentiles."""
    latencies = np.array([r.latency for r in night.rows if r.latency is not None], float)
    if latencies.size == 0:
        return None
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    ax.hist(latencies, bins=min(40, max(5, latencies.size // 2)), color="#4477aa")
    for p in PERCENTILES:
        value = numbers["latency"][f"p{p}"]
        ax.axvline(value, color="#cc3311", ls="--", lw=1)
        ax.annotate(f"p{p}", (value, ax.get_ylim()[1] * 0.95), rotation=90, va="top",
                    fontsize=8)  # fmt: skip
    ax.set_xlabel("end-to-end latency [s]")
    ax.set_ylabel("exposures")
    return _save(fig, path)


def write_figures(night: NightData, numbers: dict[str, Any], out: Path) -> dict[str, Path]:
    """Every figure the data allow; name -> PNG path."""
    figures: dict[str, Path | None] = {"timeseries": plot_timeseries(night, out / "timeseries.png")}
    for quantity in QUANTITIES:
        name = f"focal_plane_{quantity}"
        figures[name] = plot_focal_plane(night, quantity, out / f"{name}.png")
    figures["latency"] = plot_latency(night, numbers, out / "latency.png")
    return {k: v for k, v in figures.items() if v is not None}


def img_tag(path: Path) -> str:
    """An inline ``<img>`` of a PNG file (a ``data:`` URI), for self-contained pages."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'
