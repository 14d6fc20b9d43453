"""Unit tests of the streaming worker's parts (issue 5): snap assembly, offset tracking,
URIs and product paths, the poll interval, publisher and storage retries, the preloader."""

from __future__ import annotations

from pathlib import Path

import pytest
from worker_helpers import MAIN_VISITS, Visit, image_ready, next_visit

from promptcal.core.camera import load_camera
from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.assembler import ReceivedSnap, SnapAssembler
from promptcal.service.locations import output_root, product_dir, uri_to_path
from promptcal.service.outcome import OutgoingMessage
from promptcal.service.preload import Preloader
from promptcal.service.retries import with_retries
from promptcal.stream.offsets import OffsetTracker
from promptcal.stream.publish import Publisher
from promptcal.stream.settings import WorkerSettings


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
    # storage backoff 3 s; plus the exposure and 60 s of slack.
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
