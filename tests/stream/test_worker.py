"""The streaming worker (issue 5): snaps, preload, delivery, dead letters, shutdown.

Unit tests first (assembler, offsets, URIs, settings, publisher retries, preloader),
then integration tests against the bundled broker:

- one in-process worker (a thread, no warm-up) consumes a stream of 3 detectors × 5
  visits (visit 3 in two snaps) plus a malformed message, a snap whose file is missing,
  a field with too few stars, a visit announced at the wrong boresight (a preload miss)
  and a two-snap visit whose second snap never comes; the results, products, metrics
  (scraped over HTTP), logs and committed offsets are checked once it has drained;
- a worker whose product directory cannot be written exits with TransientError and
  commits nothing;
- ``promptcal serve`` as a subprocess: ready within 10 s of process start (warm Numba
  cache), and SIGTERM while an exposure is in hand: it completes, its offset (and
  nothing after it) is committed, and the process exits 0 within the grace period;
- the warm-up, in a fresh process, leaves nothing to compile for a real exposure.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from worker_helpers import (
    INSTRUMENT,
    PSF_FWHM,
    TRUE_ZERO_POINT,
    EventLog,
    Visit,
    committed_and_end,
    http_get,
    image_ready,
    next_visit,
    poll_until,
    produce,
    read_topic,
    simulate_stream,
)

from promptcal.core import errors
from promptcal.core.camera import load_camera
from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.io.catalogs import read_catalog
from promptcal.io.products import read_calexp
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.assembler import OffsetTracker, ReceivedSnap, SnapAssembler
from promptcal.service.locations import output_root, product_dir, uri_to_path
from promptcal.service.messages import Calibrated, DeadLetter, MetricsRecord, decode, encode
from promptcal.service.outcome import OutgoingMessage
from promptcal.service.preload import Preloader
from promptcal.service.retries import with_retries
from promptcal.stream.publish import Publisher
from promptcal.stream.settings import WorkerSettings
from promptcal.stream.topics import TopicNames, create_topics, producer_config
from promptcal.stream.worker import Worker

pytest_plugins = ["kafka_fixtures"]

FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
MAIN_VISITS = [
    Visit(v, 150.0 + 0.2 * (v - 1), 2.0, n_snaps=2 if v == 3 else 1) for v in (1, 2, 3, 4, 5)
]
FEW_STARS = Visit(6, 151.2, 2.0, n_stars=2, detectors=(0,))
WRONG_ANNOUNCEMENT = Visit(8, 165.0, 2.0, announced_ra=150.0, detectors=(0,))
HALF_VISIT = Visit(9, 151.6, 2.0, n_snaps=2, detectors=(2,))
SNAP_WAIT = 2.0  # [s]


# -- units ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _snap(visit=1, detector=0, snap=0, n_snaps=2, offset=0) -> ReceivedSnap:
    message = image_ready(Visit(visit, 150.0, 2.0, n_snaps=n_snaps), detector, snap, Path("x"))
    return ReceivedSnap(message, ("ir", 0, offset), received_at=1.0 + offset)


def test_assembler_completes_expires_and_rejects_inconsistent_snaps():
    clock = FakeClock()
    assembler = SnapAssembler(10.0, clock=clock)
    assert assembler.add(_snap(snap=1, offset=5)) is None
    assert assembler.seconds_to_next_expiry() == pytest.approx(10.0)
    with pytest.raises(InvalidInputError, match="n_snaps=1"):
        assembler.add(_snap(snap=0, n_snaps=1, offset=6))
    done = assembler.add(_snap(snap=0, offset=7))
    assert done is not None and done.complete and not done.expired
    assert [s.message.snap for s in done.ordered_snaps()] == [0, 1]
    assert done.positions == [("ir", 0, 5), ("ir", 0, 7)]
    assert len(assembler) == 0
    assembler.add(_snap(visit=2, offset=8))
    clock.now += 9.9
    assert assembler.expired() == []
    clock.now += 0.2
    (late,) = assembler.expired()
    assert late.expired and late.visit == 2 and len(late.snaps) == 1 and len(assembler) == 0
    assembler.add(_snap(visit=3, offset=9))
    assert [p.visit for p in assembler.drop_partitions({("ir", 0)})] == [3]
    # A late copy of a snap whose exposure was handed out is recognised.
    assert assembler.already_handled(done.snaps[1])
    assert assembler.already_handled(late.snaps[0])
    assert not assembler.already_handled(_snap(visit=3))


def test_offset_tracker_never_commits_past_a_waiting_snap():
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.received(("ir", 0, offset))
    # 10 still waits for its second snap: commit no further than 10 (re-read after a crash)
    assert tracker.done([("ir", 0, 11)]) == {("ir", 0): 10}
    assert tracker.done([("ir", 0, 12)]) == {}
    assert tracker.done([("ir", 0, 10)]) == {("ir", 0): 13}
    tracker.received(("nv", 1, 4))
    assert tracker.done([("nv", 1, 4)]) == {("nv", 1): 5}
    assert tracker.committable() == {("ir", 0): 13, ("nv", 1): 5}
    tracker.forget([("ir", 0)])
    assert tracker.committable() == {("nv", 1): 5}


def test_uris_and_product_paths(tmp_path):
    assert uri_to_path("file:///data/raw/a%20b.fits") == Path("/data/raw/a b.fits")
    assert uri_to_path("/data/raw/x.fits") == Path("/data/raw/x.fits")
    with pytest.raises(InvalidInputError, match="s3"):
        uri_to_path("s3://bucket/x.fits")
    assert output_root(tmp_path.as_uri()) == tmp_path
    assert product_dir(tmp_path, "LSSTCam", 7, 94) == tmp_path / "LSSTCam" / "7" / "94"


def test_max_poll_interval_covers_the_worst_case():
    settings = WorkerSettings(
        bootstrap="b",
        group_id="g",
        output="o",
        max_exposure_seconds=300,
        retries=2,
        retry_backoff=1.0,
        delivery_timeout=10.0,
    )
    # publish: 3 attempts × 10 s + 1 + 2 s backoff = 33 s, twice (results, dead letters),
    # storage backoff 3 s, the 10 s wait for a snap file; plus the exposure and 60 s of slack.
    assert settings.max_poll_interval_ms() == 1000 * (300 + 2 * 33 + 3 + 10 + 60)
    short = WorkerSettings(
        bootstrap="b",
        group_id="g",
        output="o",
        max_exposure_seconds=1,
        retries=0,
        delivery_timeout=1,
        consumer_overrides={"session.timeout.ms": 90_000},
    )
    assert short.max_poll_interval_ms() == 90_000  # librdkafka requires >= session timeout


class FlakyProducer:
    """Acknowledges nothing for the first ``failures`` attempts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.produced: list[tuple[str, bytes]] = []
        self._pending = []

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        self.produced.append((topic, value))
        self._pending.append(on_delivery)

    def flush(self, timeout):
        ok = self.failures <= 0
        self.failures -= 1
        for callback in self._pending:
            callback(None if ok else "broker down", None)
        self._pending = []
        return 0


