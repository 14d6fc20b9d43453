"""The Kafka half of the replay: publish a night's messages, follow the workers' results.

The messages are produced with promptcal's producer settings (murmur2 partitioner,
``acks=all``) and each batch of messages due at the same time is acknowledged by the
broker before the replay moves on (:class:`~promptcal.stream.publish.Publisher`).
Before publishing, a :class:`ResultWatcher` is assigned to every partition of
``calibrated``, ``metrics`` and ``dead-letter`` at their current end, so no result of
this replay is missed; results of other exposures (or older runs) are ignored.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from promptcal.core.errors import TransientError
from promptcal.night.manifest import read_manifest
from promptcal.replay.jobs import (
    Pacer,
    Progress,
    ReplaySummary,
    ResultLog,
    image_ready_message,
    next_visit_message,
    pending_jobs,
    schedule,
    write_run_record,
)

logger = logging.getLogger(__name__)


class ResultWatcher:
    """Consume ``calibrated``, ``metrics`` and ``dead-letter`` for a set of exposures."""

    def __init__(self, bootstrap: str, topics, instrument: str, expected, since: float) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.topics = topics
        self.instrument = instrument
        self.pending = set(expected)
        self.since = since
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"promptcal-replay-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,  # as the worker (promptcal.stream.topics)
            }
        )
        wanted = [topics.calibrated, topics.metrics, topics.dead_letter]
        metadata = self.consumer.list_topics(timeout=10)
        missing = [t for t in wanted if t not in metadata.topics]
        if missing:
            from promptcal.core.errors import InvalidInputError

            raise InvalidInputError(
                f"topics {missing} do not exist on {bootstrap}; create them with "
                "`promptcal topics create`"
            )
        assignment = []
        for topic in wanted:
            for partition in metadata.topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
                # A broker may report a high mark below the true end (Tansu, batched
                # writes): older messages are then read too, and filtered out below.
                assignment.append(TopicPartition(topic, partition, max(high, 0)))
        self.consumer.assign(assignment)

    def poll(self, timeout: float) -> list[tuple[str, int, int, dict[str, Any]]]:
        """New results ``(kind, visit, detector, message)`` of the expected exposures."""
        out = []
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            message = self.consumer.poll(max(0.0, min(deadline - time.monotonic(), 0.2)))
            if message is not None and message.error() is None:
                result = self._decode(message)
                if result is not None:
                    out.append(result)
            if message is None and time.monotonic() >= deadline:
                return out
            if out and time.monotonic() >= deadline:
                return out

    def _decode(self, message) -> tuple[str, int, int, dict[str, Any]] | None:
        from promptcal.core.errors import InvalidInputError
        from promptcal.service.dead_letter import DeadLetter
        from promptcal.service.messages import Calibrated, ImageReady, MetricsRecord, decode

        topic = message.topic()
        try:
            if topic == self.topics.dead_letter:
                letter = DeadLetter.from_headers(message.headers())
                if letter.source_topic != self.topics.image_ready:
                    return None  # a next-visit dead letter does not end an exposure
                if message.timestamp()[1] < 1000 * self.since:
                    return None
                original = decode(message.value(), ImageReady)
                key = (original.visit, original.detector)
                if original.instrument != self.instrument or key not in self.pending:
                    return None
                self.pending.discard(key)
                return ("dead_letter", *key, letter.model_dump(mode="json"))
            cls = Calibrated if topic == self.topics.calibrated else MetricsRecord
            result = decode(message.value(), cls)
        except InvalidInputError:
            return None  # not ours to judge: e.g. a dead letter of garbage bytes
        key = (result.visit, result.detector)
        if result.instrument != self.instrument or result.produced_at < self.since:
            return None
        if cls is Calibrated:
            if key not in self.pending:
                return None
            self.pending.discard(key)
        return (cls.TOPIC_KIND, *key, result.model_dump(mode="json"))

    def close(self) -> None:
        """Leave (no commits: the group is throw-away)."""
        self.consumer.close()


# Long: one replay in time order (publish on schedule, follow results, stop on
# signal), most of it the numpydoc docstring of its options.
def replay_kafka(
    manifest_path: str | Path,
    bootstrap: str,
    *,
    prefix: str = "",
    speed: float = math.inf,
    output: str | Path | None = None,
    wait: bool = True,
    timeout: float = 300.0,
    progress: Progress | bool = True,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Publish a night's ``next-visit``/``image-ready`` messages with its cadence.

    Parameters
    ----------
    manifest_path : path
        ``manifest.json`` or its directory.
    bootstrap : str
        Kafka bootstrap servers.
    prefix : str
        Topic-name prefix (as the workers').
    speed : float
        Night-time speed-up (``inf``: as fast as possible, order kept).
    output : path, optional
        The workers' product root: exposures with complete products are skipped, and
        the results are logged under ``<output>/replay/``.
    wait : bool
        Wait for a ``calibrated`` (or ``dead-letter``) result of every exposure.
    timeout : float
        Give up waiting after this long without a new result [s].
    progress : Progress or bool
        Progress bar (``True``: on stderr).
    stop : threading.Event, optional
        Set to stop publishing.

    Raises
    ------
    TransientError
        The broker did not acknowledge a batch after the retries.
    """
    from confluent_kafka import Producer

    from promptcal.service.fields import visit_detector_key
    from promptcal.service.messages import encode
    from promptcal.service.outcome import OutgoingMessage
    from promptcal.stream.publish import Publisher
    from promptcal.stream.topics import TopicNames, producer_config

    manifest_path = Path(manifest_path)
    manifest, base = read_manifest(manifest_path)
    root = None if output is None else Path(output)
    jobs, skipped = pending_jobs(manifest, root, None)
    summary = ReplaySummary(total=len(jobs) + skipped, skipped=skipped)
    bar = progress if isinstance(progress, Progress) else Progress(len(jobs), enabled=progress)
    topics = TopicNames(prefix)
    log = ResultLog(root)
    started = time.monotonic()
    watcher = None
    if wait and jobs:
        keys = [j.key for j in jobs]
        watcher = ResultWatcher(bootstrap, topics, manifest.instrument, keys, time.time() - 1.0)
    publisher = Publisher(Producer(producer_config(bootstrap)), retries=5, delivery_timeout=10.0)
    pacer = Pacer(speed, stop)

    def collect(seconds: float) -> None:
        if watcher is None:
            if seconds > 0:
                pacer.stop.wait(seconds)
            return
        for kind, visit, det, message in watcher.poll(seconds):
            if kind == "calibrated":
                if message["status"] == "success":
                    summary.succeeded += 1
                else:
                    summary.failed += 1
            elif kind == "dead_letter":
                summary.dead_letters += 1
            log.append(kind, visit, det, message)
        bar.update(summary.processed, summary.failed + summary.dead_letters)

    events = schedule(manifest, jobs)
    try:
        index = 0
        while index < len(events) and not pacer.stop.is_set():
            left = pacer.due_in(events[index].at)
            if left > 0:
                collect(min(left, 0.5))
                continue
            batch, now = [], time.time()
            while index < len(events) and pacer.due_in(events[index].at) <= 0:
                event = events[index]
                if event.kind == "next-visit":
                    message = next_visit_message(manifest.instrument, event.job, now)
                    topic = topics.next_visit
                else:
                    message = image_ready_message(
                        manifest.instrument, event.job, event.snap, base, now
                    )
                    topic = topics.image_ready
                key = message.key()
                if manifest.partition_key == "visit-detector":
                    key = visit_detector_key(event.job.visit.visit, event.job.detector)
                batch.append(OutgoingMessage(topic, key, encode(message)))
                index += 1
            publisher.publish(batch)
            collect(0.0)
        logger.info("published %d messages for %d exposures", index, len(jobs))
        last_progress, seen = time.monotonic(), summary.processed
        while watcher is not None and watcher.pending and not pacer.stop.is_set():
            collect(0.5)
            if summary.processed != seen:
                last_progress, seen = time.monotonic(), summary.processed
            elif time.monotonic() - last_progress > timeout:
                raise TransientError(
                    f"no result for {timeout:.0f} s; {len(watcher.pending)} exposure(s) "
                    "still without a calibrated message (is a worker running?)"
                )
        if watcher is not None and not watcher.pending:
            collect(0.3)  # the last metrics records trail their calibrated messages
    finally:
        if watcher is not None:
            summary.missing = sorted(watcher.pending)
            watcher.close()
        publisher.producer.flush(5.0)
    bar.update(summary.processed, summary.failed + summary.dead_letters, final=True)
    summary.wall_time = time.monotonic() - started
    if root is not None:
        write_run_record(root, manifest_path.resolve(), "kafka", speed, summary)
    return summary
