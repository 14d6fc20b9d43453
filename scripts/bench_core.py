#!/usr/bin/env python
"""Benchmark the calibration core against a sep baseline measured in the same run.

Simulates one LSST-sized exposure (default 4096×4072 px, ~3,000 stars), writes it as
FITS, then times, each in a fresh single-threaded child process (so peak RSS is per
task and nothing is shared):

- ``sep``: the baseline, ``sep.Background`` + back subtraction + ``sep.extract`` at 5σ
  with the variance plane;
- ``psf_phase``: background, detection, measurement, PSF fit and aperture corrections
  (``compute_psf`` + ``measure_aperture_correction``);
- ``run``: the whole ``CalibrateImageTask.run`` with a reference catalog built from
  the truth (astrometry and photometry included);
- ``calibrate``: ``promptcal calibrate`` in process (FITS read, run, all product writes)
  after a warm-up, plus one cold ``promptcal calibrate`` subprocess (interpreter start,
  imports and loading the cached Numba code included).

Every child process first applies :func:`promptcal.core.allocator.tune_allocator`, as the
CLI and the worker do (the baseline too, so the comparison is like for like).

Each timing is the median of ``--repeat`` runs on a fresh copy of the pixels, after a
warm-up on a small exposure (Numba compilation is not timed). Prints one JSON object
with the times, per-stage totals, peak RSS, and the ratios to the baseline.

Usage: ``python scripts/bench_core.py [--width 4096 --height 4072 --stars 3000]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


def peak_rss_gb() -> float:
    """Peak resident set size of this process [GB] (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def child_sep(path: str, repeat: int) -> dict:
    import numpy as np
    import sep

    from promptcal.io import read_exposure

    exposure = read_exposure(path)
    times, n_objects = [], 0
    for _ in range(repeat):
        image = exposure.image.copy()
        variance = exposure.variance.copy()
        start = time.perf_counter()
        background = sep.Background(image)
        subtracted = image - background.back()
        objects = sep.extract(subtracted, 5.0, var=variance)
        times.append(time.perf_counter() - start)
        n_objects = len(objects)
    del np
    return {"seconds": statistics.median(times), "all": times, "n_objects": n_objects}


def _warm_up() -> None:
    from promptcal.pipeline.task import CalibrateImageTask
    from promptcal.simulate.upstream import make_upstream_dataset

    CalibrateImageTask().run(exposures=make_upstream_dataset().exposure)


def child_calibrate(path: str, repeat: int, refcat: str) -> dict:
    from promptcal.commands.cli import main

    _warm_up()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeat):
            start = time.perf_counter()
            code = main(["calibrate", path, "--refcat", refcat, "--output", f"{tmp}/{k}"])
            times.append(time.perf_counter() - start)
            if code != 0:
                raise RuntimeError(f"promptcal calibrate exited {code}")
    return {"seconds": statistics.median(times), "all": times, "peak_rss_gb": peak_rss_gb()}


def cold_calibrate(path: str, refcat: str) -> float:
    env = {**os.environ, **SINGLE_THREAD_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "promptcal", "calibrate", path, "--refcat", refcat,
             "--output", tmp],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        return time.perf_counter() - start


def child_pipeline(path: str, repeat: int, what: str, refcat: str | None = None) -> dict:
    from promptcal.io import read_exposure
    from promptcal.pipeline.task import CalibrateImageTask
    from promptcal.refcat import RefcatLoader

    _warm_up()
    times, stages, extra = [], [], {}
    result = None
    for _ in range(repeat):
        result = None  # release the previous run's arrays before reading again
        exposure = read_exposure(path)
        task = CalibrateImageTask(refcat=RefcatLoader(refcat) if refcat else None)
        start = time.perf_counter()
        if what == "psf_phase":
            result = task.compute_psf(exposure)
            task.measure_aperture_correction(exposure, result.psf_stars)
            extra = {"n_psf_stars": len(result.psf_stars)}
        else:
            result = task.run(exposures=exposure)
            extra = {"n_psf_stars": len(result.psf_stars), "n_stars": len(result.stars)}
        times.append(time.perf_counter() - start)
        stages.append(task.stage_durations())
        extra["n_psf_used"] = int(result.psf_stars["calib_psf_used"].sum())
    median_stages = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    return {
        "seconds": statistics.median(times),
        "all": times,
        "stages": median_stages,
        "peak_rss_gb": peak_rss_gb(),
        **extra,
    }


