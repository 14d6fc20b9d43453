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
