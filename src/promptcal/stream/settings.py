"""Settings of a streaming worker, and the Kafka timeouts derived from them.

Every ``promptcal serve`` option maps to a field here (``docs/worker.md``). The
consumer's ``max.poll.interval.ms`` and the liveness timeout of ``/healthz`` are
derived from the worst case between two polls: one exposure
(``max_exposure_seconds``), the publish and storage retries, and 60 s of slack.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from promptcal.core.allocator import HEAP_BYTES_PER_PIXEL
from promptcal.service.preload import DEFAULT_PADDING_ARCSEC
from promptcal.service.retries import retry_delays


class WorkerSettings(BaseModel):
    """Settings of one worker process (``promptcal serve`` options)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(description="Kafka bootstrap servers, 'host:port[,...]'.")
    group_id: str = Field(description="Consumer group shared by the workers of an instrument.")
    output: str = Field(description="Product root: a directory or a file:// URI.")
    input_roots: tuple[str, ...] = Field(
        (), description="Directories snap files must resolve into; empty: anywhere (warned)."
    )
    max_file_mb: float = Field(1024.0, gt=0, description="Largest snap file [MiB].")
    max_pixels: int = Field(2**26, gt=0, description="Largest image plane of a snap [pixels].")
    file_wait: float = Field(
        10.0, ge=0, description="Wait for a snap file that is missing or being written [s]."
    )
    topic_prefix: str = Field("", description="Topic-name prefix, e.g. 'lsstcam.'.")
    poll_timeout: float = Field(0.1, gt=0, description="Longest wait of one poll [s].")
    snap_wait: float = Field(
        60.0, ge=0, description="Wait for the other snaps after the first one [s]."
    )
    next_visit_wait: float = Field(
        0.0, ge=0, description="Hold an exposure for its next-visit until this long idle [s]."
    )
    grace_period: float = Field(
        30.0, gt=0, description="SIGTERM to exit, including the exposure in hand [s]."
    )
    http_host: str = Field(
        "127.0.0.1",
        description="Interface of /healthz, /readyz, /metrics (loopback; 0.0.0.0 in a pod).",
    )
    http_port: int = Field(8080, ge=0, description="Port of the HTTP endpoints (0: any free).")
    max_exposure_seconds: float = Field(
        300.0,
        gt=0,
        description="Worst-case time to read, calibrate and write one exposure [s]; also the "
        "time limit of one calibration (past it: a failed result).",
    )
    retries: int = Field(5, ge=0, description="Retries of a failed publish or write [1].")
    retry_backoff: float = Field(0.5, ge=0, description="First retry wait, doubled each time [s].")
    delivery_timeout: float = Field(
        10.0, gt=0, description="Longest wait for the broker's acknowledgement [s]."
    )
    camera: str = Field("lsstcam-like", description="Camera name or JSON file (preload).")
    preload_padding_arcsec: float = Field(
        DEFAULT_PADDING_ARCSEC, ge=0, description="Padding of the predicted footprint [arcsec]."
    )
    statistics_interval_ms: int = Field(
        5000, ge=0, description="librdkafka statistics period (consumer lag) [ms]; 0: off."
    )
    do_warmup: bool = Field(True, description="Warm the kernels up before reporting ready.")
    heap_reserve_mb: float | None = Field(
        None,
        ge=0,
        description="Heap faulted in before ready, so the first exposure does not pay for "
        "page faults [MB]; None: HEAP_BYTES_PER_PIXEL × the camera's largest detector; 0: off.",
    )
    consumer_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Extra librdkafka consumer settings."
    )
    client_settings: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="librdkafka settings of every client, e.g. security.protocol, sasl.*, "
        "ssl.* (promptcal.stream.clients: a file or PROMPTCAL_KAFKA_*; never shown).",
    )

    def client_overrides(self) -> dict[str, str]:
        """The client settings in clear, for the librdkafka configs only."""
        return {k: v.get_secret_value() for k, v in self.client_settings.items()}

    def input_policy(self):
        """The :class:`~promptcal.service.inputs.InputPolicy` of these settings."""
        from promptcal.service.inputs import InputPolicy

        return InputPolicy(
            roots=tuple(self.input_roots),
            max_file_bytes=int(self.max_file_mb * 2**20),
            max_pixels=self.max_pixels,
            file_wait=self.file_wait,
            retries=self.retries,
            backoff=self.retry_backoff,
        )

    def heap_reserve_bytes(self, camera) -> int:
        """Bytes of heap to reserve for ``camera`` (see ``heap_reserve_mb``) [B]."""
        if self.heap_reserve_mb is not None:
            return int(self.heap_reserve_mb * 1e6)
        largest = max(d.width * d.height for d in camera.detectors)
        return int(HEAP_BYTES_PER_PIXEL * largest)

    def retry_budget(self) -> float:
        """Worst case of the publish retries plus the storage retries [s]."""
        publish = (self.retries + 1) * self.delivery_timeout + sum(
            retry_delays(self.retries, self.retry_backoff)
        )
        storage = sum(retry_delays(self.retries, self.retry_backoff))
        return 2.0 * publish + storage + self.file_wait

    def max_poll_interval_ms(self) -> int:
        """``max.poll.interval.ms``: one exposure, its retries, and 60 s of slack.

        The consumer is evicted if it does not poll for this long, and its exposure is
        redone elsewhere, so it must exceed the worst case between two polls.
        """
        session = int(self.consumer_overrides.get("session.timeout.ms", 45_000))
        budget_ms = int(1000 * (self.max_exposure_seconds + self.retry_budget() + 60.0))
        return max(budget_ms, session)

    def liveness_timeout(self) -> float:
        """Longest silence of the loop that ``/healthz`` still calls alive [s]."""
        return self.max_poll_interval_ms() / 1000.0
