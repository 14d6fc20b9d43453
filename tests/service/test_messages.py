"""Message schemas: validation, encoding, and the examples in docs/messages.md."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from promptcal.core.errors import InvalidInputError
from promptcal.service import messages as schemas
from promptcal.service.dead_letter import DEAD_LETTER_HEADERS, DeadLetter
from promptcal.service.messages import (
    MESSAGE_TYPES,
    Calibrated,
    ImageReady,
    MetricsRecord,
    NextVisit,
    decode,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "messages.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.DOTALL)


def _doc_examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(DOC.read_text())


def _image_ready(**changes) -> dict:
    base = {
        "schema_version": 1,
        "instrument": "toy",
        "visit": 123,
        "detector": 4,
        "snap": 0,
        "n_snaps": 2,
        "band": "r",
        "exposure_time": 15.0,
        "mid_exposure_time": "2026-02-24T03:12:52.5-03:00",
        "uri": "file:///raw/123/4/0.fits",
        "produced_at": 1771902780.25,
    }
    base.update(changes)
    return base


def _raw(data: dict) -> bytes:
    return json.dumps(data).encode()


def test_every_doc_example_decodes_and_round_trips():
    examples = _doc_examples()
    names = {name for name, _ in examples}
    assert names == {cls.__name__ for cls in MESSAGE_TYPES.values()} | {"DeadLetter"}
    for name, text in examples:
        if name == "DeadLetter":
            headers = [(k, v.encode()) for k, v in json.loads(text).items()]
            info = DeadLetter.from_headers(headers)
            assert info.headers() == headers
            continue
        cls = getattr(schemas, name)
        message = decode(text.encode(), cls)
        assert decode(encode(message), cls) == message
        # Nothing in the example is silently dropped as an unknown field.
        assert set(json.loads(text)) <= set(cls.model_fields)


def test_every_field_is_documented_in_its_section():
    sections = re.split(r"\n## ", DOC.read_text())
    for cls in MESSAGE_TYPES.values():
        (section,) = [s for s in sections if s.startswith(f"`{cls.TOPIC_KIND}`: {cls.__name__}")]
        for field in cls.model_fields:
            assert f"| `{field}` |" in section, (cls.__name__, field)
    (dead,) = [s for s in sections if s.startswith("`dead-letter`")]
    for header in DEAD_LETTER_HEADERS:
        assert f"| `{header}` |" in dead


def test_encode_is_compact_json_with_utc_times():
    message = decode(_raw(_image_ready()), ImageReady)
    raw = encode(message)
    assert b": " not in raw and b", " not in raw
    data = json.loads(raw)
    assert data["mid_exposure_time"] == "2026-02-24T06:12:52.500000Z"  # -03:00 -> UTC
    assert data["schema_version"] == schemas.SCHEMA_VERSION == 1


def test_keys_follow_the_partitioning_contract():
    image = decode(_raw(_image_ready(detector=94, visit=7)), ImageReady)
    assert image.key() == b"94"
    calibrated = Calibrated(
        instrument="toy",
        visit=7,
        detector=94,
        status="success",
        config_hash="abc",
        software_version="0.1.0",
        produced_at=1.0,
    )
    assert calibrated.key() == b"7:94"
    assert MESSAGE_TYPES["calibrated"] is Calibrated


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (None, "null value"),
        (b"\xff\xfe", "UTF-8"),
        (b"{not json", "JSON"),
        (b'{"schema_version": 1, "exposure_time": NaN}', "NaN"),
        (b"[1, 2]", "JSON object, got list"),
        (_raw({k: v for k, v in _image_ready().items() if k != "schema_version"}), "integer"),
        (_raw(_image_ready(schema_version=True)), "integer"),
        (_raw(_image_ready(schema_version=2)), "unknown schema_version 2"),
        (_raw({k: v for k, v in _image_ready().items() if k != "uri"}), "uri: Field required"),
        (_raw(_image_ready(snap=2)), "snap index 2 must be < n_snaps = 2"),
        (_raw(_image_ready(exposure_time=-1.0)), "exposure_time"),
        (_raw(_image_ready(detector="four")), "detector"),
        (_raw(_image_ready(mid_exposure_time="2026-02-24T03:12:52")), "timezone"),
        (b'{"schema_version": 1, "exposure_time": 1e400}', "exposure_time"),
    ],
)
def test_decode_rejects_bad_messages(raw, match):
    with pytest.raises(InvalidInputError, match=match):
        decode(raw, ImageReady)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    message = decode(_raw(_image_ready(new_optional_field=[1, 2])), ImageReady)
    assert message == decode(_raw(_image_ready()), ImageReady)


def test_calibrated_status_and_error_must_agree():
    common = {
        "instrument": "toy",
        "visit": 1,
        "detector": 2,
        "config_hash": "abc",
        "software_version": "0.1.0",
        "produced_at": 10.0,
    }
    with pytest.raises(InvalidInputError, match="requires error_type"):
        decode(_raw({"schema_version": 1, "status": "failed", **common}), Calibrated)
    with pytest.raises(InvalidInputError, match="must not carry"):
        decode(
            _raw({"schema_version": 1, "status": "success", "error_type": "X", **common}),
            Calibrated,
        )
    with pytest.raises(InvalidInputError, match="status"):
        decode(_raw({"schema_version": 1, "status": "partial", **common}), Calibrated)


def test_non_finite_summary_values_are_published_as_null():
    message = Calibrated(
        instrument="toy",
        visit=1,
        detector=2,
        status="success",
        summary={"zeroPoint": 31.0, "magLim": math.nan, "raCorners": [1.0, math.inf, 2.0, 3.0]},
        config_hash="abc",
        software_version="0.1.0",
        produced_at=10.0,
    )
    data = json.loads(encode(message))
    assert data["summary"] == {
        "zeroPoint": 31.0,
        "magLim": None,
        "raCorners": [1.0, None, 2.0, 3.0],
    }
    assert decode(encode(message), Calibrated) == message


def test_non_finite_fields_are_rejected_at_construction():
    with pytest.raises(ValueError, match="finite"):
        MetricsRecord(
            instrument="toy",
            visit=1,
            detector=2,
            status="success",
            worker="w",
            wall_time=math.nan,
            produced_at=1.0,
        )
    with pytest.raises(ValueError, match="boresight_dec"):
        NextVisit.model_validate(
            {
                "instrument": "toy",
                "visit": 1,
                "detector": 2,
                "group_id": "g",
                "band": "r",
                "boresight_ra": 10.0,
                "boresight_dec": 91.0,
                "rotation_angle": 0.0,
                "start_time": "2026-02-24T03:12:30Z",
                "exposure_duration": 15.0,
                "n_snaps": 2,
                "private_sndStamp": 1.0,
            }
        )


def test_dead_letter_headers_round_trip_and_truncate():
    error = InvalidInputError("x" * 5000)
    info = DeadLetter.from_error(error, "p.image-ready", 2, 41)
    headers = info.headers()
    assert [name for name, _ in headers] == list(DEAD_LETTER_HEADERS)
    assert dict(headers)["error-type"] == b"InvalidInputError"
    assert dict(headers)["source-offset"] == b"41"
    assert len(info.error_message) == schemas.MAX_ERROR_MESSAGE_CHARS
    assert info.error_message.endswith("...")
    # Extra headers (tracing, ...) are ignored when reading back.
    assert DeadLetter.from_headers([*headers, ("traceparent", b"00-ab")]) == info
    assert DeadLetter.from_headers({k: v.decode() for k, v in headers}) == info


def test_dead_letter_headers_missing_or_malformed():
    headers = DeadLetter.from_error(ValueError("bad"), "t", 0, 1).headers()
    with pytest.raises(InvalidInputError, match="source-offset"):
        DeadLetter.from_headers(headers[:-1])
    broken = [(k, b"minus one" if k == "source-partition" else v) for k, v in headers]
    with pytest.raises(InvalidInputError, match="malformed"):
        DeadLetter.from_headers(broken)
    with pytest.raises(InvalidInputError, match="lacks headers"):
        DeadLetter.from_headers(None)
