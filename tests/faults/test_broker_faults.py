"""Broker faults (issue 15, deliverable 2), each with its own bundled broker and two
``promptcal serve`` workers.

- **Paused** (SIGSTOP for 20 s while exposures are in flight, SIGCONT): the workers stay
  up, their publishes are retried past the pause, their group sessions expire and they
  rejoin; every exposure ends with exactly one distinct result and every offset is
  committed after the drain.
- **Killed and restarted** (SIGKILL, restarted on the same port): the bundled broker
  keeps nothing (memory storage), so its topics, messages and committed offsets are
  gone; the workers stay up through the outage (no exit, no crash loop), reconnect,
  replace their fenced idempotent producers, and once the topics exist again calibrate
  what the upstream re-publishes (every exposure without a result yet); every exposure
  ends with one distinct result. ``docs/worker.md`` says what a persistent cluster
  changes (messages and commits survive; in-flight exposures are redone from the
  last commit).
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from confluent_kafka import Producer
from fault_helpers import (
    Serve,
    TopicReader,
    check_products,
    distinct_results,
    publish_visit,
    serve_command,
)
from worker_helpers import Visit, committed_and_end, simulate_stream

from promptcal.stream.broker import LocalBroker, free_port
from promptcal.stream.topics import TopicNames, create_topics, producer_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DETECTORS = (0, 1, 2)
VISITS = [Visit(v, 150.0 + 0.05 * v, 2.0, n_stars=40) for v in range(1, 9)]
PAUSE = 20.0  # [s]


@pytest.fixture
def stream(tmp_path):
    return simulate_stream(tmp_path / "stream", VISITS, size=256)


def _start_workers(broker, stream, names, group, output, tmp_path, tag) -> dict[str, Serve]:
    workers = {}
    for name in ("a", "b"):
        command = serve_command(
            broker.bootstrap, group, stream, names.prefix, output, free_port(),
            "--delivery-timeout", "5", "--retries", "8",
        )  # fmt: skip
        workers[name] = Serve(name, command, tmp_path / f"{tag}-{name}.log")
    return workers


def _check(reader: TopicReader, published: set, workers: dict) -> None:
    distinct = distinct_results(reader.results)
    assert set(distinct) == published
    assert all(len(v) == 1 for v in distinct.values()), distinct
    for result, _ in reader.results:
        assert result.status == "success"
        check_products(result)
    for worker in workers.values():
        assert worker.poll() is None, worker.log()[-3000:]


def test_a_broker_paused_for_20_s_loses_nothing(stream, tmp_path):
    with LocalBroker(startup_timeout=20.0) as broker:
        names = TopicNames(f"bp{uuid.uuid4().hex[:8]}.")
        create_topics(broker.bootstrap, partitions=4, prefix=names.prefix)
        group, output = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "out"
        workers = _start_workers(broker, stream, names, group, output, tmp_path, "pause")
        reader = TopicReader(broker.bootstrap, names, 4)
        producer = Producer(producer_config(broker.bootstrap))
        published: set = set()
        last: dict[int, int] = {}
        try:
            for visit in VISITS[:2]:
                for p, o in publish_visit(producer, names, stream, visit, DETECTORS):
                    last[p] = max(o, last.get(p, -1))
                published |= {(visit.visit, d) for d in DETECTORS}
            reader.wait_for({(1, d) for d in DETECTORS}, timeout=60)
            for visit in VISITS[2:5]:  # in flight when the broker stops
                for p, o in publish_visit(producer, names, stream, visit, DETECTORS):
                    last[p] = max(o, last.get(p, -1))
                published |= {(visit.visit, d) for d in DETECTORS}
            broker._process.send_signal(signal.SIGSTOP)
            paused_at = time.monotonic()
            time.sleep(PAUSE)  # the fault itself: the broker answers nothing for 20 s
            broker._process.send_signal(signal.SIGCONT)
            for worker in workers.values():
                assert worker.poll() is None, worker.log()[-3000:]
            reader.wait_for(published, timeout=120)
            recovered = time.monotonic() - paused_at - PAUSE
            _check(reader, published, workers)
            for worker in workers.values():
                assert worker.stop(signal.SIGTERM) == 0, worker.log()[-3000:]
            committed = committed_and_end(broker.bootstrap, group, names.image_ready)
            assert {p: committed[p][0] for p in last} == {p: o + 1 for p, o in last.items()}
        finally:
            reader.close()
            for worker in workers.values():
                if worker.poll() is None:
                    worker.stop()
    print(f"broker paused {PAUSE:.0f} s: all {len(published)} exposures, "
          f"{len(reader.results) - len(published)} duplicates, last result "
          f"{recovered:.1f} s after SIGCONT")  # fmt: skip


def test_a_broker_killed_and_restarted_loses_nothing(stream, tmp_path):
    port = free_port()
    names = TopicNames(f"bk{uuid.uuid4().hex[:8]}.")
    group, output = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "out"
    broker = LocalBroker(port, startup_timeout=20.0).start()
    workers: dict[str, Serve] = {}
    reader = None
    try:
        create_topics(broker.bootstrap, partitions=4, prefix=names.prefix)
        workers = _start_workers(broker, stream, names, group, output, tmp_path, "kill")
        reader = TopicReader(broker.bootstrap, names, 4)
        producer = Producer(producer_config(broker.bootstrap))
        for visit in VISITS[:4]:
            publish_visit(producer, names, stream, visit, DETECTORS)
        reader.wait_for({(1, d) for d in DETECTORS}, timeout=60)
        reader.poll(0.5)
        before = list(reader.results)  # what the upstream saw before the broker died
        broker._process.kill()  # SIGKILL: memory storage, everything is gone
        broker.stop()
        time.sleep(3.0)  # the outage
        for worker in workers.values():
            assert worker.poll() is None, worker.log()[-3000:]
        broker = LocalBroker(port, startup_timeout=20.0).start()
        create_topics(broker.bootstrap, partitions=4, prefix=names.prefix)
        reader.close()
        reader = TopicReader(broker.bootstrap, names, 4)
        reader.results.extend(before)
        answered = {(r.visit, r.detector) for r, _ in before}
        producer = Producer(producer_config(broker.bootstrap))
        for visit in VISITS:  # the upstream re-publishes what has no result yet
            missing = tuple(d for d in DETECTORS if (visit.visit, d) not in answered)
            if missing:
                publish_visit(producer, names, stream, visit, missing)
        published = {(v.visit, d) for v in VISITS for d in DETECTORS}
        reader.wait_for(published, timeout=180)
        _check(reader, published, workers)
        replaced = sum(w.log().count("replacing the producer") for w in workers.values())
        for worker in workers.values():
            assert worker.stop(signal.SIGTERM) == 0, worker.log()[-3000:]
    finally:
        if reader is not None:
            reader.close()
        for worker in workers.values():
            if worker.poll() is None:
                worker.stop()
        broker.stop()
    print(f"broker killed and restarted: {len(before)} results before, all {len(published)} "
          f"after; {replaced} producer(s) replaced")  # fmt: skip
