"""The streaming layer: Kafka topics, message schemas, the local broker, health and metrics.

Modules
-------
``topics``
    Topic names (with an instrument prefix), message keys, the partitioner, client
    configuration defaults and idempotent topic creation.
``schemas``
    The validated JSON messages (``NextVisit``, ``ImageReady``, ``Calibrated``,
    ``MetricsRecord``) and the dead-letter header conventions.
``broker``
    ``LocalBroker``: the bundled Kafka-protocol broker for the demo and the tests.
``http``
    ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

Nothing here is imported by the calibration stages (see ``docs/streaming.md``).
"""
