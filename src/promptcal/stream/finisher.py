"""Finish exposures on one background thread while the worker calibrates the next.

After the main thread has calibrated an exposure and started its products
(:meth:`~promptcal.service.process.ExposureProcessor.start_write`), the
:class:`Finisher` thread waits for the calexp (~0.1 s for 200 MB, more when workers
share a disk), writes ``summary.json``, publishes the ``calibrated`` message and the
``metrics`` record, waits for their acknowledgement and ``fsync`` s the products
(:func:`finish_exposure`). The worker stores an exposure's offsets only once
:meth:`Finisher.finished` hands its positions back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from promptcal.core.crashpoints import crash_point
from promptcal.service.assembler import Position
from promptcal.service.outcome import build_messages
from promptcal.service.process import ExposureProcessor
from promptcal.service.records import ProductsInFlight
from promptcal.stream.publish import Publisher

logger = logging.getLogger(__name__)


class Finisher:
    """One thread that runs ``finish(item)`` for each submitted item, in order.

    Parameters
    ----------
    finish : callable
        Runs on the thread; an exception it raises is re-raised by :meth:`finished`.
    """

    def __init__(self, finish: Callable[[Any], None]) -> None:
        self._finish = finish
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptcal-finish")
        self._queue: list[tuple[Future, list[Position]]] = []

    def submit(self, item: Any, positions: list[Position]) -> None:
        """Queue ``item``; ``positions`` come back from :meth:`finished` once it is done."""
        self._queue.append((self._pool.submit(self._finish, item), positions))

    def finished(self, *, wait: bool) -> Iterator[list[Position]]:
        """The positions of the items finished so far, oldest first (all of them, waiting,
        with ``wait``).

        Raises
        ------
        Exception
            Whatever a finished item raised (its positions are not handed back).
        """
        while self._queue and (wait or self._queue[0][0].done()):
            future, positions = self._queue.pop(0)
            future.result()
            yield positions

    def shutdown(self) -> None:
        """Wait for the queued items, then stop the thread."""
        self._pool.shutdown(wait=True)


def finish_exposure(
    writing: ProductsInFlight,
    *,
    processor: ExposureProcessor,
    publisher: Publisher,
    metrics: Any,
    topics: Any,
    identity: str,
    emit: Callable[..., None],
) -> None:
    """Complete one exposure's products, publish its result, make them durable.

    The result is published only once every product is in place; the ``fsync`` comes
    after the publish, off the latency path, and before the offsets are committed.

    Raises
    ------
    TransientError
        Writing, publishing or syncing failed beyond its retries.
    """
    crash_point("finisher")
    outcome = processor.finish_write(writing)
    crash_point("products_written")
    calibrated, metrics_record, out = build_messages(
        outcome,
        calibrated_topic=topics.calibrated,
        metrics_topic=topics.metrics,
        worker=identity,
        now=time.time(),
    )
    publisher.publish(out)
    crash_point("published")
    metrics.observe_result(
        outcome.status,
        detector=outcome.detector,
        summary=calibrated.summary,
        latency=calibrated.end_to_end_latency,
        stage_durations=outcome.timings,
        reason=outcome.error_type,
        matches=outcome.matches,
    )
    # No next-visit seen (None) counts as a miss: the shards were loaded on arrival.
    metrics.observe_preload(bool(outcome.preload_hit))
    logger.info(
        "calibrated visit=%d detector=%d status=%s preload_hit=%s in %.2f s",
        outcome.visit,
        outcome.detector,
        outcome.status,
        outcome.preload_hit,
        outcome.wall_time,
    )
    emit("calibrated", calibrated=calibrated, metrics=metrics_record)
    processor.make_durable(outcome)
    crash_point("durable")
