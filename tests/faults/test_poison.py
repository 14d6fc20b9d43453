"""Poison messages and hostile files (issue 15, deliverable 3), through one worker and
the bundled broker.

Good exposures are interleaved with every poison case of the issue; each case must end
as the outcome it is listed with (a ``calibrated`` result, or a dead letter whose
headers give the reason), the worker must never stop, and every input offset must be
committed once it drained: never a crash loop, a hang or a silent skip. Then the
dead-lettered missing snap is written and its dead letter re-published as it was: it
is calibrated (it used to be skipped as a "late duplicate" and committed).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from worker_helpers import (
    EventLog,
    Visit,
    committed_and_end,
    image_ready,
    next_visit,
    produce,
    read_topic,
    simulate_stream,
)

from promptcal.core.camera import load_camera
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.dead_letter import DeadLetter
from promptcal.service.messages import Calibrated, decode, encode
from promptcal.stream.settings import WorkerSettings
from promptcal.stream.topics import TopicNames, create_topics, producer_config
from promptcal.stream.worker import Worker

pytest_plugins = ["kafka_fixtures"]

GOOD = [Visit(v, 150.0 + 0.05 * v, 2.0, n_stars=40, detectors=(0,)) for v in (1, 2, 3)]
FILE_WAIT = 1.5  # [s]


def _poison_cases(stream, raw: os.PathLike, outside) -> list[tuple[str, str, str, object]]:
    """(name, topic kind, expected outcome, value bytes or an ImageReady to encode)."""
    good = GOOD[0]
    snap = stream.snaps[(1, 0)][0]
    base = json.loads(encode(image_ready(good, 0, 0, snap)))

    def variant(**changes) -> bytes:
        return json.dumps({**base, **changes}).encode()

    def at(visit: int, path) -> object:
        return image_ready(Visit(visit, good.ra, good.dec, detectors=(0,)), 0, 0, path)

    nested = b'{"schema_version": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        ("nested JSON (RecursionError)", "image-ready", "dead", nested),
        ("nested JSON next-visit", "next-visit", "dead", nested),
        ("not UTF-8", "image-ready", "dead", b"\xff\xfe\x00garbage"),
        ("null value", "image-ready", "dead", None),
        ("unknown schema version", "image-ready", "dead", variant(schema_version=2)),
        ("missing fields", "image-ready", "dead", b'{"schema_version": 1}'),
        ("instrument ..", "image-ready", "dead", variant(instrument="..")),
        ("instrument absolute", "image-ready", "dead", variant(instrument="/tmp/x")),
        ("visit 10^30", "image-ready", "dead", variant(visit=10**30)),
        ("NUL in uri", "image-ready", "dead", variant(uri="/raw/a\u0000b.fits")),
        ("s3 uri", "image-ready", "dead", variant(uri="s3://bucket/x.fits")),
        ("outside the input root", "image-ready", "dead", at(201, outside)),
        ("symlink out of the root", "image-ready", "dead", at(202, raw / "link.fits")),
        ("FIFO", "image-ready", "dead", at(203, raw / "pipe.fits")),
        ("50k x 50k header", "image-ready", "dead", at(204, raw / "huge.fits")),
        ("file over the size limit", "image-ready", "dead", at(205, raw / "big.fits")),
        ("old truncated file", "image-ready", "dead", at(206, raw / "truncated.fits")),
        ("never appears", "image-ready", "dead", at(207, raw / "never.fits")),
        ("all-NaN image", "image-ready", "dead", at(208, raw / "nan.fits")),
        ("appears late", "image-ready", "result", at(209, raw / "late.fits")),
        ("still being written", "image-ready", "result", at(210, raw / "growing.fits")),
        ("constant image", "image-ready", "result", at(211, raw / "constant.fits")),
        ("saturated image", "image-ready", "result", at(212, raw / "saturated.fits")),
    ]


def _hostile_files(stream, raw, outside) -> dict[str, object]:
    """Write the hostile files; returns the writes to do later (late, growing)."""
    from promptcal.io import read_exposure, write_exposure

    snap = stream.snaps[(1, 0)][0]
    data = snap.read_bytes()
    outside.write_bytes(data)
    (raw / "link.fits").symlink_to(outside)
    os.mkfifo(raw / "pipe.fits")
    header = (
        b"SIMPLE  =                    T".ljust(80)
        + b"BITPIX  =                  -32".ljust(80)
        + b"NAXIS   =                    2".ljust(80)
        + b"NAXIS1  =                50000".ljust(80)
        + b"NAXIS2  =                50000".ljust(80)
        + b"END".ljust(80)
    ).ljust(2880)
    (raw / "huge.fits").write_bytes(header + b"\0" * 2880)  # 10 GB of pixels claimed
    with open(raw / "big.fits", "wb") as f:
        f.truncate(64 * 2**20)
    (raw / "truncated.fits").write_bytes(data[: len(data) // 2])
    old = time.time() - 3600
    os.utime(raw / "truncated.fits", (old, old))
    exposure = read_exposure(snap)
    for name, value in (("nan", float("nan")), ("constant", 500.0), ("saturated", 1e9)):
        exposure.image[:] = value
        write_exposure(exposure, raw / f"{name}.fits")
    (raw / "growing.fits").write_bytes(data[: len(data) // 3])

    def grow() -> None:
        with open(raw / "growing.fits", "ab") as f:
            f.write(data[len(data) // 3 :])

    return {"late": lambda: (raw / "late.fits").write_bytes(data), "growing": grow}


@pytest.mark.kafka
@pytest.mark.slow
def test_every_poison_case_ends_as_a_result_or_a_dead_letter(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    stream = simulate_stream(tmp_path / "stream", GOOD, size=256)
    raw, outside = stream.root / "raw", tmp_path / "secret.fits"
    later = _hostile_files(stream, raw, outside)
    cases = _poison_cases(stream, raw, outside)
    names = TopicNames(f"po{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, partitions=3, prefix=names.prefix)
    settings = WorkerSettings(
        bootstrap=bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}",
        output=str(tmp_path / "out"), input_roots=(str(raw),), max_file_mb=16.0,
        max_pixels=1024 * 1024, file_wait=FILE_WAIT, topic_prefix=names.prefix,
        http_port=0, do_warmup=False, retry_backoff=0.05,
        consumer_overrides={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )  # fmt: skip
    events = EventLog()
    worker = Worker(
        settings, config=CalibrateImageConfig(), refcat=RefcatLoader(stream.refcat),
        camera=load_camera(stream.camera_path), listener=events,
    )  # fmt: skip
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run(worker, failure), name="worker")
    thread.start()
    producer = Producer(producer_config(bootstrap))
    sent: dict[tuple[str, int, int], str] = {}
    try:
        events.wait_count("ready", 1)
        for v in GOOD:
            produce(producer, names.next_visit, encode(next_visit(v, 0)), b"0")
        for name, kind, _, value in cases:
            if not isinstance(value, bytes | None):
                value = encode(value)
            if name in ("appears late", "still being written"):
                threading.Timer(0.5, later["late" if "late" in name else "growing"]).start()
            sent[(names.name(kind), *produce(producer, names.name(kind), value, b"0"))] = name
            good = GOOD[len(sent) % len(GOOD)]  # a good exposure between poison cases
            message = image_ready(good, 0, 0, stream.snaps[(good.visit, 0)][0])
            produce(producer, names.image_ready, encode(message), b"0")
        n_dead = sum(outcome == "dead" for _, _, outcome, _ in cases)
        n_results = sum(outcome == "result" for _, _, outcome, _ in cases) + len(cases)
        events.wait_count("dead_letter", n_dead, timeout=120)
        events.wait_count("calibrated", n_results, timeout=120)
        assert thread.is_alive() and not failure, failure
        # The missing snap is written now; its dead letter is replayed as it was.
        letters = read_topic(bootstrap, names.dead_letter)
        (never,) = [m for m in letters if m.value() and b"never.fits" in m.value()]
        (raw / "never.fits").write_bytes(stream.snaps[(1, 0)][0].read_bytes())
        produce(producer, names.image_ready, never.value(), never.key())
        events.wait_count("calibrated", n_results + 1, timeout=60)
    finally:
        worker.request_stop()
        thread.join(60)
    assert not thread.is_alive() and not failure, failure
    letters = [
        DeadLetter.from_headers(m.headers()) for m in read_topic(bootstrap, names.dead_letter)
    ]
    dead = {(d.source_topic, d.source_partition, d.source_offset): d for d in letters}
    results = [decode(m.value(), Calibrated) for m in read_topic(bootstrap, names.calibrated)]
    assert len(letters) == len(dead)  # one dead letter per rejected message
    for position, name in sent.items():
        expected = next(outcome for n, _, outcome, _ in cases if n == name)
        if expected == "dead":
            assert position in dead, f"{name}: no dead letter"
            assert dead[position].error_message, name
        else:
            assert position not in dead, (name, dead.get(position))
    _check_reasons_and_results(sent, dead, results)
    for topic in (names.next_visit, names.image_ready):
        offsets = committed_and_end(bootstrap, settings.group_id, topic)
        assert all(c == e if e else c < 0 for c, e in offsets.values()), offsets
    print(f"poison: {len(cases)} cases, {len(dead)} dead letters, {len(results)} results")


def _check_reasons_and_results(sent: dict, dead: dict, results: list) -> None:
    """The dead letters say why; the late, growing, odd and replayed files are results."""
    by_visit = {r.visit: r for r in results}
    reasons = {sent[k]: v.error_message for k, v in dead.items() if k in sent}
    assert "nested too deeply" in reasons["nested JSON (RecursionError)"]
    assert "outside" in reasons["outside the input root"]
    assert "outside" in reasons["symlink out of the root"]
    assert "not a regular file" in reasons["FIFO"]
    assert "pixels, more than" in reasons["50k x 50k header"]
    assert "bytes, more than" in reasons["file over the size limit"]
    assert "waited 1.5 s" in reasons["never appears"]
    assert "instrument" in reasons["instrument .."]
    for visit in (209, 210):  # late and growing files: calibrated like the original
        assert by_visit[visit].status == "success", by_visit[visit]
    for visit in (211, 212):  # constant and saturated images: a result, failed or not
        assert by_visit[visit].status in ("success", "failed")
    assert by_visit[207].status == "success"  # the replayed dead letter, not skipped


def _run(worker: Worker, failure: list) -> None:
    try:
        worker.run()
    except BaseException as exc:  # reported by the test
        failure.append(exc)
