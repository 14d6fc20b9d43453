"""The streaming layer: Kafka, Prometheus metrics and HTTP.

Modules
-------
``topics``
    Topic names (with an instrument prefix), the partitioner, client configuration
    defaults and idempotent topic creation.
``broker``
    ``LocalBroker``: the bundled Kafka-protocol broker for the demo and the tests.
``publish``
    Acknowledged publishing with bounded retries.
``metrics``, ``http``
    The Prometheus collectors; ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.
``worker``, ``finisher``, ``settings``
    The consume loop of ``promptcal serve``, the thread that finishes each exposure,
    and the documented settings.

The transport-free processing of an exposure is :mod:`promptcal.service`; nothing
here is imported by it or by the calibration steps (see ``docs/streaming.md``).
"""
