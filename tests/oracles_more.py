"""More plain NumPy/SciPy reference implementations of Numba kernels.

Companion of :mod:`oracles` for the kernels added later (labelling, deblending,
mask operations, cosmic-ray masking, pixel-basis PSF stamps, clipped means). Each
oracle is written from the kernel's docstring, vectorised or as the most literal
loop, in float64.
"""

from __future__ import annotations

import numpy as np
import oracles
from scipy import ndimage

EIGHT = np.ones((3, 3), bool)
IQR_TO_SIGMA = 1.0 / 1.3489795003921634  # σ of a Gaussian per unit inter-quartile range

# ------------------------------------------------------------------ labelling


def boxes_from_slices(slices, n):
    """``find_objects`` slices → int64 (n, 4) inclusive ``x_min, y_min, x_max, y_max``."""
    out = np.full((n, 4), -1, np.int64)
    for k, sl in enumerate(slices[:n]):
        if sl is not None:
            out[k] = [sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1]
    return out


def label_components(mask):
    """8-connected components numbered by the raster position of their first pixel."""
    raw, n = ndimage.label(np.asarray(mask, bool), structure=EIGHT)
    flat = raw.ravel()
    present, first = np.unique(flat, return_index=True)
    present, first = present[present > 0], first[present > 0]
    renumber = np.zeros(n + 1, np.int32)
    renumber[present[np.argsort(first)]] = np.arange(1, n + 1, dtype=np.int32)
    labels = renumber[raw]
    return labels, n, boxes_from_slices(ndimage.find_objects(labels), n)


def label_bboxes(labels, n):
    """Inclusive boxes of labels 1..n (rows of -1 for labels that do not occur)."""
    return boxes_from_slices(ndimage.find_objects(np.asarray(labels), max_label=n), n)


# ------------------------------------------------------------------ deblending


def segment_pixel_superset(shape, x0, y0, x1, y1, samples_per_px=64):
    """Pixels whose unit square touches the segment (x0, y0)–(x1, y1).

    Every point of the segment has its nearest pixel in this set (a point on a square's
    border counts for both squares), so any nearest-pixel sampling of the segment is a
    subset of it. Returns a bool (H, W) array.
    """
    length = max(abs(x1 - x0), abs(y1 - y0), 1)
    f = np.linspace(0.0, 1.0, samples_per_px * length + 1)
    x = x0 + f * (x1 - x0)
    y = y0 + f * (y1 - y0)
    out = np.zeros(shape, bool)
    eps = 1e-9  # both neighbours of a half-integer coordinate
    for ex in (-eps, eps):
        for ey in (-eps, eps):
            xi = np.clip(np.floor(x + 0.5 + ex).astype(int), 0, shape[1] - 1)
            yi = np.clip(np.floor(y + 0.5 + ey).astype(int), 0, shape[0] - 1)
            out[yi, xi] = True
    return out


def assign_children(labels, footprint_label, bbox, peak_x, peak_y, peak_value, sigma, first_label):
    """Per footprint pixel, argmax_k of log(amplitude_k) − d_k²/(2σ²), first k on ties."""
    x_min, y_min, x_max, y_max = (int(v) for v in bbox)
    y, x = np.mgrid[y_min : y_max + 1, x_min : x_max + 1]
    px = np.asarray(peak_x, np.float64)[:, None, None]
    py = np.asarray(peak_y, np.float64)[:, None, None]
    amp = np.maximum(np.asarray(peak_value, np.float64), 1e-30)[:, None, None]
    d2 = (x - px) ** 2 + (y - py) ** 2
    score = np.log(amp) - d2 * (0.5 / (sigma * sigma))
    inside = labels[y_min : y_max + 1, x_min : x_max + 1] == footprint_label
    return np.where(inside, first_label + np.argmax(score, axis=0), 0).astype(np.int32)


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
    line_min,
):
    """Literal reading of the docstring, with the segment minimum ``line_min`` supplied.

    Footprint f owns peaks ``starts[f] … starts[f] + counts[f] - 1``, brightest first
    (``starts[f] < 0``: not deblended). The brightest is always kept; a fainter peak is
    kept when, towards every brighter *kept* peak, the smoothed image dips below its
    value by at least ``min_significance`` × √(smoothed variance at the peak); at most
    ``max_children`` peaks are kept per footprint.
    """
    keep = [False] * len(peak_x)
    for start, count in zip(starts, counts, strict=True):
        if start < 0 or count == 0:
            continue
        kept = [start]
        for k in range(start + 1, start + count):
            if len(kept) >= max_children:
                break
            noise = np.sqrt(max(float(smoothed_var[peak_y[k], peak_x[k]]), 1e-30))
            dips = [
                peak_value[k] - line_min(smoothed, peak_x[k], peak_y[k], peak_x[j], peak_y[j])
                for j in kept
            ]
            if min(dips) >= min_significance * noise:
                kept.append(k)
        for k in kept:
            keep[k] = True
    return np.array(keep, bool)


# ------------------------------------------------------------------ cosmic rays


find_sharp_pixels = oracles.find_sharp_pixels


def mask_cosmic_rays(
    image, variance, mask, skip_bits, cr_bit, ratio1, ratio2, min_sigma, min_dn, fac, fac2
):
    """New mask with ``cr_bit`` OR-ed on sharp pixels, and the count of CR-bit pixels."""
    skip = (mask & skip_bits) != 0
    cr = find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2)
    out = np.where(cr, mask | cr_bit, mask).astype(mask.dtype)
    return out, int(np.count_nonzero(out & cr_bit))


# ------------------------------------------------------------------ PSF


def pixel_psf_stamps(coefficients, terms, dx, dy, order):
    """Σ_t terms[t, i] · coefficients[t], Lanczos-shifted by (dx_i, dy_i), unit sum."""
    out = []
    for i in range(len(dx)):
        image = np.tensordot(terms[:, i], coefficients, axes=1)
        shifted = oracles.shift_stamp(image, dx[i], dy[i], order)
        out.append(shifted / shifted.sum())
    return np.array(out)


# ------------------------------------------------------------------ background


def clipped_mean(values, n_sigma, n_iter):
    """afw MEANCLIP: median and IQR width, then ``n_iter`` rounds of clip-and-average."""
    v = np.asarray(values, np.float64)
    q25, q50, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    center, hwidth = q50, n_sigma * IQR_TO_SIGMA * (q75 - q25)
    mean, var = q50, np.nan
    for _ in range(n_iter):
        kept = v[np.abs(v - center) <= hwidth]
        if kept.size == 0:
            break
        mean = kept.mean()
        if kept.size > 1:
            var = kept.var(ddof=1)
            hwidth = n_sigma * np.sqrt(var)
        center = mean
    return mean, np.sqrt(var)