def test_publisher_retries_with_backoff_then_raises():
    sleeps: list[float] = []
    messages = [OutgoingMessage("t", b"k", b"v1"), OutgoingMessage("t", b"k", b"v2")]
    producer = FlakyProducer(failures=2)
    Publisher(producer, retries=3, backoff=0.5, sleep=sleeps.append).publish(messages)
    assert sleeps == [0.5, 1.0] and len(producer.produced) == 6
    sleeps.clear()
    with pytest.raises(TransientError, match="not acknowledged after 3 attempts: broker down"):
        Publisher(FlakyProducer(99), retries=2, backoff=0.1, sleep=sleeps.append).publish(messages)
    assert sleeps == [0.1, 0.2]


def test_storage_retries_then_transient():
    calls, sleeps = [], []

    def fail():
        calls.append(1)
        raise OSError("disk on fire")

    with pytest.raises(TransientError, match="disk on fire"):
        with_retries(fail, "writing", retries=2, backoff=0.25, sleep=sleeps.append)
    assert len(calls) == 3 and sleeps == [0.25, 0.5]


# -- the simulated stream ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    visits = [*MAIN_VISITS, FEW_STARS, WRONG_ANNOUNCEMENT, HALF_VISIT]
    return simulate_stream(tmp_path_factory.mktemp("stream"), visits)


