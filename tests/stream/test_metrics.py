"""Worker metrics scraped over real HTTP, health/readiness probes, the lag parser."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from promptcal.core.errors import InvalidInputError
from promptcal.stream.http import HealthServer
from promptcal.stream.metrics import OUTCOMES, WorkerMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _partition(lag: int, committed: int, hi: int, desired: bool = True) -> dict:
    # The fields librdkafka 2.x reports per partition (abridged to the relevant ones).
    return {
        "partition": 0,
        "broker": 1,
        "leader": 1,
        "desired": desired,
        "fetch_state": "active" if desired else "none",
        "app_offset": hi,
        "stored_offset": committed,
        "committed_offset": committed,
        "hi_offset": hi,
        "ls_offset": hi,
        "lo_offset": 0,
        "consumer_lag": lag,
        "consumer_lag_stored": lag,
        "rxmsgs": hi,
    }


def _stats(partitions: dict[str, dict[str, dict]]) -> str:
    return json.dumps(
        {
            "name": "rdkafka#consumer-1",
            "client_id": "rdkafka",
            "type": "consumer",
            "ts": 1004582971,
            "time": 1795612768,
            "replyq": 0,
            "brokers": {"127.0.0.1:9092/1": {"name": "127.0.0.1:9092/1", "nodeid": 1}},
            "topics": {
                topic: {"topic": topic, "age": 1495, "metadata_age": 1496, "partitions": parts}
                for topic, parts in partitions.items()
            },
            "cgrp": {"state": "up", "join_state": "steady", "assignment_size": 2},
        }
    )


@pytest.fixture
def served():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, clock=lambda: 1771902795.5)
    server = HealthServer(registry, host="127.0.0.1")
    port = server.start(0)
    yield metrics, server, port
    server.stop()


def test_metrics_are_scraped_over_http(served):
    metrics, _server, port = served
    metrics.observe_result(
        "success",
        detector=94,
        summary={
            "zeroPoint": 31.4,
            "psfSigma": 2.0,
            "pixelScale": 0.2,
            "skyBg": 1200.0,
            "astromOffsetStd": 0.021,
        },
        latency=2.5,
        stage_durations={"psf": 0.6, "astrometry": 0.2},
    )
    metrics.observe_result("failed", latency=70.0, stage_durations={"psf": 0.7})
    metrics.observe_result("dead_letter")
    metrics.observe_preload(True, 0.18)
    metrics.observe_preload(False)
    status, text = _get(port, "/metrics")
    assert status == 200
    s = _samples(text)
    assert s[("promptcal_exposures_total", (("outcome", "success"),))] == 1
    assert s[("promptcal_exposures_total", (("outcome", "failed"),))] == 1
    assert s[("promptcal_exposures_total", (("outcome", "dead_letter"),))] == 1
    assert s[("promptcal_stage_duration_seconds_count", (("stage", "psf"),))] == 2
    assert s[("promptcal_stage_duration_seconds_sum", (("stage", "psf"),))] == pytest.approx(1.3)
    assert s[("promptcal_stage_duration_seconds_bucket", (("le", "0.5"), ("stage", "psf")))] == 0
    assert s[("promptcal_stage_duration_seconds_bucket", (("le", "1.0"), ("stage", "psf")))] == 2
    latency = "promptcal_end_to_end_latency_seconds"
    assert s[(f"{latency}_bucket", (("le", "0.1"),))] == 0
    assert s[(f"{latency}_bucket", (("le", "3.0"),))] == 1
    assert s[(f"{latency}_bucket", (("le", "60.0"),))] == 1
    assert s[(f"{latency}_bucket", (("le", "120.0"),))] == 2
    assert s[("promptcal_preload_hits_total", ())] == 1
    assert s[("promptcal_preload_misses_total", ())] == 1
    assert s[("promptcal_preload_duration_seconds_count", ())] == 1
    assert s[("promptcal_last_success_timestamp_seconds", ())] == 1771902795.5
    det = (("detector", "94"),)
    assert s[("promptcal_zero_point_mag", det)] == pytest.approx(31.4)
    assert s[("promptcal_psf_fwhm_arcsec", det)] == pytest.approx(2.0 * 2.354820045 * 0.2)
    assert s[("promptcal_sky_background_counts", det)] == 1200.0
    assert s[("promptcal_astrometric_scatter_arcsec", det)] == pytest.approx(0.021)


def test_unmeasured_quality_values_become_nan_and_outcomes_start_at_zero(served):
    metrics, _server, port = served
    s = _samples(_get(port, "/metrics")[1])
    for outcome in OUTCOMES:
        assert s[("promptcal_exposures_total", (("outcome", outcome),))] == 0
    metrics.observe_result("success", detector=3, summary={"zeroPoint": 30.0})
    metrics.observe_result("success", detector=3, summary={"zeroPoint": None, "psfSigma": 2.0})
    s = _samples(_get(port, "/metrics")[1])
    assert math.isnan(s[("promptcal_zero_point_mag", (("detector", "3"),))])
    assert math.isnan(s[("promptcal_psf_fwhm_arcsec", (("detector", "3"),))])  # no pixelScale


def test_bad_observations_are_rejected():
    metrics = WorkerMetrics(CollectorRegistry())
    with pytest.raises(InvalidInputError, match="outcome"):
        metrics.observe_result("partial")
    with pytest.raises(InvalidInputError, match="duration"):
        metrics.observe_stage_durations({"psf": -1.0})
    with pytest.raises(InvalidInputError, match="not JSON"):
        metrics.update_from_librdkafka_stats("{truncated")


def test_readyz_then_healthz_liveness(served):
    _metrics, server, port = served
    assert _get(port, "/readyz")[0] == 503
    assert _get(port, "/healthz") == (200, "ok\n")
    server.set_ready()
    assert _get(port, "/readyz") == (200, "ready\n")
    server.set_ready(False)  # draining on SIGTERM
    assert _get(port, "/readyz")[0] == 503
    assert _get(port, "/nothing")[0] == 404


def test_healthz_fails_when_the_loop_stops_beating():
    now = [100.0]
    server = HealthServer(
        CollectorRegistry(), host="127.0.0.1", liveness_timeout=30.0, clock=lambda: now[0]
    )
    port = server.start()
    try:
        server.set_ready()
        now[0] = 129.0
        assert _get(port, "/healthz")[0] == 200
        now[0] = 131.0  # 31 s without a heartbeat
        assert _get(port, "/healthz")[0] == 503
        assert _get(port, "/readyz")[0] == 503
        server.heartbeat()
        assert _get(port, "/healthz")[0] == 200
        server.set_unhealthy()
        assert _get(port, "/healthz")[0] == 503
    finally:
        server.stop()
    assert server.port is None


def test_consumer_lag_from_librdkafka_statistics():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    stats = _stats(
        {
            "lsstcam.image-ready": {
                "0": _partition(lag=5, committed=10, hi=15),
                "1": _partition(lag=0, committed=7, hi=7),
                "2": _partition(lag=-1, committed=-1001, hi=4, desired=False),  # not assigned
                "-1": _partition(lag=-1, committed=-1001, hi=-1001, desired=False),  # internal
            },
            "lsstcam.next-visit": {"0": _partition(lag=12, committed=3, hi=15)},
        }
    )
    lags = metrics.update_from_librdkafka_stats(stats)
    assert lags == {
        ("lsstcam.image-ready", 0): 5,
        ("lsstcam.image-ready", 1): 0,
        ("lsstcam.next-visit", 0): 12,
    }

    def lag(topic, partition):
        return registry.get_sample_value(
            "promptcal_consumer_lag_messages", {"topic": topic, "partition": partition}
        )

    assert lag("lsstcam.image-ready", "0") == 5
    assert lag("lsstcam.next-visit", "0") == 12
    assert lag("lsstcam.image-ready", "2") is None
    # After a rebalance this consumer no longer owns next-visit/0: its series goes away.
    metrics.update_from_librdkafka_stats(
        _stats({"lsstcam.image-ready": {"0": _partition(lag=1, committed=14, hi=15)}})
    )
    assert lag("lsstcam.image-ready", "0") == 1
    assert lag("lsstcam.next-visit", "0") is None
    assert lag("lsstcam.image-ready", "1") is None
