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

A value that was not measured is exported as NaN rather than keeping a stale number.
The detector label comes from messages, so its values are bounded: past
``max_detectors`` distinct detectors, the series of the least recently calibrated
one are removed (a camera has a fixed number of detectors; garbage ids must not grow
the exposition without bound).
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

#: Gaussian FWHM / sigma.


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
    max_detectors : int
        Most detector label values kept (LSSTCam has 189 detectors).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        max_detectors: int = 256,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self.max_detectors = int(max_detectors)
        self._detectors: OrderedDict[str, None] = OrderedDict()
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
        """
        if outcome not in OUTCOMES:
            raise InvalidInputError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        self.exposures.labels(outcome=outcome).inc()
        if stage_durations:
            self.observe_stage_durations(stage_durations)
        if latency is not None:
            self.end_to_end_latency.observe(latency)
        if outcome != "success":
            return
        self.last_success.set(self._clock())
        if detector is not None and summary is not None:
            label = self._detector_label(detector)
            fwhm = (
                _finite(summary.get("psfSigma"))
                * FWHM_PER_SIGMA
                * _finite(summary.get("pixelScale"))
            )
            self.zero_point.labels(detector=label).set(_finite(summary.get("zeroPoint")))
            self.psf_fwhm.labels(detector=label).set(fwhm)
            self.sky_background.labels(detector=label).set(_finite(summary.get("skyBg")))
            self.astrometric_scatter.labels(detector=label).set(
                _finite(summary.get("astromOffsetStd"))
            )

    def _detector_label(self, detector: int) -> str:
        """The label of ``detector``, evicting the least recent one past the bound."""
        label = str(int(detector))
        self._detectors.pop(label, None)
        self._detectors[label] = None
        while len(self._detectors) > self.max_detectors:
            old, _ = self._detectors.popitem(last=False)
            for gauge in (
                self.zero_point,
                self.psf_fwhm,
                self.sky_background,
                self.astrometric_scatter,
            ):
                gauge.remove(old)
        return label

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
