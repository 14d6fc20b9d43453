"""Failover (issue 5, b): SIGKILL one of two ``promptcal serve`` workers mid-stream.

Two worker subprocesses share a consumer group on topics of 4 partitions, each with
its own product root (so every product on disk says which worker wrote it). A stream
of 3 detectors × 8 visits is published: "priming" visits one at a time until both
workers have calibrated something (both own partitions; usually after the first), then
the remaining visits at once. While the worker that owns detector 0 has an exposure in hand, it is
killed with SIGKILL (no drain, no commit). The test then waits, by polling the
``calibrated`` topic, until every (visit, detector) has a result, and checks:

- every (visit, detector) has ≥ 1 ``calibrated`` message with readable products;
- the survivor took the killed worker's partitions: the killed worker's detectors
  have results written under the survivor's product root after the kill;
- at-least-once, never worse: a duplicate result (same key, published by both
  workers) is a byte-identical re-publication: same status and summary values and
  the same hashes of the deterministic product files; an exposure the killed worker
  had finished writing but not published is redone identically too;
- after the survivor drains (SIGTERM, exit 0), the group's committed offset of every
  ``image-ready`` partition is one past the last message produced to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from worker_helpers import (
    INSTRUMENT,
    TRUE_ZERO_POINT,
    Visit,
    http_get,
    image_ready,
    next_visit,
    poll_until,
    produce,
    simulate_stream,
)

from promptcal.io.catalogs import read_catalog
from promptcal.io.products import read_calexp
from promptcal.service.locations import uri_to_path
from promptcal.service.messages import Calibrated, decode, encode
from promptcal.stream.broker import free_port
from promptcal.stream.topics import TopicNames, create_topics, partition_for_key, producer_config

pytest_plugins = ["kafka_fixtures"]

PARTITIONS = 4
DETECTORS = (0, 1, 2)
VISITS = [Visit(v, 150.0 + 0.2 * v, 2.0) for v in range(1, 9)]
N_PRIMING = 2  # visits published one at a time before the burst
SINGLE_THREAD = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
#: Products whose bytes depend only on the input and the configuration.
DETERMINISTIC = (
    "calexp",
    "background",
    "stars",
    "psf_stars",
    "stars_footprints",
    "psf_stars_footprints",
    "astrometry_matches",
    "photometry_matches",
)
#: Wall-clock fields of summary.json (everything else must be identical on a redo).
SUMMARY_CLOCK_FIELDS = ("created", "timings")


class ServeProcess:
    """One ``promptcal serve`` subprocess and its collected stderr lines."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        env = {**os.environ, **SINGLE_THREAD}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.process.stderr), daemon=True
        )
        self._reader.start()

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def in_hand(self) -> bool:
        """An exposure is being processed (started, not yet reported)."""
        return self.count("processing visit=") > self.count("calibrated visit=")

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        self.process.stderr.close()


