"""Kafka fixtures: the bundled broker on a free port, and fresh topics per test.

Load them as a plugin from a test module (pytest puts ``tests/`` on ``sys.path``)::

    pytest_plugins = ["kafka_fixtures"]

(do not also import it: pytest must import it first to rewrite its asserts).
``kafka_broker`` is one broker for the whole session (a plugin's fixtures are global,
whichever module loads it);
``kafka_topics`` creates the five promptcal topics (3 partitions) under a prefix unique
to the test, so tests never see each other's messages or consumer groups. ``kafka_consumer_config``
gives consumer settings that join a group in a few seconds, ``kafka_consume`` a helper
that polls a given number of messages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from promptcal.stream.broker import LocalBroker
from promptcal.stream.topics import TopicNames, consumer_config, create_topics

#: Group-join settings that keep a consumer-group test to a few seconds.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """A running local broker; ``.bootstrap`` is ``"127.0.0.1:PORT"``."""
    with LocalBroker(startup_timeout=20.0, stop_timeout=1.0) as broker:
        yield broker


@pytest.fixture
def kafka_topics(kafka_broker: LocalBroker) -> TopicNames:
    """The five topics, 3 partitions each, under a prefix unique to this test."""
    names = TopicNames(f"t{uuid.uuid4().hex[:10]}.")
    create_topics(kafka_broker.bootstrap, partitions=3, prefix=names.prefix)
    return names


@pytest.fixture
def kafka_consumer_config(kafka_broker: LocalBroker) -> Callable[..., dict[str, Any]]:
    """``make(group_id, **overrides)``: promptcal's consumer settings plus fast group joins."""

    def make(group_id: str, **overrides: Any) -> dict[str, Any]:
        return consumer_config(kafka_broker.bootstrap, group_id, **{**FAST_GROUP, **overrides})

    return make


@pytest.fixture
def kafka_consume() -> Callable[..., list]:
    """``consume(consumer, n, timeout=20)``: poll until ``n`` messages have arrived."""
    return _consume


def _consume(consumer, n: int, timeout: float = 20.0) -> list:
    """Poll until ``n`` messages (errors fail the test) or ``timeout`` [s] has passed."""
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < n and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        assert message.error() is None, message.error()
        messages.append(message)
    return messages
