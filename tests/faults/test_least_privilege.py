"""Least privilege of a real ``promptcal serve`` process (issue 15, deliverable 5).

The worker runs with debug logging and Kafka client settings from a properties file
plus a ``PROMPTCAL_KAFKA_*`` variable carrying a secret: it calibrates an exposure (the
settings reached both clients: librdkafka accepted them), the secret appears nowhere in
its output, its HTTP endpoints listen on loopback only (read from ``/proc/net/tcp``, no
traffic to any other address), and a snap outside its ``--input-root`` is refused.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from fault_helpers import Serve, TopicReader, publish_visit, serve_command
from worker_helpers import Visit, http_get, image_ready, poll_until, produce, simulate_stream

from promptcal.service.messages import encode
from promptcal.stream.broker import free_port
from promptcal.stream.topics import TopicNames, create_topics, producer_config

pytest_plugins = ["kafka_fixtures"]

SECRET = "0042-do-not-log-me"
VISIT = Visit(1, 150.0, 2.0, n_stars=40, detectors=(0,))


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.kafka
@pytest.mark.slow
def test_secrets_stay_secret_and_the_worker_stays_in_its_roots(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    stream = simulate_stream(tmp_path / "stream", [VISIT], size=256)
    names = TopicNames(f"lp{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap, partitions=3, prefix=names.prefix)
    config = tmp_path / "client.properties"
    config.write_text(
        "security.protocol=PLAINTEXT\nclient.id=promptcal-lp\nsasl.username=promptcal\n"
    )
    port = free_port()
    command = serve_command(
        bootstrap, f"g-{uuid.uuid4().hex[:8]}", stream, names.prefix, tmp_path / "out", port,
        "--kafka-config", str(config),
    )  # fmt: skip
    command.insert(3, "-vv")  # python -m promptcal -vv serve ...: debug logging
    worker = Serve("lp", command, tmp_path / "lp.log", {"PROMPTCAL_KAFKA_SASL_PASSWORD": SECRET})
    reader = TopicReader(bootstrap, names, 3)
    outside = tmp_path / "outside.fits"
    outside.write_bytes(stream.snaps[(1, 0)][0].read_bytes())
    try:
        poll_until(lambda: http_get(port, "/readyz", 0.5)[0] == 200 or worker.poll() is not None,
                   60, "worker ready")  # fmt: skip
        assert worker.poll() is None, worker.log()[-3000:]
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, nothing else
        publish_visit(Producer(producer_config(bootstrap)), names, stream, VISIT, (0,))
        stray = image_ready(Visit(2, 150.0, 2.0, detectors=(0,)), 0, 0, outside)
        produce(Producer(producer_config(bootstrap)), names.image_ready, encode(stray), b"0")
        reader.wait_for({(1, 0)}, timeout=60, alive=lambda: worker.poll() is None)
        poll_until(lambda: reader.poll(0.2) or reader.dead, 30, "the stray's dead letter")
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        reader.close()
        if worker.poll() is None:
            worker.stop()
    log = worker.log()
    assert "DEBUG" in log and SECRET not in log
    (letter, _), *_ = reader.dead
    assert "outside" in letter.error_message and letter.error_type == "InputRefusedError"
    assert reader.results[0][0].status == "success"
