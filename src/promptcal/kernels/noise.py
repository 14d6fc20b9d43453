"""Noise replacement: pixels of other footprints as a source sees them, and the noise.

A source reads pixels of *other* footprints as Gaussian noise (LSST's noise
replacer), so neighbours do not bias its measurement. The noise is drawn once per
footprint set and kept compactly, per footprint box (:func:`footprint_noise_boxes`);
a noise *table* locates a pixel's value: row L holds ``offset, x0, y0, width, height``
of label L's box in the value array. A full noise plane is the special case of a
one-row table covering the image (:func:`plane_table`).

The values are those of NumPy's legacy ``RandomState`` (and Numba's ``np.random``)
seeded with the same integer: MT19937 with the polar Gaussian. The generator runs
here on a local state, a block of values per call, instead of one Numba
``np.random.normal()`` call per pixel, which costs ~3× more.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel
from promptcal.kernels.order_statistics import select_kth
from promptcal.kernels.warm import warm_rows

_MT_N = 624
_MT_M = 397
_BLOCK = 4096


@kernel
def _mt_seed(seed):
    """MT19937 key of an integer seed (NumPy's legacy ``RandomState(seed)``)."""
    key = np.empty(_MT_N, np.uint32)
    s = np.uint64(seed) & np.uint64(0xFFFFFFFF)
    for pos in range(_MT_N):
        key[pos] = np.uint32(s)
        s = (np.uint64(1812433253) * (s ^ (s >> np.uint64(30))) + np.uint64(pos + 1)) & np.uint64(
            0xFFFFFFFF
        )
    return key


@kernel
def _mt_twist(key):
    """Regenerate the 624 words of the MT19937 key in place."""
    for i in range(_MT_N):
        y = (key[i] & np.uint32(0x80000000)) | (key[(i + 1) % _MT_N] & np.uint32(0x7FFFFFFF))
        value = key[(i + _MT_M) % _MT_N] ^ (y >> np.uint32(1))
        if y & np.uint32(1):
            value ^= np.uint32(0x9908B0DF)
        key[i] = value


@kernel
def _temper(y):
    y ^= y >> np.uint32(11)
    y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
    y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
    y ^= y >> np.uint32(18)
    return y


@kernel
def _standard_normals(key, state, out):
    """Fill ``out`` with standard normals, advancing the generator state.

    ``state`` holds ``[position in key, has a cached value, cached value]``: the
    polar method makes two values per accepted pair and hands out the second first.
    """
    pos = int(state[0])
    has_gauss = state[1] != 0.0
    gauss = state[2]
    for m in range(out.size):
        if has_gauss:
            out[m] = gauss
            has_gauss = False
            continue
        while True:
            if pos > _MT_N - 4:
                # Four words per attempt: twist early only if the key runs out midway.
                words = np.empty(4, np.uint32)
                for t in range(4):
                    if pos == _MT_N:
                        _mt_twist(key)
                        pos = 0
                    words[t] = _temper(key[pos])
                    pos += 1
                a1, b1, a2, b2 = words[0], words[1], words[2], words[3]
            else:
                a1 = _temper(key[pos])
                b1 = _temper(key[pos + 1])
                a2 = _temper(key[pos + 2])
                b2 = _temper(key[pos + 3])
                pos += 4
            u1 = ((a1 >> np.uint32(5)) * 67108864.0 + (b1 >> np.uint32(6))) / 9007199254740992.0
            u2 = ((a2 >> np.uint32(5)) * 67108864.0 + (b2 >> np.uint32(6))) / 9007199254740992.0
            x1 = 2.0 * u1 - 1.0
            x2 = 2.0 * u2 - 1.0
            r2 = x1 * x1 + x2 * x2
            if r2 < 1.0 and r2 != 0.0:
                break
        f = np.sqrt(-2.0 * np.log(r2) / r2)
        gauss = f * x1
        has_gauss = True
        out[m] = f * x2
    state[0] = pos
    state[1] = 1.0 if has_gauss else 0.0
    state[2] = gauss


@kernel
def footprint_noise_boxes(labels, bbox, sigma, seed):
    """Replacement noise of every footprint, stored per footprint box.

    The values are the standard normals of ``RandomState(seed)`` times σ, drawn
    footprint by footprint and in raster order within each box, one per footprint
    pixel; box pixels of other labels hold 0.

    Parameters
    ----------
    labels : numpy.ndarray
        int32 (H, W) footprint labels.
    bbox : numpy.ndarray
        int64 (n, 4) inclusive array boxes ``x_min, y_min, x_max, y_max`` of labels 1..n.
    sigma : float
        Noise σ [image unit].
    seed : int
        Generator seed, 0 ≤ seed < 2³².

    Returns
    -------
    values : numpy.ndarray
        float32 noise of all boxes, concatenated.
    table : numpy.ndarray
        int64 (n + 1, 5): row L = ``offset, x0, y0, width, height`` of label L's box.
    """
    n = bbox.shape[0]
    table = np.zeros((n + 1, 5), np.int64)
    total = 0
    for i in range(n):
        width = max(bbox[i, 2] - bbox[i, 0] + 1, 0)
        height = max(bbox[i, 3] - bbox[i, 1] + 1, 0)
        table[i + 1, 0] = total
        table[i + 1, 1] = bbox[i, 0]
        table[i + 1, 2] = bbox[i, 1]
        table[i + 1, 3] = width
        table[i + 1, 4] = height
        total += width * height
    values = np.zeros(total, np.float32)
    key = _mt_seed(seed)
    state = np.array([float(_MT_N), 0.0, 0.0])
    block = np.empty(_BLOCK)
    used = _BLOCK
    warmed = np.zeros(1)  # the next box's labels are warmed (promptcal.kernels.warm)
    for i in range(n):
        if i + 1 < n:
            warmed[0] += warm_rows(
                labels, bbox[i + 1, 0], bbox[i + 1, 2], bbox[i + 1, 1], bbox[i + 1, 3]
            )
        k = table[i + 1, 0]
        for y in range(bbox[i, 1], bbox[i, 3] + 1):
            for x in range(bbox[i, 0], bbox[i, 2] + 1):
                if labels[y, x] == i + 1:
                    if used == _BLOCK:
                        _standard_normals(key, state, block)
                        used = 0
                    values[k] = block[used] * sigma
                    used += 1
                k += 1
    return values, table


@kernel
def plane_table(noise):
    """The one-row noise table that reads a full (H, W) noise plane."""
    table = np.zeros((1, 5), np.int64)
    table[0, 3] = noise.shape[1]
    table[0, 4] = noise.shape[0]
    return table


@kernel
def flat(noise):
    """A full noise plane as the value array that :func:`plane_table` indexes."""
    return np.ascontiguousarray(noise).reshape(noise.size)


@kernel
def noise_at(values, table, lab, y, x):
    """Noise at (y, x), a pixel of label ``lab``: 0 outside the label's box."""
    row = lab if table.shape[0] > 1 else 0
    if row >= table.shape[0]:
        return 0.0
    dx = x - table[row, 1]
    dy = y - table[row, 2]
    if dx < 0 or dy < 0 or dx >= table[row, 3] or dy >= table[row, 4]:
        return 0.0
    return values[table[row, 0] + dy * table[row, 3] + dx]


@kernel
def unmasked_samples(image, mask, stride, bad):
    """Every ``stride``-th pixel (raster order) whose mask has none of the ``bad`` bits.

    Returns
    -------
    values : numpy.ndarray
        float32 pixel values, in raster order.
    has_nan : bool
        Whether any of them is NaN.
    """
    height, width = image.shape
    total = height * width
    out = np.empty((total + stride - 1) // stride, np.float32)
    n = 0
    has_nan = False
    for k in range(0, total, stride):
        y = k // width
        x = k - y * width
        if mask[y, x] & bad == 0:
            v = image[y, x]
            out[n] = v
            has_nan |= np.isnan(v)
            n += 1
    return out[:n], has_nan


@kernel
def _middle_of(buf, n, k_lo, k_hi):
    """Order statistics k_lo and k_hi = k_lo or k_lo + 1 of ``buf[:n]`` (reordered)."""
    a = select_kth(buf, 0, n, k_lo)
    if k_hi == k_lo:
        return a, a
    b = buf[k_lo + 1]
    for j in range(k_lo + 2, n):
        b = min(b, buf[j])
    return a, b


@kernel
def middle_values(values):
    """The two middle order statistics of ``values`` (equal when the size is odd).

    Exact for any data without NaN: a subsample brackets the middle ranks, one pass
    counts the values below the bracket and gathers those inside, and only those
    are selected from; if the bracket misses (improbable), all values are.
    """
    n = values.size
    k_hi = n // 2
    k_lo = k_hi if n % 2 == 1 else k_hi - 1
    if n < 16384:
        return _middle_of(values.copy(), n, k_lo, k_hi)
    sample = values[:: n // 8192].copy()
    # ±6σ of the subsample rank of the middle value: misses are ~1e-9 events.
    margin = int(3.0 * np.sqrt(sample.size)) + 2
    centre = int(k_hi / n * sample.size)
    lo = select_kth(sample, 0, sample.size, max(centre - margin, 0))
    hi = select_kth(sample, 0, sample.size, min(centre + margin, sample.size - 1))
    below = 0
    inside = np.empty(n, values.dtype)
    m = 0
    for v in values:
        # Branch-free: about half the values fall on either side of the bracket.
        below += v < lo
        inside[m] = v
        m += (v >= lo) & (v <= hi)
    if below <= k_lo and k_hi < below + m:
        a, b = _middle_of(inside, m, k_lo - below, k_hi - below)
        return a, b
    return _middle_of(values.copy(), n, k_lo, k_hi)
