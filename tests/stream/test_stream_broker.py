"""The local broker, topic creation, keys and co-partitioning against a real broker."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from promptcal.commands import topics as topics_command
from promptcal.core.errors import InvalidInputError
from promptcal.service.fields import detector_key
from promptcal.service.messages import ImageReady, NextVisit, decode, encode
from promptcal.stream.broker import BrokerStartupError, LocalBroker
from promptcal.stream.metrics import WorkerMetrics
from promptcal.stream.topics import (
    TOPIC_KINDS,
    TopicNames,
    create_topics,
    murmur2,
    partition_for_key,
    producer_config,
    topic_partition_counts,
)

pytest_plugins = ["kafka_fixtures"]

T0 = dt.datetime(2026, 2, 24, 3, 12, 30, tzinfo=dt.UTC)


def _image_ready(detector: int, snap: int) -> ImageReady:
    return ImageReady(
        instrument="toy",
        visit=7,
        detector=detector,
        snap=snap,
        n_snaps=2,
        band="r",
        exposure_time=15.0,
        mid_exposure_time=T0,
        uri=f"file:///raw/7/{detector}/{snap}.fits",
        produced_at=time.time(),
    )


def _next_visit(detector: int) -> NextVisit:
    return NextVisit(
        instrument="toy",
        visit=7,
        detector=detector,
        group_id="g7",
        band="r",
        boresight_ra=10.0,
        boresight_dec=-30.0,
        rotation_angle=0.0,
        start_time=T0,
        exposure_duration=15.0,
        n_snaps=2,
        private_sndStamp=time.time(),
    )


def test_murmur2_matches_java_client_vectors():
    # Known answers from Apache Kafka's UtilsTest.testMurmur2 (the Java client).
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, expected in cases.items():
        assert murmur2(key) == expected, key
    assert partition_for_key(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7


def test_topic_names_prefix_and_validation():
    names = TopicNames("lsstcam.")
    assert names.all() == [f"lsstcam.{kind}" for kind in TOPIC_KINDS]
    assert (names.next_visit, names.dead_letter) == ("lsstcam.next-visit", "lsstcam.dead-letter")
    assert TopicNames().image_ready == "image-ready"
    with pytest.raises(InvalidInputError, match="legal Kafka topic"):
        TopicNames("bad prefix/")
    with pytest.raises(InvalidInputError, match="unknown topic kind"):
        names.name("raw")


def test_broker_that_exits_is_reported_with_exit_code(tmp_path):
    with pytest.raises(BrokerStartupError, match="exited with code 3"):
        fake = tmp_path / "fake-broker"
        fake.write_text("#!/bin/sh\necho 'cannot bind' >&2\nexit 3\n")
        fake.chmod(0o755)
        LocalBroker(binary=str(fake), log_path=tmp_path / "b.log").start()
    assert "cannot bind" in (tmp_path / "b.log").read_text()


def test_broker_that_never_listens_times_out_and_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    fake = tmp_path / "silent-broker"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    fake.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(BrokerStartupError, match=r"within 0\.5 s"):
        LocalBroker(binary=str(fake), startup_timeout=0.5, stop_timeout=0.5).start()
    assert time.monotonic() - start < 5.0
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.kafka
def test_local_broker_answers_metadata(kafka_broker):
    host, port = kafka_broker.bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) == kafka_broker.port
    assert kafka_broker.is_running()
    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=5)
    assert [b.port for b in metadata.brokers.values()] == [kafka_broker.port]


@pytest.mark.kafka
def test_create_topics_is_idempotent(kafka_broker):
    prefix = "idem."
    first = create_topics(kafka_broker.bootstrap, partitions=3, prefix=prefix)
    second = create_topics(kafka_broker.bootstrap, partitions=3, prefix=prefix)
    names = TopicNames(prefix).all()
    assert first == dict.fromkeys(names, True)
    assert second == dict.fromkeys(names, False)
    counts = topic_partition_counts(kafka_broker.bootstrap, names)
    assert counts == dict.fromkeys(names, 3)


@pytest.mark.kafka
def test_create_topics_refuses_broken_co_partitioning(kafka_broker):
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic("skew.next-visit", num_partitions=2)])["skew.next-visit"].result()
    with pytest.raises(InvalidInputError, match="same count"):
        create_topics(kafka_broker.bootstrap, partitions=3, prefix="skew.")


@pytest.mark.kafka
def test_topics_create_command(kafka_broker, capsys):
    parser = argparse.ArgumentParser()
    topics_command.add_parser(parser.add_subparsers(dest="command"))
    argv = ["topics", "create", "--bootstrap", kafka_broker.bootstrap, "--partitions", "2"]
    args = parser.parse_args([*argv, "--prefix", "cli."])
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"cli.{kind}\tcreated" for kind in TOPIC_KINDS]
    assert args.handler(args) == 0
    assert capsys.readouterr().out.splitlines() == [f"cli.{kind}\texists" for kind in TOPIC_KINDS]


# Long: one end-to-end scenario against the real broker; its steps depend on each other.
@pytest.mark.kafka
def test_keyed_produce_consume_commit_and_co_partitioning(
    kafka_broker, kafka_topics, kafka_consumer_config, kafka_consume
):
    bootstrap = kafka_broker.bootstrap
    detectors = range(10)
    delivered: dict[tuple[str, bytes], set[int]] = {}

    def on_delivery(err, msg):
        assert err is None, err
        delivered.setdefault((msg.topic(), msg.key()), set()).add(msg.partition())

    producer = Producer(producer_config(bootstrap))
    for det in detectors:
        message = _next_visit(det)
        producer.produce(
            kafka_topics.next_visit, encode(message), message.key(), on_delivery=on_delivery
        )
    for snap in (0, 1):  # 20 image-ready messages: two snaps per detector
        for det in detectors:
            message = _image_ready(det, snap)
            producer.produce(
                kafka_topics.image_ready, encode(message), message.key(), on_delivery=on_delivery
            )
    # The same keys through librdkafka's default partitioner (consistent_random, CRC32).
    default_producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for det in detectors:
        default_producer.produce(
            kafka_topics.metrics, b"{}", detector_key(det), on_delivery=on_delivery
        )
    assert producer.flush(10) == 0 and default_producer.flush(10) == 0

    murmur = {det: partition_for_key(detector_key(det), 3) for det in detectors}
    assert len(set(murmur.values())) == 3  # the keys do spread over all partitions
    for det in detectors:
        key = detector_key(det)
        # Co-partitioning: a detector's next-visit and image-ready share a partition
        # index, the Java-compatible murmur2 one, for every message with that key.
        assert delivered[(kafka_topics.next_visit, key)] == {murmur[det]}
        assert delivered[(kafka_topics.image_ready, key)] == {murmur[det]}
    crc = {
        det: next(iter(delivered[(kafka_topics.metrics, detector_key(det))])) for det in detectors
    }
    assert crc != murmur  # why producer_config pins partitioner=murmur2_random

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    consumer = Consumer(
        kafka_consumer_config(
            f"{kafka_topics.prefix}workers",
            **{"statistics.interval.ms": 100, "stats_cb": metrics.update_from_librdkafka_stats},
        )
    )
    try:
        consumer.subscribe([kafka_topics.image_ready])
        messages = kafka_consume(consumer, 20)
        assert len(messages) == 20
        seen: dict[int, list[int]] = {}
        for msg in messages:
            image = decode(msg.value(), ImageReady)  # "processing"
            assert msg.key() == detector_key(image.detector)
            assert msg.partition() == murmur[image.detector]
            seen.setdefault(image.detector, []).append(image.snap)
            consumer.store_offsets(message=msg)  # only after the work is done
        assert seen == {det: [0, 1] for det in detectors}  # per-key order is kept
        consumer.commit(asynchronous=False)
        # The committed offset of each partition is one past the last processed message.
        expected = {p: 0 for p in range(3)}
        for msg in messages:
            expected[msg.partition()] = max(expected[msg.partition()], msg.offset() + 1)
        partitions = [TopicPartition(kafka_topics.image_ready, p) for p in range(3)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        assert committed == expected
        assert sum(committed.values()) == 20  # offsets start at 0: nothing skipped
        # librdkafka's own statistics, through the lag parser: all caught up.
        expected_lag = {(kafka_topics.image_ready, p): 0 for p in range(3)}
        lag_seen: dict = {}
        deadline = time.monotonic() + 10.0
        while lag_seen != expected_lag and time.monotonic() < deadline:
            consumer.poll(0.1)  # serves stats_cb
            lag_seen = {
                (kafka_topics.image_ready, p): registry.get_sample_value(
                    "promptcal_consumer_lag_messages",
                    {"topic": kafka_topics.image_ready, "partition": str(p)},
                )
                for p in range(3)
            }
        assert lag_seen == expected_lag
    finally:
        consumer.close()


_RUN_BROKER_COMMAND = """
import argparse, sys
from promptcal.commands import broker
parser = argparse.ArgumentParser()
broker.add_parser(parser.add_subparsers(dest="command"))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