def _serve_command(bootstrap, group, stream, prefix, output: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "promptcal",
        "serve",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--refcat",
        str(stream.refcat),
        "--output",
        str(output),
        "--prefix",
        prefix,
        "--camera",
        str(stream.camera_path),
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--statistics-interval-ms",
        "0",
        "--consumer-option",
        "session.timeout.ms=6000",
        "--consumer-option",
        "heartbeat.interval.ms=500",
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _deterministic_fingerprint(directory: Path) -> dict[str, str]:
    """Hashes of the deterministic products of one product directory, and of
    summary.json without its wall-clock fields."""
    document = json.loads((directory / "summary.json").read_text())
    stable = {k: v for k, v in document.items() if k not in SUMMARY_CLOCK_FIELDS}
    prints = {"summary.json": json.dumps(stable, sort_keys=True)}
    for name in document["products"].values():
        if name != "summary.json":
            prints[name] = _sha256(directory / name)
    return prints


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def _root_of(result: Calibrated, roots: dict[str, Path]) -> str:
    path = uri_to_path(result.products["summary"])
    (owner,) = [name for name, root in roots.items() if path.is_relative_to(root)]
    return owner


# Long: one failover scenario against real processes (start, stream, SIGKILL, takeover,
# checks); its steps depend on each other.
@pytest.mark.kafka
def test_sigkill_of_one_worker_loses_nothing(kafka_broker, tmp_path):
    started = time.monotonic()
    bootstrap = kafka_broker.bootstrap
    # Detectors 0 and 2 hash to partition 0, detector 1 to partition 3: the range
    # assignor gives one member partitions {0, 1}, the other {2, 3}, so both get work.
    partitions = {d: partition_for_key(str(d).encode(), PARTITIONS) for d in DETECTORS}
    assert partitions == {0: 0, 1: 3, 2: 0}
    stream = simulate_stream(
        tmp_path / "stream", [Visit(v.visit, v.ra, v.dec, detectors=DETECTORS) for v in VISITS]
    )
    names = TopicNames(f"fo{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, partitions=PARTITIONS, prefix=names.prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    roots = {"a": (tmp_path / "out-a").resolve(), "b": (tmp_path / "out-b").resolve()}
    ports = {name: free_port() for name in roots}
    workers = {
        name: ServeProcess(
            name, _serve_command(bootstrap, group, stream, names.prefix, root, ports[name])
        )
        for name, root in roots.items()
    }
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    reader.assign([TopicPartition(names.calibrated, p, OFFSET_BEGINNING) for p in range(4)])
    results: list[tuple[Calibrated, str, float]] = []  # (message, root name, received at)

    def collect(until, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            message = reader.poll(0.05)
            if message is not None and message.error() is None:
                result = decode(message.value(), Calibrated)
                results.append((result, _root_of(result, roots), time.time()))

    def done_keys() -> set[tuple[int, int]]:
        return {(r.visit, r.detector) for r, _, _ in results}

    producer = Producer(producer_config(bootstrap))
    last_offset: dict[int, int] = {}

    def publish(v: Visit) -> None:
        for det in DETECTORS:
            message = next_visit(v, det)
            produce(producer, names.next_visit, encode(message), message.key())
        for det in DETECTORS:
            message = image_ready(v, det, 0, stream.snaps[(v.visit, det)][0])
            partition, offset = produce(producer, names.image_ready, encode(message), message.key())
            last_offset[partition] = offset

    try:
        for name, port in ports.items():
            poll_until(
                lambda port=port, name=name: (
                    http_get(port, "/readyz", 0.5)[0] == 200
                    or workers[name].process.poll() is not None
                ),
                timeout=40,
                what=f"worker {name} ready",
            )
            assert workers[name].process.poll() is None, workers[name].log()
        # Priming: one visit at a time until both workers have calibrated something.
        primed = 0
        while {root for _, root, _ in results} != set(roots):
            assert primed < N_PRIMING + 2, "both workers never got partitions"
            v = VISITS[primed]
            publish(v)
            primed += 1
            collect(lambda v=v: {(v.visit, d) for d in DETECTORS} <= done_keys(), 30, "priming")
        owner = {r.detector: root for r, root, _ in results if r.visit == VISITS[primed - 1].visit}
        victim_name = owner[0]
        survivor_name = "b" if victim_name == "a" else "a"
        assert owner[2] == victim_name and owner[1] == survivor_name  # the range split
        victim, survivor = workers[victim_name], workers[survivor_name]
        burst = VISITS[primed:]
        before_burst = victim.count("calibrated visit=")
        for v in burst:
            publish(v)
        # Kill the victim mid-exposure, after it finished at least one burst exposure.
        collect(
            lambda: victim.count("calibrated visit=") > before_burst and victim.in_hand(),
            30,
            "the victim to have an exposure in hand",
        )
        victim.process.send_signal(signal.SIGKILL)
        killed_at, n_before_kill = time.time(), len(results)
        victim.process.wait(10)
        expected = {(v.visit, d) for v in VISITS for d in DETECTORS}
        collect(lambda: expected <= done_keys(), 60, "every (visit, detector) calibrated")
        survivor.process.send_signal(signal.SIGTERM)
        assert survivor.process.wait(30) == 0, survivor.log()
        committed = _committed(bootstrap, group, names.image_ready)
    finally:
        reader.close()
        for worker in workers.values():
            worker.stop()
    elapsed = time.monotonic() - started

    by_key: dict[tuple[int, int], list[tuple[Calibrated, str, float]]] = {}
    for item in results:
        by_key.setdefault((item[0].visit, item[0].detector), []).append(item)
    assert set(by_key) == expected
    # Every result is a success with readable products and the true zero point.
    for (visit, detector), items in by_key.items():
        final, _, _ = items[-1]
        assert final.status == "success", final
        assert final.summary["zeroPoint"] == pytest.approx(TRUE_ZERO_POINT, abs=0.05)
        exposure, _ = read_calexp(uri_to_path(final.products["calexp"]))
        assert exposure.visit_info.exposure_id == visit and exposure.detector.id == detector
        stars = read_catalog(uri_to_path(final.products["stars"]))
        summary = json.loads(uri_to_path(final.products["summary"]).read_text())
        assert summary["status"] == "success" and summary["n_stars"] == len(stars) > 20

    # The victim wrote nothing after it was killed (its results predate the kill) and
    # the survivor took over its detectors: they have results from the survivor's
    # root that were not there before the kill.
    assert all(t <= killed_at + 0.5 for _, root, t in results if root == victim_name)
    taken_over = {
        (r.visit, r.detector)
        for r, root, t in results
        if root == survivor_name and r.detector in (0, 2) and t > killed_at
    }
    assert taken_over, "the survivor calibrated none of the killed worker's detectors"
    takeover_s = (
        min(t for r, root, t in results if (r.visit, r.detector) in taken_over) - killed_at
    )  # session timeout, rebalance, and one exposure
    assert survivor.count("revoked") >= 1  # it went through the rebalance

    # Duplicates (published twice) and redone exposures (written by both) are identical.
    duplicates = {k: items for k, items in by_key.items() if len(items) > 1}
    for key, items in duplicates.items():
        first = items[0][0]
        for other, _, _ in items[1:]:
            assert other.key() == first.key()
            assert (other.status, other.summary, other.error_type, other.config_hash) == (
                first.status,
                first.summary,
                first.error_type,
                first.config_hash,
            ), key
            assert set(other.products) == set(first.products), key
    redone = []
    for visit, detector in sorted(expected):
        dirs = [roots[n] / INSTRUMENT / str(visit) / str(detector) for n in sorted(roots)]
        if all((d / "summary.json").is_file() for d in dirs):
            prints = [_deterministic_fingerprint(d) for d in dirs]
            assert prints[0] == prints[1], (visit, detector)
            assert set(prints[0]) >= {"calexp.fits", "stars.parquet", "summary.json"}
            redone.append((visit, detector))
    assert set(duplicates) <= set(redone) | {
        k for k, items in duplicates.items() if len({root for _, root, _ in items}) == 1
    }

    # Nothing was skipped: every image-ready partition is committed to its end.
    assert {p: committed[p] for p in last_offset} == {p: o + 1 for p, o in last_offset.items()}
    print(
        f"failover: {elapsed:.1f} s; victim {victim_name} killed with "
        f"{n_before_kill} results so far; duplicates {sorted(duplicates)}; "
        f"redone on both roots {redone}; survivor took over {sorted(taken_over)}, first "
        f"result {takeover_s:.1f} s after the kill"
    )