def run_child(kind: str, path: str, repeat: int, refcat: str | None = None) -> dict:
    env = {**os.environ, **SINGLE_THREAD_ENV}
    cmd = [sys.executable, __file__, "--child", kind, "--file", path, "--repeat", str(repeat)]
    if refcat:
        cmd += ["--refcat", refcat]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sky_config(args, **overrides):
    """The benchmark sky (also ``bench_stream.py``'s): size, stars, PSF from ``args``."""
    from promptcal.simulate import SkyConfig

    return SkyConfig(
        width=args.width,
        height=args.height,
        n_stars=args.stars,
        star_flux_min=args.flux_min,
        psf_fwhm=args.fwhm,
        n_galaxies=args.stars // 15,
        n_cosmic_rays=50,
        **overrides,
    )


def simulate(args, directory: Path) -> tuple[str, str, dict]:
    from promptcal.io import write_exposure
    from promptcal.refcat import build_refcat
    from promptcal.simulate import refcat_table_from_truth, simulate_exposure

    config = sky_config(args)
    sim = simulate_exposure(config, seed=args.seed)
    path = directory / "bench_exposure.fits"
    write_exposure(sim.exposure, path)
    band = config.band
    source = directory / "refcat_source.parquet"
    refcat_table_from_truth(sim.truth, band).write(source)
    refcat = directory / "refcat"
    build_refcat(source, refcat, ra_col="ra", dec_col="dec", bands={band: (f"{band}_flux", "nJy")})
    info = {"width": args.width, "height": args.height, "n_stars": args.stars}
    return str(path), str(refcat), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--stars", type=int, default=3000)
    parser.add_argument("--flux-min", type=float, default=3000.0, help="faintest star [count]")
    parser.add_argument("--fwhm", type=float, default=3.5, help="PSF FWHM [px]")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--child", choices=["sep", "psf_phase", "run", "calibrate"], help=argparse.SUPPRESS
    )
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--refcat", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # Every child, the sep baseline included, runs with the allocator setting of
        # the CLI and the worker, so the ratio compares the algorithms, not malloc.
        from promptcal.core.allocator import tune_allocator

        tune_allocator()
    if args.child == "sep":
        print(json.dumps(child_sep(args.file, args.repeat)))
        return
    if args.child == "calibrate":
        print(json.dumps(child_calibrate(args.file, args.repeat, args.refcat)))
        return
    if args.child:
        print(json.dumps(child_pipeline(args.file, args.repeat, args.child, args.refcat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path, refcat, image = simulate(args, Path(tmp))
        baseline = run_child("sep", path, args.repeat)
        psf_phase = run_child("psf_phase", path, args.repeat)
        full = run_child("run", path, args.repeat, refcat)
        calibrate = run_child("calibrate", path, args.repeat, refcat)
        calibrate["cold_process_seconds"] = cold_calibrate(path, refcat)
    report = {
        "image": image,
        "baseline_sep": baseline,
        "psf_phase": psf_phase,
        "run": full,
        "calibrate_cli": calibrate,
        "ratio_psf_phase_to_sep": psf_phase["seconds"] / baseline["seconds"],
        "ratio_run_to_sep": full["seconds"] / baseline["seconds"],
        "limits": {
            "psf_phase_ratio": 1.5,
            "psf_phase_rss_gb": 1.2,
            "run_ratio": 2.0,
            "run_rss_gb": 1.5,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
