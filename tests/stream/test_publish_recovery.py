"""Recovery from broker faults in the publisher and the offset tracker (issue 15); the
real broker faults are in tests/faults/test_broker_faults.py."""

from __future__ import annotations

from promptcal.service.outcome import OutgoingMessage
from promptcal.stream.offsets import OffsetTracker
from promptcal.stream.publish import Publisher


class Error:
    def __init__(self, code: int, fatal: bool = False) -> None:
        self._code, self._fatal = code, fatal

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return f"error {self._code}"


class Stub:
    """A producer that answers every message with ``error`` (None: acknowledged)."""

    def __init__(self, error) -> None:
        self.error, self.pending, self.purged = error, [], False

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        self.pending.append(on_delivery)

    def flush(self, timeout):
        for callback in self.pending:
            callback(self.error, None)
        self.pending = []
        return 0

    def purge(self):
        self.purged = True


MESSAGES = [OutgoingMessage("t", b"k", b"v")]


def test_a_stuck_producer_is_replaced():
    stuck, fresh = Stub(Error(-192)), Stub(None)  # -192: message timed out
    publisher = Publisher(stuck, retries=2, backoff=0.0, sleep=lambda s: None,
                          factory=lambda: fresh)  # fmt: skip
    publisher.publish(MESSAGES)
    assert publisher.producer is fresh and publisher.replaced == 1 and stuck.purged


def test_a_fenced_producer_is_replaced():
    fenced, fresh = Stub(Error(90)), Stub(None)  # 90: PRODUCER_FENCED
    publisher = Publisher(fenced, retries=1, backoff=0.0, sleep=lambda s: None,
                          factory=lambda: fresh)  # fmt: skip
    publisher.publish(MESSAGES)
    assert publisher.replaced == 1
    publisher.note_error(Error(-195, fatal=True))
    assert publisher.fatal


def test_an_offset_below_the_committed_one_restarts_the_partition():
    """A broker that lost its log (or a re-created topic) starts partitions at 0 again;
    commits used to stall forever below the old offset."""
    tracker = OffsetTracker()
    tracker.received(("ir", 0, 57))
    assert tracker.done([("ir", 0, 57)]) == {("ir", 0): 58}
    tracker.received(("ir", 0, 0))
    assert tracker.done([("ir", 0, 0)]) == {("ir", 0): 1}
    tracker.received(("ir", 0, 1))
    assert tracker.done([("ir", 0, 1)]) == {("ir", 0): 2}
