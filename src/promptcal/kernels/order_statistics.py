"""Exact order statistics and quartiles of a work buffer without sorting it.

The buffer may be float32 or float64; statistics are returned as float64. Callers
that compute statistics of many buffers (one per background bin) pass a
:func:`workspace` so that nothing is allocated per buffer.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel

#: Histogram slots between the under- and overflow slots.
N_SLOTS = 1024
#: About this many values place the histogram; its range only affects the speed.
_N_SAMPLE = 256


@kernel
def select_kth(buf, lo, hi, k):
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
def _sample_spread(buf, n, step):
    """Mean and standard deviation of ``buf[0:n:step]`` (sums shifted by ``buf[0]``)."""
    first = np.float64(buf[0])
    s1 = 0.0
    s2 = 0.0
    m = 0
    for i in range(0, n, step):
        d = buf[i] - first
        s1 += d
        s2 += d * d
        m += 1
    mean = first + s1 / m
    return mean, np.sqrt(max(s2 / m - (s1 / m) ** 2, 0.0))


@kernel
def _bulk_spread(buf, n, step, mean, sd):
    """``mean``, ``sd`` of ``buf[0:n:step]`` refined twice on the values within 3 sd.

    A few far outliers among the samples (a star in a background bin) inflate the
    plain standard deviation many times, and with it the number of values that share
    a histogram slot with a requested rank, all of which are gathered and selected
    from. Keeps the previous estimate when too few values remain or they have no spread.
    """
    for _ in range(2):
        s1 = 0.0
        s2 = 0.0
        m = 0
        for i in range(0, n, step):
            d = buf[i] - mean
            if abs(d) <= 3.0 * sd:
                s1 += d
                s2 += d * d
                m += 1
        if m < 2:
            break
        spread = np.sqrt(max(s2 / m - (s1 / m) ** 2, 0.0))
        if not (spread > 0.0):
            break
        mean += s1 / m
        sd = spread
    return mean, sd


@kernel
def workspace(size, dtype_like):
    """Scratch arrays for :func:`order_statistics_into` of up to ``size`` values.

    ``dtype_like`` is any array of the buffers' dtype.
    """
    n = max(1, size)
    return (
        np.empty(n, np.int32),
        np.empty(N_SLOTS + 2, np.int64),
        np.empty(n, dtype_like.dtype),
    )


@kernel
def order_statistics_into(buf, n, ranks, out, slots, counts, work):
    """Exact order statistics ``sorted(buf[:n])[ranks]`` into ``out``, without sorting.

    A 1024-slot histogram over mean ± 5σ of a subsample locates the slot of every
    requested rank; only the values of those few slots are gathered and selected.
    The slot index is monotone in the value, so the result is exact for any data
    (outliers only make the gathered slots larger). ``ranks`` must be ascending.
    ``buf[:n]`` is reordered only when ``n < 256`` or the subsample has no spread.
    ``slots``, ``counts``, ``work``: a :func:`workspace`.
    """
    # The decision to fall back to an in-place selection (which reorders ``buf``, and
    # with it the clipped sums of a caller) is the one made with every (n // 2048)-th
    # value; the histogram is placed with a coarser subset of those values, and the
    # two can only disagree when that subset has no spread.
    step = max(1, n // 2048)
    if n < 256:
        mean = 0.0
        sd = 0.0
    else:
        coarse = step * max(1, n // step // _N_SAMPLE)
        mean, sd = _sample_spread(buf, n, coarse)
        if not (sd > 0.0):
            mean, sd = _sample_spread(buf, n, step)
        elif n >= 1024:
            # Only the histogram's range changes, never the result or the fallback.
            mean, sd = _bulk_spread(buf, n, coarse, mean, sd)
    if not (sd > 0.0):
        start = 0
        for m in range(ranks.size):
            out[m] = select_kth(buf, start, n, ranks[m])
            start = ranks[m]
        return
    # Slot of each value: 0 below mean - 5 sd, 1..N_SLOTS inside, N_SLOTS + 1 above.
    # Each step (shift, scale, clamp, truncate) is monotone, so the slot never
    # decreases with the value: the ranks of a slot's values are known from the
    # counts, and the statistics are exact whatever the range.
    top = N_SLOTS + 1.0
    lo = mean - 5.0 * sd
    scale = N_SLOTS / (10.0 * sd)
    for i in range(n):
        slots[i] = np.int32(min(max((buf[i] - lo) * scale + 1.0, 0.0), top))
    counts[:] = 0
    for i in range(n):
        counts[slots[i]] += 1
    # Each needed slot gets a segment of ``work``; its count becomes a negative
    # fill pointer (-1 - position) so that one array serves both purposes.
    seg_start = np.empty(ranks.size, np.int64)
    seg_rank = np.empty(ranks.size, np.int64)  # rank of the segment's first value
    seg_size = np.empty(ranks.size, np.int64)
    below = 0  # number of values in the slots before b
    b = 0
    current = counts[0]
    claimed = -1
    total = 0
    for r in range(ranks.size):
        while below + current <= ranks[r]:
            below += current
            b += 1
            current = counts[b]
        if claimed != b:
            claimed = b
            counts[b] = -1 - total
            total += current
        seg_start[r] = total - current
        seg_rank[r] = below
        seg_size[r] = current
    for i in range(n):
        c = counts[slots[i]]
        if c < 0:
            work[-1 - c] = buf[i]
            counts[slots[i]] = c - 1
    for r in range(ranks.size):
        o = seg_start[r]
        out[r] = select_kth(work, o, o + seg_size[r], o + ranks[r] - seg_rank[r])


@kernel
def quartiles_into(buf, n, slots, counts, work):
    """``numpy.quantile(buf[:n], [0.25, 0.5, 0.75])`` (linear interpolation).

    ``buf`` may be reordered; ``slots``, ``counts``, ``work``: a :func:`workspace`.
    """
    ranks = np.empty(6, np.int64)
    fracs = np.empty(3)
    for m in range(3):
        pos = 0.25 * (m + 1) * (n - 1)
        k = int(np.floor(pos))
        fracs[m] = pos - k
        ranks[2 * m] = k
        ranks[2 * m + 1] = min(k + 1, n - 1)
    stats = np.empty(6)
    order_statistics_into(buf, n, ranks, stats, slots, counts, work)
    out = np.empty(3)
    for m in range(3):
        lower = stats[2 * m]
        out[m] = lower + fracs[m] * (stats[2 * m + 1] - lower)
    return out
