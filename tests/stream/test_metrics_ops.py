"""Operations metrics (issue 14): bounded labels, failure reasons, the zero-point offset,
match counts, process metrics; Kafka security settings from the environment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table
from prometheus_client import CollectorRegistry

from promptcal.core import errors
from promptcal.core.task import Struct
from promptcal.service.process import match_counts
from promptcal.stream.clients import load_client_settings, property_name
from promptcal.stream.metrics import MESSAGE_KINDS, WorkerMetrics, failure_reasons


def _value(registry, name, **labels):
    return registry.get_sample_value(name, labels or None)


def test_detector_label_only_for_the_cameras_detectors():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, detectors=[0, 1, 2])
    summary = {"zeroPoint": 28.1, "psfSigma": 2.0, "pixelScale": 0.2}
    metrics.observe_result("success", detector=1, summary=summary)
    metrics.observe_result("success", detector=7, summary=summary)  # not in the camera
    assert _value(registry, "promptcal_zero_point_mag", detector="1") == pytest.approx(28.1)
    assert _value(registry, "promptcal_zero_point_mag", detector="7") is None
    assert _value(registry, "promptcal_unknown_detector_exposures_total") == 1
    assert _value(registry, "promptcal_exposures_total", outcome="success") == 2
    detectors = {
        s.labels["detector"]
        for family in registry.collect()
        for s in family.samples
        if "detector" in s.labels
    }
    assert detectors == {"1"}


def test_failure_reasons_are_error_classes_or_other():
    reasons = failure_reasons()
    assert {"InvalidInputError", "AstrometryError", "BadAstrometryFit", "other"} <= reasons
    assert all(getattr(errors, r, None) is not None for r in reasons - {"other"})
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    # Every (outcome, reason) starts at zero, so increase() sees the first failure.
    for reason in reasons:
        assert _value(registry, "promptcal_failures_total", outcome="failed", reason=reason) == 0
    metrics.observe_result("failed", reason="NoPsfStarsError")
    metrics.observe_result("failed", reason="ValueError")  # a bug, not a designed failure
    metrics.observe_result("dead_letter", reason="InvalidInputError")
    assert _value(registry, "promptcal_failures_total", outcome="failed", reason="NoPsfStarsError")
    assert _value(registry, "promptcal_failures_total", outcome="failed", reason="other") == 1
    assert (
        _value(
            registry, "promptcal_failures_total", outcome="dead_letter", reason="InvalidInputError"
        )
        == 1
    )
    assert (
        _value(registry, "promptcal_failures_total", outcome="failed", reason="ValueError") is None
    )


def test_zero_point_offset_matches_and_messages():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, detectors=[5])
    # effTimeZeroPointScale = 10^(0.8 Δ): a 1 s zero point 0.5 mag below the fiducial.
    scale = 10 ** (0.8 * -0.5)
    metrics.observe_result(
        "success",
        detector=5,
        summary={"effTimeZeroPointScale": scale},
        matches={"astrometry": 41, "photometry": None},
    )
    assert _value(registry, "promptcal_zero_point_offset_mag", detector="5") == pytest.approx(-0.5)
    assert _value(registry, "promptcal_astrometry_matches", detector="5") == 41
    assert math.isnan(_value(registry, "promptcal_photometry_matches", detector="5"))
    metrics.observe_result("success", detector=5, summary={"effTimeZeroPointScale": None})
    assert math.isnan(_value(registry, "promptcal_zero_point_offset_mag", detector="5"))
    for kind in MESSAGE_KINDS:
        assert _value(registry, "promptcal_messages_received_total", kind=kind) == 0
    assert metrics.observe_message("image-ready")
    assert not metrics.observe_message("calibrated")  # not a consumed kind: not counted
    assert _value(registry, "promptcal_messages_received_total", kind="image-ready") == 1
    assert _value(registry, "process_resident_memory_bytes") > 1e6


def test_match_counts_from_the_star_flags():
    stars = Table(
        {
            "calib_astrometry_used": np.array([True, True, False, True]),
            "calib_photometry_used": np.array([True, False, False, False]),
        }
    )
    assert match_counts(Struct(stars=stars)) == {"astrometry": 3, "photometry": 1}
    assert match_counts(Struct()) == {"astrometry": None, "photometry": None}


def test_kafka_settings_from_environment():
    env = {
        "PROMPTCAL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PROMPTCAL_KAFKA_SASL_PASSWORD": "s3cret",
        "PROMPTCAL_KAFKA_": "ignored",
        "KAFKA_SASL_USERNAME": "not ours",
    }
    assert load_client_settings(None, env) == {
        "security.protocol": "SASL_SSL",
        "sasl.password": "s3cret",
    }
    assert load_client_settings(None, {}) == {}
    assert property_name("PROMPTCAL_KAFKA_SSL_CA_LOCATION") == "ssl.ca.location"
    with pytest.raises(ValueError, match="PROMPTCAL_KAFKA_"):
        property_name("SASL_USERNAME")
