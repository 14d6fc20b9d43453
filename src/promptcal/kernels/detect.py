"""Detection kernels: thresholding, footprint growth, peak finding, spans."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def significance_above(smoothed, smoothed_var, threshold, polarity):
    """Pixels whose smoothed value exceeds ``threshold`` × √(smoothed variance).

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
    numpy.ndarray
        bool (H, W).
    """
    height, width = smoothed.shape
    out = np.zeros((height, width), np.bool_)
    t2 = np.float32(threshold * threshold)
    for y in range(height):
        for x in range(width):
            value = smoothed[y, x] * polarity
            var = smoothed_var[y, x]
            if value > 0 and var > 0 and value * value > t2 * var:
                out[y, x] = True
    return out


@kernel
def label_peak_significance(labels, n_labels, smoothed, smoothed_var, polarity):
    """Per label: maximum significance and the (x, y) array position where it occurs.

    Returns
    -------
    peak_sig : numpy.ndarray
        float64 (n_labels,) maximum of polarity × smoothed / √var [σ].
    peak_x, peak_y : numpy.ndarray
        int64 (n_labels,) array coordinates of that maximum.
    """
    peak_sig = np.full(n_labels, -np.inf)
    peak_x = np.zeros(n_labels, np.int64)
    peak_y = np.zeros(n_labels, np.int64)
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            lab = labels[y, x]
            if lab > 0:
                var = smoothed_var[y, x]
                if var > 0:
                    sig = polarity * smoothed[y, x] / np.sqrt(var)
                    if sig > peak_sig[lab - 1]:
                        peak_sig[lab - 1] = sig
                        peak_x[lab - 1] = x
                        peak_y[lab - 1] = y
    return peak_sig, peak_x, peak_y


@kernel
def grow_mask(labels, keep, radius):
    """Grow the pixels of kept labels isotropically by ``radius`` pixels.

    Parameters
    ----------
    labels : numpy.ndarray
        int32 (H, W), 0 for background, ``i + 1`` for component ``i``.
    keep : numpy.ndarray
        bool (n_labels,) which components to keep.
    radius : int
        Growth radius [px]; a pixel is added when its centre lies within
        ``radius`` of a kept pixel's centre.

    Returns
    -------
    numpy.ndarray
        bool (H, W) grown mask of kept components.
    """
    height, width = labels.shape
    out = np.zeros((height, width), np.bool_)
    r2 = radius * radius
    for y in range(height):
        for x in range(width):
            lab = labels[y, x]
            if lab == 0 or not keep[lab - 1]:
                continue
            out[y, x] = True
            # Only boundary pixels can add new pixels when growing.
            interior = (
                0 < y < height - 1
                and 0 < x < width - 1
                and labels[y - 1, x] == lab
                and labels[y + 1, x] == lab
                and labels[y, x - 1] == lab
                and labels[y, x + 1] == lab
            )
            if interior or radius <= 0:
                continue
            for dy in range(-radius, radius + 1):
                yy = y + dy
                if yy < 0 or yy >= height:
                    continue
                for dx in range(-radius, radius + 1):
                    xx = x + dx
                    if 0 <= xx < width and dx * dx + dy * dy <= r2:
                        out[yy, xx] = True
    return out


@kernel
def find_peaks(labels, core, smoothed, smoothed_var, polarity, min_significance):
    """Local maxima (8-neighbour) of polarity × smoothed inside ``core`` pixels.

    Returns
    -------
    label, x, y : numpy.ndarray
        int64 arrays: footprint label and array coordinates of each peak.
    significance, value : numpy.ndarray
        float64 arrays: peak significance [σ] and smoothed value (polarity applied).
    """
    height, width = labels.shape
    n_max = 1024
    out_label = np.empty(n_max, np.int64)
    out_x = np.empty(n_max, np.int64)
    out_y = np.empty(n_max, np.int64)
    out_sig = np.empty(n_max, np.float64)
    out_val = np.empty(n_max, np.float64)
    n = 0
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            if not core[y, x] or labels[y, x] == 0:
                continue
            value = polarity * smoothed[y, x]
            is_max = True
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    if dx == 0 and dy == 0:
                        continue
                    other = polarity * smoothed[y + dy, x + dx]
                    # Ties go to the earlier pixel in raster order.
                    if other > value or (other == value and (dy < 0 or (dy == 0 and dx < 0))):
                        is_max = False
            if not is_max:
                continue
            var = smoothed_var[y, x]
            if var <= 0:
                continue
            sig = value / np.sqrt(var)
            if sig < min_significance:
                continue
            if n == n_max:
                n_max *= 2
                out_label = _grow_int(out_label, n_max)
                out_x = _grow_int(out_x, n_max)
                out_y = _grow_int(out_y, n_max)
                out_sig = _grow_float(out_sig, n_max)
                out_val = _grow_float(out_val, n_max)
            out_label[n] = labels[y, x]
            out_x[n] = x
            out_y[n] = y
            out_sig[n] = sig
            out_val[n] = value
            n += 1
    return out_label[:n], out_x[:n], out_y[:n], out_sig[:n], out_val[:n]


@kernel
def _grow_int(values, size):
    out = np.empty(size, np.int64)
    out[: values.size] = values
    return out


@kernel
def _grow_float(values, size):
    out = np.empty(size, np.float64)
    out[: values.size] = values
    return out


@kernel
def label_spans(labels):
    """Run-length spans of every labelled region.

    Returns
    -------
    label, y, x0, x1 : numpy.ndarray
        int64 arrays; each span covers array columns ``x0..x1`` inclusive of row ``y``.
    """
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


@kernel
def kept_pixels(labels, keep):
    """Pixels of components whose ``keep`` flag is set (labels are 1-based)."""
    height, width = labels.shape
    out = np.zeros((height, width), np.bool_)
    for y in range(height):
        for x in range(width):
            lab = labels[y, x]
            if lab > 0 and keep[lab - 1]:
                out[y, x] = True
    return out


@kernel
def set_bits_where_labelled(mask, labels, bit):
    """``mask |= bit`` wherever ``labels`` is non-zero (in place)."""
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            if labels[y, x] != 0:
                mask[y, x] |= bit


@kernel
def clear_bits(mask, bits):
    """``mask &= ~bits`` (in place)."""
    height, width = mask.shape
    inverse = ~bits
    for y in range(height):
        for x in range(width):
            mask[y, x] &= inverse
