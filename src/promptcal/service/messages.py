"""The messages on promptcal's topics: validated, versioned, documented JSON.

Every message is a compact JSON object with an integer ``schema_version`` (currently
1). Decoding checks, in order: UTF-8, strict JSON (no ``NaN``/``Infinity`` tokens), a
JSON object, a supported ``schema_version``, then the model's field validation; any
failure raises :class:`~promptcal.core.errors.InvalidInputError`, which the worker sends to
the dead-letter topic with the original bytes.

Conventions (see ``docs/messages.md`` for examples):

- Instants that describe the observation (``start_time``, ``mid_exposure_time``) are
  ISO 8601 strings with a UTC offset and are normalised to UTC. Rubin's SAL times are
  TAI; a producer converts (TAI = UTC + 37 s since 2017).
- Instants used for latency (``produced_at``, ``private_sndStamp``) are POSIX seconds
  (``time.time()``, UTC-based, not TAI), so latencies are plain differences.
- Unknown fields are ignored (tolerant reader), so a producer may add an optional
  field without breaking running workers; anything a consumer must understand
  bumps ``schema_version``.
- Hostile input is bounded: a value longer than :data:`MAX_MESSAGE_BYTES`, JSON nested
  deeper than the parser's recursion limit, lone surrogates, control characters in
  names, an ``instrument`` that is not a plain directory name and ids beyond 64 bits
  are all rejected by :func:`decode` (they would otherwise crash a worker or escape the
  product root).

The dead-letter headers live in :mod:`promptcal.service.dead_letter` (re-exported here).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from promptcal.core.errors import InvalidInputError
from promptcal.service.dead_letter import (
    DEAD_LETTER_HEADERS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    MAX_ERROR_MESSAGE_CHARS,
    DeadLetter,
)
from promptcal.service.fields import (
    MAX_DETECTOR,
    MAX_MESSAGE_BYTES,
    MAX_VISIT,
    Instrument,
    Name,
    SummaryValue,
    UnixTime,
    Uri,
    UtcTime,
    detector_key,
    visit_detector_key,
)

__all__ = [
    "DEAD_LETTER_HEADERS",
    "HEADER_ERROR_MESSAGE",
    "HEADER_ERROR_TYPE",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "Calibrated",
    "DeadLetter",
    "ImageReady",
    "Message",
    "MetricsRecord",
    "NextVisit",
    "decode",
    "detector_key",
    "encode",
    "visit_detector_key",
]


#: The schema version this code writes.
SCHEMA_VERSION = 1


class Message(BaseModel):
    """Base of all messages: frozen, finite floats, ``schema_version`` checked."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", allow_inf_nan=False, validate_default=True
    )

    #: Versions this code can read.
    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})
    #: The topic kind the message is published on.
    TOPIC_KIND: ClassVar[str] = ""

    schema_version: int = Field(
        SCHEMA_VERSION, description="Message schema version; readers reject unknown versions."
    )

    @model_validator(mode="after")
    def _check_version(self) -> Self:
        if self.schema_version not in self.SUPPORTED_VERSIONS:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported by "
                f"{type(self).__name__} (supported: {sorted(self.SUPPORTED_VERSIONS)})"
            )
        return self

    def key(self) -> bytes:
        """The Kafka message key."""
        raise NotImplementedError


class _Exposure(Message):
    """Fields that name one detector of one visit."""

    instrument: Instrument = Field(
        description="Instrument name, e.g. 'LSSTCam': 1-64 characters of [A-Za-z0-9_.-], "
        "starting with a letter or digit (it names a product directory)."
    )
    visit: int = Field(ge=0, le=MAX_VISIT, description="Visit (exposure) id (< 2^63).")
    detector: int = Field(ge=0, le=MAX_DETECTOR, description="Detector number (< 2^31).")


