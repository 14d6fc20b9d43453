"""The local half of the replay: the worker's processing path in N processes, no Kafka.

Each process holds what a streaming worker holds (a reference-catalog loader with its
shard cache, a :class:`~promptcal.service.preload.Preloader` and an
:class:`~promptcal.service.process.ExposureProcessor`) and handles one exposure as the
worker does: preload on the ``next-visit`` message, assemble the ``image-ready`` snaps,
calibrate and write the products, then build the ``calibrated`` and ``metrics``
messages with :func:`~promptcal.stream.publish.build_messages`. Only the transport
differs: messages are passed as bytes between processes instead of through topics.
An unreadable snap (the worker's dead-letter case) comes back as a ``dead_letter``
result.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from promptcal.core.errors import InvalidInputError
from promptcal.night.manifest import read_manifest
from promptcal.replay.jobs import (
    ExposureJob,
    Pacer,
    Progress,
    ReplaySummary,
    ResultLog,
    pending_jobs,
    schedule,
    write_run_record,
)

logger = logging.getLogger(__name__)

#: The worker of this process (set by the pool initializer, or in-process).
_WORKER: LocalWorker | None = None


class LocalWorker:
    """One process's calibration state, as in :class:`promptcal.stream.worker.Worker`."""

    def __init__(self, config, refcat: str, camera: str, output: str) -> None:
        from promptcal.core.camera import load_camera
        from promptcal.refcat import RefcatLoader
        from promptcal.service.outcome import worker_identity
        from promptcal.service.preload import Preloader
        from promptcal.service.process import ExposureProcessor

        self.config = config
        self.refcat = RefcatLoader(refcat)
        self.preloader = Preloader(
            self.refcat, load_camera(camera), extra_margin_px=self.config.ref_pixel_margin
        )
        self.processor = ExposureProcessor(self.config, self.refcat, output)
        self.identity = worker_identity()

    def handle(self, next_visit: bytes, snaps: list[bytes]) -> tuple[str, Any]:
        """Preload, calibrate and write one exposure; returns ``(kind, payload)``.

        ``kind`` is ``"calibrated"`` with ``(calibrated, metrics)`` message dicts, or
        ``"dead_letter"`` with the error of an unreadable snap.
        """
        from promptcal.service.assembler import PendingExposure, ReceivedSnap
        from promptcal.service.messages import ImageReady, NextVisit, decode
        from promptcal.service.outcome import build_messages

        announced = decode(next_visit, NextVisit)
        self.preloader.preload(announced)
        messages = [decode(raw, ImageReady) for raw in snaps]
        first = messages[0]
        pending = PendingExposure(
            first.instrument, first.visit, first.detector, first.n_snaps, time.monotonic()
        )
        for index, (message, raw) in enumerate(zip(messages, snaps, strict=True)):
            position = ("local", 0, index)
            pending.snaps[message.snap] = ReceivedSnap(message, position, None, raw)
            pending.positions.append(position)
        record = self.preloader.pop(first.visit, first.detector)
        try:
            outcome = self.processor.process(pending, record, self.preloader)
        except InvalidInputError as exc:  # a snap cannot be read: the worker's dead letter
            logger.warning("visit %d detector %d: %s", first.visit, first.detector, exc)
            return "dead_letter", {"error_type": type(exc).__name__, "error_message": str(exc)}
        calibrated, metrics, _ = build_messages(
            outcome,
            calibrated_topic="calibrated",
            metrics_topic="metrics",
            worker=self.identity,
            now=time.time(),
        )
        return "calibrated", (calibrated.model_dump(mode="json"), metrics.model_dump(mode="json"))


def _initialize(config, refcat: str, camera: str, output: str) -> None:
    global _WORKER
    _WORKER = LocalWorker(config, refcat, camera, output)


def _handle(next_visit: bytes, snaps: list[bytes]) -> tuple[str, Any]:
    assert _WORKER is not None, "pool process not initialised"
    return _WORKER.handle(next_visit, snaps)


