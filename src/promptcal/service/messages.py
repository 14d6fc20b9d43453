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
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from promptcal.core.errors import InvalidInputError


#: The schema version this code writes.
def detector_key(detector: int) -> bytes:
    """Key of ``next-visit`` and ``image-ready`` messages: the detector number in ASCII."""
    return str(int(detector)).encode("ascii")


def visit_detector_key(visit: int, detector: int) -> bytes:
    """Key of ``calibrated`` and ``metrics`` messages: ``b"visit:detector"``."""
    return f"{int(visit)}:{int(detector)}".encode("ascii")


SCHEMA_VERSION = 1


def _to_utc(value: _dt.datetime) -> _dt.datetime:
    return value.astimezone(_dt.UTC)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a non-finite float is published as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


UtcTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
UnixTime = Annotated[float, Field(ge=0.0, description="POSIX time [s]")]
Name = Annotated[str, Field(min_length=1, max_length=128)]
SummaryValue = Annotated[float | list[float | None] | None, BeforeValidator(_finite_or_none)]


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

    instrument: Name = Field(description="Instrument name, e.g. 'LSSTCam'.")
    visit: int = Field(ge=0, description="Visit (exposure) id.")
    detector: int = Field(ge=0, description="Detector number.")


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
    uri: Name = Field(description="Where the snap is: file://..., s3://... (fsspec URL).")
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
        Not UTF-8, not strict JSON, not an object, no or unsupported ``schema_version``,
        or a field fails validation.
    """
    name = model_cls.__name__
    if raw is None:
        raise InvalidInputError(f"{name}: empty message (null value), expected a JSON object")
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{name}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidInputError(f"{name}: schema_version must be an integer, got {version!r}")
    if version not in model_cls.SUPPORTED_VERSIONS:
        raise InvalidInputError(
            f"{name}: unknown schema_version {version}; this reader supports "
            f"{sorted(model_cls.SUPPORTED_VERSIONS)}"
        )
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<message>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInputError(f"{name}: invalid message: {problems}") from exc


# -- dead letters ----------------------------------------------------------------------

#: Header names of a dead-letter message. Its key and value are the original message's
#: key and bytes, unchanged, so it can be inspected or re-published as it was.
HEADER_ERROR_TYPE = "error-type"
HEADER_ERROR_MESSAGE = "error-message"
HEADER_SOURCE_TOPIC = "source-topic"
HEADER_SOURCE_PARTITION = "source-partition"
HEADER_SOURCE_OFFSET = "source-offset"
DEAD_LETTER_HEADERS: tuple[str, ...] = (
    HEADER_ERROR_TYPE,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_TOPIC,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
)

#: Longest error message kept in a header [characters]; longer ones are truncated.
MAX_ERROR_MESSAGE_CHARS = 2000


class DeadLetter(BaseModel):
    """What the dead-letter headers say about a rejected message.

    Build the headers with :meth:`headers`; read them back with :meth:`from_headers`.
    Header values are UTF-8 text; partition and offset are decimal integers.
    """

    model_config = ConfigDict(frozen=True)

    error_type: str = Field(description="Exception class name, e.g. 'InvalidInputError'.")
    error_message: str = Field(description="Exception message (truncated to 2000 chars).")
    source_topic: str = Field(description="Topic the original message was read from.")
    source_partition: int = Field(ge=0, description="Its partition.")
    source_offset: int = Field(ge=0, description="Its offset.")

    @classmethod
    def from_error(
        cls, error: BaseException, source_topic: str, source_partition: int, source_offset: int
    ) -> DeadLetter:
        """Describe ``error`` raised while handling the message at topic/partition/offset."""
        message = str(error)
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
        return cls(
            error_type=type(error).__name__,
            error_message=message,
            source_topic=source_topic,
            source_partition=source_partition,
            source_offset=source_offset,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers, in :data:`DEAD_LETTER_HEADERS` order."""
        values = (
            self.error_type,
            self.error_message,
            self.source_topic,
            str(self.source_partition),
            str(self.source_offset),
        )
        return [(k, v.encode("utf-8")) for k, v in zip(DEAD_LETTER_HEADERS, values, strict=True)]

    @classmethod
    def from_headers(
        cls, headers: list[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None
    ) -> DeadLetter:
        """Read the headers of a dead-letter message (extra headers are ignored).

        Raises
        ------
        InvalidInputError
            A required header is missing or malformed.
        """
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        found: dict[str, str] = {}
        for name, value in items:
            if name in DEAD_LETTER_HEADERS and value is not None:
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                found[name] = text
        missing = [h for h in DEAD_LETTER_HEADERS if h not in found]
        if missing:
            raise InvalidInputError(f"dead-letter message lacks headers {missing}")
        try:
            return cls(
                error_type=found[HEADER_ERROR_TYPE],
                error_message=found[HEADER_ERROR_MESSAGE],
                source_topic=found[HEADER_SOURCE_TOPIC],
                source_partition=int(found[HEADER_SOURCE_PARTITION]),
                source_offset=int(found[HEADER_SOURCE_OFFSET]),
            )
        except (ValueError, ValidationError) as exc:
            raise InvalidInputError(f"malformed dead-letter headers {found}: {exc}") from exc