@pytest.mark.kafka
def test_broker_command_serves_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_BROKER_COMMAND, "broker", "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bootstrap = process.stdout.readline().strip()
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1"
        counts = topic_partition_counts(bootstrap, TopicNames().all(), timeout=5)
        assert counts == dict.fromkeys(TopicNames().all(), 2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
            pass
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.kafka
def test_range_assignment_keeps_a_detector_s_two_topics_on_one_worker(
    kafka_topics, kafka_consumer_config
):
    group = kafka_consumer_config(f"{kafka_topics.prefix}pair")
    workers = [Consumer(group), Consumer(group)]
    both = [kafka_topics.next_visit, kafka_topics.image_ready]
    try:
        for worker in workers:
            worker.subscribe(both)
        deadline = time.monotonic() + 20.0
        assignments: list[list] = [[], []]
        # Poll both members until the group is stable with all six partitions assigned.
        while time.monotonic() < deadline:
            for i, worker in enumerate(workers):
                worker.poll(0.05)
                assignments[i] = worker.assignment()
            if sum(len(a) for a in assignments) == 6 and all(assignments):
                break
        assert sum(len(a) for a in assignments) == 6
        owned = []
        for assignment in assignments:
            by_topic = {t: {tp.partition for tp in assignment if tp.topic == t} for t in both}
            assert by_topic[kafka_topics.next_visit] == by_topic[kafka_topics.image_ready]
            owned.append(by_topic[kafka_topics.image_ready])
        assert owned[0] | owned[1] == {0, 1, 2} and not owned[0] & owned[1]
    finally:
        for worker in workers:
            worker.close()
