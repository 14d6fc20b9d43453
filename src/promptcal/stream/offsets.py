"""Which input offsets may be committed.

Kafka commits one offset per partition, meaning "everything before it is done". The
worker finishes messages out of order (a visit's first snap waits for the second while
later messages of the same partition are handled), so storing the offset of the last
finished message could commit past a snap that is still waiting, and a crash would lose
it. :class:`OffsetTracker` remembers the offsets in flight per partition and only
advances the committable offset to the lowest one still in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from promptcal.service.assembler import Position

logger = logging.getLogger(__name__)


class OffsetTracker:
    """Per-partition in-flight offsets, and the offset that is safe to commit.

    The committable offset of a partition is the lowest offset still in flight, or one
    past the highest finished offset when nothing is in flight (Kafka's convention: the
    committed offset is the next message to read).
    """

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, int], set[int]] = {}
        self._next: dict[tuple[str, int], int] = {}  # one past the highest finished
        self._committable: dict[tuple[str, int], int] = {}

    def received(self, position: Position) -> None:
        """A message was consumed and is now being handled.

        An offset below what is already committable means the partition started over
        (a broker that lost its log, a topic re-created, an offset reset): its state is
        dropped, or its commits would never advance again.
        """
        topic, partition, offset = position
        tp = (topic, partition)
        if offset < self._committable.get(tp, -1) and offset not in self._in_flight.get(tp, ()):
            logger.warning(
                "%s[%d] restarted at offset %d (committable was %d); tracking it afresh",
                topic, partition, offset, self._committable[tp],
            )  # fmt: skip
            self.forget([tp])
        self._in_flight.setdefault(tp, set()).add(offset)

    def done(self, positions: Iterable[Position]) -> dict[tuple[str, int], int]:
        """Messages are finished; returns the partitions whose committable offset advanced.

        Returns
        -------
        dict
            ``(topic, partition) -> offset to commit`` for the partitions that moved.
        """
        touched = set()
        for topic, partition, offset in positions:
            tp = (topic, partition)
            self._in_flight.get(tp, set()).discard(offset)
            self._next[tp] = max(self._next.get(tp, 0), offset + 1)
            touched.add(tp)
        advanced = {}
        for tp in touched:
            in_flight = self._in_flight.get(tp)
            target = min(in_flight) if in_flight else self._next[tp]
            if target > self._committable.get(tp, -1):
                self._committable[tp] = target
                advanced[tp] = target
        return advanced

    def committable(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> offset`` of every partition with finished messages."""
        return dict(self._committable)

    def in_flight(self) -> dict[tuple[str, int], list[int]]:
        """Offsets consumed but not finished, per partition."""
        return {tp: sorted(offs) for tp, offs in self._in_flight.items() if offs}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the state of revoked partitions (the next owner starts from the commit)."""
        for tp in partitions:
            self._in_flight.pop(tp, None)
            self._next.pop(tp, None)
            self._committable.pop(tp, None)

    def describe(self) -> dict[str, Any]:
        """State for logs: committable and in-flight offsets."""
        return {"committable": self.committable(), "in_flight": self.in_flight()}
