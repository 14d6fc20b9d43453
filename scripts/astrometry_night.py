#!/usr/bin/env python
"""Solve every frame of the real night ``microobs-hatp32-night`` blind and print JSON.

Each frame goes through ``promptcal calibrate`` (in process) with the header pointing
(``RA``/``DEC``, ``IM_SCALE``) as the only hint, the Gaia G<10 refcat built from
``microobs-hatp32/`` and ``configs/microobservatory.json``, exactly as a new user would
run it. The header pointing is wrong by up to ~25 arcmin (half the field) and the frames
are mirrored (PROVENANCE.md of the night).

Prints one JSON object: the solved count (solved = >= 8 astrometric matches, median match
residual <= 1 px, pixel scale within 1 % of the night's median), the largest distance
between the centres of consecutive solved frames (and the drift over the gaps where
frames are missing), times per frame, and per frame: centre, scale, parity, match count,
median residual, distance from the header pointing, status and error.

Usage: ``python scripts/astrometry_night.py [--jobs 2] [--every 1] [--pairs N] [--keep DIR]``
(``--pairs 10``: 20 frames, ten pairs of consecutive frames spread over the night).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

from astropy.io import fits
from shared_data import real_data_dir  # scripts/ is on sys.path as a script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "microobservatory.json"


def build_refcat(real: Path, output: Path) -> None:
    from promptcal.commands.cli import main

    csv = real / "microobs-hatp32" / "gaia_dr3_g10_hatp32_r1.5deg.csv"
    args = ["--ra", "ra", "--dec", "dec", "--band", "G=phot_g_mean_mag:mag"]
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["refcat", "build", str(csv), "--output", str(output), *args])
    if code != 0:
        sys.exit("refcat build failed")


def solve_frame(job: tuple[str, str, str]) -> dict:
    """Calibrate one frame and read back its astrometric figures."""
    from promptcal.commands.cli import main
    from promptcal.qa.astrometry_check import frame_astrometry, separation_arcmin

    frame, refcat, output = job
    header = fits.getheader(frame)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # stdout carries only our JSON
        code = main(
            ["calibrate", frame, "--config", str(CONFIG), "--refcat", refcat,
             "--output", output, "--saturation", "4095"]
        )  # fmt: skip
    record = {"file": Path(frame).name, "exit_code": code}
    record["wall_s"] = time.perf_counter() - start
    record["minute"] = float(header["MJD-OBS"]) * 1440.0
    record.update(frame_astrometry(output))
    if "ra" in record:
        record["offset_from_header_arcmin"] = separation_arcmin(
            record["ra"], record["dec"], float(header["RA"]), float(header["DEC"])
        )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="frames calibrated in parallel")
    parser.add_argument("--every", type=int, default=1, help="take every n-th frame")
    parser.add_argument(
        "--pairs", type=int, help="take only this many pairs of consecutive frames, spread"
    )
    parser.add_argument("--keep", help="directory for the products (default: a temp dir)")
    args = parser.parse_args()
    from promptcal.qa.astrometry_check import night_figures

    real = real_data_dir()
    frames = sorted((real / "microobs-hatp32-night").glob("*.fits"))[:: args.every]
    if args.pairs:
        starts = [round(i * (len(frames) - 2) / max(args.pairs - 1, 1)) for i in range(args.pairs)]
        frames = [frames[k] for s in sorted(set(starts)) for k in (s, s + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        build_refcat(real, work / "refcat")
        jobs = [(str(f), str(work / "refcat"), str(work / f.stem)) for f in frames]
        start = time.perf_counter()
        with get_context("fork").Pool(args.jobs) as pool:
            records = pool.map(solve_frame, jobs, chunksize=1)
        total = time.perf_counter() - start
    night = night_figures(records)
    t0 = min(r["minute"] for r in records)
    for r in records:
        r["minute"] = round(r["minute"] - t0, 2)
    walls = [r["wall_s"] for r in records]
    astrom = [r["astrometry_s"] for r in records]
    night["time_per_frame_s"] = {
        "median": statistics.median(walls),
        "max": max(walls),
        "astrometry_median": statistics.median(astrom),
        "astrometry_max": max(astrom),
        "wall_total": total,
        "jobs": args.jobs,
    }
    night["calibrate_status"] = {
        s: sum(r["status"] == s for r in records) for s in sorted({r["status"] for r in records})
    }
    night["frames"] = records
    print(json.dumps(night, indent=1, default=float))


if __name__ == "__main__":
    main()
