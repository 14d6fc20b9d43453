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
``worker``, ``settings``
    The consume loop of ``promptcal serve`` and its documented settings.
``assembler``, ``preload``, ``process``, ``publish``
    Snap collection and offset tracking, refcat preload on ``next-visit``, reading and
    calibrating an exposure and writing its products, and acknowledged publishing.
``warmup``
    Compiles every Numba kernel on a tiny synthetic exposure before the worker is ready.

Nothing here is imported by the calibration stages (see ``docs/streaming.md``).
"""
