"""Replay of an archived or simulated night through the worker's path: jobs and
scheduling (:mod:`~promptcal.replay.jobs`), in local processes
(:mod:`~promptcal.replay.local`) or through Kafka (:mod:`~promptcal.replay.kafka`)."""
