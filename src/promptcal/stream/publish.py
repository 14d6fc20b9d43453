"""Publishing with broker acknowledgement and bounded retries.

:class:`Publisher` produces a batch of messages and waits until the broker has
acknowledged every one of them (``acks=all``, delivery reports): only then may the
worker store the input offsets (at-least-once). A batch that is not acknowledged
within ``delivery_timeout`` is retried (only the undelivered messages) with
exponential backoff; after ``retries`` retries a
:class:`~promptcal.core.errors.TransientError` tells the worker to stop without
committing, so the partition moves to another worker that redoes the exposure. The
messages themselves are built in :mod:`promptcal.service.outcome`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from promptcal.core.errors import TransientError
from promptcal.service.outcome import OutgoingMessage
from promptcal.service.retries import retry_delays

logger = logging.getLogger(__name__)

#: librdkafka error codes after which this producer will never deliver again:
#: PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER,
#: UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_ID_MAPPING, _FATAL.
_FENCED = frozenset({90, 47, 45, 59, 49, -150})


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
    factory : callable, optional
        Makes a new producer. After a *fatal* or fencing error, or an attempt with not
        one acknowledgement (an idempotent producer whose broker paused, restarted or
        lost its state can stay stuck or fenced), the publisher replaces the producer
        before the next attempt.
    """

    def __init__(
        self,
        producer: Any,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        delivery_timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        self.producer = producer
        self.factory = factory
        self.replaced = 0  # producers replaced after fatal errors
        self.fatal = False  # set by a fatal error (delivery report, produce, error_cb)
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
            stuck = len(failed) == len(remaining)  # not one acknowledgement
            remaining = failed
            if self.factory is not None and (self.fatal or stuck):
                self._replace_producer(last_error)
        raise TransientError(
            f"{len(remaining)} message(s) to {sorted({m.topic for m in remaining})} not "
            f"acknowledged after {self.retries + 1} attempts: {last_error}"
        )

    def _replace_producer(self, reason: str) -> None:
        """A new producer (new idempotence state, new connections) for the next attempt.

        After a broker restart an idempotent producer can stay stuck on its old
        producer id, or be fenced; its undelivered messages are purged (the retry
        produces them again, so a duplicate is at worst an identical re-publication).
        """
        logger.warning("replacing the producer after: %s", reason)
        purge = getattr(self.producer, "purge", None)
        if callable(purge):
            try:
                purge()
            except Exception:  # a fatal producer may refuse; it is dropped anyway
                logger.debug("purge of the old producer failed", exc_info=True)
        self.producer = self.factory()
        self.fatal = False
        self.replaced += 1

    def note_error(self, error: Any) -> None:
        """Record a librdkafka error (also the producer's ``error_cb``); fatal ones, and
        those that fence this producer's idempotence state (a broker that paused or lost
        its state), make :meth:`publish` replace the producer."""
        fatal = getattr(error, "fatal", None)
        code = getattr(error, "code", None)
        if (callable(fatal) and fatal()) or (callable(code) and code() in _FENCED):
            self.fatal = True

    def _attempt(self, messages: list[OutgoingMessage]) -> tuple[list[OutgoingMessage], str]:
        """Produce once and flush; returns the undelivered messages and the last error."""
        outcome: dict[int, Any] = {}
        errors: list[str] = []

        def report(index: int) -> Callable[[Any, Any], None]:
            def on_delivery(err: Any, _msg: Any) -> None:
                outcome[index] = err
                if err is not None:
                    errors.append(str(err))
                    self.note_error(err)

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
                if exc.args:
                    self.note_error(exc.args[0])
                break
        remaining_time = self.producer.flush(self.delivery_timeout)
        failed = [m for i, m in enumerate(messages) if outcome.get(i, "undelivered") is not None]
        if failed and not errors:
            errors.append(
                f"{remaining_time} message(s) still queued after {self.delivery_timeout} s"
            )
        return failed, errors[-1] if errors else ""
