"""Fuzzing (issue 15, deliverable 4) with Hypothesis, seeded (derandomized) for CI.

- Messages: arbitrary bytes, arbitrary JSON (nested, huge, non-finite-looking), valid
  messages with one field replaced by any JSON value or removed, unknown schema
  versions: :func:`decode` returns a message or raises ``InvalidInputError``, nothing
  else (anything else would end the worker).
- FITS files: random header cards (axes, BITPIX, compression keywords), truncated at a
  random length or extended sparsely: :class:`SnapReader` returns an exposure or raises
  ``InvalidInputError``, nothing else, and never waits.
- Images: NaN, ±inf, constant, saturated and random pixels through the reader and the
  whole calibration (:meth:`ExposureProcessor.calibrate`): a result (``success`` or
  ``failed``) or ``InvalidInputError``.

The number of cases each property ran is counted and printed by the last test.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worker_helpers import Visit, image_ready, simulate_stream

from promptcal.core.errors import InvalidInputError
from promptcal.io import read_exposure, write_exposure
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.assembler import PendingExposure, ReceivedSnap
from promptcal.service.inputs import InputPolicy, SnapReader
from promptcal.service.messages import MESSAGE_TYPES, ImageReady, NextVisit, decode, encode
from promptcal.service.process import ExposureProcessor

CASES: Counter[str] = Counter()
FUZZ = settings(
    derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
VISIT = Visit(1, 150.0, 2.0, n_stars=30, detectors=(0,))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _valid(kind: str) -> dict:
    from pathlib import Path

    from worker_helpers import next_visit

    message = image_ready(VISIT, 0, 0, Path("/raw/x.fits")) if kind == "image-ready" else (
        next_visit(VISIT, 0))  # fmt: skip
    return json.loads(encode(message))


def _decodes_or_rejects(raw, model) -> None:
    try:
        message = decode(raw, model)
    except InvalidInputError:
        CASES["messages rejected"] += 1
        return
    CASES["messages accepted"] += 1
    assert decode(encode(message), model) == message  # what is accepted round-trips


@settings(FUZZ, max_examples=400)
@given(raw=st.binary(max_size=400), model=st.sampled_from(list(MESSAGE_TYPES.values())))
def test_arbitrary_bytes(raw, model):
    _decodes_or_rejects(raw, model)


@settings(FUZZ, max_examples=400)
@given(value=json_values, model=st.sampled_from([ImageReady, NextVisit]))
def test_arbitrary_json(value, model):
    _decodes_or_rejects(json.dumps(value).encode(), model)


@settings(FUZZ, max_examples=800)
@given(
    kind=st.sampled_from(["image-ready", "next-visit"]),
    data=st.data(),
    value=json_values | st.integers(min_value=-(2**80), max_value=2**80),
    drop=st.booleans(),
)
def test_one_field_replaced_or_removed(kind, data, value, drop):
    message = _valid(kind)
    field = data.draw(st.sampled_from(sorted(message)))
    if drop:
        del message[field]
    else:
        message[field] = value
    _decodes_or_rejects(json.dumps(message).encode(), ImageReady if kind == "image-ready" else (
        NextVisit))  # fmt: skip


@settings(FUZZ, max_examples=200)
@given(
    depth=st.integers(min_value=1, max_value=200_000),
    version=st.integers(min_value=-5, max_value=10) | st.text(max_size=3),
    junk=st.text(max_size=20),
)
def test_nesting_versions_and_text(depth, version, junk):
    message = _valid("image-ready")
    message["schema_version"] = version
    message["band"] = junk
    raw = json.dumps(message).encode()
    _decodes_or_rejects(raw, ImageReady)
    nested = raw[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    _decodes_or_rejects(nested, ImageReady)
    _decodes_or_rejects(raw.replace(b'"r"', b'"\\ud800"'), ImageReady)


# -- FITS files ---------------------------------------------------------------------------

cards = st.fixed_dictionaries(
    {
        "BITPIX": st.sampled_from([8, 16, 32, 64, -32, -64, 0, 7, 12345]),
        "NAXIS": st.integers(min_value=0, max_value=4),
        "NAXIS1": st.integers(min_value=-3, max_value=100_000),
        "NAXIS2": st.integers(min_value=-3, max_value=100_000),
    },
    optional={
        "EXTEND": st.booleans(),
        "BAND": st.text(alphabet="abcdefgr", max_size=3),
        "GAIN": st.floats(allow_nan=False, allow_infinity=False),
        "ZIMAGE": st.booleans(),
        "ZNAXIS": st.integers(min_value=0, max_value=3),
        "ZNAXIS1": st.integers(min_value=0, max_value=100_000),
        "ZNAXIS2": st.integers(min_value=0, max_value=100_000),
    },
)


def _card(key: str, value) -> bytes:
    text = ("T" if value else "F") if isinstance(value, bool) else repr(value)
    if isinstance(value, str):
        text = "'" + value.ljust(8) + "'"
    return f"{key:<8}= {text:>20}".ljust(80).encode("ascii")


@pytest.fixture(scope="module")
def snap_bytes(tmp_path_factory) -> bytes:
    from promptcal.simulate import SkyConfig, simulate_exposure

    sim = simulate_exposure(SkyConfig(width=48, height=48, n_stars=4), seed=5)
    path = tmp_path_factory.mktemp("fuzzsnap") / "s.fits"
    write_exposure(sim.snaps[0], path)
    return path.read_bytes()


@settings(FUZZ, max_examples=300)
@given(header=cards, cut=st.floats(0.0, 1.0), sparse=st.integers(0, 2**31), real=st.booleans())
def test_fits_headers_truncation_and_sparse_files(tmp_path_factory, snap_bytes, header, cut,
                                                  sparse, real):  # fmt: skip
    directory = tmp_path_factory.mktemp("fz", numbered=True)
    path = directory / "f.fits"
    if real:  # a real snap, truncated somewhere
        data = snap_bytes[: int(len(snap_bytes) * cut)]
    else:
        data = _card("SIMPLE", True) + b"".join(_card(k, v) for k, v in header.items())
        data = (data + b"END".ljust(80)).ljust(2880) + bytes(int(2880 * 4 * cut))
    path.write_bytes(data)
    if sparse and not real:
        with open(path, "ab") as f:
            f.truncate(len(data) + sparse)
    reader = SnapReader(
        InputPolicy(roots=(str(directory),), file_wait=0.0, max_file_bytes=2**30,
                    max_pixels=2**22, retries=0),
    )  # fmt: skip
    try:
        exposure, _ = reader.read(str(path), "r")
    except InvalidInputError:
        CASES["FITS files rejected"] += 1
    else:
        CASES["FITS files read"] += 1
        assert exposure.image.ndim == 2


# -- images through run() -----------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration_setup(tmp_path_factory):
    stream = simulate_stream(tmp_path_factory.mktemp("fuzzrun"), [VISIT], size=128)
    processor = ExposureProcessor(
        CalibrateImageConfig(), RefcatLoader(stream.refcat), str(stream.root / "out"),
        retries=0, inputs=InputPolicy(roots=(str(stream.root),), file_wait=0.0),
        time_limit=60.0,
    )  # fmt: skip
    return stream, processor, read_exposure(stream.snaps[(1, 0)][0])


pixels = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e9, -1e9, 65535.0]).map(
        lambda v: ("constant", v)
    ),
    st.tuples(st.just("mix"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("saturate"), st.floats(0.0, 1.0)),
)


@settings(FUZZ, max_examples=40)
@given(kind=pixels)
def test_hostile_images_through_run(calibration_setup, kind):
    stream, processor, exposure = calibration_setup
    image = exposure.image.copy()
    name, value = kind
    rng = np.random.default_rng(value if name == "mix" else 0)
    if name == "constant":
        image[:] = value
    elif name == "mix":  # NaN, inf and extreme values sprinkled over a real image
        bad = rng.random(image.shape) < rng.random() * 0.5
        image[bad] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30], size=int(bad.sum()))
    else:
        image[rng.random(image.shape) < value] = 1e9
    hostile = exposure.__class__.__new__(exposure.__class__)
    hostile.__dict__.update(exposure.__dict__, image=image)
    path = stream.root / "raw" / "hostile.fits"
    write_exposure(hostile, path)
    message = image_ready(VISIT, 0, 0, path)
    pending = PendingExposure(message.instrument, 1, 0, 1, first_seen=0.0)
    pending.snaps[0] = ReceivedSnap(message, ("image-ready", 0, 0))
    try:
        calibration = processor.calibrate(pending, None, None)
    except InvalidInputError:
        CASES["images rejected"] += 1
        return
    CASES[f"images calibrated: {calibration.status}"] += 1
    assert calibration.status in ("success", "failed")


def test_zz_report_case_counts(record_property):
    """Runs last (file order): how many cases each property tried."""
    total = sum(CASES.values())
    record_property("fuzz_cases", dict(CASES))
    print(f"fuzz cases: {total} {dict(sorted(CASES.items()))}")
    assert CASES["messages rejected"] > 0 and CASES["messages accepted"] > 0
    assert CASES["FITS files rejected"] > 0 and CASES["FITS files read"] > 0
    assert total >= 2000
