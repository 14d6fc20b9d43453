"""Judging the astrometry of calibrated frames: per-frame figures read from the products
of ``promptcal calibrate`` and the night-level criteria of issue 12 (acceptance a).

A frame is *solved* when it has a WCS with at least :data:`MIN_MATCHES` astrometric
matches, a median match residual of at most :data:`MAX_MEDIAN_RESIDUAL_PX`, and a pixel
scale within :data:`SCALE_TOLERANCE` of the median over the frames of the night. Solved
frames taken one after the other must lie within :data:`MAX_STEP_ARCMIN` of each other.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np

from promptcal.io.catalogs import read_table
from promptcal.io.products import read_calexp
from promptcal.pipeline.references import icrs_deg, pixel_scale_arcsec
from promptcal.qa.solved_frame import MAX_MEDIAN_RESIDUAL_PX, MIN_MATCHES, SCALE_TOLERANCE

MAX_STEP_ARCMIN = 1.0
#: Frames closer in time than this are consecutive exposures of the track [min]; longer
#: gaps (frames missing from the archive) are reported separately with their drift rate.
CONSECUTIVE_MINUTES = 4.5


def frame_astrometry(output: str | Path) -> dict:
    """Astrometric figures of one ``promptcal calibrate`` output directory.

    Returns
    -------
    dict
        ``status`` and ``error`` (summary.json), and when the calexp has a WCS: ``ra``,
        ``dec`` [deg] of the chip centre, ``pixel_scale`` [arcsec/px], ``n_matches``,
        ``median_residual_px``, ``parity`` (sign of the CD determinant), and the run and
        astrometry times [s].
    """
    output = Path(output)
    summary = json.loads((output / "summary.json").read_text())
    timings = summary.get("timings", {})
    record = {
        "status": summary["status"],
        "error": (summary.get("error") or {}).get("message"),
        "run_s": timings.get("run"),
        "astrometry_s": sum(v for k, v in timings.items() if k.startswith("astrometry")),
    }
    calexp = output / "calexp.fits"
    exposure = read_calexp(calexp)[0] if calexp.exists() else None
    if exposure is None or exposure.wcs is None:
        return record
    cx, cy = exposure.center
    ra, dec = icrs_deg(exposure.wcs, [cx], [cy])
    scale = pixel_scale_arcsec(exposure.wcs, cx, cy)
    matches_path = output / "astrometry_matches.parquet"
    distance = (
        np.asarray(read_table(matches_path)["distance"], float)
        if matches_path.exists()
        else np.zeros(0)
    )
    record.update(
        ra=float(ra[0]),
        dec=float(dec[0]),
        pixel_scale=scale,
        parity=int(np.sign(np.linalg.det(exposure.wcs.pixel_scale_matrix))),
        n_matches=len(distance),
        median_residual_px=float(np.median(distance) / scale) if len(distance) else None,
    )
    return record


def separation_arcmin(ra1, dec1, ra2, dec2) -> float:
    """Great-circle distance between two positions [deg] in arcmin."""
    r1, d1, r2, d2 = (math.radians(v) for v in (ra1, dec1, ra2, dec2))
    cos_c = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos_c)))) * 60.0


def night_figures(frames: list[dict]) -> dict:
    """Apply the solved criterion to every frame (in place) and summarise the night.

    ``frames`` are :func:`frame_astrometry` records with ``minute`` (exposure time in
    minutes since any origin). Each gets ``solved`` (bool) and ``why`` (the failed
    criteria). Returns the counts, the median scale, and the largest step between
    consecutive solved frames, also for the longer gaps with the drift rate.
    """
    scales = [f["pixel_scale"] for f in frames if f.get("pixel_scale")]
    median_scale = float(np.median(scales)) if scales else float("nan")
    for f in frames:
        why = []
        if f.get("pixel_scale") is None:
            why.append("no WCS")
        else:
            if f["n_matches"] < MIN_MATCHES:
                why.append(f"{f['n_matches']} matches < {MIN_MATCHES}")
            resid = f["median_residual_px"]
            if resid is None or resid > MAX_MEDIAN_RESIDUAL_PX:
                why.append(f"median residual {resid} px > {MAX_MEDIAN_RESIDUAL_PX}")
            if abs(f["pixel_scale"] / median_scale - 1) > SCALE_TOLERANCE:
                why.append(f"scale {f['pixel_scale']:.4f} off the median {median_scale:.4f}")
        f["solved"], f["why"] = not why, why
    solved = sorted((f for f in frames if f["solved"]), key=lambda f: f["minute"])
    steps, gaps = [], []
    for a, b in pairwise(solved):
        step = separation_arcmin(a["ra"], a["dec"], b["ra"], b["dec"])
        minutes = b["minute"] - a["minute"]
        item = {"from": a["file"], "to": b["file"], "arcmin": step, "minutes": minutes}
        (steps if minutes <= CONSECUTIVE_MINUTES else gaps).append(item)
    max_step = max(steps, key=lambda s: s["arcmin"]) if steps else None
    for gap in gaps:
        gap["arcmin_per_minute"] = gap["arcmin"] / gap["minutes"]
    return {
        "n_frames": len(frames),
        "n_solved": len(solved),
        "median_pixel_scale": median_scale,
        "max_consecutive_step_arcmin": None if max_step is None else max_step["arcmin"],
        "max_consecutive_step": max_step,
        "steps_within_limit": all(s["arcmin"] <= MAX_STEP_ARCMIN for s in steps),
        "gaps": gaps,
        "median_step_rate_arcmin_per_minute": float(
            np.median([s["arcmin"] / s["minutes"] for s in steps])
        )
        if steps
        else None,
    }
