"""Astrometric matching kernels: the rotation × offset vote of the default matcher.

The vote is a Hough transform: for every trial rotation θ, every (source, reference)
pair votes for the offset ``ref - R(θ)·src``. The true solution collects one vote per
real pair in one cell, false pairs spread uniformly over the searched offset square.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel


@kernel
def vote_offsets(src_x, src_y, ref_x, ref_y, cos_t, sin_t, max_offset, bin_size):
    """Histogram of pair offsets for a set of trial rotations.

    Parameters
    ----------
    src_x, src_y : numpy.ndarray
        float64 (n,) source positions relative to the rotation centre [px].
    ref_x, ref_y : numpy.ndarray
        float64 (m,) reference positions in the same frame [px].
    cos_t, sin_t : numpy.ndarray
        float64 (k,) cosine and sine of the trial rotations.
    max_offset : float
        Half-width of the searched offset square [px].
    bin_size : float
        Histogram bin size [px].

    Returns
    -------
    numpy.ndarray
        int64 (k, nb, nb) counts, ``nb = ceil(2 max_offset / bin_size)``; axis 1 is the
        y offset, axis 2 the x offset; bin ``i`` covers
        ``[-max_offset + i bin_size, -max_offset + (i + 1) bin_size)``.
    """
    nb = int(np.ceil(2.0 * max_offset / bin_size))
    n_rot = cos_t.shape[0]
    hist = np.zeros((n_rot, nb, nb), np.int64)
    for k in range(n_rot):
        c = cos_t[k]
        s = sin_t[k]
        for i in range(src_x.shape[0]):
            rx = c * src_x[i] - s * src_y[i]
            ry = s * src_x[i] + c * src_y[i]
            for j in range(ref_x.shape[0]):
                dx = ref_x[j] - rx + max_offset
                dy = ref_y[j] - ry + max_offset
                if dx < 0.0 or dy < 0.0:
                    continue
                bx = int(dx / bin_size)
                by = int(dy / bin_size)
                if bx < nb and by < nb:
                    hist[k, by, bx] += 1
    return hist
