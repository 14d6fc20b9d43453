"""Hostile message values (issue 15): each one is an InvalidInputError (a dead letter),
never another exception that would end the worker, and nothing that could leave the
product root gets through the decoder."""

from __future__ import annotations

import json

import pytest

from promptcal.core.errors import InvalidInputError
from promptcal.service.fields import MAX_MESSAGE_BYTES
from promptcal.service.messages import ImageReady, NextVisit, decode


def _image_ready(**changes) -> dict:
    base = {
        "schema_version": 1,
        "instrument": "LSSTCam",
        "visit": 2026022400123,
        "detector": 94,
        "snap": 0,
        "n_snaps": 1,
        "band": "r",
        "exposure_time": 15.0,
        "mid_exposure_time": "2026-02-24T03:12:52.5Z",
        "uri": "file:///raw/123/94/0.fits",
        "produced_at": 1771902780.25,
    }
    base.update(changes)
    return base


def _raw(data: dict) -> bytes:
    return json.dumps(data).encode()


def test_the_baseline_message_decodes():
    message = decode(_raw(_image_ready()), ImageReady)
    assert (message.instrument, message.visit, message.detector) == ("LSSTCam", 2026022400123, 94)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_invalid_input_not_a_recursion_error(depth):
    # 100 000 levels make json.loads raise RecursionError, which used to end the worker.
    raw = b'{"schema_version": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidInputError, match=r"nested too deeply|invalid message"):
        decode(raw, ImageReady)
    nested_field = _raw(_image_ready()).replace(b'"band": "r"', b'"band": ' + b"[" * depth)
    with pytest.raises(InvalidInputError):
        decode(nested_field, ImageReady)


@pytest.mark.parametrize(
    "instrument",
    ["..", ".", "../../etc", "/abs", "a/b", "x\x00y", "", "a" * 65, "-dash", "sp ace", "é"],
)
def test_instrument_must_be_one_plain_directory_name(instrument):
    with pytest.raises(InvalidInputError, match="instrument"):
        decode(_raw(_image_ready(instrument=instrument)), ImageReady)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visit", 10**30),
        ("visit", 2**63),
        ("detector", 2**31),
        ("detector", -1),
        ("visit", 10**4000),  # past Python's int-to-string limit
    ],
)
def test_ids_are_bounded(field, value):
    raw = _raw(_image_ready()).replace(
        f'"{field}": {_image_ready()[field]}'.encode(), f'"{field}": {value}'.encode()
    )
    with pytest.raises(InvalidInputError):
        decode(raw, ImageReady)


def test_the_largest_ids_are_accepted():
    message = decode(_raw(_image_ready(visit=2**63 - 1, detector=2**31 - 1)), ImageReady)
    assert message.visit == 2**63 - 1


def test_an_oversized_message_is_rejected_before_parsing():
    raw = _raw(_image_ready(padding="x" * MAX_MESSAGE_BYTES))
    with pytest.raises(InvalidInputError, match="bytes, more than"):
        decode(raw, ImageReady)


@pytest.mark.parametrize(
    "raw",
    [
        _raw(_image_ready()).replace(b"0.fits", b"0\\u0000.fits"),  # NUL in the path
        _raw(_image_ready()).replace(b"0.fits", b"\\ud800.fits"),  # lone surrogate
        _raw(_image_ready()).replace(b'"band": "r"', b'"band": "r\\n"'),
        b"\xff\xfe" + _raw(_image_ready()),  # not UTF-8
    ],
    ids=["nul", "surrogate", "newline", "not-utf8"],
)
def test_control_characters_and_bad_text_are_rejected(raw):
    with pytest.raises(InvalidInputError):
        decode(raw, ImageReady)


def test_errors_quote_the_input_briefly():
    with pytest.raises(InvalidInputError) as info:
        decode(_raw({**_image_ready(), "schema_version": "9" * 5000}), NextVisit)
    assert len(str(info.value)) < 700
