"""Prometheus metrics of a streaming worker, created on an injected registry.

All names start with ``promptcal_``, use base units (seconds, bytes) and ``_total``
for counters; labels are bounded (stage names, three outcomes, topic/partition of
the consumed topics, detector numbers). ``docs/streaming.md`` lists every metric.

Per-detector quality gauges, from the LSST summary statistics of the last successful
calibration of that detector:

- ``promptcal_zero_point_mag``: ``zeroPoint`` [mag] (instrumental flux of mag 0).
- ``promptcal_psf_fwhm_arcsec``: ``psfSigma * 2 sqrt(2 ln 2) * pixelScale`` ["]: the
  seeing, in the unit operators think in.
- ``promptcal_sky_background_counts``: ``skyBg`` [counts].
- ``promptcal_astrometric_scatter_arcsec``: ``astromOffsetStd`` ["].
- ``promptcal_zero_point_offset_mag``: the 1 s zero point minus the band's fiducial one
  [mag], ``1.25 log10(effTimeZeroPointScale)``: independent of band and exposure time,
  so a drop is extinction (clouds), not a filter change.
- ``promptcal_astrometry_matches``, ``promptcal_photometry_matches``: reference matches
  used by the fits [1].

A value that was not measured is exported as NaN rather than keeping a stale number.
The ``detector`` label is bounded: only detectors of the worker's camera get series
(others are counted in ``promptcal_unknown_detector_exposures_total``), and failure
reasons are class names from :mod:`promptcal.core.errors` or ``other``
(``docs/operations.md``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from promptcal.core import errors
from promptcal.core.constants import FWHM_PER_SIGMA
from promptcal.core.errors import InvalidInputError

#: Outcomes counted by ``promptcal_exposures_total``.
OUTCOMES: tuple[str, ...] = ("success", "failed", "dead_letter")

#: Stage-duration buckets [s]: 1 ms (a tiny stage) to 2 min (a pathological exposure).
STAGE_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0,
)  # fmt: skip
#: End-to-end latency buckets [s], 0.1 s to 60 s (Rubin's alert budget) and beyond.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0,
)  # fmt: skip
#: Preload buckets [s]: reading a few reference shards from local disk to object storage.
PRELOAD_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
)  # fmt: skip

#: Values of the ``kind`` label of ``promptcal_messages_received_total``.
MESSAGE_KINDS: tuple[str, ...] = ("next-visit", "image-ready")


def failure_reasons() -> frozenset[str]:
    """The ``reason`` label values: every exception class of :mod:`promptcal.core.errors`, and
    ``other`` (anything else, e.g. a bug's ``ValueError``), so the label stays bounded."""
    found, todo = set(), [errors.PromptcalError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == errors.__name__:
            found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(found | {"other"})


def _finite(value: Any) -> float:
    """A float for a gauge; ``None``/non-numbers become NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class WorkerMetrics:
    """The collectors of one worker process.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry
        Where the collectors are registered (inject a fresh one in tests).
    clock : callable
        Returns POSIX time [s]; for the last-success timestamp.
    detectors : iterable of int, optional
        The detectors of the worker's camera: the only values of the ``detector`` label
        (``None``: any detector number).
    process_metrics : bool
        Also export ``process_*`` (resident memory, start time, CPU) of this process.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        detectors: Iterable[int] | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self.detectors = None if detectors is None else frozenset(int(d) for d in detectors)
        self._reasons = failure_reasons()
        kw: dict[str, Any] = {"namespace": "promptcal", "registry": registry}
        self.stage_duration = Histogram(
            "stage_duration_seconds",
            "Wall time of one calibration stage [s].",
            ["stage"],
            buckets=STAGE_BUCKETS,
            **kw,
        )
        self.end_to_end_latency = Histogram(
            "end_to_end_latency_seconds",
            "From the last snap's image-ready produced_at to the calibrated message [s].",
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.exposures = Counter(
            "exposures",
            "Exposures handled, by outcome (success, failed, dead_letter).",
            ["outcome"],
            **kw,
        )
        for outcome in OUTCOMES:  # export zeros, so rate() works from the first failure
            self.exposures.labels(outcome=outcome)
        self.consumer_lag = Gauge(
            "consumer_lag_messages",
            "Messages between the committed offset and the end of the partition.",
            ["topic", "partition"],
            **kw,
        )
        self.preload_hits = Counter(
            "preload_hits", "Exposures whose reference shards were already preloaded.", **kw
        )
        self.preload_misses = Counter(
            "preload_misses", "Exposures that had to load reference shards on arrival.", **kw
        )
        self.preload_duration = Histogram(
            "preload_duration_seconds",
            "Wall time to preload one detector's reference shards [s].",
            buckets=PRELOAD_BUCKETS,
            **kw,
        )
        self.last_success = Gauge(
            "last_success_timestamp_seconds",
            "POSIX time of the last successful calibration [s].",
            **kw,
        )
        self.zero_point = Gauge(
            "zero_point_mag",
            "Photometric zero point of the last success [mag].",
            ["detector"],
            **kw,
        )
        self.psf_fwhm = Gauge(
            "psf_fwhm_arcsec", "PSF FWHM of the last success [arcsec].", ["detector"], **kw
        )
        self.sky_background = Gauge(
            "sky_background_counts", "Sky background of the last success [counts].", ["detector"],
            **kw,
        )  # fmt: skip
        self.astrometric_scatter = Gauge(
            "astrometric_scatter_arcsec",
            "Astrometric match scatter (astromOffsetStd) of the last success [arcsec].",
            ["detector"],
            **kw,
        )
        self._lag_labels: set[tuple[str, str]] = set()
        self._add_operations_collectors(kw, process_metrics)

    def _add_operations_collectors(self, kw: dict[str, Any], process_metrics: bool) -> None:
        """Collectors the dashboards and alerts need beyond the design's list."""
        self.messages_received = Counter(
            "messages_received",
            "Messages consumed, by kind (next-visit, image-ready).",
            ["kind"],
            **kw,
        )
        for kind in MESSAGE_KINDS:
            self.messages_received.labels(kind=kind)
        self.failures = Counter(
            "failures",
            "Failed calibrations and dead letters, by outcome and reason (error class).",
            ["outcome", "reason"],
            **kw,
        )
        for outcome in OUTCOMES[1:]:  # zeros, so increase() counts a series' first failure
            for reason in self._reasons:
                self.failures.labels(outcome=outcome, reason=reason)
        self.unknown_detector = Counter(
            "unknown_detector_exposures",
            "Successes of detectors not in the worker's camera (no quality series).",
            **kw,
        )
        self.zero_point_offset = Gauge(
            "zero_point_offset_mag",
            "1 s zero point minus the band's fiducial zero point of the last success [mag].",
            ["detector"],
            **kw,
        )
        self.astrometry_matches = Gauge(
            "astrometry_matches",
            "Reference matches of the astrometric fit [1].",
            ["detector"],
            **kw,
        )
        self.photometry_matches = Gauge(
            "photometry_matches",
            "Reference matches of the photometric fit [1].",
            ["detector"],
            **kw,
        )
        if process_metrics:  # process_resident_memory_bytes, process_start_time_seconds
            ProcessCollector(registry=self.registry)

    def observe_message(self, kind: str) -> bool:
        """Count one consumed message of ``kind``; only :data:`MESSAGE_KINDS` are counted
        (the label stays bounded whatever topic a message came from). True if counted."""
        if kind not in MESSAGE_KINDS:
            return False
        self.messages_received.labels(kind=kind).inc()
        return True

    # -- observations -----------------------------------------------------------------

    def observe_stage_durations(self, durations: Mapping[str, float]) -> None:
        """Record stage name -> wall time [s] (negative or non-finite values rejected)."""
        for stage, seconds in durations.items():
            if not math.isfinite(seconds) or seconds < 0:
                raise InvalidInputError(f"stage {stage!r} duration {seconds!r} s is not >= 0")
            self.stage_duration.labels(stage=stage).observe(seconds)

    def observe_result(
        self,
        outcome: str,
        *,
        detector: int | None = None,
        summary: Mapping[str, Any] | None = None,
        latency: float | None = None,
        stage_durations: Mapping[str, float] | None = None,
        reason: str | None = None,
        matches: Mapping[str, int | None] | None = None,
    ) -> None:
        """Record one handled exposure.

        Parameters
        ----------
        outcome : str
            ``"success"``, ``"failed"`` (algorithm failure) or ``"dead_letter"``.
        detector : int, optional
            Detector number, for the quality gauges (success only).
        summary : mapping, optional
            LSST summary statistics (``zeroPoint``, ``psfSigma``, ``pixelScale``,
            ``skyBg``, ``astromOffsetStd``), for the quality gauges (success only).
        latency : float, optional
            End-to-end latency [s].
        stage_durations : mapping, optional
            Stage name -> wall time [s].
        reason : str, optional
            Error class name of a failure or dead letter (``other`` when it is not a
            class of :mod:`promptcal.core.errors`).
        matches : mapping, optional
            ``{"astrometry": n, "photometry": n}`` reference matches (success only).
        """
        if outcome not in OUTCOMES:
            raise InvalidInputError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        self.exposures.labels(outcome=outcome).inc()
        if stage_durations:
            self.observe_stage_durations(stage_durations)
        if latency is not None:
            self.end_to_end_latency.observe(latency)
        if outcome != "success":
            label = reason if reason in self._reasons else "other"
            self.failures.labels(outcome=outcome, reason=label).inc()
            return
        self.last_success.set(self._clock())
        if detector is not None and self.detectors is not None and detector not in self.detectors:
            self.unknown_detector.inc()
            return
        if detector is not None and summary is not None:
            label = str(int(detector))
            self._observe_quality(label, summary, matches or {})

    def _observe_quality(
        self, label: str, summary: Mapping[str, Any], matches: Mapping[str, int | None]
    ) -> None:
        """Set the quality gauges of one detector from its summary statistics."""
        fwhm = (
            _finite(summary.get("psfSigma")) * FWHM_PER_SIGMA * _finite(summary.get("pixelScale"))
        )
        self.zero_point.labels(detector=label).set(_finite(summary.get("zeroPoint")))
        self.psf_fwhm.labels(detector=label).set(fwhm)
        self.sky_background.labels(detector=label).set(_finite(summary.get("skyBg")))
        self.astrometric_scatter.labels(detector=label).set(_finite(summary.get("astromOffsetStd")))
        scale = _finite(summary.get("effTimeZeroPointScale"))
        offset = 1.25 * math.log10(scale) if scale > 0 else math.nan
        self.zero_point_offset.labels(detector=label).set(offset)
        self.astrometry_matches.labels(detector=label).set(_finite(matches.get("astrometry")))
        self.photometry_matches.labels(detector=label).set(_finite(matches.get("photometry")))

    def observe_preload(self, hit: bool, duration: float | None = None) -> None:
        """Record whether an exposure's shards were preloaded, and the preload time [s]."""
        (self.preload_hits if hit else self.preload_misses).inc()
        if duration is not None:
            self.preload_duration.observe(duration)

    def update_from_librdkafka_stats(self, stats_json: str) -> dict[tuple[str, int], int]:
        """Set the consumer-lag gauges from a librdkafka statistics JSON document.

        Use as the consumer's ``stats_cb`` (with ``statistics.interval.ms`` set). Reads
        ``topics.<t>.partitions.<p>.consumer_lag`` (end offset minus committed offset).
        The internal partition ``-1`` and unknown lags (``-1``: nothing committed yet,
        or the partition is not assigned to this consumer) are skipped, and series of
        partitions no longer reported are removed, so a rebalance leaves no stale lag.

        Returns
        -------
        dict
            ``(topic, partition) -> lag`` as exported.

        Raises
        ------
        InvalidInputError
            The document is not JSON.
        """
        try:
            stats = json.loads(stats_json)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"librdkafka statistics are not JSON: {exc}") from exc
        lags: dict[tuple[str, int], int] = {}
        for topic, topic_stats in (stats.get("topics") or {}).items():
            for part, part_stats in (topic_stats.get("partitions") or {}).items():
                lag = part_stats.get("consumer_lag", -1)
                if int(part) < 0 or not isinstance(lag, int) or lag < 0:
                    continue
                lags[(topic, int(part))] = lag
        current = {(topic, str(part)) for topic, part in lags}
        for labels in self._lag_labels - current:
            self.consumer_lag.remove(*labels)
        for (topic, part), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(part)).set(lag)
        self._lag_labels = current
        return lags
