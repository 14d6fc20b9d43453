"""Adaptive threshold detection for the PSF phase (spec A4, "Adaptive PSF detection").

Starting at 10σ footprints / ×5 peaks, detect with both polarities on the image minus a
temporary wide (512-px) background, and adjust the threshold until enough isolated
(single-peak) footprints are found without a flood of peaks or negative detections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.exposure import Exposure
from promptcal.pipeline.background import BackgroundConfig, subtract_background
from promptcal.pipeline.detect.detection import (
    DetectionConfig,
    DetectionResult,
    SmoothedVarianceCache,
    detect_footprints,
)

log = logging.getLogger(__name__)


class AdaptiveThresholdConfig(Config):
    """The adaptive loop's limits (LSST's defaults)."""

    max_iterations: int = Field(20, ge=1, description="Detection passes at most [1].")
    initial_threshold: float = Field(10.0, gt=0, description="First threshold [σ].")
    include_threshold_multiplier: float = Field(
        5.0, ge=1, description="Peaks must exceed threshold × this [1]."
    )
    min_footprints: int = Field(15, ge=1, description="Lower T at or below this many [1].")
    min_isolated: int = Field(100, ge=1, description="Isolated footprints wanted [1].")
    sufficient_isolated_fraction: float = Field(
        0.45, gt=0, le=1, description="…at this isolated fraction or more [1]."
    )
    max_peaks: dict[str, int] = Field(
        default_factory=lambda: {"u": 3000, "g": 3000, "r": 3000, "y": 3000, "i": 5000, "z": 5000},
        description="Peak budget per band; raise T above it [1].",
    )
    default_max_peaks: int = Field(3000, ge=1, description="Budget of other bands [1].")
    max_negative_fraction: float = Field(
        0.025, ge=0, description="Raise T when negative peaks exceed this × positive [1]."
    )
    min_negative_peaks: int = Field(15, ge=0, description="…and exceed this count [1].")
    raise_factor_min: float = Field(1.2, gt=1, description="Smallest T increase [1].")
    raise_factor_max: float = Field(1.7, gt=1, description="Largest T increase [1].")
    lower_factor: float = Field(0.7, gt=0, lt=1, description="T decrease when too few [1].")
    min_threshold: float = Field(3.0, gt=0, description="Never below this [σ].")
    background_bin_size: int = Field(512, ge=8, description="Temporary background bins [px].")


@dataclass
class AdaptiveResult:
    """Outcome of the loop: the detection, its threshold and multiplier, iterations."""

    detection: DetectionResult
    threshold: float
    multiplier: float
    iterations: int


def adaptive_detect(
    exposure: Exposure,
    psf_sigma: float,
    base: DetectionConfig,
    config: AdaptiveThresholdConfig,
    background: BackgroundConfig,
    variance_cache: SmoothedVarianceCache | None = None,
) -> AdaptiveResult:
    """Run the adaptive loop; the exposure's pixels are unchanged on return.

    ``variance_cache`` is handed to every detection pass (the variance plane does not
    change while the threshold adapts).
    """
    log.info(
        "Using adaptive threshold detection (initial threshold %.1f)", config.initial_threshold
    )
    wide = background.model_copy(update={"bin_size": config.background_bin_size})
    temporary = subtract_background(exposure, wide)
    budget = config.max_peaks.get(exposure.band or "", config.default_max_peaks)
    threshold = config.initial_threshold
    multiplier = config.include_threshold_multiplier
    try:
        for iteration in range(1, config.max_iterations + 1):
            used = threshold
            detect_config = base.model_copy(
                update={
                    "threshold": used,
                    "include_threshold_multiplier": multiplier,
                    "polarity": "both",
                }
            )
            result = detect_footprints(
                exposure, psf_sigma, detect_config, variance_cache=variance_cache
            )
            positive = result.positive
            n_peaks = positive.peak_x.size
            n_negative = result.n_negative_peaks
            n_footprints = positive.n
            isolated = int(np.count_nonzero(positive.n_peaks() == 1))
            fraction = isolated / n_footprints if n_footprints else 0.0
            log.debug(
                "adaptive pass %d: T=%.2f, %d footprints (%d isolated), %d peaks, %d negative",
                iteration, used, n_footprints, isolated, n_peaks, n_negative,
            )  # fmt: skip
            too_many_negative = n_negative > max(
                config.min_negative_peaks, config.max_negative_fraction * n_peaks
            )
            if n_peaks > budget or too_many_negative:
                excess = max(n_peaks / budget, 1.0)
                threshold *= float(
                    np.clip(excess, config.raise_factor_min, config.raise_factor_max)
                )
            elif n_footprints <= config.min_footprints:
                if used <= config.min_threshold:
                    break
                threshold = max(used * config.lower_factor, config.min_threshold)
            elif isolated > config.min_isolated and fraction > config.sufficient_isolated_fraction:
                break
            elif fraction <= config.sufficient_isolated_fraction:
                threshold *= config.raise_factor_min  # too blended: fewer, cleaner footprints
            elif used > config.min_threshold:
                threshold = max(used * config.lower_factor, config.min_threshold)  # go deeper
            else:
                break
    finally:
        temporary.scaled(-1.0).subtract_from(exposure.image)
    return AdaptiveResult(result, used, multiplier, iteration)
