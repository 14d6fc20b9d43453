"""librdkafka settings from the environment, for every Kafka client of a process.

Kafka security (SASL, TLS) must reach the consumer, the producer and the admin client
alike, and its secrets should not appear on a command line (``ps``, pod specs). On
Kubernetes they come from a Secret as environment variables; ``promptcal serve`` and
``promptcal topics create`` read every variable named ``PROMPTCAL_KAFKA_<NAME>`` and pass
it to librdkafka as the property ``<name>`` lower-cased with ``_`` replaced by ``.``:

========================================  ============================
variable                                  librdkafka property
========================================  ============================
``PROMPTCAL_KAFKA_SECURITY_PROTOCOL``     ``security.protocol``
``PROMPTCAL_KAFKA_SASL_MECHANISM``        ``sasl.mechanism``
``PROMPTCAL_KAFKA_SASL_USERNAME``         ``sasl.username``
``PROMPTCAL_KAFKA_SASL_PASSWORD``         ``sasl.password``
``PROMPTCAL_KAFKA_SSL_CA_LOCATION``       ``ssl.ca.location``
========================================  ============================

librdkafka property names use dots only, so the mapping is unambiguous; librdkafka
rejects an unknown name when the client is created (the worker exits 2).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Prefix of the environment variables that become librdkafka settings.
ENV_PREFIX = "PROMPTCAL_KAFKA_"


def property_name(variable: str) -> str:
    """The librdkafka property of an environment variable name (prefix included)."""
    if not variable.startswith(ENV_PREFIX) or len(variable) == len(ENV_PREFIX):
        raise ValueError(f"{variable!r} is not {ENV_PREFIX}<NAME>")
    return variable[len(ENV_PREFIX) :].lower().replace("_", ".")


def client_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings from the ``PROMPTCAL_KAFKA_*`` variables of ``environ``.

    Parameters
    ----------
    environ : mapping, optional
        Variables to read (default: ``os.environ``).

    Returns
    -------
    dict of str to str
        Property name -> value (librdkafka parses the strings itself); empty when no
        variable is set.
    """
    env = os.environ if environ is None else environ
    return {
        property_name(name): value
        for name, value in sorted(env.items())
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }
