"""Source detection (spec A4.4 and A8): PSF-matched smoothing, pixel-stdev threshold,
peak multiplier, isotropic growth, both polarities."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.exposure import Exposure
from promptcal.core.footprints import Footprints
from promptcal.kernels.components import (
    Spans,
    paint_labels,
    select_spans,
    span_bboxes,
    span_components,
)
from promptcal.kernels.convolve import gaussian_taps, smooth_image, smooth_image_and_variance
from promptcal.kernels.detect import (
    component_peaks,
    find_peaks_in_spans,
    grow_spans,
    threshold_spans,
)
from promptcal.kernels.maskops import clear_and_set_bits, set_bits_on_spans

log = logging.getLogger(__name__)


class DetectionConfig(Config):
    """Configuration of one detection pass."""

    threshold: float = Field(5.0, gt=0, description="Footprint threshold [σ of smoothed pixels].")
    include_threshold_multiplier: float = Field(
        1.0, ge=1.0, description="A footprint is kept if its peak exceeds threshold × this [1]."
    )
    n_sigma_to_grow: float = Field(
        2.4, ge=0, description="Footprints are grown by ⌊this × PSF σ + ½⌋ [PSF σ]."
    )
    polarity: Literal["positive", "negative", "both"] = Field(
        "positive", description="Which signs of sources to detect."
    )
    min_pixels: int = Field(1, ge=1, description="Minimum footprint size before growth [px].")
    do_re_estimate_background: bool = Field(
        True, description="Re-fit the background with detections masked, after detecting."
    )


@dataclass
class DetectionResult:
    """Footprints found by one pass.

    Attributes
    ----------
    positive, negative : Footprints or None
        Footprints by polarity (None when that polarity was not searched).
    threshold : float
        Threshold used [σ].
    """

    positive: Footprints | None
    negative: Footprints | None
    threshold: float

    @property
    def n_positive_peaks(self) -> int:
        return 0 if self.positive is None else int(self.positive.peak_x.size)

    @property
    def n_negative_peaks(self) -> int:
        return 0 if self.negative is None else int(self.negative.peak_x.size)


class SmoothedVarianceCache:
    """The variance plane smoothed by the last detection kernel, for reuse.

    The variance plane does not change between the detection passes of one run, so
    its smoothed version is computed once per kernel width; :class:`CalibrateImageTask`
    makes one cache per ``run()`` and hands it to each detection.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: np.ndarray | None = None

    def get(self, key: tuple) -> np.ndarray | None:
        """The smoothed variance stored under ``key``, or None."""
        return self._value if key == self._key else None

    def put(self, key: tuple, value: np.ndarray) -> None:
        """Keep ``value`` (only the latest kernel width is kept)."""
        self._key, self._value = key, value


def smooth_for_detection(
    exposure: Exposure, psf_sigma: float, variance_cache: SmoothedVarianceCache | None = None
):
    """Smooth image and variance with a Gaussian of the PSF σ [px].

    With a ``variance_cache`` that holds the smoothed variance for this kernel and this
    variance plane, only the image is smoothed.

    Returns
    -------
    smoothed, smoothed_var : numpy.ndarray
        float32 arrays; zero in the invalid border.
    half_width : int
        Width of the invalid border [px].
    """
    taps = gaussian_taps(psf_sigma)
    mask = exposure.mask
    ignore = mask.is_set("NO_DATA") if mask.any_set("NO_DATA") else np.zeros((1, 1), bool)
    key = (taps.tobytes(), id(exposure.variance))
    smoothed_var = variance_cache.get(key) if variance_cache is not None else None
    if smoothed_var is not None:
        smoothed = smooth_image(exposure.image, ignore, taps)
    else:
        smoothed, smoothed_var = smooth_image_and_variance(
            exposure.image, exposure.variance, ignore, taps
        )
        if variance_cache is not None:
            variance_cache.put(key, smoothed_var)
    return smoothed, smoothed_var, taps.size // 2


