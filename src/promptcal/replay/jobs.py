"""Replay an archived (or simulated) night through the worker's processing path.

A night is a :class:`~promptcal.night.plan.NightManifest`: visits with their pointing, and
one file per (visit, detector, snap) with the time it reached storage. The replay
recreates the observatory's message stream with the archived cadence:

- ``next-visit`` for each (visit, detector) ``next_visit_lead`` (≥ 20 s) before the
  shutter opens;
- ``image-ready`` for each snap when its file was in storage;

night time is mapped to wall time divided by ``speed`` (``inf``: as fast as possible,
order kept). Two destinations:

- ``replay_kafka`` (:mod:`promptcal.replay.kafka`) publishes the messages to the
  ``next-visit``/``image-ready`` topics for ``promptcal serve`` workers and follows
  their ``calibrated``/``dead-letter`` results;
- :func:`replay_local` runs the worker's own processing (preload, then
  :class:`~promptcal.service.process.ExposureProcessor`) in N processes, without Kafka,
  and builds the same ``calibrated`` and ``metrics`` messages.

Both skip exposures whose products are complete (``summary.json`` exists, and in the
local mode was made with the same configuration), so an interrupted replay resumes
where it stopped. Results go to ``<output>/replay/results.jsonl`` (one JSON object per
line: ``kind`` = ``calibrated``, ``metrics`` or ``dead_letter``, ``visit``,
``detector``, ``message``) and ``<output>/replay/run.json``, which ``promptcal report``
reads with the products. See ``docs/replay-and-report.md``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from promptcal.core.errors import InvalidInputError
from promptcal.night.manifest import (
    ExposureRecord,
    NightManifest,
    VisitRecord,
    resolve_uri,
)

logger = logging.getLogger(__name__)

#: Sub-directory of the product root with the replay's results log and run record.
REPLAY_DIR = "replay"


@dataclass(frozen=True)
class ExposureJob:
    """One (visit, detector) of the night and its snap files."""

    visit: VisitRecord
    detector: int
    snaps: tuple[ExposureRecord, ...]

    @property
    def key(self) -> tuple[int, int]:
        """(visit, detector)."""
        return (self.visit.visit, self.detector)


@dataclass(frozen=True)
class ScheduledEvent:
    """A message due at night time ``at`` [s since the first event]."""

    at: float
    kind: str  # "next-visit" or "image-ready"
    job: ExposureJob
    snap: ExposureRecord | None = None


@dataclass
class ReplaySummary:
    """What a replay did."""

    total: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    dead_letters: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def processed(self) -> int:
        """Exposures finished in this run (any outcome)."""
        return self.succeeded + self.failed + self.dead_letters


def parse_speed(text: str | float) -> float:
    """``"max"`` → ``inf``; otherwise a positive factor."""
    if isinstance(text, str) and text.strip().lower() == "max":
        return math.inf
    try:
        speed = float(text)
    except ValueError as exc:
        raise InvalidInputError(f"speed {text!r}: expected a positive number or 'max'") from exc
    if not speed > 0:
        raise InvalidInputError(f"speed must be > 0 or 'max', got {text!r}")
    return speed


def build_jobs(manifest: NightManifest) -> list[ExposureJob]:
    """The (visit, detector) jobs of the night, by visit then detector."""
    snaps: dict[tuple[int, int], list[ExposureRecord]] = {}
    for record in manifest.exposures:
        snaps.setdefault((record.visit, record.detector), []).append(record)
    jobs = []
    for visit in manifest.visits:
        for (v, det), records in sorted(snaps.items()):
            if v == visit.visit:
                ordered = tuple(sorted(records, key=lambda r: r.snap))
                if [r.snap for r in ordered] != list(range(visit.n_snaps)):
                    raise InvalidInputError(
                        f"visit {v} detector {det}: snaps {[r.snap for r in ordered]}, "
                        f"expected 0..{visit.n_snaps - 1}"
                    )
                jobs.append(ExposureJob(visit, det, ordered))
    return jobs


def schedule(manifest: NightManifest, jobs: list[ExposureJob]) -> list[ScheduledEvent]:
    """Every message of ``jobs`` in night-time order (ties: next-visit first)."""
    raw: list[tuple[float, int, int, ScheduledEvent]] = []
    for order, job in enumerate(jobs):
        opens = job.visit.start_time.timestamp() - manifest.next_visit_lead
        raw.append((opens, 0, order, ScheduledEvent(0.0, "next-visit", job)))
        for snap in job.snaps:
            raw.append(
                (snap.ready_time.timestamp(), 1, order, ScheduledEvent(0, "image-ready", job, snap))
            )
    raw.sort(key=lambda item: item[:3])
    if not raw:
        return []
    t0 = raw[0][0]
    return [ScheduledEvent(t - t0, e.kind, e.job, e.snap) for t, _kind, _order, e in raw]


def next_visit_message(instrument: str, job: ExposureJob, now: float):
    """The ``next-visit`` message of a job (pointing and scale of its first snap's record:
    an archived night's camera centres each detector on its own pointing)."""
    from promptcal.service.messages import NextVisit

    v, first = job.visit, job.snaps[0]
    return NextVisit(
        instrument=instrument,
        visit=v.visit,
        detector=job.detector,
        group_id=v.group_id,
        band=v.band,
        boresight_ra=first.boresight_ra % 360.0,
        boresight_dec=first.boresight_dec,
        rotation_angle=first.rotation_angle,
        pixel_scale=first.pixel_scale,
        rotation_system="SKY",
        start_time=v.start_time,
        exposure_duration=v.exposure_time,
        n_snaps=v.n_snaps,
        private_sndStamp=now,
    )


def image_ready_message(instrument: str, job: ExposureJob, snap: ExposureRecord, base, now):
    """The ``image-ready`` message of one snap (``file://`` URI resolved from ``base``)."""
    from promptcal.service.messages import ImageReady

    return ImageReady(
        instrument=instrument,
        visit=job.visit.visit,
        detector=job.detector,
        snap=snap.snap,
        n_snaps=job.visit.n_snaps,
        band=snap.band,
        exposure_time=job.visit.exposure_time,
        mid_exposure_time=snap.mid_exposure_time,
        uri=resolve_uri(snap.uri, base),
        produced_at=now,
        weight_uri=None if snap.weight_uri is None else resolve_uri(snap.weight_uri, base),
        mask_uri=None if snap.mask_uri is None else resolve_uri(snap.mask_uri, base),
    )


def is_finished(root: Path, instrument: str, job: ExposureJob, config_hash: str | None) -> bool:
    """The job's products are complete (``summary.json``; same config hash if given)."""
    from promptcal.service.locations import product_dir

    path = product_dir(root, instrument, job.visit.visit, job.detector) / "summary.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config_hash is None or document.get("config_hash") == config_hash


class Pacer:
    """Maps night time to wall time at ``speed`` and waits for it."""

    def __init__(self, speed: float, stop: threading.Event | None = None) -> None:
        self.speed = speed
        self.start = time.monotonic()
        self.start_wall = time.time()
        self.stop = stop or threading.Event()

    def due_in(self, at: float) -> float:
        """Seconds until night time ``at`` is due (≤ 0: due)."""
        if math.isinf(self.speed):
            return 0.0
        return self.start + at / self.speed - time.monotonic()


class Progress:
    """A one-line progress bar on ``stream``: done, failures, rate and ETA."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last = -math.inf
        self._last_done = -1

    def line(self, done: int, failed: int) -> str:
        """The text of the bar."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = done / elapsed
        width = 30
        filled = width if self.total == 0 else round(width * done / self.total)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        eta_text = "?" if math.isinf(eta) else f"{eta:.0f} s"
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} exposures, "
            f"{failed} failed, {rate:.2f}/s, ETA {eta_text}"
        )

    def update(self, done: int, failed: int, *, final: bool = False) -> None:
        """Redraw (TTY: at most 5×/s; otherwise one line per 10 % and at the end)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if final or now - self._last >= 0.2:
                end = "\n" if final else ""
                self.stream.write("\r" + self.line(done, failed) + end)
                self.stream.flush()
                self._last = now
            return
        step = max(1, self.total // 10)
        if done != self._last_done and (final or done % step == 0):
            self.stream.write(self.line(done, failed) + "\n")
            self.stream.flush()
            self._last_done = done


class ResultLog:
    """Append-only ``results.jsonl``: one flushed line per result (a crash loses none)."""

    def __init__(self, root: Path | None) -> None:
        self.path = None if root is None else root / REPLAY_DIR / "results.jsonl"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, kind: str, visit: int, detector: int, message: dict[str, Any]) -> None:
        """Write one record."""
        if self.path is None:
            return
        line = json.dumps(
            {"kind": kind, "visit": int(visit), "detector": int(detector), "message": message},
            allow_nan=False,
        )
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line + "\n")


def read_results(root: str | Path) -> Iterator[dict[str, Any]]:
    """The records of ``<root>/replay/results.jsonl`` (a torn last line is skipped)."""
    path = Path(root) / REPLAY_DIR / "results.jsonl"
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "kind" in record:
            yield record


def write_run_record(root: Path, manifest_path: Path, mode: str, speed: float, summary) -> Path:
    """``<root>/replay/run.json``: which night, how, and with what outcome."""
    path = root / REPLAY_DIR / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "manifest": str(manifest_path),
        "mode": mode,
        "speed": "max" if math.isinf(speed) else speed,
        "finished_at": time.time(),
        "summary": asdict(summary),
    }
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def pending_jobs(manifest, root: Path | None, config_hash: str | None):
    """(jobs to run, number skipped because their products are complete)."""
    jobs = build_jobs(manifest)
    if root is None:
        return jobs, 0
    todo = [j for j in jobs if not is_finished(root, manifest.instrument, j, config_hash)]
    return todo, len(jobs) - len(todo)