class LocalPool:
    """Run exposures in ``workers`` processes (1: in this process), in release order."""

    def __init__(self, workers: int, config, refcat: Path, camera: Path, output: Path) -> None:
        if workers < 1:
            raise InvalidInputError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        # The config travels pickled: its JSON form turns infinities into null.
        self.args = (config, str(refcat), str(camera), str(output))
        self.executor: ProcessPoolExecutor | None = None
        self.worker: LocalWorker | None = None

    def __enter__(self) -> LocalPool:
        if self.workers > 1:
            # spawn: a fork of a process with Numba/librdkafka threads is not safe.
            self.executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_initialize,
                initargs=self.args,
            )
        else:
            self.worker = LocalWorker(*self.args)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def run(self, manifest, base: Path, events: list, pacer) -> Iterator[tuple[str, Any, Any]]:
        """Release ``events`` on the pacer's clock; yield ``(kind, job, payload)`` results."""
        from promptcal.replay.jobs import image_ready_message, next_visit_message
        from promptcal.service.messages import encode

        announced: dict[tuple[int, int], bytes] = {}
        arrived: dict[tuple[int, int], list[bytes]] = {}
        running: dict[Future, Any] = {}
        for event in events:
            while (left := pacer.due_in(event.at)) > 0 and not pacer.stop.is_set():
                yield from self._collect(running, timeout=left)
            if pacer.stop.is_set():
                break
            job, now = event.job, time.time()
            if event.kind == "next-visit":
                announced[job.key] = encode(next_visit_message(manifest.instrument, job, now))
                continue
            snap = image_ready_message(manifest.instrument, job, event.snap, base, now)
            arrived.setdefault(job.key, []).append(encode(snap))
            if len(arrived[job.key]) < job.visit.n_snaps:
                continue
            snaps = arrived.pop(job.key)
            if self.executor is None:
                kind, payload = self.worker.handle(announced.pop(job.key), snaps)
                yield kind, job, payload
            else:
                running[self.executor.submit(_handle, announced.pop(job.key), snaps)] = job
            yield from self._collect(running, timeout=0)
        while running:
            yield from self._collect(running, timeout=None)

    @staticmethod
    def _collect(running: dict, timeout: float | None) -> Iterator[tuple[str, Any, Any]]:
        if not running:
            if timeout:
                time.sleep(min(timeout, 0.5))
            return
        done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            job = running.pop(future)
            kind, payload = future.result()
            yield kind, job, payload


def replay_local(
    manifest_path: str | Path,
    output: str | Path,
    *,
    workers: int = 1,
    speed: float = math.inf,
    config=None,
    progress: Progress | bool = True,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Replay a night through the worker's processing path in ``workers`` processes.

    Parameters
    ----------
    manifest_path : path
        ``manifest.json`` or its directory.
    output : path
        Product root (the worker's ``--output``).
    workers : int
        Processes; 1 runs in this process.
    speed : float
        Night-time speed-up (``inf``: as fast as possible).
    config : CalibrateImageConfig, optional
        Calibration configuration (defaults).
    progress : Progress or bool
        Progress bar (``True``: on stderr).
    stop : threading.Event, optional
        Set to stop submitting; exposures in hand complete.
    """
    from promptcal.pipeline.config import CalibrateImageConfig

    manifest_path = Path(manifest_path)
    manifest, base = read_manifest(manifest_path)
    config = config if config is not None else CalibrateImageConfig()
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    jobs, skipped = pending_jobs(manifest, root, config.config_hash())
    summary = ReplaySummary(total=len(jobs) + skipped, skipped=skipped)
    bar = progress if isinstance(progress, Progress) else Progress(len(jobs), enabled=progress)
    log = ResultLog(root)
    pacer = Pacer(speed, stop)
    started = time.monotonic()
    if skipped:
        logger.info("%d of %d exposures already done; skipped", skipped, summary.total)
    camera_path = (base / manifest.camera).resolve()
    refcat_path = (base / manifest.refcat).resolve()
    answered: set[tuple[int, int]] = set()
    with LocalPool(workers, config, refcat_path, camera_path, root) as pool:
        for kind, job, payload in pool.run(manifest, base, schedule(manifest, jobs), pacer):
            _record_local(kind, job, payload, summary, log)
            answered.add(job.key)
            bar.update(summary.processed, summary.failed + summary.dead_letters)
    bar.update(summary.processed, summary.failed + summary.dead_letters, final=True)
    summary.missing = [j.key for j in jobs if j.key not in answered]
    summary.wall_time = time.monotonic() - started
    write_run_record(root, manifest_path.resolve(), "local", speed, summary)
    return summary


def _record_local(kind: str, job: ExposureJob, payload, summary: ReplaySummary, log) -> None:
    visit, det = job.key
    if kind == "dead_letter":
        summary.dead_letters += 1
        log.append("dead_letter", visit, det, payload)
        return
    calibrated, metrics = payload
    if calibrated["status"] == "success":
        summary.succeeded += 1
    else:
        summary.failed += 1
    log.append("calibrated", visit, det, calibrated)
    log.append("metrics", visit, det, metrics)
