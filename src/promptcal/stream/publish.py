"""Publishing with broker acknowledgement, bounded retries, and the result messages.

:class:`Publisher` produces a batch of messages and waits until the broker has
acknowledged every one of them (``acks=all``, delivery reports): only then may the
worker store the input offsets (at-least-once). A batch that is not acknowledged
within ``delivery_timeout`` is retried (only the undelivered messages) with
exponential backoff; after ``retries`` retries a
:class:`~promptcal.errors.TransientError` tells the worker to stop without committing,
so the partition moves to another worker that redoes the exposure.

The builders turn a calibration outcome into the ``calibrated`` and ``metrics``
messages (``docs/messages.md``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import TransientError
from ..outputs import json_safe
from .schemas import Calibrated, MetricsRecord, encode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None = None


def retry_delays(retries: int, backoff: float, max_backoff: float = 30.0) -> list[float]:
    """Waits before each retry [s]: ``backoff × 2^i``, capped at ``max_backoff``."""
    return [min(max_backoff, backoff * 2.0**i) for i in range(max(0, int(retries)))]


class Publisher:
    """Produce messages and wait for the broker's acknowledgement of each.

    Parameters
    ----------
    producer : confluent_kafka.Producer
        Configured with :func:`~promptcal.stream.topics.producer_config`; its
        ``message.timeout.ms`` should not exceed ``delivery_timeout``.
    retries : int
        Retries of a batch after the first attempt.
    backoff : float
        First wait between attempts [s]; doubled each time.
    delivery_timeout : float
        Longest wait for the acknowledgements of one attempt [s].
    sleep : callable
        ``sleep(seconds)`` (injectable for tests).
    """

    def __init__(
        self,
        producer: Any,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        delivery_timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.producer = producer
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.delivery_timeout = float(delivery_timeout)
        self._sleep = sleep

    def worst_case_seconds(self) -> float:
        """Longest time :meth:`publish` can take before it gives up [s]."""
        attempts = self.retries + 1
        return attempts * self.delivery_timeout + sum(retry_delays(self.retries, self.backoff))

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Produce ``messages`` and return once the broker acknowledged all of them.

        Raises
        ------
        TransientError
            Some message was still not acknowledged after the last retry.
        """
        remaining = list(messages)
        delays = retry_delays(self.retries, self.backoff)
        last_error = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                logger.warning(
                    "retry %d/%d of %d message(s) in %.2f s: %s",
                    attempt,
                    self.retries,
                    len(remaining),
                    delays[attempt - 1],
                    last_error,
                )
                self._sleep(delays[attempt - 1])
            failed, last_error = self._attempt(remaining)
            if not failed:
                return
            remaining = failed
        raise TransientError(
            f"{len(remaining)} message(s) to {sorted({m.topic for m in remaining})} not "
            f"acknowledged after {self.retries + 1} attempts: {last_error}"
        )

    def _attempt(self, messages: list[OutgoingMessage]) -> tuple[list[OutgoingMessage], str]:
        """Produce once and flush; returns the undelivered messages and the last error."""
        outcome: dict[int, Any] = {}
        errors: list[str] = []

        def report(index: int) -> Callable[[Any, Any], None]:
            def on_delivery(err: Any, _msg: Any) -> None:
                outcome[index] = err
                if err is not None:
                    errors.append(str(err))

            return on_delivery

        for index, message in enumerate(messages):
            try:
                self.producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers) if message.headers else None,
                    on_delivery=report(index),
                )
            except BufferError as exc:  # local queue full: deliver what is queued first
                errors.append(f"producer queue full: {exc}")
                break
            except Exception as exc:  # KafkaException: e.g. unknown topic, fatal producer
                errors.append(f"{type(exc).__name__}: {exc}")
                break
        remaining_time = self.producer.flush(self.delivery_timeout)
        failed = [m for i, m in enumerate(messages) if outcome.get(i, "undelivered") is not None]
        if failed and not errors:
            errors.append(
                f"{remaining_time} message(s) still queued after {self.delivery_timeout} s"
            )
        return failed, errors[-1] if errors else ""


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
