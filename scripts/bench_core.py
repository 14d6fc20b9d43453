#!/usr/bin/env python
"""Benchmark the calibration core against sep and a DIY sep + astropy peer, in one process.

For each benchmark sky (``--sky``, default all of ``moffat gaussian crowded legacy``;
see ``scripts/benchsky.py`` and :mod:`promptcal.simulate.presets`) one exposure is
simulated and written as FITS with its reference catalog. Then, in fresh
single-threaded child processes:

- ``compare``: after a warm-up (Numba compiled, one untimed round of everything on the
  exposure), ``--repeat`` rounds of, in an order rotated each round, each on a fresh
  read of the pixels:

  - ``sep``: ``sep.Background`` + back subtraction + ``sep.extract`` at 5σ with the
    variance plane (the baseline of the first benchmark);
  - ``psf_phase``: ``compute_psf`` + ``measure_aperture_correction``;
  - ``run``: the whole ``CalibrateImageTask.run`` with a fresh ``RefcatLoader``;
  - ``diy``: the DIY peer of ``scripts/bench_diy.py`` (background, extract, winpos,
    aperture photometry, astropy matching and TAN-SIP fit, zero point).

  Times are medians of wall time (``seconds``, the acceptance figures) and of process
  CPU time (``cpu_seconds``, less sensitive to other jobs on a shared machine; the
  children are single-threaded); per-stage times of ``run`` come from the task
  metadata timers.
  ``run`` and ``diy`` are scored against the truth (WCS on a grid, zero point).
- ``memory``: one ``run()`` after the warm-up; its peak RSS.
- ``calibrate`` (unless ``--no-cli``): ``promptcal calibrate`` in process after a
  warm-up, plus one cold ``promptcal calibrate`` subprocess.

Every child first applies :func:`promptcal.core.allocator.tune_allocator`, as the CLI and
the worker do (the sep baseline and the peer too, so the comparison is like for like).
Prints one JSON object: ``{"variants": {sky: report}}`` with the ratios
``run_over_diy``, ``psf_phase_over_sep`` and ``run_over_sep`` of each sky.

Usage: ``python scripts/bench_core.py [--sky moffat crowded] [--repeat 3] [--no-cli]``
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

from benchsky import add_sky_arguments, bench_sky, load_truth, write_bench_sky

SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
METHODS = ("sep", "psf_phase", "run", "diy")
#: Issue 13's acceptance for the realistic skies; the first benchmark's for ``legacy``.
LIMITS = {
    "moffat": {"run_over_diy": 0.5, "psf_phase_over_sep": 0.8, "run_peak_rss_gb": 1.2},
    "gaussian": {"run_over_diy": 0.5, "psf_phase_over_sep": 0.8, "run_peak_rss_gb": 1.2},
    "crowded": {"run_over_diy": 1.0, "run_peak_rss_gb": 1.2},
    "legacy": {"psf_phase_over_sep": 1.5, "run_over_sep": 2.0, "run_peak_rss_gb": 1.5},
}
COLD_LIMITS = {"cold_calibrate_s": 2.0, "cold_over_in_process": 1.5}


def peak_rss_gb() -> float:
    """Peak resident set size of this process [GB] (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def task_config(files: dict):
    """The ``CalibrateImageConfig`` with the ``--set`` overrides of the benchmark."""
    from promptcal.core.config import parse_set_option
    from promptcal.pipeline.config import CalibrateImageConfig

    pairs = dict(parse_set_option(text) for text in files.get("set", []))
    return CalibrateImageConfig().with_overrides(pairs) if pairs else CalibrateImageConfig()


def _warm_up() -> None:
    from promptcal.pipeline.task import CalibrateImageTask
    from promptcal.simulate.upstream import make_upstream_dataset

    CalibrateImageTask().run(exposures=make_upstream_dataset().exposure)


# -- the four methods of the compare child ------------------------------------------------


def _sep(exposure, files, truth) -> dict:
    import sep

    background = sep.Background(exposure.image)
    subtracted = exposure.image - background.back()
    objects = sep.extract(subtracted, 5.0, var=exposure.variance)
    return {"n_objects": len(objects)}


def _psf_phase(exposure, files, truth, task=None) -> dict:
    from promptcal.pipeline.task import CalibrateImageTask

    task = task or CalibrateImageTask(task_config(files))
    result = task.compute_psf(exposure)
    task.measure_aperture_correction(exposure, result.psf_stars)
    return {"n_psf_stars": len(result.psf_stars), "_task": task}


def _run(exposure, files, truth) -> dict:
    from promptcal.core.errors import AlgorithmError
    from promptcal.pipeline.task import CalibrateImageTask
    from promptcal.refcat import RefcatLoader

    task = CalibrateImageTask(task_config(files), refcat=RefcatLoader(files["refcat"]))
    result = None
    try:
        result = task.run(exposures=exposure)
    except AlgorithmError as error:
        return {"failure": f"{type(error).__name__}: {error}", "_task": task}
    photo_calib = result.applied_photo_calib
    return {
        "n_psf_stars": len(result.psf_stars),
        "n_psf_used": int(result.psf_stars["calib_psf_used"].sum()),
        "n_stars": len(result.stars),
        "_wcs": result.output_exposure.wcs,
        "_calibration": None if photo_calib is None else photo_calib.mean,
        "_task": task,
    }


def _diy(exposure, files, truth) -> dict:
    from bench_diy import diy_calibrate

    out = diy_calibrate(
        exposure.image,
        exposure.variance,
        exposure.wcs,
        files["refcat_table"],
        truth["band"],
        truth["saturation"],
    )
    return {
        "n_objects": out["n_objects"],
        "n_matched": out["n_matched"],
        "n_photometric": out["n_photometric"],
        "steps_cpu": out["steps_cpu"],
        "_wcs": out["wcs"],
        "_calibration": out["calibration"],
    }


def _scores(out: dict, exposure, truth: dict) -> dict:
    from benchsky import score_calibration, score_wcs

    if "_wcs" not in out:
        return {}
    h, w = exposure.image.shape
    return {
        "wcs_error": score_wcs(out["_wcs"], truth["wcs"], w, h, *exposure.xy0),
        "zero_point_error_mmag": score_calibration(out["_calibration"], truth),
    }


def child_compare(files: dict, repeat: int) -> dict:
    from bench_diy import configure_sep

    from promptcal.io import read_exposure

    functions = {"sep": _sep, "psf_phase": _psf_phase, "run": _run, "diy": _diy}
    configure_sep()  # for the baseline too: sep's buffers are process-wide
    _warm_up()
    truth = load_truth(files["truth"])
    times = {m: [] for m in METHODS}
    cpu = {m: [] for m in METHODS}  # process CPU time: robust to other jobs on the machine
    stages = {"run": [], "psf_phase": []}
    last: dict[str, dict] = {}
    for k in range(repeat + 1):  # round 0 warms every method on this exposure, untimed
        order = METHODS[k % len(METHODS) :] + METHODS[: k % len(METHODS)]
        for method in order:
            exposure = read_exposure(files["exposure"])
            start, cpu_start = time.perf_counter(), time.process_time()
            out = functions[method](exposure, files, truth)
            elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu_start
            if k == 0:
                continue
            times[method].append(elapsed)
            cpu[method].append(cpu_used)
            task = out.pop("_task", None)
            if task is not None:
                stages[method].append(task.stage_durations())
            last[method] = {**_scores(out, exposure, truth), **out}
            del exposure, out, task
    report = {}
    for method in METHODS:
        entry = {k: v for k, v in last[method].items() if not k.startswith("_")}
        entry.update(seconds=statistics.median(times[method]), all=times[method])
        entry.update(cpu_seconds=statistics.median(cpu[method]), all_cpu=cpu[method])
        if stages.get(method):
            keys = stages[method][0]
            entry["stages"] = {
                k: statistics.median(s.get(k, 0.0) for s in stages[method]) for k in keys
            }
        report[method] = entry
    report["peak_rss_gb"] = peak_rss_gb()
    return report


def child_memory(files: dict) -> dict:
    from promptcal.io import read_exposure

    _warm_up()
    exposure = read_exposure(files["exposure"])
    start = time.perf_counter()
    out = _run(exposure, files, None)
    return {
        "seconds": time.perf_counter() - start,
        "failure": out.get("failure"),
        "peak_rss_gb": peak_rss_gb(),
    }


def child_calibrate(files: dict, repeat: int) -> dict:
    from promptcal.commands.cli import main

    _warm_up()
    times, codes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeat):
            start = time.perf_counter()
            codes.append(main([*calibrate_command(files), "--output", f"{tmp}/{k}"]))
            times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "all": times,
        "exit_codes": codes,  # 3: an algorithm failure, partial products written
        "peak_rss_gb": peak_rss_gb(),
    }


