"""Collect the snaps of one visit-detector.

Snap collection
---------------
``image-ready`` announces one snap at a time. :class:`SnapAssembler` keeps the snaps
of each (instrument, visit, detector) until all ``n_snaps`` have arrived (the exposure
is complete) or until ``snap_wait`` seconds have passed since the first one (it
expired). The worker then calibrates what arrived: a missing second snap must not hold
a detector's result back forever, and one snap is a valid (shallower) exposure. A
duplicate snap (a replayed message) replaces the earlier copy; both offsets are kept so
that both are marked done together. With ``next_visit_wait`` > 0, a complete exposure
whose ``next-visit`` has not been seen (:meth:`SnapAssembler.announce`) is held for it
until no message has arrived for that long: its pointing is the hint of a frame
without a WCS, and a replay at full speed delivers the two topics in no particular
order (a backlog of next-visits then arrives one calibration at a time, so the wait
counts from the last message, not from the exposure).

Late duplicates: once an exposure is handed out, a byte-identical copy of one of its
snap messages (a producer's retry) is recognised and skipped, so it is not calibrated
again alone. Only identical bytes count: a corrected re-send (new bytes) is a new
request, and an exposure that went to ``dead-letter`` is forgotten (:meth:`forget`),
so replaying its dead letters is processed, not skipped as a duplicate.

Offsets: :mod:`promptcal.stream.offsets`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from promptcal.core.errors import InvalidInputError
from promptcal.service.messages import ImageReady

logger = logging.getLogger(__name__)

#: (topic, partition, offset) of one consumed message.
Position = tuple[str, int, int]
#: (instrument, visit, detector): what the assembler groups snaps by.
ExposureKey = tuple[str, int, int]


@dataclass
class ReceivedSnap:
    """One decoded ``image-ready`` message and where it came from.

    Attributes
    ----------
    message : ImageReady
        The decoded message.
    position : Position
        Topic, partition and offset of the Kafka message.
    key, value : bytes or None
        The original Kafka key and value (for the dead-letter topic).
    headers : list or None
        The original Kafka headers.
    received_at : float
        When the worker received it, POSIX time [s].
    """

    message: ImageReady
    position: Position
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    received_at: float = field(default_factory=time.time)

    def fingerprint(self) -> bytes:
        """Digest of the message bytes (of the re-encoded message when they are unknown)."""
        if self.value is not None:
            data = bytes(self.value)
        else:
            data = self.message.model_dump_json().encode("utf-8")
        return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class PendingExposure:
    """The snaps of one visit-detector received so far."""

    instrument: str
    visit: int
    detector: int
    n_snaps: int
    first_seen: float  # monotonic clock of the first snap [s]
    snaps: dict[int, ReceivedSnap] = field(default_factory=dict)
    positions: list[Position] = field(default_factory=list)  # every message, duplicates too
    expired: bool = False
    completed_at: float | None = None  # monotonic clock when complete but unannounced [s]

    @property
    def key(self) -> ExposureKey:
        """(instrument, visit, detector)."""
        return (self.instrument, self.visit, self.detector)

    @property
    def complete(self) -> bool:
        """All ``n_snaps`` snaps have arrived."""
        return len(self.snaps) >= self.n_snaps

    def ordered_snaps(self) -> list[ReceivedSnap]:
        """The snaps that arrived, by snap index."""
        return [self.snaps[i] for i in sorted(self.snaps)]

    @property
    def last_produced_at(self) -> float:
        """The latest ``produced_at`` of the snaps (where the latency clock starts) [s]."""
        return max(s.message.produced_at for s in self.snaps.values())

    @property
    def first_received_at(self) -> float:
        """When the first snap reached the worker, POSIX time [s]."""
        return min(s.received_at for s in self.snaps.values())


class SnapAssembler:
    """Group ``image-ready`` snaps by visit-detector with a bounded wait.

    Parameters
    ----------
    snap_wait : float
        Longest wait from the first snap of an exposure for the others [s]; past it,
        :meth:`expired` hands the exposure over with the snaps that arrived.
    clock : callable
        Monotonic time [s] (injectable for tests).
    max_remembered : int
        How many handed-out exposures to remember for :meth:`already_handled`.
    next_visit_wait : float
        Hold a complete exposure for its ``next-visit`` until no message has arrived
        for this long [s] (0: no hold).
    """

    def __init__(
        self,
        snap_wait: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_remembered: int = 10_000,
        next_visit_wait: float = 0.0,
    ) -> None:
        if not (snap_wait >= 0 and next_visit_wait >= 0):
            raise InvalidInputError(
                f"snap_wait {snap_wait} s and next_visit_wait {next_visit_wait} s must be >= 0"
            )
        self.snap_wait = float(snap_wait)
        self.next_visit_wait = float(next_visit_wait)
        self._announced: OrderedDict[ExposureKey, None] = OrderedDict()
        self._last_message = -float("inf")  # clock of the last add/announce [s]
        self._clock = clock
        self._pending: dict[ExposureKey, PendingExposure] = {}
        # Exposures already handed out and the fingerprints of their snap messages, so
        # that a late duplicate snap (a producer retry) is not calibrated again alone,
        # overwriting the full exposure's products.
        self._handed_out: OrderedDict[ExposureKey, frozenset[bytes]] = OrderedDict()
        self.max_remembered = int(max_remembered)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, snap: ReceivedSnap) -> PendingExposure | None:
        """Add one snap; returns the exposure (removed from the pending set) once complete.

        Raises
        ------
        InvalidInputError
            The snap's ``n_snaps`` disagrees with the snaps already received for the
            same visit-detector (the message is inconsistent; nothing is changed).
        """
        msg = snap.message
        key = (msg.instrument, msg.visit, msg.detector)
        self._last_message = self._clock()
        pending = self._pending.get(key)
        if pending is None:
            pending = PendingExposure(
                msg.instrument, msg.visit, msg.detector, msg.n_snaps, self._clock()
            )
            self._pending[key] = pending
        elif msg.n_snaps != pending.n_snaps:
            raise InvalidInputError(
                f"image-ready for visit {msg.visit} detector {msg.detector} snap {msg.snap} "
                f"says n_snaps={msg.n_snaps}, but earlier snaps said {pending.n_snaps}"
            )
        if msg.snap in pending.snaps:
            logger.info(
                "duplicate snap %d of visit %d detector %d (replay); keeping the latest",
                msg.snap,
                msg.visit,
                msg.detector,
            )
        pending.snaps[msg.snap] = snap
        pending.positions.append(snap.position)
        if pending.complete:
            if self.next_visit_wait > 0 and key not in self._announced:
                pending.completed_at = self._clock()  # hold it for its next-visit
                return None
            self._hand_out(pending)
            return pending
        return None

    def announce(self, instrument: str, visit: int, detector: int) -> PendingExposure | None:
        """The ``next-visit`` of an exposure was handled; returns it if it was held."""
        key = (instrument, visit, detector)
        self._last_message = self._clock()
        self._announced[key] = None
        while len(self._announced) > self.max_remembered:
            self._announced.popitem(last=False)
        pending = self._pending.get(key)
        if pending is None or not pending.complete:
            return None
        self._hand_out(pending)
        return pending

    def _deadline(self, pending: PendingExposure) -> float:
        if pending.completed_at is not None:
            return max(pending.completed_at, self._last_message) + self.next_visit_wait
        return pending.first_seen + self.snap_wait

    def _hand_out(self, pending: PendingExposure) -> None:
        del self._pending[pending.key]
        prints = frozenset(s.fingerprint() for s in pending.snaps.values())
        self._handed_out.pop(pending.key, None)
        self._handed_out[pending.key] = prints
        while len(self._handed_out) > self.max_remembered:
            self._handed_out.popitem(last=False)

    def already_handled(self, snap: ReceivedSnap) -> bool:
        """Whether ``snap`` is a byte-identical copy of a snap of an exposure already
        handed out (a late duplicate, to be skipped)."""
        msg = snap.message
        prints = self._handed_out.get((msg.instrument, msg.visit, msg.detector))
        return prints is not None and snap.fingerprint() in prints

    def forget(self, key: ExposureKey) -> None:
        """Do not treat copies of this exposure's snaps as duplicates (it was not
        calibrated: its dead letters may be replayed, its snaps re-sent)."""
        self._handed_out.pop(key, None)

    def expired(self) -> list[PendingExposure]:
        """Remove and return the exposures whose wait is over (``expired`` set)."""
        now = self._clock()
        done = [p for p in self._pending.values() if now >= self._deadline(p)]
        for pending in done:
            self._hand_out(pending)
            if pending.completed_at is not None:
                logger.warning(
                    "visit %d detector %d: no next-visit (%.1f s without messages); "
                    "processing without it",
                    pending.visit,
                    pending.detector,
                    self.next_visit_wait,
                )
                continue
            pending.expired = True
            logger.warning(
                "visit %d detector %d: %d of %d snaps after %.1f s; processing what arrived",
                pending.visit,
                pending.detector,
                len(pending.snaps),
                pending.n_snaps,
                now - pending.first_seen,
            )
        return done

    def seconds_to_next_expiry(self) -> float | None:
        """Time until the oldest pending exposure expires [s] (``None``: nothing pending)."""
        if not self._pending:
            return None
        return max(0.0, min(map(self._deadline, self._pending.values())) - self._clock())

    def drop_partitions(self, partitions: Iterable[tuple[str, int]]) -> list[PendingExposure]:
        """Forget the exposures with a snap from these (topic, partition)s (revoked).

        Their offsets were never stored, so the partition's next owner re-reads them.
        """
        lost = set(partitions)
        dropped = [
            p for p in self._pending.values() if any((t, q) in lost for t, q, _ in p.positions)
        ]
        for pending in dropped:
            del self._pending[pending.key]
        return dropped

    def pending(self) -> list[PendingExposure]:
        """The incomplete exposures (oldest first)."""
        return sorted(self._pending.values(), key=lambda p: p.first_seen)


@dataclass(frozen=True)
class RawMessage:
    """A consumed Kafka message as bytes (what a dead letter re-publishes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None

    @property
    def position(self) -> Position:
        """(topic, partition, offset)."""
        return (self.topic, self.partition, self.offset)

    @classmethod
    def from_kafka(cls, message: Any) -> RawMessage:
        """From a ``confluent_kafka.Message``."""
        return cls(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.value(),
            message.headers(),
        )

    @classmethod
    def from_snap(cls, snap: ReceivedSnap) -> RawMessage:
        """From a snap kept by the assembler."""
        topic, partition, offset = snap.position
        return cls(topic, partition, offset, snap.key, snap.value, snap.headers)
