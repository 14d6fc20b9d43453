"""Topic names, message keys, partitioning and client defaults.

Topics
------
Five topics per instrument, named ``<prefix><kind>`` with the kinds in
:data:`TOPIC_KINDS`. The prefix is prepended verbatim, so include a separator:
``prefix="lsstcam."`` gives ``lsstcam.next-visit``. The empty prefix gives the bare
names.

Keys and co-partitioning
------------------------
``next-visit`` and ``image-ready`` are keyed by the detector number (decimal ASCII,
:func:`detector_key`) and must have the same partition count, so the worker that
preloaded a detector's reference shards also receives that detector's pixels.
``calibrated`` and ``metrics`` are keyed ``"visit:detector"`` (:func:`visit_detector_key`).

Co-partitioning only holds if every producer hashes keys the same way. librdkafka's
default partitioner is ``consistent_random`` (CRC32) while the Java client's is
murmur2, so a Java producer and a Python producer would put the same detector on
different partitions. :func:`producer_config` therefore sets
``partitioner=murmur2_random``, the Java-compatible hash, and :func:`partition_for_key`
reproduces it in pure Python so operators can tell which partition a detector lands on.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from promptcal.core.errors import InvalidInputError, TransientError

logger = logging.getLogger(__name__)

#: The topic kinds, in the order of the data flow.
TOPIC_KINDS: tuple[str, ...] = ("next-visit", "image-ready", "calibrated", "metrics", "dead-letter")

#: Topics that must share a partition count (keyed by detector).
CO_PARTITIONED_KINDS: tuple[str, ...] = ("next-visit", "image-ready")

_LEGAL_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class TopicNames:
    """The five topic names of one instrument.

    Parameters
    ----------
    prefix : str
        Prepended verbatim to each kind (e.g. ``"lsstcam."``); ``""`` for bare names.
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        for kind in TOPIC_KINDS:
            name = self.prefix + kind
            if not _LEGAL_TOPIC.match(name):
                raise InvalidInputError(
                    f"topic name {name!r} is not a legal Kafka topic name: expected 1-249 "
                    "characters from [A-Za-z0-9._-]"
                )

    def name(self, kind: str) -> str:
        """Return the topic name of ``kind`` (one of :data:`TOPIC_KINDS`)."""
        if kind not in TOPIC_KINDS:
            raise InvalidInputError(f"unknown topic kind {kind!r}; expected one of {TOPIC_KINDS}")
        return self.prefix + kind

    @property
    def next_visit(self) -> str:
        """The ``next-visit`` topic (keyed by detector)."""
        return self.name("next-visit")

    @property
    def image_ready(self) -> str:
        """The ``image-ready`` topic (keyed by detector, co-partitioned with next-visit)."""
        return self.name("image-ready")

    @property
    def calibrated(self) -> str:
        """The ``calibrated`` topic (keyed ``visit:detector``)."""
        return self.name("calibrated")

    @property
    def metrics(self) -> str:
        """The ``metrics`` topic (per-exposure timing records, keyed ``visit:detector``)."""
        return self.name("metrics")

    @property
    def dead_letter(self) -> str:
        """The ``dead-letter`` topic (original key and bytes plus error headers)."""
        return self.name("dead-letter")

    def all(self) -> list[str]:
        """All five names in :data:`TOPIC_KINDS` order."""
        return [self.name(kind) for kind in TOPIC_KINDS]


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash used by Kafka's Java client (signed, like Java's ``int``).

    Seed ``0x9747b28c``; 4-byte little-endian blocks, then the tail, then the final mix.
    """
    mask = 0xFFFFFFFF
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    n_blocks = length // 4
    for i in range(n_blocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = data[4 * n_blocks :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, n_partitions: int) -> int:
    """The partition a keyed message goes to with the murmur2 partitioner.

    Same rule as the Java client's default partitioner and librdkafka's
    ``murmur2``/``murmur2_random``: ``(murmur2(key) & 0x7fffffff) % n_partitions``.
    """
    if n_partitions < 1:
        raise InvalidInputError(f"n_partitions must be >= 1, got {n_partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka producer settings for promptcal's topics.

    ``partitioner=murmur2_random`` keeps co-partitioning consistent with Java
    producers; ``linger.ms=5`` trades at most 5 ms for batching; ``acks=all`` and
    idempotence make an acknowledged ``calibrated`` message durable and unduplicated
    by producer retries. ``overrides`` use librdkafka's dotted names.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "acks": "all",
        "enable.idempotence": True,
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka consumer settings for at-least-once, low-latency consumption.

    Offsets are stored by the application only after the outputs are delivered
    (``enable.auto.offset.store=false``, then ``store_offsets``), and committed in the
    background; ``fetch.wait.max.ms=50``: the bundled broker answers a fetch only when
    its wait expires (no early return on arrival), so the wait adds up to itself per
    hop, while 10 ms polls cost the broker ~0.07 of a core per worker; a new group starts
    from the earliest offset so no message published before the first worker is lost.
    The range assignor gives partition ``i`` of ``next-visit`` and of ``image-ready`` to
    the same member (co-partitioning); sticky or round-robin assignors would not.
    ``max.poll.interval.ms`` (default 15 min here) must exceed the worst-case time to
    process one message, or the broker evicts the worker and its messages are redone.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "fetch.wait.max.ms": 50,
        "max.poll.interval.ms": 900_000,
    }
    config.update(overrides)
    return config


# Long: idempotent creation with its checks (existing topics, partition counts,
# co-partitioning) and a numpydoc docstring of half its length.
def create_topics(
    bootstrap: str,
    partitions: int,
    prefix: str = "",
    *,
    replication_factor: int = -1,
    timeout: float = 15.0,
    client_options: dict[str, Any] | None = None,
) -> dict[str, bool]:
    """Create the five topics of one prefix; topics that already exist are left alone.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers, ``"host:port[,host:port]"``.
    partitions : int
        Partition count of every topic; bounds the number of busy workers per group.
    prefix : str
        Topic-name prefix (see :class:`TopicNames`).
    replication_factor : int
        Replicas per partition; ``-1`` uses the broker's default.
    timeout : float
        Bound on the whole operation [s].
    client_options : dict, optional
        Extra librdkafka settings of the admin client (security).

    Returns
    -------
    dict of str to bool
        Topic name -> ``True`` if created now, ``False`` if it existed.

    Raises
    ------
    InvalidInputError
        Bad arguments, or ``next-visit``/``image-ready`` exist with different partition
        counts (co-partitioning would be broken).
    TransientError
        The broker could not be reached or did not answer in time.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    if partitions < 1:
        raise InvalidInputError(f"partitions must be >= 1, got {partitions}")
    names = TopicNames(prefix)
    admin = AdminClient({"bootstrap.servers": bootstrap, **(client_options or {})})
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
        for name in names.all()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    created: dict[str, bool] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created[name] = True
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                created[name] = False
            elif error.retriable() or error.code() in (
                KafkaError._TIMED_OUT,
                KafkaError._TRANSPORT,
                KafkaError._ALL_BROKERS_DOWN,
            ):
                raise TransientError(f"creating topic {name!r} on {bootstrap}: {error}") from exc
            else:
                raise InvalidInputError(f"creating topic {name!r} on {bootstrap}: {error}") from exc
        except TimeoutError as exc:
            raise TransientError(
                f"creating topic {name!r} on {bootstrap}: no answer within {timeout} s"
            ) from exc
    # A new topic can take a moment to appear in metadata (controller propagation).
    deadline = time.monotonic() + timeout
    while True:
        counts = topic_partition_counts(bootstrap, names.all(), timeout=timeout, admin=admin)
        if len(counts) == len(TOPIC_KINDS) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = sorted(set(names.all()) - set(counts))
    if missing:
        raise TransientError(f"topics {missing} not visible in metadata within {timeout} s")
    co_counts = {names.name(kind): counts.get(names.name(kind)) for kind in CO_PARTITIONED_KINDS}
    if len(set(co_counts.values())) != 1:
        raise InvalidInputError(
            f"co-partitioned topics have different partition counts {co_counts}; "
            "next-visit and image-ready must have the same count"
        )
    for name, count in counts.items():
        if not created[name] and count != partitions:
            logger.warning(
                "topic %s already exists with %d partitions (asked %d)", name, count, partitions
            )
    return created


def topic_partition_counts(
    bootstrap: str, topics: list[str], *, timeout: float = 10.0, admin: Any = None
) -> dict[str, int]:
    """Partition count of each existing topic in ``topics`` (missing topics are omitted)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = admin or AdminClient({"bootstrap.servers": bootstrap})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TransientError(f"listing topics on {bootstrap}: {exc.args[0]}") from exc
    return {
        name: len(metadata.topics[name].partitions)
        for name in topics
        if name in metadata.topics and metadata.topics[name].error is None
    }
