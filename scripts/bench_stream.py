#!/usr/bin/env python
"""Benchmark the streaming worker against ``CalibrateImageTask.run`` measured in the same run.

Simulates K LSST-sized exposures (default 8 of the ``--sky`` of ``scripts/benchsky.py``,
default ``moffat``: 4072×4000 px, 3,000 stars up to saturation; ``--sky legacy`` is
the 4096×4072 sky of the earlier runs; each field 1° apart in RA) and a reference catalog of their
truth, plus small 512×512 "priming" exposures, all written before anything is timed.
Then, on the bundled local broker (``LocalBroker``, topics with 2 partitions):

1. **baseline**: in a fresh single-threaded child process, after the worker's own
   warm-up, the median wall time of ``CalibrateImageTask.run()`` per exposure (the
   pixels already in memory, one ``RefcatLoader`` shared as in the worker);
2. **latency**: one ``promptcal serve`` subprocess; each exposure's ``image-ready`` is
   published only after the previous result came back (no queueing); latency =
   ``image-ready`` ``produced_at`` → the ``calibrated`` message consumed here. p50,
   p99, and p50 − baseline;
3. **throughput**: a burst of the K exposures (new visit ids) published at once, with
   one worker and then with two workers in the group (each detector key chosen so that
   the two partitions get K/2 each); exposures/s from the first publish to the last
   result consumed, and the ratio two/one. Each worker count runs ``--bursts`` bursts
   (default 2) and keeps the fastest (min of repeats: on a noisy 2-core machine a
   burst of ~8 s can catch a stray process); every burst's time is reported. Before
   the two-worker bursts, small priming exposures are published until both workers
   have answered (both own a partition).

Every worker runs single-threaded (``OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS=1``) with a
warm Numba cache (``NUMBA_CACHE_DIR`` is passed through), pinned to its own core
(``serve --cpus``: w1 on the first CPU, w2 on the second), as deployed one worker per
core: a worker's helper threads (calexp writer, finisher, librdkafka) then share its
core in every phase, instead of borrowing the idle second core while it runs alone and
so measuring intra-worker parallelism rather than scaling. ``--no-pin`` runs them
unpinned. The worker's own breakdown comes from the ``metrics`` topic: queue wait,
read, calibrate (the task's ``run`` timer), write, and publish (``calibrated``
``produced_at`` → consumed here, i.e. the acknowledged publish plus delivery). Prints
one JSON object; the machine's load average before and after is included (run nothing
else heavy meanwhile).

Usage: ``python scripts/bench_stream.py [--exposures 8 --sky moffat]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench_core import SINGLE_THREAD_ENV  # scripts/ is on sys.path as a script
from benchsky import add_sky_arguments, bench_sky, sky_info

INSTRUMENT = "BenchCam"
PARTITIONS = 2
STAGES = ("read", "run", "write")  # the worker's stage timings reported per exposure
LIMITS = {"latency_p50_minus_run_s": 0.3, "latency_p99_s": 2.5, "throughput_ratio": 1.8}


# -- data -----------------------------------------------------------------------------------


def simulate(args, directory: Path) -> tuple[list[str], list[str], str]:
    """Write the K big exposures, the priming exposures and the refcat of their truth."""
    from astropy.table import vstack

    from promptcal.io import write_exposure
    from promptcal.refcat import build_refcat
    from promptcal.simulate import SkyConfig, refcat_table_from_truth, simulate_exposure

    big, small, truths = [], [], []
    for k in range(args.exposures):
        sky = bench_sky(args, ra=150.0 + k, exposure_id=k + 1)
        sim = simulate_exposure(sky.config, seed=args.seed + k)
        truths.append(_unique_ids(sim.truth, k))
        path = directory / f"big{k}.fits"
        write_exposure(sim.exposure, path)
        big.append(str(path))
    for k in range(2):
        config = SkyConfig(
            width=512, height=512, n_stars=60, star_flux_min=3000.0, ra=140.0 - k, sip_order=0
        )
        sim = simulate_exposure(config, seed=100 + k)
        truths.append(_unique_ids(sim.truth, 100 + k))
        path = directory / f"small{k}.fits"
        write_exposure(sim.exposure, path)
        small.append(str(path))
    source = directory / "refcat_source.parquet"
    options = bench_sky(args).refcat_options  # the big skies' (stars only, scatter)
    refcat_table_from_truth(vstack(truths), "r", **options).write(source, format="parquet")
    refcat = directory / "refcat"
    build_refcat(source, refcat, ra_col="ra", dec_col="dec", bands={"r": ("r_flux", "nJy")})
    return big, small, str(refcat)


def _unique_ids(truth, k: int):
    import numpy as np

    truth = truth.copy()
    truth["id"] = np.asarray(truth["id"]) + 1_000_000 * (k + 1)
    return truth


# -- baseline: run() in a child process -------------------------------------------------


def child_run(files: list[str], refcat: str, overrides: list[str]) -> dict:
    """Median ``CalibrateImageTask.run`` time over ``files`` (after the worker's warm-up);
    an algorithm failure is counted and timed like a result, as the worker does."""
    from promptcal.config import parse_set_option
    from promptcal.errors import AlgorithmError
    from promptcal.ids import IdGenerator
    from promptcal.io import read_exposure
    from promptcal.pipeline import CalibrateImageConfig, CalibrateImageTask
    from promptcal.refcat import RefcatLoader
    from promptcal.stream.warmup import warm_up

    config = CalibrateImageConfig().with_overrides(dict(map(parse_set_option, overrides)))
    warm_up(config)
    loader = RefcatLoader(refcat)
    times, n_stars, failures = [], [], []
    for k, path in enumerate(files):
        exposure = read_exposure(path, band="r")
        task = CalibrateImageTask(config, refcat=loader)
        start = time.perf_counter()
        try:
            ids = IdGenerator(visit=k + 1, detector=0)
            n_stars.append(len(task.run(exposures=exposure, id_generator=ids).stars))
        except AlgorithmError as error:
            failures.append(f"{type(error).__name__}: {error}"[:300])
        times.append(time.perf_counter() - start)
        del exposure
    out = {"seconds": statistics.median(times), "all": times, "n_stars": n_stars}
    return {**out, "failures": failures}


def run_baseline(files: list[str], refcat: str, overrides: list[str]) -> dict:
    env = {**os.environ, **SINGLE_THREAD_ENV}
    cmd = [sys.executable, __file__, "--child-run", "--refcat", refcat, "--files", *files]
    for text in overrides:
        cmd += ["--set", text]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- workers and messages ----------------------------------------------------------------


class ServeProcess:
    """A ``promptcal serve`` subprocess (log in a file) with its own product root."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        group: str,
        prefix: str,
        refcat: str,
        tmp: Path,
        cpu: int | None,
        overrides: tuple[str, ...] | list[str] = (),
    ) -> None:
        from promptcal.stream.broker import free_port

        self.name = name
        self.output = (tmp / f"out-{name}").resolve()
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        command = [
            sys.executable, "-m", "promptcal.cli", "serve", "--bootstrap", bootstrap,
            "--group", group, "--prefix", prefix, "--refcat", refcat, "--output", str(self.output),
            "--http-host", "127.0.0.1", "--http-port", str(self.port),
            "--statistics-interval-ms", "0",
            "--consumer-option", "session.timeout.ms=6000",
            "--consumer-option", "heartbeat.interval.ms=500",
        ]  # fmt: skip
        if cpu is not None:
            command += ["--cpus", str(cpu)]
        for text in overrides:
            command += ["--set", text]
        self._log = self.log_path.open("w")
        env = {**os.environ, **SINGLE_THREAD_ENV}
        self.process = subprocess.Popen(command, stderr=self._log, stdout=self._log, env=env)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log_path.read_text()}")
            try:
                url = f"http://127.0.0.1:{self.port}/readyz"
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready after {timeout} s")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class Bench:
    """Publishes ``image-ready`` messages and collects ``calibrated`` results."""

    def __init__(self, bootstrap: str, names) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

        from promptcal.stream.topics import producer_config

        self.names = names
        self.producer = Producer(producer_config(bootstrap))
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,  # as the worker's consumer
            }
        )
        # From the beginning (Tansu's ListOffsets is unreliable for the end); results
        # are told apart by their visit ids, unique to each phase.
        self.consumer.assign(
            [TopicPartition(names.calibrated, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self.results: dict[int, tuple] = {}  # visit -> (Calibrated, consumed at [POSIX s])
        self.produced_at: dict[int, float] = {}

    def publish(self, items: list[tuple[int, int, str]]) -> None:
        """Publish ``(visit, detector, path)`` snaps at once; wait for the acks."""
        from promptcal.stream.schemas import ImageReady, encode

        for visit, detector, path in items:
            now = time.time()
            message = ImageReady(
                instrument=INSTRUMENT,
                visit=visit,
                detector=detector,
                snap=0,
                n_snaps=1,
                band="r",
                exposure_time=30.0,
                mid_exposure_time=dt.datetime.now(dt.UTC),
                uri=Path(path).resolve().as_uri(),
                produced_at=now,
            )
            self.produced_at[visit] = now
            self.producer.produce(self.names.image_ready, encode(message), message.key())
        if self.producer.flush(30):
            raise RuntimeError("image-ready messages not acknowledged")

    def wait(self, visits, timeout: float) -> None:
        from promptcal.stream.schemas import Calibrated, decode

        deadline = time.monotonic() + timeout
        while not set(visits) <= set(self.results):
            if time.monotonic() > deadline:
                missing = sorted(set(visits) - set(self.results))
                raise RuntimeError(f"no result for visits {missing} after {timeout} s")
            message = self.consumer.poll(0.2)
            if message is not None and message.error() is None:
                result = decode(message.value(), Calibrated)
                self.results.setdefault(result.visit, (result, time.time()))

    def latency(self, visit: int) -> float:
        return self.results[visit][1] - self.produced_at[visit]

    def close(self) -> None:
        self.consumer.close()


def read_metrics(bootstrap: str, topic: str, visits: set[int], timeout: float = 30.0) -> dict:
    """``visit -> MetricsRecord`` for ``visits`` (the first record of each)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from promptcal.stream.schemas import MetricsRecord, decode

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-metrics", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    try:
        while not visits <= set(out) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                record = decode(message.value(), MetricsRecord)
                out.setdefault(record.visit, record)
    finally:
        consumer.close()
    return out


def balanced_detectors(n: int) -> list[int]:
    """Detector keys for ``n`` exposures, alternating between the two partitions."""
    from promptcal.stream.topics import partition_for_key

    by_partition: dict[int, list[int]] = {0: [], 1: []}
    detector = 0
    while min(len(v) for v in by_partition.values()) < (n + 1) // 2:
        by_partition[partition_for_key(str(detector).encode(), PARTITIONS)].append(detector)
        detector += 1
    return [by_partition[i % 2][i // 2] for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def breakdown(bench: Bench, records: dict, visits: list[int]) -> dict:
    """Medians of the worker's own timing record over ``visits`` [s]."""

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    rows = [records[v] for v in visits]
    publish = [bench.results[v][1] - bench.results[v][0].produced_at for v in visits]
    return {
        "queue_wait": median([r.queue_wait for r in rows]),
        "read": median([r.stage_timings.get("read") for r in rows]),
        "calibrate": median([r.stage_timings.get("run") for r in rows]),
        "write": median([r.stage_timings.get("write") for r in rows]),
        "publish_and_delivery": median(publish),
        "wall_time": median([r.wall_time for r in rows]),
        "cpu_time": median([r.cpu_time for r in rows]),
        "worker_end_to_end": median([r.end_to_end_latency for r in rows]),
        "peak_rss_gb": max(r.peak_rss for r in rows) / 1e9,
    }


class CpuMonitor:
    """CPU used during each phase by the benchmark's processes and by everything else.

    ``other_cpu_s`` is all busy CPU time (``/proc/stat``) minus that of ``pids`` (their
    user + system time, waited-for children included); it includes other users' jobs
    and kernel threads such as the writeback of the products. ``other_fraction`` is it
    over the machine's capacity (cores × wall time) in the phase.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = list(pids)
        self.names: dict[int, str] = {}  # pid -> label in the per-process breakdown
        self.phases: dict[str, dict] = {}
        self._start: dict[str, tuple[float, float, dict[int, float]]] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def _snapshot(self) -> tuple[float, float, dict[int, float]]:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
        busy = (sum(values) - values[3] - values[4]) / self._tick  # minus idle, iowait
        ours: dict[int, float] = {}
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ours[pid] = sum(int(f) for f in fields[11:15]) / self._tick  # utime..cstime
        return time.monotonic(), busy, ours

    def start(self, phase: str) -> None:
        self._start[phase] = self._snapshot()

    def stop(self, phase: str) -> None:
        (t0, busy0, ours0), (t1, busy1, ours1) = self._start[phase], self._snapshot()
        by_process = {
            self.names.get(pid, str(pid)): ours1[pid] - ours0.get(pid, 0.0) for pid in ours1
        }
        ours = sum(by_process.values())
        other = max(0.0, (busy1 - busy0) - ours)
        self.phases[phase] = {
            "wall_s": t1 - t0,
            "ours_cpu_s": ours,
            "by_process_cpu_s": by_process,
            "other_cpu_s": other,
            "other_fraction": other / ((os.cpu_count() or 1) * (t1 - t0)),
        }


# -- the benchmark -----------------------------------------------------------------------


def prime(bench: Bench, small: list[str], workers: list[ServeProcess], visit0: int) -> int:
    """Publish one small exposure per partition until every worker has answered one."""
    from promptcal.stream.process import uri_to_path

    detectors = balanced_detectors(2)
    roots = {w.output: w.name for w in workers}
    seen: set[str] = set()
    for round_ in range(10):
        visits = [visit0 + 2 * round_, visit0 + 2 * round_ + 1]
        bench.publish([(v, d, p) for v, d, p in zip(visits, detectors, small, strict=True)])
        bench.wait(visits, timeout=60)
        for v in visits:
            summary = uri_to_path(bench.results[v][0].products["summary"])
            seen |= {name for root, name in roots.items() if summary.is_relative_to(root)}
        if seen == {w.name for w in workers}:
            return round_ + 1
    raise RuntimeError(f"only workers {seen} answered the priming exposures")


def burst(bench: Bench, big: list[str], visit0: int, timeout: float) -> dict:
    detectors = balanced_detectors(len(big))
    visits = [visit0 + k for k in range(len(big))]
    start = time.time()
    bench.publish(list(zip(visits, detectors, big, strict=True)))
    bench.wait(visits, timeout)
    last = max(bench.results[v][1] for v in visits)
    return {
        "n": len(visits),
        "seconds": last - start,
        "exposures_per_s": len(visits) / (last - start),
        "visits": visits,
        "start": start,
    }


def fastest_burst(
    bench: Bench, big: list[str], workers: list[ServeProcess], visit0: int, n: int
) -> dict:
    """The fastest of ``n`` bursts (new visit ids each time; products cleared after
    each); ``all_seconds`` lists every burst's time."""
    runs = []
    for k in range(n):
        runs.append(burst(bench, big, visit0 + 1000 * k, timeout=600))
        clear(workers)
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**fastest, "all_seconds": [run["seconds"] for run in runs]}


def clear(workers: list[ServeProcess]) -> None:
    """Drop the products of earlier phases (hundreds of MB each)."""
    for worker in workers:
        shutil.rmtree(worker.output / INSTRUMENT, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=8, help="K exposures (even)")
    add_sky_arguments(parser, many=False)  # --sky (default moffat) and its overrides
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="calibration config override of the workers and the baseline (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--no-pin", action="store_true", help="let the workers run on any CPU (no --cpus)"
    )
    parser.add_argument(
        "--bursts", type=int, default=2, help="bursts per worker count; the fastest is kept"
    )
    parser.add_argument("--child-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--refcat", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_run:
        from promptcal.allocator import tune_allocator

        tune_allocator()  # as `promptcal serve` does, so run() is timed like the worker's
        print(json.dumps(child_run(args.files, args.refcat, args.set)))
        return

    import uuid

    from promptcal.stream.broker import LocalBroker
    from promptcal.stream.topics import TopicNames, create_topics

    load = {"start": os.getloadavg()[0]}  # 1-min load average at each phase's start
    with tempfile.TemporaryDirectory(prefix="bench_stream-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        big, small, refcat = simulate(args, tmp)
        simulate_seconds = time.perf_counter() - t0
        cpu = CpuMonitor([os.getpid()])
        cpu.start("baseline")
        baseline = run_baseline(big, refcat, args.set)
        cpu.stop("baseline")
        with LocalBroker(stop_timeout=1.0) as broker:
            names = TopicNames("bench.")
            create_topics(broker.bootstrap, partitions=PARTITIONS, prefix=names.prefix)
            group = f"bench-{uuid.uuid4().hex[:8]}"
            bench = Bench(broker.bootstrap, names)
            cpus = [None, None] if args.no_pin else sorted(os.sched_getaffinity(0))[:2]
            workers = [
                ServeProcess(
                    "w1", broker.bootstrap, group, names.prefix, refcat, tmp, cpus[0], args.set
                )
            ]
            cpu.pids += [broker.pid, workers[0].process.pid]
            cpu.names.update(
                {os.getpid(): "bench", broker.pid: "broker", workers[0].process.pid: "w1"}
            )
            try:
                workers[0].wait_ready()
                prime(bench, small, workers, 9000)
                # (2) latency, one exposure at a time.
                cpu.start("latency")
                latency_visits = [1000 + k for k in range(len(big))]
                for visit, path in zip(latency_visits, big, strict=True):
                    bench.publish([(visit, 0, path)])
                    bench.wait([visit], timeout=120)
                cpu.stop("latency")
                latencies = [bench.latency(v) for v in latency_visits]
                clear(workers)
                # (3) throughput: one worker, then two.
                cpu.start("one_worker")
                one = fastest_burst(bench, big, workers, 100_000, args.bursts)
                cpu.stop("one_worker")
                workers.append(
                    ServeProcess(
                        "w2", broker.bootstrap, group, names.prefix, refcat, tmp, cpus[-1], args.set
                    )
                )
                cpu.pids.append(workers[1].process.pid)
                cpu.names[workers[1].process.pid] = "w2"
                workers[1].wait_ready()
                primed = prime(bench, small, workers, 9100)
                cpu.start("two_workers")
                two = fastest_burst(bench, big, workers, 200_000, args.bursts)
                cpu.stop("two_workers")
                records = read_metrics(
                    broker.bootstrap,
                    names.metrics,
                    set(latency_visits) | set(one["visits"]) | set(two["visits"]),
                )
                by_worker = {}
                for v in two["visits"]:
                    by_worker.setdefault(records[v].worker, []).append(v)
            except BaseException:
                for worker in workers:  # the logs vanish with the temporary directory
                    tail = worker.log_path.read_text().splitlines()[-40:]
                    print(f"--- {worker.name} log (tail)", *tail, sep="\n", file=sys.stderr)
                raise
            finally:
                bench.close()
                codes = [w.stop() for w in workers]
        load["end"] = os.getloadavg()[0]

    run_s = baseline["seconds"]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    ratio = two["exposures_per_s"] / one["exposures_per_s"]
    report = {
        "image": sky_info(bench_sky(args)),
        "worker_cpus": {"w1": cpus[0], "w2": cpus[-1]},
        "n_exposures": len(big),
        "simulate_seconds": simulate_seconds,
        "load_average_1min": load,
        "cpu_by_phase": cpu.phases,
        "baseline_run": baseline,
        "latency_one_worker": {
            "p50": p50,
            "p99": p99,
            "max": max(latencies),
            "all": latencies,
            "p50_minus_run": p50 - run_s,
            "p99_minus_run": p99 - run_s,
            "breakdown_median": breakdown(bench, records, latency_visits),
            "per_exposure": [  # [latency, read, calibrate, write] [s], in publication order
                [
                    round(bench.latency(v), 3),
                    *(round(records[v].stage_timings.get(k, -1.0), 3) for k in STAGES),
                ]
                for v in latency_visits
            ],
        },
        "throughput": {
            "one_worker": {k: v for k, v in one.items() if k not in ("visits", "start")},
            "two_workers": {k: v for k, v in two.items() if k not in ("visits", "start")},
            "ratio_two_to_one": ratio,
            "two_workers_split": sorted(len(v) for v in by_worker.values()),
            "priming_rounds_two_workers": primed,
            "breakdown_median_one_worker": breakdown(bench, records, one["visits"]),
            "breakdown_median_two_workers": breakdown(bench, records, two["visits"]),
            # [worker, result time after the burst, wall, read, calibrate, write] [s]
            "per_exposure_two_workers": [
                [
                    records[v].worker.rsplit("/", 1)[-1],
                    round(bench.results[v][1] - two["start"], 3),
                    round(records[v].wall_time, 3),
                    *(round(records[v].stage_timings.get(k, -1.0), 3) for k in STAGES),
                ]
                for v in two["visits"]
            ],
        },
        "worker_exit_codes": codes,
        "set": args.set,
        # Algorithm failures are results too (status "failed"); count them per phase.
        "n_failed": {
            phase: sum(bench.results[v][0].status != "success" for v in visits)
            for phase, visits in (
                ("latency", latency_visits),
                ("one_worker", one["visits"]),
                ("two_workers", two["visits"]),
            )
        },
        "limits": LIMITS,
        "within_limits": {
            "latency_p50_minus_run_s": p50 - run_s <= LIMITS["latency_p50_minus_run_s"],
            "latency_p99_s": p99 <= LIMITS["latency_p99_s"],
            "throughput_ratio": ratio >= LIMITS["throughput_ratio"],
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
