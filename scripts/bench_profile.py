#!/usr/bin/env python
"""Where ``run()`` spends its time on the benchmark skies, and what it scales with.

Each case is a benchmark sky with optional :class:`~promptcal.simulate.SkyConfig`
overrides, ``name[:field=value,...]`` (e.g. ``moffat:star_flux_max=1.2e5`` has the
same 3,000 stars but none saturated; ``moffat:n_stars=9000`` three times as many).
In a fresh single-threaded child per case, after a warm-up and one untimed run:

- ``stages``: median over ``--repeat`` runs of every task timer (the metadata);
- ``kernels``: one run with every Numba kernel called from Python wrapped in a timer
  (total CPU and wall seconds and calls per kernel, by CPU time; kernels called from
  kernels are inside their caller);
- ``cprofile``: one run under cProfile, the ``--top`` functions by own time (Numba
  kernels count as their Python caller's own time);
- ``footprints``: sources and footprint pixels of both phases, DETECTED and SAT
  pixels, saturated sources: the quantities a stage may scale with.

Prints one JSON object ``{"cases": {case: report}}``.

Usage: ``python scripts/bench_profile.py [moffat crowded moffat:n_stars=9000 ...]``
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_core import SINGLE_THREAD_ENV, _warm_up, task_config
from benchsky import write_bench_sky

DEFAULT_CASES = (
    "moffat",
    "moffat:star_flux_max=1.2e5",
    "moffat:n_stars=1000",
    "moffat:n_stars=9000",
    "crowded",
)


def parse_case(case: str) -> tuple[str, dict]:
    """``"moffat:n_stars=9000,psf_beta=3"`` -> ``("moffat", {"n_stars": 9000, ...})``."""
    name, _, rest = case.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word, e.g. psf_model=gaussian
            overrides[key] = value
    return name, overrides


def _timed_kernels():
    """Wrap every Numba dispatcher that promptcal modules reference; return the stats
    dict and an undo function."""
    from numba.core.dispatcher import Dispatcher

    stats: dict[str, list] = {}  # name -> [CPU seconds, calls, wall seconds]
    wrappers: dict[int, object] = {}
    patched = []

    def wrap(dispatcher):
        key = f"{dispatcher.py_func.__module__.rsplit('.', 1)[-1]}.{dispatcher.py_func.__name__}"
        entry = stats.setdefault(key, [0.0, 0, 0.0])

        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return dispatcher(*args, **kwargs)
            finally:
                entry[0] += time.process_time() - cpu
                entry[1] += 1
                entry[2] += time.perf_counter() - start

        return timed

    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("promptcal") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, Dispatcher):
                if id(value) not in wrappers:
                    wrappers[id(value)] = wrap(value)
                setattr(module, attr, wrappers[id(value)])
                patched.append((module, attr, value))

    def undo():
        for module, attr, value in patched:
            setattr(module, attr, value)

    return stats, undo


def _footprint_stats(result) -> dict:
    import numpy as np

    def area(footprints):
        if footprints is None:
            return 0
        if hasattr(footprints, "area"):  # a Footprints object
            return int(np.sum(footprints.area()))
        spans = footprints  # a span table
        return int(np.sum(np.asarray(spans["x1"]) - np.asarray(spans["x0"]) + 1))

    exposure = result.output_exposure
    mask = exposure.mask
    stars = getattr(result, "stars", None)  # absent when run() failed before the star phase
    flag = "base_PixelFlags_flag_saturated"
    return {
        "n_psf_stars": len(result.psf_stars),
        "n_stars": None if stars is None else len(stars),
        "psf_stars_footprint_pixels": area(getattr(result, "psf_stars_footprints", None)),
        "stars_footprint_pixels": area(getattr(result, "stars_footprints", None)),
        "detected_fraction": float(np.mean((mask.array & mask.bit("DETECTED")) != 0)),
        "sat_pixels": int(np.count_nonzero(mask.array & mask.bit("SAT"))),
        # result.stars excludes saturated sources; the PSF-phase catalog keeps them.
        "n_psf_phase_saturated": int(np.sum(result.psf_stars[flag])),
    }


def _cpu_timers() -> dict[str, float]:
    """Make every task timer also add its process CPU time to the returned dict [s]
    (keys as :meth:`Task.stage_durations`, without the task prefix)."""
    import contextlib

    from promptcal.core.task import Task

    totals: dict[str, float] = {}
    original = Task.timer

    @contextlib.contextmanager
    def timer(self, name, *args, **kwargs):
        start = time.process_time()
        try:
            with original(self, name, *args, **kwargs):
                yield
        finally:
            totals[name] = totals.get(name, 0.0) + time.process_time() - start

    Task.timer = timer
    return totals


def child_profile(files: dict, repeat: int, top: int) -> dict:
    from promptcal.core.errors import AlgorithmError
    from promptcal.core.task import Struct
    from promptcal.io import read_exposure
    from promptcal.pipeline.task import CalibrateImageTask
    from promptcal.refcat import RefcatLoader

    failures: list[str] = []

    def one_run():
        exposure = read_exposure(files["exposure"])
        task = CalibrateImageTask(task_config(files), refcat=RefcatLoader(files["refcat"]))
        result = Struct()  # partial outputs survive an algorithm failure
        cpu_stage.clear()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            task.run(exposures=exposure, result=result)
        except AlgorithmError as error:
            failures.append(f"{type(error).__name__}: {error}")
        cpu_seconds.append(time.process_time() - cpu)
        return time.perf_counter() - start, task, result

    cpu_seconds: list[float] = []
    cpu_stage = _cpu_timers()
    _warm_up()
    _, _, result = one_run()
    footprints = _footprint_stats(result)
    del result
    times, stages, stages_cpu = [], [], []
    for _ in range(repeat):
        seconds, task, _ = one_run()
        times.append(seconds)
        stages.append(task.stage_durations())
        stages_cpu.append(dict(cpu_stage))
    stage_median = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]}
    keys = stages_cpu[0]
    stage_cpu_median = {k: statistics.median(s.get(k, 0.0) for s in stages_cpu) for k in keys}

    kernel_stats, undo = _timed_kernels()
    try:
        kernel_run_seconds = one_run()[0]
    finally:
        undo()
    kernels = sorted(kernel_stats.items(), key=lambda kv: -kv[1][0])
    kernels = {
        k: {"cpu_seconds": round(c, 4), "calls": n, "seconds": round(w, 4)}
        for k, (c, n, w) in kernels
        if n
    }

    profiler = cProfile.Profile()
    profiler.enable()
    cprofile_seconds = one_run()[0]
    profiler.disable()
    rows = []
    for (path, line, func), (_, nc, tt, ct, _) in pstats.Stats(profiler).stats.items():
        where = path.split("site-packages/")[-1].split("src/")[-1]
        rows.append(
            {"function": f"{where}:{line}({func})", "tottime": tt, "cumtime": ct, "calls": nc}
        )
    rows.sort(key=lambda r: -r["tottime"])
    return {
        "run_seconds": statistics.median(times),
        "all": times,
        "run_cpu_seconds": statistics.median(cpu_seconds[1 : 1 + repeat]),
        "failure": failures[-1] if failures else None,
        "stages": stage_median,
        "stages_cpu": stage_cpu_median,
        "footprints": footprints,
        "kernels": kernels,
        "kernel_run_seconds": kernel_run_seconds,
        "cprofile_run_seconds": cprofile_seconds,
        "cprofile_top": [
            {**r, "tottime": round(r["tottime"], 4), "cumtime": round(r["cumtime"], 4)}
            for r in rows[:top]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(DEFAULT_CASES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="CalibrateImageConfig override (repeatable)",
    )  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from promptcal.core.allocator import tune_allocator

        tune_allocator()
        print(json.dumps(child_profile(json.loads(args.files), args.repeat, args.top)))
        return
    from promptcal.simulate.presets import benchmark_sky

    out = {}
    env = {**os.environ, **SINGLE_THREAD_ENV}
    with tempfile.TemporaryDirectory(prefix="bench_profile-") as tmp:
        for k, case in enumerate(args.cases):
            name, overrides = parse_case(case)
            files = write_bench_sky(benchmark_sky(name, **overrides), Path(tmp) / str(k), args.seed)
            files["set"] = args.set
            print(f"[bench_profile] {case}: simulated, profiling", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--child", "--files", json.dumps(files)]
            cmd += ["--repeat", str(args.repeat), "--top", str(args.top)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                out[case] = {"image": files["info"], "error": proc.stderr[-3000:]}
                continue
            out[case] = {"image": files["info"], **json.loads(proc.stdout.strip().splitlines()[-1])}
    meta = {"load_average": os.getloadavg(), "set": args.set}
    print(json.dumps({"cases": out, **meta}, indent=2))


if __name__ == "__main__":
    main()
