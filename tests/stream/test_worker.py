"""The streaming worker (issue 5) over a simulated stream against the bundled broker.

One in-process worker (a thread, no warm-up) consumes a stream of 3 detectors × 5
visits (visit 3 in two snaps) plus a malformed message, a snap whose file is missing, a
field with too few stars, a visit announced at the wrong boresight (a preload miss) and
a two-snap visit whose second snap never comes; the results, products, metrics (scraped
over HTTP), logs and committed offsets are checked once it has drained. The stream
itself is the session fixture ``stream`` (tests/stream/conftest.py); the worker's parts
are in test_worker_units.py, failures and the process lifecycle in
test_worker_lifecycle.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from worker_helpers import (
    FAST_GROUP,
    FEW_STARS,
    HALF_VISIT,
    INSTRUMENT,
    MAIN_VISITS,
    PSF_FWHM,
    SNAP_WAIT,
    TRUE_ZERO_POINT,
    WRONG_ANNOUNCEMENT,
    EventLog,
    Visit,
    committed_and_end,
    http_get,
    image_ready,
    next_visit,
    poll_until,
    produce,
    read_topic,
)

from promptcal.core import errors
from promptcal.core.camera import load_camera
from promptcal.io.catalogs import read_catalog
from promptcal.io.products import read_calexp
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.dead_letter import DeadLetter
from promptcal.service.messages import Calibrated, MetricsRecord, decode, encode
from promptcal.stream.settings import WorkerSettings
from promptcal.stream.topics import TopicNames, create_topics, producer_config
from promptcal.stream.worker import Worker

pytest_plugins = ["kafka_fixtures"]


# -- the simulated stream ----------------------------------------------------------------


@contextlib.contextmanager
def _stream_logs():
    """Collect the worker's log records at INFO and above (its stream and service layers)."""
    logs: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = logs.append
    loggers = [logging.getLogger(name) for name in ("promptcal.stream", "promptcal.service")]
    old_levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield logs
    finally:
        for logger, level in zip(loggers, old_levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _start_worker(settings, stream, events):
    """An in-process worker running in a thread; returns it, the thread, its failures."""
    worker = Worker(
        settings,
        config=CalibrateImageConfig(),
        refcat=RefcatLoader(stream.refcat),
        camera=load_camera(stream.camera_path),
        registry=CollectorRegistry(),
        listener=events,
    )
    failure: list[BaseException] = []

    def target():
        try:
            worker.run()
        except BaseException as exc:  # surfaced by the fixture
            failure.append(exc)

    thread = threading.Thread(target=target, name="worker")
    thread.start()
    return worker, thread, failure


def _publish_stream(producer, names, stream, events) -> dict:
    """Announce and expose every visit, with the malformed and missing-file messages."""
    sent: dict = {}
    n_preloads = 0

    def announce_then_expose(v: Visit, snaps=None):
        nonlocal n_preloads
        for det in v.detectors:
            message = next_visit(v, det)
            produce(producer, names.next_visit, encode(message), message.key())
        n_preloads += len(v.detectors)
        events.wait_count("preloaded", n_preloads)  # next-visit comes >= 20 s ahead
        for det in v.detectors:
            for i, path in enumerate(stream.snaps[(v.visit, det)]):
                if snaps is None or i in snaps:
                    message = image_ready(v, det, i, path)
                    produce(producer, names.image_ready, encode(message), message.key())

    for v in MAIN_VISITS[:2]:
        announce_then_expose(v)
    malformed = b'{"schema_version": 1, "instrument": "ToyCam", "visit": 3, "det'
    sent["malformed"] = produce(
        producer, names.image_ready, malformed, b"1", headers=[("trace-id", b"abc123")]
    )
    for v in MAIN_VISITS[2:4]:
        announce_then_expose(v)
    missing = image_ready(Visit(7, 151.4, 2.0), 1, 0, stream.root / "raw" / "absent.fits")
    sent["missing"] = produce(producer, names.image_ready, encode(missing), missing.key())
    sent["missing_value"] = encode(missing)
    announce_then_expose(MAIN_VISITS[4])
    announce_then_expose(FEW_STARS)
    announce_then_expose(WRONG_ANNOUNCEMENT)
    announce_then_expose(HALF_VISIT, snaps={0})
    return sent


@pytest.fixture(scope="module")
def run(stream, kafka_broker, tmp_path_factory):
    """Run one in-process worker over the whole stream, then drain it."""
    bootstrap = kafka_broker.bootstrap
    names = TopicNames(f"w{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, partitions=3, prefix=names.prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    output = tmp_path_factory.mktemp("products")
    settings = WorkerSettings(
        bootstrap=bootstrap,
        group_id=group,
        output=output.as_uri(),
        topic_prefix=names.prefix,
        http_host="127.0.0.1",
        http_port=0,
        snap_wait=SNAP_WAIT,
        file_wait=1.0,  # the absent snap is waited for this long, then dead-lettered
        statistics_interval_ms=300,
        do_warmup=False,
        consumer_overrides=FAST_GROUP,
    )
    events = EventLog()
    with _stream_logs() as logs:
        worker, thread, failure = _start_worker(settings, stream, events)
        producer = Producer(producer_config(bootstrap))
        try:
            events.wait_count("ready", 1, timeout=30)
            assert http_get(worker.http_port, "/readyz")[0] == 200
            sent = _publish_stream(producer, names, stream, events)
            events.wait_count("calibrated", 18, timeout=60)
            events.wait_count("dead_letter", 2, timeout=10)
            metrics_text = poll_until(
                lambda: (
                    (text := http_get(worker.http_port, "/metrics")[1])
                    and 'promptcal_consumer_lag_messages{partition="0"' in text
                    and text
                ),
                timeout=15,
                what="the consumer-lag gauge",
            )
            healthz = http_get(worker.http_port, "/healthz")[0]
        finally:
            worker.request_stop()
            thread.join(30)
    assert not thread.is_alive() and not failure, failure
    return dict(
        names=names,
        group=group,
        bootstrap=bootstrap,
        output=output,
        events=events,
        logs=[r.getMessage() for r in logs],
        sent=sent,
        metrics=metrics_text,
        healthz=healthz,
        calibrated=[decode(m.value(), Calibrated) for m in read_topic(bootstrap, names.calibrated)],
        records=[decode(m.value(), MetricsRecord) for m in read_topic(bootstrap, names.metrics)],
        dead=read_topic(bootstrap, names.dead_letter),
        stream=stream,
    )


def _by_key(items):
    out = {}
    for item in items:
        out.setdefault((item.visit, item.detector), []).append(item)
    return out


@pytest.mark.kafka
def test_one_calibrated_message_per_visit_detector_with_correct_summary(run):
    results = _by_key(run["calibrated"])
    expected = {(v.visit, d) for v in MAIN_VISITS for d in v.detectors}
    assert expected | {(6, 0), (8, 0), (9, 2)} == set(results)
    for key in expected:
        (result,) = results[key]  # exactly one each
        assert result.status == "success" and result.instrument == INSTRUMENT
        s = result.summary
        assert s["zeroPoint"] == pytest.approx(TRUE_ZERO_POINT, abs=0.05)
        assert s["psfSigma"] == pytest.approx(PSF_FWHM / 2.3548, rel=0.1)
        assert s["pixelScale"] == pytest.approx(0.2, rel=0.01)
        assert 0 <= s["astromOffsetStd"] < 0.1  # [arcsec]; the header WCS was 2" off
        assert result.end_to_end_latency is not None and 0 <= result.end_to_end_latency < 30
        assert result.config_hash == CalibrateImageConfig().config_hash()
        # Task timers (the whole run and its stages) plus the worker's own read/write.
        assert {"run", "compute_psf", "astrometry", "photometry", "read", "write"} <= set(
            result.timings
        )
        assert result.timings["run"] >= result.timings["compute_psf"] > 0


@pytest.mark.kafka
def test_products_are_readable_under_the_deterministic_path(run):
    results = {(c.visit, c.detector): c for c in run["calibrated"]}
    for visit, n_snaps in ((1, 1), (3, 2)):
        result = results[(visit, 1)]
        directory = run["output"] / INSTRUMENT / str(visit) / "1"
        assert result.products["calexp"] == (directory / "calexp.fits").as_uri()
        exposure, _ = read_calexp(directory / "calexp.fits")
        assert exposure.visit_info.exposure_id == visit and exposure.detector.id == 1
        assert exposure.photo_calib is not None
        stars = read_catalog(directory / "stars.parquet")
        summary = json.loads((directory / "summary.json").read_text())
        assert summary["status"] == "success" and summary["n_stars"] == len(stars) > 20
        assert summary["summary"]["zeroPoint"] == pytest.approx(result.summary["zeroPoint"])
        assert len(summary["inputs"]) == n_snaps
    # The two snaps were summed: the exposure time is theirs together.
    from promptcal.io import read_exposure

    two, _ = read_calexp(run["output"] / INSTRUMENT / "3" / "1" / "calexp.fits")
    snaps = [read_exposure(p) for p in run["stream"].snaps[(3, 1)]]
    assert two.visit_info.exposure_time == pytest.approx(
        sum(s.visit_info.exposure_time for s in snaps)
    )


@pytest.mark.kafka
def test_every_preload_finished_before_its_image_arrived(run):
    records = _by_key(run["records"])
    for v in MAIN_VISITS:
        for det in v.detectors:
            (record,) = records[(v.visit, det)]
            assert record.preload_hit is True and record.preload_duration >= 0
    # The log shows each preload done before the first snap of that exposure arrived.
    logs = run["logs"]
    for v in MAIN_VISITS:
        for det in v.detectors:
            done = next(
                i
                for i, line in enumerate(logs)
                if line.startswith(f"preload visit={v.visit} detector={det} done")
            )
            first = next(
                i
                for i, line in enumerate(logs)
                if line.startswith(f"image-ready visit={v.visit} detector={det} ")
            )
            assert done < first
    # Prometheus: every main exposure and the two others announced right were hits.
    assert _sample(run["metrics"], "promptcal_preload_hits_total") == 15 + 2
    assert _sample(run["metrics"], "promptcal_preload_duration_seconds_count") >= 18


@pytest.mark.kafka
def test_a_wrong_announcement_is_a_preload_miss(run):
    (record,) = _by_key(run["records"])[(8, 0)]
    assert record.status == "success" and record.preload_hit is False
    assert _sample(run["metrics"], "promptcal_preload_misses_total") == 1


@pytest.mark.kafka
def test_dead_letters_keep_the_original_bytes_and_the_stream_goes_on(run):
    letters = {DeadLetter.from_headers(m.headers()).source_offset: m for m in run["dead"]}
    names = run["names"]
    partition, offset = run["sent"]["malformed"]
    bad = letters[offset]
    assert bad.value().startswith(b'{"schema_version": 1, "instrument": "ToyCam", "visit": 3')
    assert bad.key() == b"1" and ("trace-id", b"abc123") in bad.headers()
    info = DeadLetter.from_headers(bad.headers())
    assert info.error_type == "InvalidInputError" and "JSON" in info.error_message
    assert (info.source_topic, info.source_partition) == (names.image_ready, partition)
    partition, offset = run["sent"]["missing"]
    gone = DeadLetter.from_headers(letters[offset].headers())
    assert letters[offset].value() == run["sent"]["missing_value"]
    assert "absent.fits" in gone.error_message and gone.source_partition == partition
    assert len(run["dead"]) == 2
    # Messages after the bad ones were calibrated (visits 3..5 came later).
    assert {c.visit for c in run["calibrated"]} >= {3, 4, 5}
    assert _sample(run["metrics"], 'promptcal_exposures_total{outcome="dead_letter"}') == 2


@pytest.mark.kafka
def test_too_few_stars_is_a_failed_result_not_a_crash(run):
    (result,) = _by_key(run["calibrated"])[(6, 0)]
    assert result.status == "failed"
    assert issubclass(getattr(errors, result.error_type), errors.AlgorithmError)
    assert result.error_message and result.error_metadata is not None
    summary = json.loads((run["output"] / INSTRUMENT / "6" / "0" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]["type"] == result.error_type
    assert _sample(run["metrics"], 'promptcal_exposures_total{outcome="failed"}') == 1


@pytest.mark.kafka
def test_a_missing_snap_is_waited_for_then_the_rest_is_calibrated(run):
    (result,) = _by_key(run["calibrated"])[(9, 2)]
    assert result.status == "success"
    assert result.end_to_end_latency >= SNAP_WAIT  # it waited the bounded time
    summary = json.loads((run["output"] / INSTRUMENT / "9" / "2" / "summary.json").read_text())
    assert len(summary["inputs"]) == 1
    assert any("1 of 2 snaps after" in line for line in run["logs"])


@pytest.mark.kafka
def test_every_input_offset_is_committed_after_the_drain(run):
    for topic in (run["names"].next_visit, run["names"].image_ready):
        offsets = committed_and_end(run["bootstrap"], run["group"], topic)
        # Every partition with messages is committed to its end (empty ones never were).
        assert all(c == e if e else c < 0 for c, e in offsets.values()), offsets
        assert sum(end for _, end in offsets.values()) > 0


@pytest.mark.kafka
def test_metrics_over_http(run):
    text = run["metrics"]
    assert run["healthz"] == 200
    assert _sample(text, 'promptcal_exposures_total{outcome="success"}') == 17
    for stage in ("read", "write"):
        assert _sample(text, f'promptcal_stage_duration_seconds_count{{stage="{stage}"}}') == 18
    assert _sample(text, "promptcal_end_to_end_latency_seconds_count") == 18
    assert _sample(text, "promptcal_end_to_end_latency_seconds_sum") > 0
    lags = re.findall(
        r'^promptcal_consumer_lag_messages\{partition="\d",topic="([^"]+)"\} (\S+)', text, re.M
    )
    assert {t for t, _ in lags} <= {run["names"].next_visit, run["names"].image_ready}
    assert lags and all(float(v) >= 0 for _, v in lags)
    assert _sample(text, 'promptcal_zero_point_mag{detector="1"}') == pytest.approx(
        TRUE_ZERO_POINT, abs=0.05
    )
    assert _sample(text, 'promptcal_psf_fwhm_arcsec{detector="1"}') == pytest.approx(
        PSF_FWHM * 0.2, rel=0.1
    )
    assert _sample(text, "promptcal_last_success_timestamp_seconds") > time.time() - 600


@pytest.mark.kafka
def test_metrics_records_match_the_results(run):
    calibrated = {(c.visit, c.detector): c for c in run["calibrated"]}
    assert len(run["records"]) == len(calibrated) == 18
    for record in run["records"]:
        result = calibrated[(record.visit, record.detector)]
        assert record.status == result.status
        assert record.stage_timings == result.timings
        assert record.end_to_end_latency == result.end_to_end_latency
        assert record.wall_time >= record.stage_timings["read"] and record.peak_rss > 0
        assert record.queue_wait is not None and record.queue_wait >= 0
        assert record.worker.endswith(f"/{os.getpid()}")


def _sample(text: str, name: str) -> float:
    """Value of the exposition line that starts with ``name`` (labels included)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")
