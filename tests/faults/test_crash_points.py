"""Crash points (issue 15, deliverable 1): SIGKILL a worker at each step, 20 times.

Two ``promptcal serve`` workers share a group and one product root (as in production:
shared storage). A seeded sequence of 20 crash points (``promptcal.core.crashpoints``:
preload, calibration, finisher with the calexp half written, a product complete under
its temporary name, products written, published but not committed, durable but not
committed) arms each worker as it is (re)started; a worker that reaches its point kills
itself with SIGKILL and is restarted with the next one. Visits (3 detectors of 256×256
px) are published while crashes are still to come. Then both workers drain (SIGTERM)
and the test checks:

- every published exposure has a ``calibrated`` result, and all the results of one
  exposure are identical apart from their wall-clock fields (exactly one distinct
  result: duplicates are byte-identical re-publications);
- every product of every result is complete and readable under its final path;
- no temporary product file is left anywhere (each restart swept the crashed one's);
- the group's committed offset of every ``image-ready`` partition is its end.
"""

from __future__ import annotations

import random
import re
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
    temporary_files,
)
from worker_helpers import Visit, committed_and_end, simulate_stream

from promptcal.stream.broker import free_port
from promptcal.stream.topics import TopicNames, create_topics, producer_config

pytest_plugins = ["kafka_fixtures"]

SEED = 20261204
N_CRASHES = 20
STEPS = (
    "preload",
    "calibration",
    "finisher",
    "before_rename",
    "products_written",
    "published",
    "durable",
)
DETECTORS = (0, 1, 2)
VISITS = [Visit(v, 150.0 + 0.05 * v, 2.0, n_stars=40) for v in range(1, 31)]
BACKLOG = 4  # exposures published but not answered yet


def crash_plan(seed: int = SEED, n: int = N_CRASHES) -> list[tuple[str, int]]:
    """(crash point, hit count) for each (re)start, every step at least twice."""
    rng = random.Random(seed)
    plan = [(step, rng.randint(1, 2)) for step in STEPS * 2]
    plan += [(rng.choice(STEPS), rng.randint(1, 2)) for _ in range(n - len(plan))]
    rng.shuffle(plan)
    return plan


@pytest.mark.kafka
@pytest.mark.slow
def test_sigkill_at_every_step_loses_nothing(kafka_broker, tmp_path, record_property):
    started = time.monotonic()
    bootstrap = kafka_broker.bootstrap
    stream = simulate_stream(tmp_path / "stream", VISITS, size=256)
    names = TopicNames(f"cp{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, partitions=4, prefix=names.prefix)
    group, output = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "out"
    plan, crashes = crash_plan(), []
    ports = {"a": free_port(), "b": free_port()}
    starts = {"a": 0, "b": 0}

    def start(name: str) -> Serve:
        env = {}
        if plan:
            step, count = plan.pop(0)
            env["PROMPTCAL_CRASH_AT"] = f"{step}:{count}"
        starts[name] += 1
        command = serve_command(bootstrap, group, stream, names.prefix, output, ports[name])
        worker = Serve(name, command, tmp_path / f"{name}{starts[name]}.log", env)
        worker.armed = env.get("PROMPTCAL_CRASH_AT")
        return worker

    workers = {name: start(name) for name in ports}
    retired: list[Serve] = []
    reader = TopicReader(bootstrap, names, 4)
    producer = Producer(producer_config(bootstrap))
    published: set[tuple[int, int]] = set()
    last_offset: dict[int, int] = {}
    try:
        visits = iter(VISITS)
        while len(crashes) < N_CRASHES:
            reader.poll(0.1)
            for name, worker in list(workers.items()):
                code = worker.poll()
                if code is None:
                    continue
                assert code == -signal.SIGKILL, f"{name} exited {code}:\n{worker.log()[-3000:]}"
                crashes.append(worker.armed)
                retired.append(worker)
                worker.stop()
                workers[name] = start(name)
            if len(published - reader.keys()) < BACKLOG:
                visit = next(visits, None)
                assert visit is not None, f"stream exhausted after {len(crashes)} crashes"
                for partition, offset in publish_visit(producer, names, stream, visit, DETECTORS):
                    last_offset[partition] = max(offset, last_offset.get(partition, -1))
                published |= {(visit.visit, d) for d in DETECTORS}
        # Every crash has been injected: let the (unarmed) workers finish the stream.
        reader.wait_for(published, timeout=120, alive=lambda: any(
            w.poll() is None for w in workers.values()))  # fmt: skip
        for worker in workers.values():
            assert worker.stop(signal.SIGTERM) == 0, worker.log()[-3000:]
        committed = committed_and_end(bootstrap, group, names.image_ready)
        reader.poll(1.0)
    finally:
        reader.close()
        for worker in workers.values():
            if worker.poll() is None:
                worker.stop()
    elapsed = time.monotonic() - started

    assert len(crashes) == N_CRASHES and {c.split(":")[0] for c in crashes} == set(STEPS)
    assert temporary_files(output) == []
    for partition, offset in last_offset.items():
        assert committed[partition][0] == offset + 1, (partition, committed)
    logs = "".join(w.log() for w in [*retired, *workers.values()])
    figures = _check_results(reader, published, crashes, logs)
    figures["seconds"] = round(elapsed, 1)
    record_property("crash_points", figures)
    print(f"crash points: {figures}")


def _check_results(reader, published: set, crashes: list[str], logs: str) -> dict:
    """Exactly one distinct result per exposure, sound products; the figures."""
    distinct = distinct_results(reader.results)
    assert set(distinct) == published  # nothing lost, nothing extra
    assert all(len(v) == 1 for v in distinct.values()), {
        k: v for k, v in distinct.items() if len(v) > 1
    }
    for result, _ in reader.results:
        assert result.status == "success", result
        check_products(result)
    assert reader.dead == []
    return {
        "crashes": len(crashes),
        "by_step": {s: sum(c.startswith(s + ":") for c in crashes) for s in STEPS},
        "exposures": len(published),
        "lost": len(published - set(distinct)),
        "duplicate_messages": len(reader.results) - len(distinct),
        "temporary_files_swept": sum(
            int(n) for n in re.findall(r"removed (\d+) temporary file", logs)
        ),
    }
