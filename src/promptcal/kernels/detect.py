"""Detection kernels: thresholding, footprint growth, peak finding, spans.

The detection chain works on span sets (see :mod:`.components`): the threshold pass
emits the spans of the pixels above threshold, growth and peak finding only visit
spans, and only the final footprint labels are painted into a full-size image.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.components import Spans, append_runs, reserve, row_flags


class ThresholdSpans(NamedTuple):
    """What :func:`threshold_spans` returns.

    Attributes
    ----------
    row_start, x0, x1 : numpy.ndarray
        int64 span set (see :mod:`.components`).
    peak : numpy.ndarray
        float64 per span: maximum of polarity × smoothed / √var [σ].
    """

    row_start: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    peak: np.ndarray


def threshold_spans(smoothed, smoothed_var, threshold, polarity) -> ThresholdSpans:
    """Spans of the pixels above threshold, with each span's peak significance.

    A pixel is above threshold when its smoothed value exceeds ``threshold`` ×
    √(smoothed variance) (a non-positive variance is never above).

    Parameters
    ----------
    smoothed, smoothed_var : numpy.ndarray
        float32 (H, W) smoothed image and its variance.
    threshold : float
        Threshold [σ].
    polarity : int
        +1 for positive sources, -1 for negative ones.

    Returns
    -------
    ThresholdSpans
        The spans above threshold and their peak significance.
    """
    return ThresholdSpans(*_threshold_spans(smoothed, smoothed_var, threshold, polarity))


@kernel
def _threshold_spans(smoothed, smoothed_var, threshold, polarity):
    """The kernel of :func:`threshold_spans` (a plain tuple)."""
    height, width = smoothed.shape
    flags, words = row_flags(width)
    t2 = np.float32(threshold * threshold)
    row_start = np.empty(height + 1, np.int64)
    x0 = np.empty(1024, np.int64)
    x1 = np.empty(1024, np.int64)
    peak = np.empty(1024, np.float64)
    n = 0
    for y in range(height):
        row_start[y] = n
        # Branch-free so that the full-image part of the pass vectorises.
        for x in range(width):
            value = smoothed[y, x] * polarity
            var = smoothed_var[y, x]
            flags[x] = (value > 0) & (var > 0) & (value * value > t2 * var)
        first = n
        x0 = reserve(x0, n, (width + 1) // 2)
        x1 = reserve(x1, n, (width + 1) // 2)
        peak = reserve(peak, n, (width + 1) // 2)
        n = append_runs(flags, words, width, x0, x1, n)
        for s in range(first, n):
            best = -np.inf
            for x in range(x0[s], x1[s] + 1):
                sig = polarity * smoothed[y, x] / np.sqrt(smoothed_var[y, x])
                if sig > best:
                    best = sig
            peak[s] = best
    row_start[height] = n
    return row_start, x0[:n].copy(), x1[:n].copy(), peak[:n].copy()


@kernel
def component_peaks(component, n, span_peak, x0, x1):
    """Per component: maximum of the span peaks, and pixel count.

    Returns
    -------
    peak : numpy.ndarray
        float64 (n,) maximum significance [σ] (-inf for a component without spans).
    size : numpy.ndarray
        int64 (n,) number of pixels [px].
    """
    peak = np.full(n, -np.inf)
    size = np.zeros(n, np.int64)
    for s in range(component.size):
        k = component[s] - 1
        if span_peak[s] > peak[k]:
            peak[k] = span_peak[s]
        size[k] += x1[s] - x0[s] + 1
    return peak, size


def grow_spans(row_start, x0, x1, radius, width) -> Spans:
    """Grow a span set isotropically by ``radius`` pixels.

    A pixel is added when its centre lies within ``radius`` of a pixel of the set:
    row ``y + dy`` receives every span widened by ⌊√(radius² − dy²)⌋ on both sides.
    The widened spans reaching one output row come from 2 radius + 1 sorted input
    rows; they are merged in order of their start into maximal runs.

    Parameters
    ----------
    row_start, x0, x1 : numpy.ndarray
        int64 span set (see :mod:`.components`) of an image ``width`` pixels wide.
    radius : int
        Growth radius [px].
    width : int
        Image width [px]; grown spans are clipped to the image.

    Returns
    -------
    Spans
        The grown span set.
    """
    return Spans(*_grow_spans(row_start, x0, x1, radius, width))


@kernel
def _grow_spans(row_start, x0, x1, radius, width):
    """The kernel of :func:`grow_spans` (a plain tuple)."""
    height = row_start.size - 1
    if radius <= 0:
        return row_start.copy(), x0.copy(), x1.copy()
    half = np.empty(2 * radius + 1, np.int64)
    for dy in range(-radius, radius + 1):
        w = 0
        while (w + 1) * (w + 1) + dy * dy <= radius * radius:
            w += 1
        half[dy + radius] = w
    ptr = np.empty(2 * radius + 1, np.int64)
    end = np.empty(2 * radius + 1, np.int64)
    widen = np.empty(2 * radius + 1, np.int64)
    key = np.empty(2 * radius + 1, np.int64)
    out_start = np.empty(height + 1, np.int64)
    out_x0 = np.empty(x0.size + 1024, np.int64)
    out_x1 = np.empty(x0.size + 1024, np.int64)
    n = 0
    for y in range(height):
        out_start[y] = n
        lo = max(0, y - radius)
        hi = min(height - 1, y + radius)
        if row_start[hi + 1] == row_start[lo]:
            continue
        # Each output run consumes at least one widened span.
        out_x0 = reserve(out_x0, n, row_start[hi + 1] - row_start[lo])
        out_x1 = reserve(out_x1, n, row_start[hi + 1] - row_start[lo])
        k = 0
        for yy in range(lo, hi + 1):
            if row_start[yy + 1] > row_start[yy]:
                ptr[k] = row_start[yy]
                end[k] = row_start[yy + 1]
                widen[k] = half[yy - y + radius]
                key[k] = x0[ptr[k]] - widen[k]
                k += 1
        # k-way merge by start column; ``key`` holds each input row's next start and
        # exhausted rows are swapped out. Every widened span overlaps the image, so
        # gaps between merged runs do too and clipping runs afterwards keeps them maximal.
        run_open = False
        a = 0
        b = 0
        while k > 0:
            best = 0
            for i in range(1, k):
                if key[i] < key[best]:
                    best = i
            start = key[best]
            stop = x1[ptr[best]] + widen[best]
            ptr[best] += 1
            if ptr[best] < end[best]:
                key[best] = x0[ptr[best]] - widen[best]
            else:
                k -= 1
                ptr[best], end[best], widen[best], key[best] = ptr[k], end[k], widen[k], key[k]
            if run_open and start <= b + 1:
                b = max(b, stop)
                continue
            if run_open:
                out_x0[n] = max(a, 0)
                out_x1[n] = min(b, width - 1)
                n += 1
            run_open = True
            a = start
            b = stop
        out_x0[n] = max(a, 0)
        out_x1[n] = min(b, width - 1)
        n += 1
    out_start[height] = n
    return out_start, out_x0[:n].copy(), out_x1[:n].copy()


@kernel
def _is_local_max(smoothed, y, x, polarity, value):
    """Whether no 8-neighbour beats ``value``; ties go to the earlier pixel in raster order."""
    for dx in (-1, 0, 1):
        if polarity * smoothed[y - 1, x + dx] >= value:
            return False
    if polarity * smoothed[y, x - 1] >= value:
        return False
    if polarity * smoothed[y, x + 1] > value:
        return False
    for dx in (-1, 0, 1):
        if polarity * smoothed[y + 1, x + dx] > value:
            return False
    return True


@kernel
def _peak_at(smoothed, smoothed_var, y, x, polarity, min_significance):
    """Whether interior pixel (x, y) is a peak, its significance [σ] and value."""
    value = polarity * smoothed[y, x]
    if not _is_local_max(smoothed, y, x, polarity, value):
        return False, 0.0, value
    var = smoothed_var[y, x]
    if var <= 0:
        return False, 0.0, value
    sig = value / np.sqrt(var)
    return not sig < min_significance, sig, value


class Peaks(NamedTuple):
    """What :func:`find_peaks_in_spans` returns.

    Attributes
    ----------
    label, x, y : numpy.ndarray
        int64 arrays: footprint label and array coordinates of each peak.
    significance, value : numpy.ndarray
        float64 arrays: peak significance [σ] and smoothed value (polarity applied).
    """

    label: np.ndarray
    x: np.ndarray
    y: np.ndarray
    significance: np.ndarray
    value: np.ndarray


def find_peaks_in_spans(
    labels, row_start, x0, x1, smoothed, smoothed_var, polarity, min_significance
) -> Peaks:
    """Local maxima (8-neighbour) of polarity × smoothed among the pixels of a span set.

    Pixels on the outermost rows and columns, outside ``labels`` or without positive
    variance are never peaks; peaks come out in raster order.

    Returns
    -------
    Peaks
        The peaks, in raster order.
    """
    out = _find_peaks_in_spans(
        labels, row_start, x0, x1, smoothed, smoothed_var, polarity, min_significance
    )
    return Peaks(*out)


@kernel
def _find_peaks_in_spans(
    labels, row_start, x0, x1, smoothed, smoothed_var, polarity, min_significance
):
    """The kernel of :func:`find_peaks_in_spans` (a plain tuple)."""
    height, width = labels.shape
    # Sized for every candidate pixel, so the scan never reallocates.
    n_max = 0
    for y in range(1, height - 1):
        for s in range(row_start[y], row_start[y + 1]):
            n_max += max(min(x1[s], width - 2) - max(x0[s], 1) + 1, 0)
    out_label = np.empty(n_max, np.int64)
    out_x = np.empty(n_max, np.int64)
    out_y = np.empty(n_max, np.int64)
    out_sig = np.empty(n_max, np.float64)
    out_val = np.empty(n_max, np.float64)
    n = 0
    for y in range(1, height - 1):
        for s in range(row_start[y], row_start[y + 1]):
            for x in range(max(x0[s], 1), min(x1[s], width - 2) + 1):
                if labels[y, x] == 0:
                    continue
                ok, sig, value = _peak_at(smoothed, smoothed_var, y, x, polarity, min_significance)
                if not ok:
                    continue
                out_label[n] = labels[y, x]
                out_x[n] = x
                out_y[n] = y
                out_sig[n] = sig
                out_val[n] = value
                n += 1
    return (
        out_label[:n].copy(),
        out_x[:n].copy(),
        out_y[:n].copy(),
        out_sig[:n].copy(),
        out_val[:n].copy(),
    )


class LabelSpans(NamedTuple):
    """What :func:`label_spans` returns.

    Attributes
    ----------
    label, y, x0, x1 : numpy.ndarray
        int64 arrays; each span covers array columns ``x0..x1`` inclusive of row ``y``.
    """

    label: np.ndarray
    y: np.ndarray
    x0: np.ndarray
    x1: np.ndarray


def label_spans(labels) -> LabelSpans:
    """Run-length spans of every labelled region.

    Returns
    -------
    LabelSpans
        The spans of every label, in raster order.
    """
    return LabelSpans(*_label_spans(labels))


@kernel
def _label_spans(labels):
    """The kernel of :func:`label_spans` (a plain tuple)."""
    height, width = labels.shape
    count = 0
    for y in range(height):
        previous = 0
        for x in range(width):
            lab = labels[y, x]
            if lab != 0 and lab != previous:
                count += 1
            previous = lab
    out_label = np.empty(count, np.int64)
    out_y = np.empty(count, np.int64)
    out_x0 = np.empty(count, np.int64)
    out_x1 = np.empty(count, np.int64)
    n = 0
    for y in range(height):
        previous = 0
        for x in range(width):
            lab = labels[y, x]
            if lab != previous:
                if previous != 0:
                    out_x1[n - 1] = x - 1
                if lab != 0:
                    out_label[n] = lab
                    out_y[n] = y
                    out_x0[n] = x
                    n += 1
            previous = lab
        if previous != 0:
            out_x1[n - 1] = width - 1
    return out_label, out_y, out_x0, out_x1