class NextVisit(_Exposure):
    """Announcement of a coming visit, fanned out per detector (topic ``next-visit``).

    Sent >= 20 s before the shutter opens so the worker owning the detector's partition
    can preload reference-catalog shards for the predicted footprint. Keyed by detector.
    """

    TOPIC_KIND: ClassVar[str] = "next-visit"

    group_id: Name = Field(description="Observatory group id of the visit (Rubin 'groupId').")
    band: Name = Field(description="Abstract band, e.g. 'r'.")
    physical_filter: str | None = Field(None, description="Physical filter name, if known.")
    boresight_ra: float = Field(ge=0.0, lt=360.0, description="Boresight ICRS RA [deg].")
    boresight_dec: float = Field(ge=-90.0, le=90.0, description="Boresight ICRS Dec [deg].")
    rotation_angle: float = Field(
        description="Camera rotation angle [deg] in rotation_system (sky: position angle of "
        "the focal-plane +y axis, east of north)."
    )
    rotation_system: Literal["NONE", "SKY", "HORIZON", "MOUNT"] = Field(
        "SKY", description="Frame of rotation_angle; only SKY allows a footprint prediction."
    )
    start_time: UtcTime = Field(description="Planned shutter-open time, ISO 8601 (UTC).")
    exposure_duration: float = Field(ge=0.0, description="Open-shutter time per snap [s].")
    n_snaps: int = Field(ge=0, description="Snaps in the visit; 0 = unknown.")
    private_sndStamp: UnixTime = Field(  # Rubin's field name
        description="When the message was sent, POSIX time [s]."
    )
    pixel_scale: float | None = Field(
        None, gt=0.0, description="Detector pixel scale [arcsec/px] if not the camera's."
    )

    def key(self) -> bytes:
        """Keyed by detector (co-partitioned with ``image-ready``)."""
        return detector_key(self.detector)


class ImageReady(_Exposure):
    """One snap of one detector is in storage (topic ``image-ready``), keyed by detector.

    Pixels never travel through Kafka: ``uri`` points at the snap's FITS file. A visit
    of ``n_snaps`` snaps produces ``n_snaps`` messages per detector.
    """

    TOPIC_KIND: ClassVar[str] = "image-ready"

    snap: int = Field(ge=0, description="0-based snap index within the visit.")
    n_snaps: int = Field(ge=1, description="Number of snaps in the visit.")
    band: Name = Field(description="Abstract band, e.g. 'r'.")
    exposure_time: float = Field(ge=0.0, description="Open-shutter time of this snap [s].")
    mid_exposure_time: UtcTime = Field(description="Mid-exposure time, ISO 8601 (UTC).")
    uri: Uri = Field(description="Where the snap is: file://..., s3://... (fsspec URL).")
    produced_at: UnixTime = Field(description="When the message was produced, POSIX time [s].")
    weight_uri: str | None = Field(None, description="Inverse-variance weight file, if any.")
    mask_uri: str | None = Field(None, description="Mask/DQ file of the snap, if any.")

    @model_validator(mode="after")
    def _check_snap(self) -> Self:
        if self.snap >= self.n_snaps:
            raise ValueError(f"snap index {self.snap} must be < n_snaps = {self.n_snaps}")
        return self

    def key(self) -> bytes:
        """Keyed by detector (co-partitioned with ``next-visit``)."""
        return detector_key(self.detector)


class Calibrated(_Exposure):
    """The result of calibrating one visit-detector (topic ``calibrated``).

    Keyed ``"visit:detector"``. ``status="failed"`` is an algorithm failure (a result,
    with the error and whatever partial products exist), not a crash.
    """

    TOPIC_KIND: ClassVar[str] = "calibrated"

    status: Literal["success", "failed"] = Field(description="Outcome of the calibration.")
    summary: dict[str, SummaryValue] = Field(
        default_factory=dict,
        description="LSST ExposureSummaryStats name -> value (null when not measured; "
        "raCorners/decCorners are lists), units as in LSST (zeroPoint [mag], "
        "psfSigma [px], pixelScale [arcsec/px], skyBg [counts], astromOffsetStd [arcsec]).",
    )
    products: dict[str, str] = Field(
        default_factory=dict, description="Product name -> URI of the written file."
    )
    timings: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=dict, description="Stage name -> wall time [s]."
    )
    end_to_end_latency: float | None = Field(
        None,
        ge=0.0,
        description="From the last snap's image-ready produced_at to this message's "
        "produced_at [s].",
    )
    error_type: str | None = Field(None, description="Exception class name when failed.")
    error_message: str | None = Field(None, description="Exception message when failed.")
    error_metadata: dict[str, Any] | None = Field(
        None, description="The AlgorithmError's metadata (counts, thresholds) when failed."
    )
    config_hash: str = Field(description="Config.config_hash() of the calibration config.")
    software_version: str = Field(description="promptcal version that produced the result.")
    produced_at: UnixTime = Field(description="When the message was produced, POSIX time [s].")

    @model_validator(mode="after")
    def _check_error(self) -> Self:
        has_error = self.error_type is not None or self.error_message is not None
        if self.status == "failed" and (self.error_type is None or self.error_message is None):
            raise ValueError("status 'failed' requires error_type and error_message")
        if self.status == "success" and has_error:
            raise ValueError("status 'success' must not carry error_type/error_message")
        return self

    def key(self) -> bytes:
        """Keyed ``visit:detector`` (a replay overwrites the same key)."""
        return visit_detector_key(self.visit, self.detector)


