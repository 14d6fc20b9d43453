"""A full output device (issue 15, deliverable 3): a bounded retry, then an exit that
commits nothing, and the exposure is calibrated once there is room again.

``promptcal serve`` runs under ``RLIMIT_FSIZE`` (256 KiB): every write past it fails
with ``EFBIG`` like ``ENOSPC`` on a full disk (Python ignores ``SIGXFSZ``), so the
calexp of a 256×256 exposure (~800 kB) cannot be written. The worker retries
(``--retries 2``), then exits with code 4 without committing or publishing; no
temporary file is left. Restarted without the limit, it calibrates the exposure.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Producer
from fault_helpers import (
    SINGLE_THREAD,
    Serve,
    TopicReader,
    check_products,
    publish_visit,
    serve_command,
    temporary_files,
)
from worker_helpers import Visit, committed_and_end, simulate_stream

from promptcal.stream.broker import free_port
from promptcal.stream.topics import TopicNames, create_topics, producer_config

pytest_plugins = ["kafka_fixtures"]

VISIT = Visit(1, 150.0, 2.0, n_stars=40, detectors=(1,))


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


@pytest.mark.kafka
@pytest.mark.slow
def test_a_full_device_is_retried_then_nothing_is_committed(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    stream = simulate_stream(tmp_path / "stream", [VISIT], size=256)
    names = TopicNames(f"st{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, partitions=3, prefix=names.prefix)
    group, output = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "out"
    command = serve_command(
        bootstrap, group, stream, names.prefix, output, free_port(), "--retries", "2"
    )
    (partition, offset), *_ = publish_visit(
        Producer(producer_config(bootstrap)), names, stream, VISIT, VISIT.detectors
    )
    log = tmp_path / "full.log"
    started = time.monotonic()
    with open(log, "wb") as sink:
        full = subprocess.run(
            command, stdout=sink, stderr=subprocess.STDOUT, timeout=120,
            env={**os.environ, **SINGLE_THREAD}, preexec_fn=_limit_file_size,
        )  # fmt: skip
    text = log.read_text()
    assert full.returncode == 4, text[-3000:]
    assert "File too large" in text and "after 2 retries" in text
    assert time.monotonic() - started < 60  # bounded: the retries, not a hang
    committed = committed_and_end(bootstrap, group, names.image_ready)
    assert committed[partition][0] < 0  # nothing committed
    reader = TopicReader(bootstrap, names, 3)
    try:
        reader.poll(2.0)
        assert reader.results == [] and reader.dead == []  # nothing published
        assert temporary_files(output) == []
        worker = Serve("roomy", command, tmp_path / "roomy.log")
        reader.wait_for({(1, 1)}, timeout=60, alive=lambda: worker.poll() is None)
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        reader.close()
    (result, _), *rest = reader.results
    assert result.status == "success" and not rest
    check_products(result)
    assert committed_and_end(bootstrap, group, names.image_ready)[partition][0] == offset + 1
