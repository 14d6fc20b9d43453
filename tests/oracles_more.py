"""More plain NumPy/SciPy reference implementations of Numba kernels.

Companion of :mod:`oracles`: labelling, deblending, cosmic rays and interpolation,
pixel-basis PSF stamps, clipped means, the simulator's source rendering and the
astrometric offset vote. Each oracle is written from the kernel's docstring,
vectorised or as the most literal loop, in float64.
"""

from __future__ import annotations

import numpy as np
import oracles_measure
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


def find_cosmic_rays(image, variance, skip, psf_sigma, min_sigma, min_dn, fac, fac2):
    """The sharpness test with a Gaussian PSF's neighbour/centre ratios."""
    ratio1 = np.exp(-0.5 / psf_sigma**2)
    ratio2 = np.exp(-1.0 / psf_sigma**2)
    return find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2)


def find_sharp_pixels(image, variance, skip, ratio1, ratio2, min_sigma, min_dn, fac, fac2):
    """Vectorised sharpness test with the PSF given by its neighbour/centre ratios."""
    img = image.astype(np.float64)
    var = variance.astype(np.float64)
    h, w = img.shape
    c = np.s_[1 : h - 1, 1 : w - 1]

    def at(arr, dy, dx):
        return arr[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]

    v, vv = img[c], var[c]
    with np.errstate(invalid="ignore"):
        candidate = ~skip[c] & (vv > 0) & (v >= min_dn) & (v**2 >= min_sigma**2 * vv)
        core = v - fac * np.sqrt(vv)
        sharp = np.zeros_like(candidate)
        for (ay, ax), ratio in (((0, 1), ratio1), ((1, 0), ratio1), ((1, 1), ratio2),
                                ((1, -1), ratio2)):  # fmt: skip
            ok = ~at(skip, ay, ax) & ~at(skip, -ay, -ax)
            pair = 0.5 * (at(img, ay, ax) + at(img, -ay, -ax))
            pair_sigma = 0.5 * np.sqrt(at(var, ay, ax) + at(var, -ay, -ax))
            sharp |= ok & (pair + fac * pair_sigma < fac2 * ratio * core)
        cr = np.zeros((h, w), bool)
        cr[c] = candidate & sharp
        significant = ~skip & (img > fac * np.sqrt(var))
    return cr | (ndimage.binary_dilation(cr, structure=np.ones((3, 3), bool)) & significant)


def interpolate_pixels(image, bad, max_distance):
    """Linear interpolation along rows and columns across gaps of ≤ 2·max_distance pixels.

    Returns the interpolated image and the pixels with no estimate (left unchanged).
    """
    img = image.astype(np.float64)
    total = np.zeros(img.shape)
    count = np.zeros(img.shape, int)
    for transpose in (False, True):
        im = img.T if transpose else img
        bd = bad.T if transpose else bad
        tot = total.T if transpose else total
        cnt = count.T if transpose else count
        for y in range(im.shape[0]):
            lab, _ = ndimage.label(bd[y])
            for run in ndimage.find_objects(lab):
                x0, x1 = run[0].start, run[0].stop - 1
                left, right = x0 - 1, x1 + 1
                if left < 0 or right >= im.shape[1] or x1 - x0 + 1 > 2 * max_distance:
                    continue
                xs = np.arange(x0, x1 + 1)
                tot[y, xs] += np.interp(xs, [left, right], [im[y, left], im[y, right]])
                cnt[y, xs] += 1
    out = np.where(count > 0, total / np.maximum(count, 1), img)
    out = np.where(bad, out, img)
    return out, bad & (count == 0)


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
        shifted = oracles_measure.shift_stamp(image, dx[i], dy[i], order)
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


def binned_clipped_mean(image, mask, bits, y_edges, x_edges, n_sigma, n_iter):
    """MEANCLIP of the unmasked, finite pixels of every bin: values, stdevs, n_valid."""
    ny, nx = len(y_edges) - 1, len(x_edges) - 1
    values = np.full((ny, nx), np.nan)
    stdevs = np.full((ny, nx), np.nan)
    n_valid = np.zeros((ny, nx), np.int64)
    for j in range(ny):
        for i in range(nx):
            sl = np.s_[y_edges[j] : y_edges[j + 1], x_edges[i] : x_edges[i + 1]]
            pix = image[sl].astype(np.float64)
            v = pix[((mask[sl] & bits) == 0) & np.isfinite(pix)]
            n_valid[j, i] = v.size
            if v.size == 0:
                continue
            values[j, i], stdevs[j, i] = clipped_mean(v, n_sigma, n_iter)
    return values, stdevs, n_valid


# ------------------------------------------------------------------ simulation


def render_sources(shape, x0, y0, src_start, xc, yc, amp, qa, qb, qc, kind, beta):
    """Every source over the whole image, at pixel centres, without stamps [count].

    Source s has components ``src_start[s]:src_start[s + 1]``, each ``amp·exp(-Q/2)``
    (``kind`` 0) or ``amp·(1 + Q)^-beta`` (``kind`` 1) with ``Q = qa dx² + 2 qb dx dy
    + qc dy²``; the image's pixel (0, 0) is at (x0, y0).
    """
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    xx += x0
    yy += y0
    out = np.zeros(shape)
    for s in range(len(src_start) - 1):
        dx = xx - xc[s]
        dy = yy - yc[s]
        for c in range(src_start[s], src_start[s + 1]):
            q = qa[c] * dx**2 + 2 * qb[c] * dx * dy + qc[c] * dy**2
            if kind[c] == 0:
                out += amp[c] * np.exp(-0.5 * q)
            else:
                out += amp[c] * (1.0 + q) ** (-beta[c])
    return out


# ------------------------------------------------------------------ astrometric matching


def vote_offsets(src_x, src_y, ref_x, ref_y, cos_t, sin_t, max_offset, bin_size):
    """Per trial rotation, the histogram of ``ref - R·src`` offsets (int64 (k, nb, nb))."""
    nb = int(np.ceil(2.0 * max_offset / bin_size))
    hist = np.zeros((len(cos_t), nb, nb), np.int64)
    for k, (c, s) in enumerate(zip(cos_t, sin_t, strict=True)):
        rx = c * src_x - s * src_y
        ry = s * src_x + c * src_y
        dx = (ref_x[None, :] - rx[:, None] + max_offset).ravel()
        dy = (ref_y[None, :] - ry[:, None] + max_offset).ravel()
        ok = (dx >= 0) & (dy >= 0)
        bx = (dx[ok] / bin_size).astype(np.int64)
        by = (dy[ok] / bin_size).astype(np.int64)
        ok = (bx < nb) & (by < nb)
        np.add.at(hist[k], (by[ok], bx[ok]), 1)
    return hist
