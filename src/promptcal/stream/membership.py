"""The consumer-group side of the worker: rebalance callbacks and offset commits.

:class:`GroupMember` is a mixin of :class:`~promptcal.stream.worker.Worker`: it owns
nothing, and uses the worker's ``consumer``, ``offsets`` (an
:class:`~promptcal.stream.offsets.OffsetTracker`), ``assembler``, ``metrics`` and
finisher. Offsets are stored and committed only for finished messages (see
``docs/worker.md``, "Delivery and offsets").
"""

from __future__ import annotations

import logging
from typing import Any

from promptcal.service.assembler import Position

logger = logging.getLogger("promptcal.stream.worker")


class GroupMember:
    """Kafka callbacks and commits of a worker (a mixin; see the module docstring)."""

    consumer: Any
    offsets: Any
    assembler: Any
    metrics: Any
    _finisher: Any

    def _on_stats(self, stats_json: str) -> None:
        try:
            self.metrics.update_from_librdkafka_stats(stats_json)
        except Exception:  # a callback must never raise into librdkafka
            logger.exception("bad librdkafka statistics")

    def _on_kafka_error(self, error: Any) -> None:
        logger.warning("kafka: %s", error)

    def _on_assign(self, consumer, partitions) -> None:
        """Log the partitions this worker now owns (operators and tests read this)."""
        logger.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def _on_revoke(self, consumer: Any, partitions: list) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._commit_finished(wait=True)  # finished exposures are committed, not redone
        dropped = self.assembler.drop_partitions(lost)
        done = {tp: off for tp, off in self.offsets.committable().items() if tp in lost}
        self._commit(done, asynchronous=False)
        self.offsets.forget(lost)
        logger.info(
            "revoked %d partition(s); %d incomplete exposure(s) dropped", len(lost), len(dropped)
        )

    def _on_lost(self, consumer: Any, partitions: list) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._commit_finished(wait=True, commit=False)  # the group moved on without us
        self.assembler.drop_partitions(lost)
        self.offsets.forget(lost)
        logger.warning("lost %d partition(s) (evicted from the group)", len(lost))

    def _commit(self, offsets: dict[tuple[str, int], int], *, asynchronous: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets or self.consumer is None:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            self.consumer.store_offsets(offsets=tps)
        except KafkaException as exc:  # partition no longer assigned
            logger.info("store_offsets: %s", exc)
        try:
            self.consumer.commit(offsets=tps, asynchronous=asynchronous)
        except KafkaException as exc:
            logger.warning("commit of %s failed: %s", offsets, exc)

    def _done(self, positions: list[Position]) -> None:
        self._commit(self.offsets.done(positions), asynchronous=True)

    def _commit_finished(self, *, wait: bool, commit: bool = True) -> None:
        """Store and commit the offsets of finished exposures (published and durable).

        Raises
        ------
        TransientError
            Writing, publishing or syncing failed beyond its retries (the exposure's
            offsets stay uncommitted, so it is redone).
        """
        for positions in self._finisher.finished(wait=wait):
            if commit:
                self._done(positions)
