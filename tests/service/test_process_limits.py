"""ExposureProcessor under faults (issue 15): the time limit of one calibration, and a
reference catalog that cannot be read (retried, then TransientError, never a result)."""

from __future__ import annotations

import shutil

import pytest
from worker_helpers import Visit, image_ready, simulate_stream

from promptcal.core.errors import TransientError
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.service.assembler import PendingExposure, ReceivedSnap
from promptcal.service.inputs import InputPolicy
from promptcal.service.process import ExposureProcessor

VISIT = Visit(1, 150.0, 2.0, detectors=(1,))


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    return simulate_stream(tmp_path_factory.mktemp("limits"), [VISIT], size=256)


def _pending(stream) -> PendingExposure:
    message = image_ready(VISIT, 1, 0, stream.snaps[(1, 1)][0])
    pending = PendingExposure(message.instrument, 1, 1, 1, first_seen=0.0)
    pending.snaps[0] = ReceivedSnap(message, ("image-ready", 0, 0))
    return pending


def _processor(stream, refcat_dir, tmp_path, **kwargs) -> ExposureProcessor:
    return ExposureProcessor(
        CalibrateImageConfig(),
        RefcatLoader(refcat_dir),
        str(tmp_path / "out"),
        retries=1,
        backoff=0.01,
        inputs=InputPolicy(roots=(str(stream.root),)),
        **kwargs,
    )


def test_a_calibration_past_its_time_limit_is_a_failed_result(stream, tmp_path):
    unlimited = _processor(stream, stream.refcat, tmp_path).calibrate(_pending(stream), None, None)
    assert unlimited.status == "success"
    limited = _processor(stream, stream.refcat, tmp_path, time_limit=0.02)
    calibration = limited.calibrate(_pending(stream), None, None)
    assert calibration.status == "failed"
    assert type(calibration.error).__name__ == "TimeLimitExceeded"
    assert "time limit of 0.02 s" in str(calibration.error)
    assert calibration.error.metadata == {"limit_seconds": 0.02}
    outcome = limited.finish_write(limited.start_write(calibration))  # products of a failure
    assert outcome.status == "failed" and outcome.error_type == "TimeLimitExceeded"


def test_an_unreadable_refcat_shard_is_retried_then_transient(stream, tmp_path):
    """Before issue 15 this was a failed result (a silent loss of a good exposure)."""
    refcat = tmp_path / "refcat"
    shutil.copytree(stream.refcat, refcat)
    for shard in refcat.rglob("*.parquet"):
        shard.unlink()
    processor = _processor(stream, refcat, tmp_path)
    with pytest.raises(TransientError, match=r"shard .* unreadable"):
        processor.calibrate(_pending(stream), None, None)