def test_preloaded_shards_cover_what_the_task_reads(stream):
    loader = RefcatLoader(stream.refcat)
    preloader = Preloader(loader, load_camera(stream.camera_path), extra_margin_px=250)
    v = MAIN_VISITS[0]
    record = preloader.preload(next_visit(v, 1))
    assert record.ok and record.shards and record.n_read == len(record.shards)
    assert preloader.still_cached(record)
    # The region the task loads (header WCS, 250 px margin) needs no other shard.
    from promptcal.io import read_exposure
    from promptcal.pipeline.task import CalibrateImageTask

    misses = loader.cache_info()["misses"]
    exposure = read_exposure(stream.snaps[(1, 1)][0], band="r")
    CalibrateImageTask(CalibrateImageConfig(), refcat=loader).run(exposures=exposure)
    assert loader.cache_info()["misses"] == misses
    horizon = next_visit(v, 1).model_copy(update={"rotation_system": "HORIZON"})
    assert "SKY" in preloader.preload(horizon).error  # logged and recorded, not raised


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
    logs: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = logs.append
    stream_logger = logging.getLogger("promptcal")  # the worker logs from stream/ and service/
    old_level = stream_logger.level
    stream_logger.setLevel(logging.INFO)
    stream_logger.addHandler(handler)
    events = EventLog()
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
    producer = Producer(producer_config(bootstrap))
    sent: dict[str, tuple] = {}
    try:
        events.wait_count("ready", 1, timeout=30)
        assert http_get(worker.http_port, "/readyz")[0] == 200
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
        stream_logger.removeHandler(handler)
        stream_logger.setLevel(old_level)
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


# -- failure and lifecycle ---------------------------------------------------------------


def _run_one_exposure(stream, kafka_broker, names, group, output, *, retries):
    """Publish one image-ready and run a worker on it until it stops (60 s at most)."""
    settings = WorkerSettings(
        bootstrap=kafka_broker.bootstrap,
        group_id=group,
        output=str(output),
        topic_prefix=names.prefix,
        http_host="127.0.0.1",
        http_port=0,
        retries=retries,
        retry_backoff=0.01,
        do_warmup=False,
        consumer_overrides=FAST_GROUP,
    )
    message = image_ready(MAIN_VISITS[0], 0, 0, stream.snaps[(1, 0)][0])
    producer = Producer(producer_config(kafka_broker.bootstrap))
    produce(producer, names.image_ready, encode(message), message.key())
    worker = Worker(
        settings,
        config=CalibrateImageConfig(),
        refcat=RefcatLoader(stream.refcat),
        camera=load_camera(stream.camera_path),
    )
    watchdog = threading.Timer(60, worker.request_stop)  # bound the test if it never fails
    watchdog.start()
    try:
        return worker.run()
    finally:
        watchdog.cancel()


@pytest.mark.kafka
def test_unwritable_output_exits_transient_without_committing(stream, kafka_broker, tmp_path):
    names = TopicNames(f"f{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_broker.bootstrap, partitions=3, prefix=names.prefix)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the product root should be")
    group = f"g-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TransientError, match="after 2 retries"):
        _run_one_exposure(stream, kafka_broker, names, group, blocker, retries=2)
    offsets = committed_and_end(kafka_broker.bootstrap, group, names.image_ready)
    assert all(committed < 0 for committed, _ in offsets.values()), offsets  # nothing
    assert read_topic(kafka_broker.bootstrap, names.calibrated, timeout=2) == []


