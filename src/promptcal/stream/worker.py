"""The streaming worker: consume ``next-visit``/``image-ready``, calibrate, publish.

One consumer subscribes to both co-partitioned topics (range assignor, so a worker
owns the same partition numbers of both). Per message:

- ``next-visit`` → predict the detector footprint and preload its reference shards
  (:mod:`~promptcal.service.preload`), synchronously;
- ``image-ready`` → collect the visit-detector's snaps (:mod:`~promptcal.service.assembler`,
  bounded wait), then read them and run ``CalibrateImageTask`` on the main thread,
  write the catalogs and start the calexp under
  ``<output>/<instrument>/<visit>/<detector>/`` (atomic renames); a finisher thread
  (:mod:`~promptcal.stream.finisher`)
  waits for the calexp, writes ``summary.json``, publishes the ``calibrated`` message
  and the ``metrics`` record, waits for the broker's acknowledgement
  (:mod:`~promptcal.stream.publish`) and ``fsync`` s the products, while the main
  thread goes on with the next message (one exposure at most in the finisher);
- only once the products are durable are the input offsets stored and committed
  (asynchronously after each exposure, synchronously on shutdown or revocation).
  At-least-once: a crash before the commit redoes the exposure, overwriting the same
  products and key.

Undecodable messages and unreadable snaps go to ``dead-letter`` (original key, value
and headers, plus error headers) and count as handled. Algorithm failures are results
(``status=failed``). Transient failures (broker, storage) are retried with backoff;
past the retries :class:`~promptcal.core.errors.TransientError` ends :meth:`Worker.run`
without storing the exposure's offsets. See ``docs/worker.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from promptcal.core.allocator import reserve_heap
from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.service.assembler import PendingExposure, RawMessage, ReceivedSnap, SnapAssembler
from promptcal.service.dead_letter import DeadLetter
from promptcal.service.messages import ImageReady, NextVisit, decode
from promptcal.service.outcome import OutgoingMessage, worker_identity
from promptcal.service.preload import Preloader
from promptcal.service.process import ExposureProcessor
from promptcal.service.records import ProductsInFlight
from promptcal.stream.clients import client_configs, connect_consumer
from promptcal.stream.finisher import Finisher, finish_exposure
from promptcal.stream.http import HealthServer
from promptcal.stream.membership import GroupMember
from promptcal.stream.metrics import WorkerMetrics
from promptcal.stream.offsets import OffsetTracker
from promptcal.stream.publish import Publisher
from promptcal.stream.settings import WorkerSettings
from promptcal.stream.topics import TopicNames

logger = logging.getLogger(__name__)

__all__ = ["Listener", "Worker", "WorkerSettings"]

Listener = Callable[[str, dict[str, Any]], None]


class Worker(GroupMember):
    """A streaming calibration worker (run it in the main thread or a test thread).

    Parameters
    ----------
    settings : WorkerSettings
    config : CalibrateImageConfig
        The calibration configuration.
    refcat : RefcatLoader
        Reference catalog (its cache holds the preloaded shards).
    camera : Camera
        Detector geometry for the footprint prediction.
    registry : prometheus_client.CollectorRegistry, optional
        Where the metrics live (a fresh registry when omitted).
    stop_event : threading.Event, optional
        Set it (or call :meth:`request_stop`) to drain and stop.
    listener : callable, optional
        ``listener(event, info)`` for ``ready``, ``preloaded``, ``image``,
        ``processing``, ``calibrated``, ``dead_letter``, ``stopping`` (tests, tracing).
    """

    def __init__(
        self,
        settings,
        *,
        config,
        refcat,
        camera,
        registry=None,
        stop_event=None,
        listener: Listener | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.metrics = WorkerMetrics(
            registry if registry is not None else CollectorRegistry(),
            detectors=[d.id for d in camera.detectors],  # bounds the detector label
        )
        self.health = HealthServer(
            self.metrics.registry,
            host=settings.http_host,
            liveness_timeout=settings.liveness_timeout(),
        )
        self.topics = TopicNames(settings.topic_prefix)
        self.assembler = SnapAssembler(settings.snap_wait, next_visit_wait=settings.next_visit_wait)
        self.offsets = OffsetTracker()
        self.preloader = Preloader(
            refcat,
            camera,
            padding_arcsec=settings.preload_padding_arcsec,
            extra_margin_px=config.ref_pixel_margin,
        )
        self.processor = ExposureProcessor(
            config,
            refcat,
            settings.output,
            retries=settings.retries,
            backoff=settings.retry_backoff,
            inputs=settings.input_policy(),
            time_limit=settings.max_exposure_seconds,
            stale_temp_seconds=settings.liveness_timeout(),
        )
        if not settings.input_roots:
            logger.warning("no input roots configured: snap URIs may name any readable file")
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.listener = listener
        self.identity = worker_identity()
        self.consumer: Any = None
        self.publisher: Publisher | None = None
        self.http_port: int | None = None
        self.ready_time: float | None = None
        # Each exposure is finished on this thread (calexp on disk, result published,
        # products fsynced) while the next one is calibrated; its offsets are stored
        # when that is done (see _commit_finished).
        self._finisher = Finisher(self._finish)

    # -- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop polling; the exposure in hand completes, then the worker drains."""
        self.stop_event.set()

    def run(self) -> int:
        """Warm up, connect, serve until stopped; returns 0 after a clean drain.

        Raises
        ------
        TransientError
            The broker or the storage failed beyond the retries (nothing of the failing
            exposure was committed).
        """
        start = time.monotonic()
        self.http_port = self.health.start(self.settings.http_port)
        try:
            self.processor.sweep_temporaries()  # what a killed predecessor left behind
            if self.settings.do_warmup:
                from promptcal.service.warmup import warm_up

                reserve = self.settings.heap_reserve_bytes(self.preloader.camera)
                if reserve_heap(reserve):
                    logger.info("reserved %.0f MB of heap", reserve / 1e6)
                warm_up(self.config)
            self._connect()
            self.ready_time = time.monotonic() - start
            self.health.set_ready(True)
            logger.info("worker %s ready in %.2f s", self.identity, self.ready_time)
            self._emit("ready", ready_time=self.ready_time, http_port=self.http_port)
            self._loop()
            self._drain()
            return 0
        except BaseException:  # TransientError, or a bad configuration at start-up
            self.health.set_unhealthy()
            self._close()
            raise
        finally:
            self.health.set_ready(False)
            self.health.stop()

    def _connect(self) -> None:
        from confluent_kafka import Consumer, Producer

        s = self.settings
        extra: dict[str, Any] = {
            "max.poll.interval.ms": s.max_poll_interval_ms(),
            "error_cb": self._on_kafka_error,
        }
        if s.statistics_interval_ms:
            extra["statistics.interval.ms"] = s.statistics_interval_ms
            extra["stats_cb"] = self._on_stats
        consumer_conf, producer_conf = client_configs(s, **extra)
        self.consumer = Consumer(consumer_conf)
        wanted = [self.topics.next_visit, self.topics.image_ready]
        connect_consumer(self.consumer, s, wanted)

        def make_producer():
            return Producer({**producer_conf, "error_cb": self._on_producer_error})

        self.publisher = Publisher(
            make_producer(),
            retries=s.retries,
            backoff=s.retry_backoff,
            delivery_timeout=s.delivery_timeout,
            factory=make_producer,
        )
        self.consumer.subscribe(
            wanted, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _on_producer_error(self, error: Any) -> None:
        logger.warning("kafka producer: %s", error)
        if self.publisher is not None:
            self.publisher.note_error(error)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.health.heartbeat()
            wait = self.settings.poll_timeout
            expiry = self.assembler.seconds_to_next_expiry()
            if expiry is not None:
                wait = min(wait, expiry)
            message = self.consumer.poll(wait)
            self._commit_finished(wait=False)
            if message is not None:
                self._handle(message)
            for pending in self.assembler.expired():
                self._process(pending)

    def _drain(self) -> None:
        """After a stop request: flush, commit what is done, leave the group."""
        self.health.set_ready(False)
        left = self.assembler.pending()
        logger.info(
            "stopping: %d incomplete exposure(s) left uncommitted for redelivery", len(left)
        )
        self._emit("stopping", pending=[p.key for p in left])
        self._commit_finished(wait=True)
        if self.publisher is not None:
            self.publisher.producer.flush(self.settings.delivery_timeout)
            self.publisher = None  # the producer disconnects when collected
        self._commit(self.offsets.committable(), asynchronous=False)
        self._close()

    def _close(self) -> None:
        self._finisher.shutdown()
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        # close() leaves the group; bound it so a dead broker cannot hold the exit.
        thread = threading.Thread(target=consumer.close, name="promptcal-close", daemon=True)
        thread.start()
        thread.join(self.settings.grace_period / 2)
        if thread.is_alive():
            logger.warning("consumer close did not finish; exiting anyway")

    # -- messages ------------------------------------------------------------------------

    def _emit(self, event: str, **info: Any) -> None:
        if self.listener is not None:
            self.listener(event, info)

    def _handle(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise TransientError(f"fatal consumer error: {error}")
            logger.warning("consumer: %s", error)
            return
        raw = RawMessage.from_kafka(message)
        self.offsets.received(raw.position)
        self.metrics.observe_message(raw.topic.removeprefix(self.topics.prefix))
        try:
            if raw.topic == self.topics.next_visit:
                visit = decode(raw.value, NextVisit)
            elif raw.topic == self.topics.image_ready:
                snap = ReceivedSnap(
                    decode(raw.value, ImageReady), raw.position, raw.key, raw.value, raw.headers
                )
                if self.assembler.already_handled(snap):
                    logger.info("late duplicate snap at %s ignored", raw.position)
                    self._done([raw.position])
                    return
                complete = self.assembler.add(snap)
            else:
                raise InvalidInputError(f"unexpected topic {raw.topic!r}")
        except InvalidInputError as exc:
            self._dead_letter([raw], exc)
            return
        except Exception as exc:  # a decoder bug must not crash-loop the partition
            logger.exception("decoding the message at %s raised", raw.position)
            self._dead_letter([raw], exc)
            return
        if raw.topic == self.topics.next_visit:
            record = self.preloader.preload(visit)
            if record.ok:
                self.metrics.preload_duration.observe(record.duration)
            self._done([raw.position])
            self._emit("preloaded", record=record)
            held = self.assembler.announce(visit.instrument, visit.visit, visit.detector)
            if held is not None:  # its snaps came first (replay at full speed)
                self._process(held)
            return
        m = snap.message
        logger.info(
            "image-ready visit=%d detector=%d snap=%d/%d received",
            m.visit,
            m.detector,
            m.snap,
            m.n_snaps,
        )
        self._emit("image", snap=snap)
        if complete is not None:
            self._process(complete)

    def _dead_letter(self, raws: list[RawMessage], error: BaseException) -> None:
        out = []
        for raw in raws:
            letter = DeadLetter.from_error(error, raw.topic, raw.partition, raw.offset)
            headers = [*(raw.headers or []), *letter.headers()]
            out.append(OutgoingMessage(self.topics.dead_letter, raw.key, raw.value, headers))
        logger.warning(
            "dead-letter %s: %s: %s", [r.position for r in raws], type(error).__name__, error
        )
        self.publisher.publish(out)
        self.metrics.observe_result("dead_letter", reason=type(error).__name__)
        self._done([r.position for r in raws])
        self._emit("dead_letter", positions=[r.position for r in raws], error=error)

    def _process(self, pending: PendingExposure) -> None:
        logger.info(
            "processing visit=%d detector=%d (%d of %d snaps)",
            pending.visit,
            pending.detector,
            len(pending.snaps),
            pending.n_snaps,
        )
        self._emit("processing", pending=pending)
        record = self.preloader.pop(pending.visit, pending.detector)
        try:
            calibration = self.processor.calibrate(pending, record, self.preloader)
        except InvalidInputError as exc:  # a snap cannot be read
            self._dead_letter_exposure(pending, exc)
            return
        # At most one exposure behind: the previous one's products are complete,
        # published and durable before this one's are written (memory and disk).
        self._commit_finished(wait=True)
        try:
            writing = self.processor.start_write(calibration)
        except InvalidInputError as exc:  # no product directory for these message fields
            self._dead_letter_exposure(pending, exc)
            return
        self._finisher.submit(writing, pending.positions)

    def _dead_letter_exposure(self, pending: PendingExposure, error: BaseException) -> None:
        # Not calibrated: a replay of its dead letters must not be skipped as a duplicate.
        self.assembler.forget(pending.key)
        self._dead_letter([RawMessage.from_snap(s) for s in pending.ordered_snaps()], error)

    def _finish(self, writing: ProductsInFlight) -> None:
        """On the finisher thread (see :mod:`~promptcal.stream.finisher`)."""
        finish_exposure(
            writing,
            processor=self.processor,
            publisher=self.publisher,
            metrics=self.metrics,
            topics=self.topics,
            identity=self.identity,
            emit=self._emit,
        )
