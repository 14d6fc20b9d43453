"""Deblending kernels: saddle tests between peaks and pixel assignment to children."""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel


@kernel
def line_minimum(smoothed, x0, y0, x1, y1):
    """Minimum of ``smoothed`` sampled (nearest pixel) along the segment between two peaks."""
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    low = smoothed[y0, x0]
    for t in range(n + 1):
        f = t / n
        x = int(np.floor(x0 + f * (x1 - x0) + 0.5))
        y = int(np.floor(y0 + f * (y1 - y0) + 0.5))
        value = smoothed[y, x]
        if value < low:
            low = value
    return low


@kernel
def assign_children(labels, footprint_label, bbox, peak_x, peak_y, peak_value, sigma, first_label):
    """Split one footprint's pixels among its peaks.

    Each pixel goes to the peak whose Gaussian template (σ [px], amplitude the
    peak's smoothed value) is largest there; the children get consecutive labels
    from ``first_label``.

    Returns
    -------
    numpy.ndarray
        int32 copy of the bbox cut-out of the new labels (0 outside the footprint).
    """
    x_min, y_min, x_max, y_max = bbox[0], bbox[1], bbox[2], bbox[3]
    out = np.zeros((y_max - y_min + 1, x_max - x_min + 1), np.int32)
    inv = 0.5 / (sigma * sigma)
    for y in range(y_min, y_max + 1):
        for x in range(x_min, x_max + 1):
            if labels[y, x] != footprint_label:
                continue
            best = -1.0
            best_k = 0
            for k in range(peak_x.size):
                d2 = (x - peak_x[k]) ** 2 + (y - peak_y[k]) ** 2
                score = np.log(max(peak_value[k], 1e-30)) - d2 * inv
                if k == 0 or score > best:
                    best = score
                    best_k = k
            out[y - y_min, x - x_min] = first_label + best_k
    return out


@kernel
def separate_peaks(
    smoothed,
    smoothed_var,
    peak_x,
    peak_y,
    peak_value,
    starts,
    counts,
    min_significance,
    max_children,
):
    """For each footprint, which of its peaks are kept as separate children.

    Peaks of footprint f are ``starts[f] … starts[f] + counts[f] - 1`` (brightest
    first; footprints with ``starts[f] < 0`` or no peaks are skipped). A peak is kept
    when the smoothed image dips by at least ``min_significance`` × its noise on the
    segment to every brighter kept peak; at most ``max_children`` peaks are kept.

    Returns
    -------
    numpy.ndarray
        bool per peak.
    """
    keep = np.zeros(peak_x.size, np.bool_)
    for f in range(starts.size):
        start = starts[f]
        if start < 0 or counts[f] == 0:
            continue
        keep[start] = True
        n_kept = 1
        for k in range(start + 1, start + counts[f]):
            if n_kept >= max_children:
                break
            depth = min_significance * np.sqrt(max(smoothed_var[peak_y[k], peak_x[k]], 1e-30))
            separate = True
            for j in range(start, k):
                if not keep[j]:
                    continue
                low = line_minimum(smoothed, peak_x[k], peak_y[k], peak_x[j], peak_y[j])
                if peak_value[k] - low < depth:
                    separate = False
                    break
            if separate:
                keep[k] = True
                n_kept += 1
    return keep
