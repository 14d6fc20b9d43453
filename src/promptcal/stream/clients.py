"""The worker's Kafka clients, and their security settings from a file or the environment.

Security settings (``security.protocol``, ``sasl.*``, ``ssl.*``, ...) apply to **every**
client of the worker, the consumer and the producer alike (a secured cluster refuses a
producer that lacks them). They come from, later ones winning:

1. a properties file (``--kafka-config FILE``): ``name=value`` lines in librdkafka's
   names, ``#`` comments, as a Java ``client.properties``;
2. the environment: ``PROMPTCAL_KAFKA_SASL_PASSWORD=...`` sets ``sasl.password``
   (after the prefix, ``_`` becomes ``.`` and the name is lower-cased; librdkafka's
   names have no ``_``).

Values stay strings (librdkafka parses every value from text), so a password such as
``007`` or ``1e3`` is passed as written. They are held as
:class:`pydantic.SecretStr` in :class:`~promptcal.stream.settings.WorkerSettings`, so
neither its ``repr`` nor a log line shows them; :func:`redacted` masks a config for
logging. Secrets never go on the command line (visible in ``ps``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptcal.core.errors import InvalidInputError, TransientError
from promptcal.service.retries import retry_delays
from promptcal.stream.topics import consumer_config, producer_config

logger = logging.getLogger(__name__)

#: Environment variables with this prefix are client settings.
ENV_PREFIX = "PROMPTCAL_KAFKA_"
#: Names whose values are never shown, even redacted configs keep only their presence.
_SECRET_NAME = re.compile(r"password|secret|key|token|credential|jaas", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9.]*[a-z0-9]$")


def parse_properties(text: str, where: str) -> dict[str, str]:
    """``name=value`` lines (``#``/``!`` comments, blank lines ignored) -> dict.

    Raises
    ------
    InvalidInputError
        A line without ``=`` or an implausible name (the value is not quoted).
    """
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        name, sep, value = stripped.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise InvalidInputError(f"{where}:{number}: expected name=value with a librdkafka name")
        out[name] = value.strip()
    return out


def load_client_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Client settings from the properties file ``path`` and ``PROMPTCAL_KAFKA_*``.

    Raises
    ------
    InvalidInputError
        The file cannot be read or parsed.
    """
    settings: dict[str, str] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise InvalidInputError(f"Kafka client settings {path}: {exc}") from exc
        settings.update(parse_properties(text, os.fspath(path)))
    for variable, value in sorted((os.environ if environ is None else environ).items()):
        if variable.startswith(ENV_PREFIX) and len(variable) > len(ENV_PREFIX):
            settings[property_name(variable)] = value
    return settings


def property_name(variable: str) -> str:
    """The librdkafka property of a ``PROMPTCAL_KAFKA_<NAME>`` variable
    (``PROMPTCAL_KAFKA_SASL_PASSWORD`` -> ``sasl.password``)."""
    if not variable.startswith(ENV_PREFIX) or len(variable) == len(ENV_PREFIX):
        raise ValueError(f"{variable!r} is not {ENV_PREFIX}<NAME>")
    return variable[len(ENV_PREFIX) :].lower().replace("_", ".")


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with secret-looking values replaced by ``'***'`` (for logs)."""
    return {k: "***" if _SECRET_NAME.search(k) else v for k, v in config.items()}


def client_configs(settings, **consumer_extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(consumer, producer) librdkafka configs of a worker: both get the client settings.

    ``consumer_extra`` (callbacks, derived timeouts) go to the consumer only, under the
    settings' ``consumer_overrides``.
    """
    shared = settings.client_overrides()
    consumer = consumer_config(
        settings.bootstrap,
        settings.group_id,
        **{**shared, **consumer_extra, **settings.consumer_overrides},
    )
    producer = producer_config(
        settings.bootstrap,
        **{**shared, "message.timeout.ms": int(1000 * settings.delivery_timeout)},
    )
    return consumer, producer


def connect_consumer(consumer: Any, settings, wanted: list[str]) -> None:
    """Wait (with the retries) until the broker answers and check the topics exist.

    Raises
    ------
    TransientError
        The broker stayed unreachable.
    InvalidInputError
        A topic is missing.
    """
    from confluent_kafka import KafkaException

    for delay in [*retry_delays(settings.retries, settings.retry_backoff), None]:
        try:
            metadata = consumer.list_topics(timeout=settings.delivery_timeout)
            break
        except KafkaException as exc:
            if delay is None:
                raise TransientError(f"broker {settings.bootstrap} unreachable: {exc}") from exc
            time.sleep(delay)
    missing = [t for t in wanted if t not in metadata.topics]
    if missing:
        raise InvalidInputError(
            f"topics {missing} do not exist on {settings.bootstrap}; create them with "
            "`promptcal topics create`"
        )