def _footprints_of_polarity(
    smoothed, smoothed_var, polarity: int, config: DetectionConfig, grow_radius: int, xy0
) -> tuple[Footprints, Spans]:
    """Footprints of one polarity, and the span set they cover.

    Everything before the final label image works on spans: the components above
    threshold, their peak significance and size, their growth, and the peak search.
    """
    width = smoothed.shape[1]
    above = threshold_spans(smoothed, smoothed_var, config.threshold, polarity)
    component, n_components = span_components(above.row_start, above.x0, above.x1)
    peak_sig, sizes = component_peaks(component, n_components, above.peak, above.x0, above.x1)
    keep = peak_sig > config.threshold * config.include_threshold_multiplier
    if config.min_pixels > 1:
        keep &= sizes >= config.min_pixels
    core = select_spans(above.row_start, above.x0, above.x1, keep[component - 1])
    grown = grow_spans(*core, grow_radius, width)
    final, n = span_components(*grown)
    final_labels = paint_labels(*grown, final, width)
    bbox = span_bboxes(*grown, final, n, width)
    peaks = find_peaks_in_spans(
        final_labels, *core, smoothed, smoothed_var, polarity, config.threshold
    )
    order = np.lexsort((-peaks.value, peaks.label))
    footprints = Footprints(
        labels=final_labels,
        bbox=bbox,
        peak_footprint=(peaks.label[order] - 1).astype(np.int64),
        peak_x=peaks.x[order],
        peak_y=peaks.y[order],
        peak_significance=peaks.significance[order],
        peak_value=peaks.value[order],
        xy0=(int(xy0[0]), int(xy0[1])),
    )
    return footprints, grown


def detect_footprints(
    exposure: Exposure,
    psf_sigma: float,
    config: DetectionConfig,
    *,
    smoothed=None,
    variance_cache: SmoothedVarianceCache | None = None,
) -> DetectionResult:
    """Detect footprints and set the DETECTED / DETECTED_NEGATIVE / EDGE mask planes.

    Parameters
    ----------
    exposure : Exposure
        Background-subtracted exposure; its mask is updated in place.
    psf_sigma : float
        Gaussian σ of the current PSF [px]; sets smoothing and growth.
    config : DetectionConfig
        Thresholds and switches.
    smoothed : tuple, optional
        A cached result of :func:`smooth_for_detection` for the same pixels.
    variance_cache : SmoothedVarianceCache, optional
        Reuses the smoothed variance of an earlier pass with the same kernel.
    """
    if smoothed is None:
        smoothed = smooth_for_detection(exposure, psf_sigma, variance_cache)
    image_s, var_s, half = smoothed
    grow_radius = int(config.n_sigma_to_grow * psf_sigma + 0.5)
    mask = exposure.mask
    edge_bit = mask.bit("EDGE")
    if half > 0:
        mask.array[:half, :] |= edge_bit
        mask.array[-half:, :] |= edge_bit
        mask.array[:, :half] |= edge_bit
        mask.array[:, -half:] |= edge_bit
    positive = negative = None
    detected_bit, negative_bit = mask.bit("DETECTED"), mask.bit("DETECTED_NEGATIVE")
    planes = []  # (spans, bit) to set once the old planes are cleared
    if config.polarity in ("positive", "both"):
        positive, spans = _footprints_of_polarity(
            image_s, var_s, 1, config, grow_radius, exposure.xy0
        )
        planes.append((spans, np.int32(detected_bit)))
    if config.polarity in ("negative", "both"):
        negative, spans = _footprints_of_polarity(
            image_s, var_s, -1, config, grow_radius, exposure.xy0
        )
        planes.append((spans, np.int32(negative_bit)))
    # Clearing both planes and setting the first in one pass reads the mask once.
    (spans, bit), *others = planes
    clear_and_set_bits(mask.array, np.int32(detected_bit | negative_bit), *spans, bit)
    for spans, bit in others:
        set_bits_on_spans(mask.array, *spans, bit)
    log.debug(
        "Detected %d positive and %d negative footprints at %.1fσ",
        0 if positive is None else positive.n,
        0 if negative is None else negative.n,
        config.threshold,
    )
    return DetectionResult(positive, negative, config.threshold)
