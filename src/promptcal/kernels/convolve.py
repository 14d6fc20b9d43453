"""Separable convolution of an image and its variance (detection smoothing).

Every output pixel is ``0 + Σ_k taps[k]·v_k`` accumulated in float32 with k ascending,
first along rows, then along columns. The loops below keep exactly that order of
operations (so results are bit for bit those of a plain k-outer loop) but hold up to
four taps' partial sums in registers and produce two output rows per column sweep:
the plain loop re-loads and re-stores its accumulator row once per tap, which made it
load/store bound.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel


@kernel
def _add_taps4(out, s0, s1, s2, s3, w0, w1, w2, w3, first):
    """``out += w0·s0 + w1·s1 + w2·s2 + w3·s3``, added term by term (``out = 0`` if first)."""
    if first:
        for x in range(out.size):
            a = np.float32(0.0) + w0 * s0[x]
            a += w1 * s1[x]
            a += w2 * s2[x]
            a += w3 * s3[x]
            out[x] = a
    else:
        for x in range(out.size):
            a = out[x]
            a += w0 * s0[x]
            a += w1 * s1[x]
            a += w2 * s2[x]
            a += w3 * s3[x]
            out[x] = a


@kernel
def _add_taps1(out, s0, w0, first):
    """``out += w0·s0`` (``out = 0 + w0·s0`` if first)."""
    if first:
        for x in range(out.size):
            out[x] = np.float32(0.0) + w0 * s0[x]
    else:
        for x in range(out.size):
            out[x] += w0 * s0[x]


@kernel
def _add_taps4_pair(oa, ob, r0, r1, r2, r3, r4, w0, w1, w2, w3, first):
    """:func:`_add_taps4` for two outputs whose inputs are shifted by one row.

    ``oa`` takes rows r0..r3 and ``ob`` rows r1..r4: the shared rows are loaded once.
    """
    if first:
        for x in range(oa.size):
            a = np.float32(0.0) + w0 * r0[x]
            b = np.float32(0.0) + w0 * r1[x]
            a += w1 * r1[x]
            b += w1 * r2[x]
            a += w2 * r2[x]
            b += w2 * r3[x]
            a += w3 * r3[x]
            b += w3 * r4[x]
            oa[x] = a
            ob[x] = b
    else:
        for x in range(oa.size):
            a = oa[x]
            b = ob[x]
            a += w0 * r0[x]
            b += w0 * r1[x]
            a += w1 * r1[x]
            b += w1 * r2[x]
            a += w2 * r2[x]
            b += w2 * r3[x]
            a += w3 * r3[x]
            b += w3 * r4[x]
            oa[x] = a
            ob[x] = b


@kernel
def _convolve_row(src, taps, out):
    """``out[x] = Σ_k taps[k]·src[x + k - half]`` where valid; 0 within ``half`` of the ends."""
    size = taps.size
    half = size // 2
    n = src.size - size + 1
    if n <= 0:
        out[:] = 0.0
        return
    valid = out[half : half + n]
    k = 0
    while k + 4 <= size:
        _add_taps4(
            valid,
            src[k : k + n],
            src[k + 1 : k + 1 + n],
            src[k + 2 : k + 2 + n],
            src[k + 3 : k + 3 + n],
            taps[k],
            taps[k + 1],
            taps[k + 2],
            taps[k + 3],
            k == 0,
        )
        k += 4
    while k < size:
        _add_taps1(valid, src[k : k + n], taps[k], k == 0)
        k += 1
    out[:half] = 0.0
    out[half + n :] = 0.0


@kernel
def _convolve_column(ring, first_slot, taps, out):
    """``out = Σ_k taps[k]·ring[(first_slot + k) % len(ring)]``."""
    size = taps.size
    m = ring.shape[0]
    k = 0
    while k + 4 <= size:
        _add_taps4(
            out,
            ring[(first_slot + k) % m],
            ring[(first_slot + k + 1) % m],
            ring[(first_slot + k + 2) % m],
            ring[(first_slot + k + 3) % m],
            taps[k],
            taps[k + 1],
            taps[k + 2],
            taps[k + 3],
            k == 0,
        )
        k += 4
    while k < size:
        _add_taps1(out, ring[(first_slot + k) % m], taps[k], k == 0)
        k += 1


@kernel
def _convolve_column_pair(ring, first_slot, taps, oa, ob):
    """:func:`_convolve_column` into ``oa`` and, one ring row further on, into ``ob``."""
    size = taps.size
    m = ring.shape[0]
    k = 0
    while k + 4 <= size:
        _add_taps4_pair(
            oa,
            ob,
            ring[(first_slot + k) % m],
            ring[(first_slot + k + 1) % m],
            ring[(first_slot + k + 2) % m],
            ring[(first_slot + k + 3) % m],
            ring[(first_slot + k + 4) % m],
            taps[k],
            taps[k + 1],
            taps[k + 2],
            taps[k + 3],
            k == 0,
        )
        k += 4
    while k < size:
        _add_taps1(oa, ring[(first_slot + k) % m], taps[k], k == 0)
        _add_taps1(ob, ring[(first_slot + k + 1) % m], taps[k], k == 0)
        k += 1


@kernel
def _smooth_plane(plane, ignore, use_ignore, taps, out):
    """Separable smoothing of ``plane`` into ``out`` (float32 (H, W)); see the module doc.

    Rows are convolved into a ring of ``len(taps) + 1`` rows that stays in cache, and
    each pair of finished output rows is written once. An ignored pixel enters as 0,
    which adds nothing to a partial sum (the same as skipping it).
    """
    height, width = plane.shape
    size = taps.size
    half = size // 2
    m = size + 1
    ring = np.empty((m, width), np.float32)
    masked = np.empty(width, np.float32)
    for y in range(min(half, height)):
        out[y, :] = 0.0
        out[height - 1 - y, :] = 0.0
    for y in range(height):
        if use_ignore:
            for x in range(width):
                masked[x] = np.float32(0.0) if ignore[y, x] else plane[y, x]
            _convolve_row(masked, taps, ring[y % m])
        else:
            _convolve_row(plane[y], taps, ring[y % m])
        # Output row y - half needs input rows y - size + 1 .. y; rows are finished in
        # pairs (y - 1 - half, y - half) once the ring holds y - size .. y.
        if y >= size and (y - size) % 2 == 0:
            _convolve_column_pair(ring, (y - size) % m, taps, out[y - 1 - half], out[y - half])
    n_out = height - size + 1
    if n_out > 0 and n_out % 2 == 1:
        # The last output row had no partner.
        _convolve_column(ring, (height - size) % m, taps, out[height - 1 - half])


@kernel
def smooth_image_and_variance(image, variance, ignore, taps):
    """Smooth image with ``taps`` and variance with ``taps²`` (separable).

    Pixels where ``ignore`` is True contribute neither flux nor variance; pass an
    array of another shape (e.g. (1, 1)) when no pixel is to be ignored.

    Returns
    -------
    smoothed, smoothed_variance : numpy.ndarray
        float32 (H, W); zero within ``len(taps)//2`` of the edges.
    """
    use_ignore = ignore.shape == image.shape
    smoothed = np.empty(image.shape, np.float32)
    _smooth_plane(image, ignore, use_ignore, taps, smoothed)
    smoothed_var = np.empty(image.shape, np.float32)
    _smooth_plane(variance, ignore, use_ignore, taps * taps, smoothed_var)
    return smoothed, smoothed_var


@kernel
def smooth_image(image, ignore, taps):
    """:func:`smooth_image_and_variance` for the image alone (float32 (H, W))."""
    smoothed = np.empty(image.shape, np.float32)
    _smooth_plane(image, ignore, ignore.shape == image.shape, taps, smoothed)
    return smoothed


def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of width ``2⌊⌊7σ+½⌋/2⌋+1`` (LSST's rule) [float32]."""
    half = int(int(7.0 * sigma + 0.5) // 2)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)
