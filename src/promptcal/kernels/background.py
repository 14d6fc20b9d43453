"""Per-bin clipped-mean statistics for background estimation (arrays in, arrays out).

The statistic follows afw's ``MEANCLIP``: start from the median with a width taken
from the inter-quartile range (σ ≈ 0.7413·IQR), then iterate: keep pixels within
``n_sigma`` widths of the current centre, take their mean as the new centre and
their sample standard deviation as the new width.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: σ of a Gaussian per unit inter-quartile range (1 / 1.349).
IQR_TO_SIGMA = 0.741301109252802


@kernel
def _select(buf, lo, hi, k):
    """Partially sort ``buf[lo:hi]`` in place so that ``buf[k]`` is its order statistic.

    Afterwards ``buf[lo:k] <= buf[k] <= buf[k+1:hi]`` (Hoare quickselect).
    """
    hi -= 1
    while hi > lo:
        pivot = buf[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                tmp = buf[i]
                buf[i] = buf[j]
                buf[j] = tmp
                i += 1
                j -= 1
        # Now buf[lo..j] <= pivot <= buf[i..hi]; continue in the part holding k.
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return buf[k]
    return buf[k]


@kernel
def _order_statistic_sorted_ranks(buf, n, ranks, out):
    """Fallback: ``out[m]`` = the ``ranks[m]``-th smallest of ``buf[:n]`` (ranks ascending)."""
    start = 0
    for m in range(ranks.size):
        out[m] = _select(buf, start, n, ranks[m])
        start = ranks[m]


@kernel
def _hist_bin(v, lo, scale, nb):
    """Histogram slot of ``v``: 0 below range, 1..nb inside, nb + 1 above (monotone in v)."""
    t = (v - lo) * scale
    if t < 0.0:
        return 0
    if t >= nb:
        return nb + 1
    return int(t) + 1


@kernel
def order_statistics(buf, n, ranks):
    """Exact order statistics ``sorted(buf[:n])[ranks]`` without sorting.

    A 1024-slot histogram over mean ± 5σ of a subsample locates the slot of every
    requested rank; only the values of those few slots are gathered and selected.
    The slot index is monotone in the value, so the result is exact for any data
    (outliers only make the gathered slots larger). ``ranks`` must be ascending.
    """
    out = np.empty(ranks.size)
    step = max(1, n // 2048)
    first = buf[0]
    s1 = 0.0
    s2 = 0.0
    m = 0
    for i in range(0, n, step):
        d = buf[i] - first
        s1 += d
        s2 += d * d
        m += 1
    mean = first + s1 / m
    sd = np.sqrt(max(s2 / m - (s1 / m) ** 2, 0.0))
    if not (sd > 0.0) or n < 256:
        _order_statistic_sorted_ranks(buf, n, ranks, out)
        return out
    nb = 1024
    lo = mean - 5.0 * sd
    scale = nb / (10.0 * sd)
    counts = np.zeros(nb + 2, np.int64)
    for i in range(n):
        counts[_hist_bin(buf[i], lo, scale, nb)] += 1
    starts = np.zeros(nb + 2, np.int64)  # rank of the first value of each slot
    for b in range(1, nb + 2):
        starts[b] = starts[b - 1] + counts[b - 1]
    slot_of = np.empty(ranks.size, np.int64)
    offset = np.full(nb + 2, -1, np.int64)  # position of a needed slot in ``work``
    total = 0
    b = 0
    for r in range(ranks.size):
        while starts[b] + counts[b] <= ranks[r]:
            b += 1
        slot_of[r] = b
        if offset[b] < 0:
            offset[b] = total
            total += counts[b]
    work = np.empty(total)
    fill = np.zeros(nb + 2, np.int64)
    for i in range(n):
        v = buf[i]
        b = _hist_bin(v, lo, scale, nb)
        if offset[b] >= 0:
            work[offset[b] + fill[b]] = v
            fill[b] += 1
    for r in range(ranks.size):
        b = slot_of[r]
        o = offset[b]
        out[r] = _select(work, o, o + counts[b], o + ranks[r] - starts[b])
    return out


@kernel
def quartiles(buf, n):
    """``numpy.quantile(buf[:n], [0.25, 0.5, 0.75])`` (linear interpolation).

    ``buf`` may be reordered.
    """
    ranks = np.empty(6, np.int64)
    fracs = np.empty(3)
    for m in range(3):
        pos = 0.25 * (m + 1) * (n - 1)
        k = int(np.floor(pos))
        fracs[m] = pos - k
        ranks[2 * m] = k
        ranks[2 * m + 1] = min(k + 1, n - 1)
    stats = order_statistics(buf, n, ranks)
    out = np.empty(3)
    for m in range(3):
        lower = stats[2 * m]
        out[m] = lower + fracs[m] * (stats[2 * m + 1] - lower)
    return out


@kernel
def clipped_mean(buf, n, n_sigma, n_iter):
    """Iteratively clipped mean of ``buf[:n]`` (``buf`` is reordered).

    Parameters
    ----------
    buf : numpy.ndarray
        float64 work buffer holding the values in ``buf[:n]``.
    n : int
        Number of values (> 0).
    n_sigma : float
        Clipping half-width in units of the current width estimate.
    n_iter : int
        Number of clipping iterations (0 returns the median).

    Returns
    -------
    mean, stdev : float
        Clipped mean and clipped sample standard deviation (NaN when fewer than
        two values survive); same unit as the input.
    """
    q = quartiles(buf, n)
    median = q[1]
    center = median
    hwidth = n_sigma * IQR_TO_SIGMA * (q[2] - q[0])
    mean = median
    var = np.nan
    for _ in range(n_iter):
        # One pass with sums shifted by the centre (stable for large offsets), over
        # two interleaved accumulators so that the additions do not wait on each other.
        s1a = 0.0
        s2a = 0.0
        s1b = 0.0
        s2b = 0.0
        m = 0
        for i in range(0, n - 1, 2):
            da = buf[i] - center
            db = buf[i + 1] - center
            ka = abs(da) <= hwidth
            kb = abs(db) <= hwidth
            da = da if ka else 0.0
            db = db if kb else 0.0
            s1a += da
            s2a += da * da
            s1b += db
            s2b += db * db
            m += int(ka) + int(kb)
        if n % 2 == 1:
            d = buf[n - 1] - center
            if abs(d) <= hwidth:
                s1a += d
                s2a += d * d
                m += 1
        s1 = s1a + s1b
        s2 = s2a + s2b
        if m == 0:
            break
        mean = center + s1 / m
        if m > 1:
            var = max((s2 - s1 * s1 / m) / (m - 1), 0.0)
            hwidth = n_sigma * np.sqrt(var)
        center = mean
    return mean, np.sqrt(var)


@kernel
def binned_clipped_mean(image, mask, ignore_bits, y_edges, x_edges, n_sigma, n_iter):
    """Clipped mean of the unmasked, finite pixels of every bin.

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W) pixels [image unit].
    mask : numpy.ndarray
        int32 (H, W) bit mask.
    ignore_bits : int
        Pixels with any of these bits set are excluded.
    y_edges, x_edges : numpy.ndarray
        int64 bin edges [px]: bin ``(j, i)`` covers rows ``y_edges[j]:y_edges[j+1]``
        and columns ``x_edges[i]:x_edges[i+1]``.
    n_sigma : float
        Clipping half-width [σ].
    n_iter : int
        Clipping iterations.

    Returns
    -------
    values : numpy.ndarray
        float64 (ny, nx) clipped means [image unit]; NaN for bins without valid pixels.
    stdevs : numpy.ndarray
        float64 (ny, nx) clipped standard deviations [image unit]; NaN when undefined.
    n_valid : numpy.ndarray
        int64 (ny, nx) number of unmasked, finite pixels per bin.
    """
    ny = y_edges.size - 1
    nx = x_edges.size - 1
    values = np.full((ny, nx), np.nan)
    stdevs = np.full((ny, nx), np.nan)
    n_valid = np.zeros((ny, nx), np.int64)
    max_h = 0
    for j in range(ny):
        max_h = max(max_h, y_edges[j + 1] - y_edges[j])
    max_w = 0
    for i in range(nx):
        max_w = max(max_w, x_edges[i + 1] - x_edges[i])
    buf = np.empty(max_h * max_w, np.float64)
    for j in range(ny):
        for i in range(nx):
            n = 0
            for y in range(y_edges[j], y_edges[j + 1]):
                for x in range(x_edges[i], x_edges[i + 1]):
                    v = image[y, x]
                    if (mask[y, x] & ignore_bits) == 0 and np.isfinite(v):
                        buf[n] = v
                        n += 1
            n_valid[j, i] = n
            if n > 0:
                values[j, i], stdevs[j, i] = clipped_mean(buf, n, n_sigma, n_iter)
    return values, stdevs, n_valid


@kernel
def subtract_separable(image, ty, rows):
    """``image -= ty @ rows`` in place, row by row (no full-size temporary).

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W), modified in place.
    ty : numpy.ndarray
        float32 (H, K) per-row basis values.
    rows : numpy.ndarray
        float32 (K, W) per-column model rows.
    """
    height, width = image.shape
    for y in range(height):
        for k in range(ty.shape[1]):
            weight = ty[y, k]
            for x in range(width):
                image[y, x] -= weight * rows[k, x]