@pytest.mark.kafka
def test_failed_fsync_after_publish_commits_nothing(stream, kafka_broker, tmp_path, monkeypatch):
    """Offsets are committed only once the products are durable: a storage that keeps
    failing the fsync (after the result went out) ends the worker with nothing committed,
    so the exposure is redone (an identical re-publication)."""

    def failing_sync(paths, **_):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("promptcal.io.files.sync_paths", failing_sync)  # used by make_durable
    names = TopicNames(f"d{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_broker.bootstrap, partitions=3, prefix=names.prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TransientError, match="syncing products"):
        _run_one_exposure(stream, kafka_broker, names, group, tmp_path / "out", retries=1)
    assert len(read_topic(kafka_broker.bootstrap, names.calibrated, timeout=5)) == 1
    offsets = committed_and_end(kafka_broker.bootstrap, group, names.image_ready)
    assert all(committed < 0 for committed, _ in offsets.values()), offsets


@pytest.mark.kafka
def test_serve_is_ready_fast_and_drains_on_sigterm(kafka_broker, tmp_path, record_property):
    big = [Visit(v, 150.0 + 0.2 * v, 2.0, n_stars=400, detectors=(0,)) for v in (1, 2, 3, 4)]
    stream = simulate_stream(tmp_path / "big", big, size=2048)
    names = TopicNames(f"s{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_broker.bootstrap, partitions=3, prefix=names.prefix)
    producer = Producer(producer_config(kafka_broker.bootstrap))
    offsets = {}
    for v in big:  # all on detector 0's partition, in visit order
        message = image_ready(v, 0, 0, stream.snaps[(v.visit, 0)][0])
        offsets[v.visit] = produce(producer, names.image_ready, encode(message), message.key())
    group, grace = f"g-{uuid.uuid4().hex[:8]}", 15.0
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "promptcal",
        "serve",
        "--bootstrap",
        kafka_broker.bootstrap,
        "--group",
        group,
        "--refcat",
        str(stream.refcat),
        "--output",
        str(tmp_path / "out"),
        "--prefix",
        names.prefix,
        "--camera",
        str(stream.camera_path),
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--grace-period",
        str(grace),
        "--consumer-option",
        "session.timeout.ms=6000",
        "--consumer-option",
        "heartbeat.interval.ms=500",
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        poll_until(
            lambda: http_get(port, "/readyz", 0.5)[0] == 200 or process.poll() is not None,
            timeout=30,
            what="/readyz",
        )
        ready = time.monotonic() - started
        assert process.poll() is None, "".join(lines)
        record_property("ready_seconds", round(ready, 2))
        assert ready <= 10.0, f"ready after {ready:.1f} s"
        poll_until(
            lambda: any("processing visit=2 " in line for line in lines),
            timeout=60,
            what="visit 2 in hand",
        )
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = process.wait(timeout=grace + 10)
        stopped = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    process.stderr.close()
    log = "".join(lines)
    print(f"ready after {ready:.2f} s; worker log:\n{log}")  # shown when the test fails
    assert code == 0, log
    assert stopped < grace
    order = [
        m.group(0)
        for m in re.finditer(
            r"processing visit=\d|SIGTERM received|"
            r"calibrated visit=\d|stopped cleanly",
            log,
        )
    ]
    at = order.index("SIGTERM received")
    # The exposure in hand: the last one started; the previous one's result may still
    # be on its way from the finisher thread when the signal comes.
    in_hand = [event for event in order[:at] if event.startswith("processing visit=")][-1]
    visit = int(in_hand[-1])
    assert f"calibrated visit={visit}" not in order[:at]  # the signal came mid-exposure
    after = order[at + 1 :]
    assert after[-2:] == [f"calibrated visit={visit}", "stopped cleanly"]
    assert not any(event.startswith("processing") for event in after)  # nothing new
    calibrated = sorted(int(e[-1]) for e in order if e.startswith("calibrated"))
    assert calibrated == list(range(1, visit + 1))  # each exactly once
    results = read_topic(kafka_broker.bootstrap, names.calibrated)
    assert sorted(decode(m.value(), Calibrated).visit for m in results) == list(range(1, visit + 1))
    partition, offset = offsets[visit]
    committed = committed_and_end(kafka_broker.bootstrap, group, names.image_ready)
    assert committed[partition] == (offset + 1, offsets[4][1] + 1)  # not one past it


def _free_port() -> int:
    from promptcal.stream.broker import free_port

    return free_port()


def test_warm_up_leaves_nothing_to_compile_for_a_real_exposure(stream):
    """In a fresh process: after warm_up, calibrating a stream exposure compiles nothing."""
    script = f"""
import json, time
t0 = time.perf_counter()
from promptcal.service.warmup import warm_up, compiled_kernels
from promptcal.pipeline.task import CalibrateImageConfig, CalibrateImageTask
from promptcal.refcat import RefcatLoader
from promptcal.io import read_exposure
report = warm_up(CalibrateImageConfig())
before = compiled_kernels()
snaps = [read_exposure(p, band="r") for p in {[str(p) for p in stream.snaps[(3, 0)]]!r}]
CalibrateImageTask(CalibrateImageConfig(), refcat=RefcatLoader({str(stream.refcat)!r})).run(
    exposures=snaps)
print(json.dumps(dict(report=report.__dict__, before=before, after=compiled_kernels(),
                      total=time.perf_counter() - t0)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["report"]["status"] == "success" and out["report"]["n_compiled"] > 10
    new = {k: (out["before"][k], n) for k, n in out["after"].items() if n != out["before"][k]}
    assert new == {}, f"compiled after the warm-up: {new}"
    assert np.isfinite(out["total"])