def calibrate_command(files: dict) -> list[str]:
    """``calibrate`` arguments (no ``--output``) with the ``--set`` overrides."""
    command = ["calibrate", files["exposure"], "--refcat", files["refcat"]]
    for text in files.get("set", []):
        command += ["--set", text]
    return command


def cold_calibrate(files: dict) -> tuple[float, int]:
    """Wall time [s] and exit code of one ``promptcal calibrate`` in a new process."""
    env = {**os.environ, **SINGLE_THREAD_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        command = [sys.executable, "-m", "promptcal.commands.cli", *calibrate_command(files)]
        out = subprocess.run([*command, "--output", tmp], env=env, capture_output=True)
        return time.perf_counter() - start, out.returncode


def run_child(kind: str, files: dict, repeat: int) -> dict:
    env = {**os.environ, **SINGLE_THREAD_ENV}
    cmd = [sys.executable, __file__, "--child", kind, "--files", json.dumps(files)]
    cmd += ["--repeat", str(repeat)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the report ------------------------------------------------------------------------


def variant_report(name: str, files: dict, compare: dict, memory: dict, cli: dict | None) -> dict:
    sep_s, diy_s = compare["sep"]["seconds"], compare["diy"]["seconds"]
    ratios = {
        "run_over_diy": compare["run"]["seconds"] / diy_s,
        "psf_phase_over_sep": compare["psf_phase"]["seconds"] / sep_s,
        "run_over_sep": compare["run"]["seconds"] / sep_s,
        "diy_over_sep": diy_s / sep_s,
    }
    cpu = {m: compare[m]["cpu_seconds"] for m in METHODS}
    cpu_ratios = {
        "run_over_diy": cpu["run"] / cpu["diy"],
        "psf_phase_over_sep": cpu["psf_phase"] / cpu["sep"],
        "run_over_sep": cpu["run"] / cpu["sep"],
    }
    measured = {**ratios, "run_peak_rss_gb": memory["peak_rss_gb"]}
    limits = LIMITS[name]
    within = {k: measured[k] <= v for k, v in limits.items()}
    report = {
        "image": files["info"],
        "run_failure": compare["run"].get("failure"),
        **{m: compare[m] for m in METHODS},
        "compare_peak_rss_gb": compare["peak_rss_gb"],
        "memory": memory,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "limits": limits,
        "within_limits": within,
    }
    if cli is not None:
        report["calibrate_cli"] = cli
        cold = cli["cold_process_seconds"]
        cold_start = {
            "cold_calibrate_s": cold,
            "cold_over_in_process": cold / cli["seconds"],
            "cold_over_run": cold / compare["run"]["seconds"],
        }
        within.update({k: cold_start[k] <= v for k, v in COLD_LIMITS.items()})
        report["cold_start"] = {**cold_start, "limits": COLD_LIMITS}
    return report


def measure_sky(args, name: str, directory: Path) -> dict:
    sky = bench_sky(args, name)
    t0 = time.perf_counter()
    files = write_bench_sky(sky, directory / name, args.seed)
    files["set"] = args.set
    files["info"]["load_average_before"] = os.getloadavg()[0]
    files["info"]["simulate_seconds"] = time.perf_counter() - t0
    print(f"[bench_core] {name}: simulated, comparing", file=sys.stderr, flush=True)
    compare = run_child("compare", files, args.repeat)
    memory = run_child("memory", files, 1)
    cli = None
    if not args.no_cli:
        cli = run_child("calibrate", files, args.repeat)
        cli["cold_process_seconds"], cli["cold_exit_code"] = cold_calibrate(files)
    return variant_report(name, files, compare, memory, cli)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sky_arguments(parser, many=True)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--no-cli", action="store_true", help="skip promptcal calibrate")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="CalibrateImageConfig override for run, psf_phase and calibrate (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--child", choices=["compare", "memory", "calibrate"], help=argparse.SUPPRESS
    )
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # Every child, the baselines included, runs with the allocator setting of the
        # CLI and the worker, so the ratios compare the algorithms, not malloc.
        from promptcal.core.allocator import tune_allocator

        tune_allocator()
        files = json.loads(args.files)
        if args.child == "compare":
            out = child_compare(files, args.repeat)
        elif args.child == "memory":
            out = child_memory(files)
        else:
            out = child_calibrate(files, args.repeat)
        print(json.dumps(out))
        return
    variants = {}
    with tempfile.TemporaryDirectory(prefix="bench_core-") as tmp:
        for name in args.sky:
            variants[name] = measure_sky(args, name, Path(tmp))
    load = os.getloadavg()
    meta = {"load_average": load, "repeat": args.repeat, "set": args.set}
    print(json.dumps({"variants": variants, **meta}, indent=2))


if __name__ == "__main__":
    main()
