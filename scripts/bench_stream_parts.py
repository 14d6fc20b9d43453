"""Worker processes, the message bench and the phases of ``scripts/bench_stream.py``.

Imported by ``bench_stream.py`` (``scripts/`` is on ``sys.path`` when a script runs):
``promptcal serve`` subprocesses, publishing ``image-ready`` and collecting
``calibrated``, the worker's ``metrics`` records, CPU accounting per phase, and the
priming and burst phases.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench_core import SINGLE_THREAD_ENV  # scripts/ is on sys.path as a script

INSTRUMENT = "BenchCam"
PARTITIONS = 2


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
    ) -> None:
        from promptcal.stream.broker import free_port

        self.name = name
        self.output = (tmp / f"out-{name}").resolve()
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        command = [
            sys.executable, "-m", "promptcal", "serve", "--bootstrap", bootstrap,
            "--group", group, "--prefix", prefix, "--refcat", refcat, "--output", str(self.output),
            "--http-host", "127.0.0.1", "--http-port", str(self.port),
            "--statistics-interval-ms", "0",
            "--consumer-option", "session.timeout.ms=6000",
            "--consumer-option", "heartbeat.interval.ms=500",
        ]  # fmt: skip
        if cpu is not None:
            command += ["--cpus", str(cpu)]
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
        from promptcal.service.messages import ImageReady, encode

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
        from promptcal.service.messages import Calibrated, decode

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

    from promptcal.service.messages import MetricsRecord, decode

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


# -- phases ------------------------------------------------------------------------------


def prime(bench: Bench, small: list[str], workers: list[ServeProcess], visit0: int) -> int:
    """Publish one small exposure per partition until every worker has answered one."""
    from promptcal.service.locations import uri_to_path

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
