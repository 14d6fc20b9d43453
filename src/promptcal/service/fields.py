"""Field types and limits shared by the message schemas (:mod:`promptcal.service.messages`).

Every limit here exists because the value ends up somewhere it can do harm: the
``instrument`` names a product directory, ids become path components and Kafka keys,
names go into logs and headers.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

#: Largest message value :func:`decode` accepts [bytes]; real messages are < 2 kB.
MAX_MESSAGE_BYTES = 1 << 20
#: Largest visit id (Kafka keys and product paths hold it as a 64-bit integer).
MAX_VISIT = 2**63 - 1
#: Largest detector number.
MAX_DETECTOR = 2**31 - 1
#: What an ``instrument`` may look like: one plain directory name (no ``/``, ``..``, NUL).
INSTRUMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def detector_key(detector: int) -> bytes:
    """Key of ``next-visit`` and ``image-ready`` messages: the detector number in ASCII."""
    return str(int(detector)).encode("ascii")


def visit_detector_key(visit: int, detector: int) -> bytes:
    """Key of ``calibrated`` and ``metrics`` messages: ``b"visit:detector"``."""
    return f"{int(visit)}:{int(detector)}".encode("ascii")


def _to_utc(value: _dt.datetime) -> _dt.datetime:
    return value.astimezone(_dt.UTC)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a non-finite float is published as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _no_control(value: str) -> str:
    """Names end up in paths, logs and headers: no NUL or other control characters."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, newline, ...)")
    return value


UtcTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
UnixTime = Annotated[float, Field(ge=0.0, description="POSIX time [s]")]
Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control)]
Uri = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_control)]
Instrument = Annotated[str, Field(pattern=INSTRUMENT_PATTERN)]
SummaryValue = Annotated[float | list[float | None] | None, BeforeValidator(_finite_or_none)]
