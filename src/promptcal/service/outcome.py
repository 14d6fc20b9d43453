"""The result of one handled exposure and the messages it becomes.

:class:`Outcome` is everything known about one exposure after calibration;
:func:`build_messages` turns it into the ``calibrated`` message and the ``metrics``
record (``docs/messages.md``), encoded as :class:`OutgoingMessage` s that any
transport (Kafka, the local replay's result log) can deliver.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcal import __version__
from promptcal.io.catalogs import json_safe
from promptcal.service.messages import Calibrated, MetricsRecord, encode


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None = None


def worker_identity() -> str:
    """``host/pid``: a pod's host name is its pod name."""
    return f"{socket.gethostname()}/{os.getpid()}"


def file_uri(path: str | os.PathLike[str]) -> str:
    """``file://`` URI of a local path (absolute)."""
    return Path(path).resolve().as_uri()


def _nonnegative_or_none(value: float | None) -> float | None:
    """Latencies across hosts can come out negative with clock skew: publish null then."""
    if value is None or not value >= 0:
        return None
    return float(value)


@dataclass
class Outcome:
    """Everything known about one handled exposure, for the result messages."""

    instrument: str
    visit: int
    detector: int
    status: str
    summary: Mapping[str, Any]
    products: Mapping[str, str]
    timings: Mapping[str, float]
    config_hash: str
    wall_time: float
    cpu_time: float | None
    peak_rss: int | None
    preload_hit: bool | None
    preload_duration: float | None
    queue_wait: float | None
    last_produced_at: float
    error_type: str | None = None
    error_message: str | None = None
    error_metadata: Mapping[str, Any] | None = None
    #: Reference matches used by the fits, ``{"astrometry": n, "photometry": n}``.
    matches: Mapping[str, int | None] | None = None


def build_messages(
    outcome: Outcome, *, calibrated_topic: str, metrics_topic: str, worker: str, now: float
) -> tuple[Calibrated, MetricsRecord, list[OutgoingMessage]]:
    """The ``calibrated`` message and ``metrics`` record of one exposure, encoded.

    ``now`` [POSIX s] is both messages' ``produced_at``; the end-to-end latency is
    ``now`` minus the last snap's ``image-ready`` ``produced_at``.
    """
    latency = _nonnegative_or_none(now - outcome.last_produced_at)
    timings = {k: float(v) for k, v in outcome.timings.items() if float(v) >= 0}
    calibrated = Calibrated(
        instrument=outcome.instrument,
        visit=outcome.visit,
        detector=outcome.detector,
        status=outcome.status,
        summary=json_safe(dict(outcome.summary)),
        products=dict(outcome.products),
        timings=timings,
        end_to_end_latency=latency,
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        error_metadata=json_safe(dict(outcome.error_metadata))
        if outcome.error_metadata is not None
        else None,
        config_hash=outcome.config_hash,
        software_version=__version__,
        produced_at=now,
    )
    record = MetricsRecord(
        instrument=outcome.instrument,
        visit=outcome.visit,
        detector=outcome.detector,
        status=outcome.status,
        worker=worker,
        stage_timings=timings,
        wall_time=max(0.0, outcome.wall_time),
        cpu_time=_nonnegative_or_none(outcome.cpu_time),
        peak_rss=outcome.peak_rss,
        preload_hit=outcome.preload_hit,
        preload_duration=_nonnegative_or_none(outcome.preload_duration),
        queue_wait=_nonnegative_or_none(outcome.queue_wait),
        end_to_end_latency=latency,
        produced_at=now,
    )
    out = [
        OutgoingMessage(calibrated_topic, calibrated.key(), encode(calibrated)),
        OutgoingMessage(metrics_topic, record.key(), encode(record)),
    ]
    return calibrated, record, out