class MetricsRecord(_Exposure):
    """Per-exposure timing record (topic ``metrics``), keyed ``"visit:detector"``.

    The same numbers feed Prometheus; this record keeps them per exposure for offline
    latency analysis (Prometheus only keeps histograms).
    """

    TOPIC_KIND: ClassVar[str] = "metrics"

    status: Literal["success", "failed"] = Field(description="Outcome of the calibration.")
    worker: Name = Field(description="Worker identity (host name / pod name and pid).")
    stage_timings: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=dict, description="Stage name -> wall time [s]."
    )
    wall_time: float = Field(ge=0.0, description="Whole calibration, wall clock [s].")
    cpu_time: float | None = Field(None, ge=0.0, description="Whole calibration, CPU [s].")
    peak_rss: int | None = Field(None, ge=0, description="Peak resident memory [bytes].")
    preload_hit: bool | None = Field(
        None,
        description="Reference shards were preloaded before the pixels (null: no next-visit seen).",
    )
    preload_duration: float | None = Field(None, ge=0.0, description="Preload wall time [s].")
    queue_wait: float | None = Field(
        None, ge=0.0, description="Last image-ready produced_at to processing start [s]."
    )
    end_to_end_latency: float | None = Field(
        None, ge=0.0, description="Last image-ready produced_at to calibrated produced_at [s]."
    )
    produced_at: UnixTime = Field(description="When the record was produced, POSIX time [s].")

    def key(self) -> bytes:
        """Keyed ``visit:detector``."""
        return visit_detector_key(self.visit, self.detector)


#: All message models by topic kind.
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TOPIC_KIND: cls for cls in (NextVisit, ImageReady, Calibrated, MetricsRecord)
}

M = TypeVar("M", bound=Message)


def encode(model: Message) -> bytes:
    """Serialise a message to compact UTF-8 JSON."""
    return model.model_dump_json().encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def decode(raw: bytes | bytearray | memoryview | str | None, model_cls: type[M]) -> M:
    """Parse and validate one message.

    Parameters
    ----------
    raw : bytes or str or None
        The Kafka message value.
    model_cls : type
        The expected message class, e.g. :class:`ImageReady`.

    Raises
    ------
    InvalidInputError
        Empty, longer than :data:`MAX_MESSAGE_BYTES`, not UTF-8, not strict JSON (or
        nested too deeply to parse), lone surrogates, not an object, no or unsupported
        ``schema_version``, or a field fails validation.
    """
    name = model_cls.__name__
    if raw is None:
        raise InvalidInputError(f"{name}: empty message (null value), expected a JSON object")
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw))
    if size > MAX_MESSAGE_BYTES:
        raise InvalidInputError(f"{name}: {size} bytes, more than the {MAX_MESSAGE_BYTES} allowed")
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
        # A lone surrogate (JSON "\ud800") parses but cannot become a path or a header.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: not valid UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:  # e.g. [[[[...]]]] 100 000 deep: poison, not a crash
        raise InvalidInputError(f"{name}: JSON nested too deeply to parse") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{name}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidInputError(
            f"{name}: schema_version must be an integer, got {_short(repr(version))}"
        )
    if version not in model_cls.SUPPORTED_VERSIONS:
        raise InvalidInputError(
            f"{name}: unknown schema_version {_short(str(version))}; this reader supports "
            f"{sorted(model_cls.SUPPORTED_VERSIONS)}"
        )
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<message>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInputError(f"{name}: invalid message: {_short(problems)}") from exc
    except RecursionError as exc:
        raise InvalidInputError(f"{name}: a field is nested too deeply") from exc


def _short(text: str, limit: int = 500) -> str:
    """Error texts quote the input: keep them short (headers, logs)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
