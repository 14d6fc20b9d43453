"""Shared by the fault tests (``tests/faults/``): ``promptcal serve`` subprocesses, a
reader of the output topics, the publication of simulated visits, and the checks that
every exposure ended with exactly one distinct result and sound products."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from worker_helpers import image_ready, next_visit, produce

from promptcal.io.catalogs import read_catalog
from promptcal.io.files import TEMP_PATTERN
from promptcal.io.products import read_calexp
from promptcal.service.dead_letter import DeadLetter
from promptcal.service.locations import uri_to_path
from promptcal.service.messages import Calibrated, decode, encode

SINGLE_THREAD = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
#: Fields of a ``calibrated`` message that carry wall-clock values.
CLOCK_FIELDS = ("produced_at", "timings", "end_to_end_latency")
#: Wall-clock fields of summary.json.
SUMMARY_CLOCK_FIELDS = ("created", "timings")
#: Quick group joins: a killed member is evicted after 3 s.
FAST_GROUP = ("session.timeout.ms=3000", "heartbeat.interval.ms=300")


def serve_command(bootstrap, group, stream, prefix, output, port, *extra) -> list[str]:
    """``promptcal serve`` over a simulated stream, confined to its raw directory."""
    command = [
        sys.executable, "-m", "promptcal", "serve", "--bootstrap", bootstrap,
        "--group", group, "--refcat", str(stream.refcat), "--output", str(output),
        "--input-root", str(stream.root / "raw"), "--prefix", prefix,
        "--camera", str(stream.camera_path), "--http-port", str(port),
        "--statistics-interval-ms", "0", "--no-warmup", "--heap-reserve-mb", "0",
        "--retry-backoff", "0.2", "--file-wait", "2",
    ]  # fmt: skip
    for option in FAST_GROUP:
        command += ["--consumer-option", option]
    return [*command, *extra]


class Serve:
    """One ``promptcal serve`` subprocess, its log in a file."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict | None = None):
        self.name, self.log_path = name, log
        self._log = open(log, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **SINGLE_THREAD, **(env or {})},
        )

    def poll(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=None, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            if sig is None:
                self.process.kill()
            else:
                self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            self._log.close()
        return code


class TopicReader:
    """Collects the ``calibrated`` results and dead letters of a prefix from offset 0."""

    def __init__(self, bootstrap: str, names, partitions: int) -> None:
        self.names = names
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
        )
        self.consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for topic in (names.calibrated, names.dead_letter)
                for p in range(partitions)
            ]
        )
        self.results: list[tuple[Calibrated, bytes]] = []
        self.dead: list[tuple[DeadLetter, bytes | None]] = []

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            if message.topic() == self.names.calibrated:
                self.results.append((decode(message.value(), Calibrated), message.value()))
            else:
                self.dead.append((DeadLetter.from_headers(message.headers()), message.value()))

    def keys(self) -> set[tuple[int, int]]:
        return {(r.visit, r.detector) for r, _ in self.results}

    def wait_for(self, keys: set, timeout: float, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while not keys <= self.keys():
            assert time.monotonic() < deadline, f"missing results {sorted(keys - self.keys())}"
            assert alive(), "no worker left alive"
            self.poll()

    def close(self) -> None:
        self.consumer.close()


def publish_visit(producer, names, stream, visit, detectors) -> list[tuple[int, int]]:
    """``next-visit`` then ``image-ready`` for each detector; (partition, offset) of each snap."""
    for det in detectors:
        message = next_visit(visit, det)
        produce(producer, names.next_visit, encode(message), message.key())
    positions = []
    for det in detectors:
        for i, path in enumerate(stream.snaps[(visit.visit, det)]):
            message = image_ready(visit, det, i, path)
            positions.append(produce(producer, names.image_ready, encode(message), message.key()))
    return positions


def normalized(result: Calibrated) -> str:
    """A result without its wall-clock fields (what must be identical on a redo)."""
    return json.dumps(result.model_dump(mode="json", exclude=set(CLOCK_FIELDS)), sort_keys=True)


def distinct_results(results) -> dict[tuple[int, int], set[str]]:
    """(visit, detector) -> the distinct normalized results published for it."""
    out: dict[tuple[int, int], set[str]] = {}
    for result, _ in results:
        out.setdefault((result.visit, result.detector), set()).add(normalized(result))
    return out


def check_products(result: Calibrated) -> None:
    """Every product of a result is complete under its final path and readable."""
    summary_path = uri_to_path(result.products["summary"])
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == result.status
    for kind, uri in result.products.items():
        path = uri_to_path(uri)
        assert path.is_file(), path
        if path.suffix == ".parquet":
            read_catalog(path)
        elif kind == "calexp":
            exposure, _ = read_calexp(path)
            assert exposure.visit_info.exposure_id == result.visit


def temporary_files(root: Path) -> list[Path]:
    """Temporary product files left anywhere under ``root``."""
    return [p for p in root.rglob(".*") if TEMP_PATTERN.match(p.name)]
