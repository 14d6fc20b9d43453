"""The streaming worker's failures and process lifecycle (issue 5).

- a worker whose product directory cannot be written exits with TransientError and
  commits nothing; one whose fsync fails after publishing commits nothing either;
- ``promptcal serve`` as a subprocess: ready within 10 s of process start (warm Numba
  cache), and SIGTERM while an exposure is in hand: it completes, its offset (and
  nothing after it) is committed, and the process exits 0 within the grace period;
- the warm-up, in a fresh process, leaves nothing to compile for a real exposure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer
from worker_helpers import (
    FAST_GROUP,
    MAIN_VISITS,
    Visit,
    committed_and_end,
    http_get,
    image_ready,
    poll_until,
    produce,
    read_topic,
    simulate_stream,
)

from promptcal.core.camera import load_camera
from promptcal.core.errors import TransientError
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.messages import Calibrated, decode, encode
from promptcal.stream.settings import WorkerSettings
from promptcal.stream.topics import TopicNames, create_topics, producer_config
from promptcal.stream.worker import Worker

pytest_plugins = ["kafka_fixtures"]


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


def _serve_command(bootstrap, group, stream, output, names, port, grace) -> list[str]:
    """``promptcal serve`` on the stream's refcat and camera, with a fast group."""
    return [
        sys.executable, "-m", "promptcal", "serve", "--bootstrap", bootstrap, "--group", group,
        "--refcat", str(stream.refcat), "--output", str(output), "--prefix", names.prefix,
        "--camera", str(stream.camera_path), "--http-host", "127.0.0.1", "--http-port", str(port),
        "--grace-period", str(grace), "--consumer-option", "session.timeout.ms=6000",
        "--consumer-option", "heartbeat.interval.ms=500",
    ]  # fmt: skip


def _lifecycle_events(log: str) -> list[str]:
    """Processing, calibrated, SIGTERM and stop lines of a worker log, in order."""
    pattern = r"processing visit=\d|SIGTERM received|calibrated visit=\d|stopped cleanly"
    return [m.group(0) for m in re.finditer(pattern, log)]


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
    command = _serve_command(kafka_broker.bootstrap, group, stream, tmp_path / "out", names,
                             port, grace)  # fmt: skip
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
    order = _lifecycle_events(log)
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
