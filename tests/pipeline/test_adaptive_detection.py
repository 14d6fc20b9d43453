"""Adaptive PSF-phase detection (spec A4; LSST's test_run_adaptive_threshold_detection)."""

from __future__ import annotations

import logging

import numpy as np

from promptcal.core.ids import IdGenerator
from promptcal.pipeline.task import CalibrateImageTask
from promptcal.simulate import SkyConfig, simulate_exposure
from promptcal.simulate.upstream import make_upstream_dataset

ADAPTIVE = {
    "do_adaptive_threshold_detection": True,
    "adaptive_threshold.min_footprints": 4,
    "adaptive_threshold.min_isolated": 4,
    "psf_detection.do_re_estimate_background": False,
    "sky_sources.n_sources": 2,
}


def test_adaptive_detection_on_the_upstream_fixture(caplog):
    data = make_upstream_dataset()
    task = CalibrateImageTask()
    task.config = task.config.with_overrides(ADAPTIVE)
    with caplog.at_level(logging.INFO, logger="promptcal"):
        result = task.compute_psf(data.exposure, IdGenerator(visit=1234, detector=12))
    assert "Using adaptive threshold detection " in caplog.text
    assert int(result.psf_stars["calib_psf_used"].sum()) == 3
    sigma = data.exposure.psf.determinant_radius(*data.exposure.center)
    assert abs(sigma / 2.0 - 1) < 0.01
    assert len(result.background) >= 1  # no re-estimate: only the initial element
    threshold = task.metadata["psfAdaptiveThresholdValue"]
    assert 3.0 <= threshold <= 10.0  # too few footprints at 10σ: the loop went deeper


def test_adaptive_detection_keeps_peaks_within_budget_and_isolated():
    config = SkyConfig(width=1024, height=1024, n_stars=4000, star_flux_min=1500.0)
    sim = simulate_exposure(config, seed=11)
    task = CalibrateImageTask()
    budget = 600
    task.config = task.config.with_overrides(
        {
            "do_adaptive_threshold_detection": True,
            "adaptive_threshold.max_peaks": {"r": budget},
        }
    )
    result = task.compute_psf(sim.exposure, IdGenerator(visit=1, detector=0))
    threshold = task.metadata["psfAdaptiveThresholdValue"]
    assert threshold > 10.0  # 4000 bright stars in 1k×1k: the peak budget forces T up
    n_footprints = len(result.psf_stars)
    assert 0 < n_footprints <= budget
    isolated = np.count_nonzero(result.psf_stars_footprints.n_peaks() == 1)
    assert isolated / result.psf_stars_footprints.n > 0.45
