"""Astrometric matchers: nearest-neighbour matching, the default rotation × offset vote,
and the scale/rotation/parity-free triangle matcher used for recovery.

Positions are 2-D arrays (n, 2) in a common pixel-like unit (see ``astrometry.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from promptcal.kernels.match import vote_offsets


def nn_match(src, ref, radius: float, tree=None):
    """One-to-one nearest-neighbour match within ``radius``.

    Each source takes its nearest reference; a reference claimed by several sources
    keeps only the closest one.

    Parameters
    ----------
    src, ref : numpy.ndarray
        (n, d) positions.
    radius : float
        Largest distance of a match (unit of the positions).
    tree : scipy.spatial.cKDTree, optional
        A tree of ``ref`` already built by the caller.

    Returns
    -------
    src_idx, ref_idx : numpy.ndarray
        int64 indices of the matched pairs.
    dist : numpy.ndarray
        Their distances (same unit as the positions).
    """
    if len(src) == 0 or len(ref) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

    tree = cKDTree(ref) if tree is None else tree
    dist, idx = tree.query(src, k=1, distance_upper_bound=radius)
    ok = np.isfinite(dist)
    src_idx = np.nonzero(ok)[0]
    ref_idx, dist = idx[ok], dist[ok]
    order = np.lexsort((dist, ref_idx))
    src_idx, ref_idx, dist = src_idx[order], ref_idx[order], dist[order]
    first = np.ones(len(ref_idx), bool)
    first[1:] = ref_idx[1:] != ref_idx[:-1]
    return src_idx[first].astype(np.int64), ref_idx[first].astype(np.int64), dist[first]


@dataclass
class VoteResult:
    """Peak of the rotation × offset vote.

    Attributes
    ----------
    rotation : float
        Rotation to apply to the sources [rad].
    offset : numpy.ndarray
        (2,) shift applied after the rotation [px].
    peak : int
        Votes in the peak window (agreeing pairs).
    expected : float
        Votes expected in a window from unrelated pairs.
    """

    rotation: float
    offset: np.ndarray
    peak: int
    expected: float


def vote_match(src, ref, *, max_offset, max_rotation, bin_size, r_max) -> VoteResult:
    """Find the rotation (<= ``max_rotation`` [rad]) and shift (<= ``max_offset`` [px]) that
    superpose the most source/reference pairs.

    The rotation grid step is ``bin_size / r_max`` so that a half step moves no source by
    more than half a bin; the peak is searched in 2×2-bin windows so that a cluster split
    by a bin edge still counts fully.
    """
    step = bin_size / max(r_max, 1.0)
    n_half = math.ceil(max_rotation / step) if max_rotation > 0 else 0
    thetas = np.arange(-n_half, n_half + 1) * step
    hist = vote_offsets(
        np.ascontiguousarray(src[:, 0]),
        np.ascontiguousarray(src[:, 1]),
        np.ascontiguousarray(ref[:, 0]),
        np.ascontiguousarray(ref[:, 1]),
        np.cos(thetas),
        np.sin(thetas),
        float(max_offset),
        float(bin_size),
    )
    window = hist[:, :-1, :-1] + hist[:, 1:, :-1] + hist[:, :-1, 1:] + hist[:, 1:, 1:]
    k, by, bx = np.unravel_index(int(np.argmax(window)), window.shape)
    peak = int(window[k, by, bx])
    n_pairs = hist[k].sum()
    nb = hist.shape[1]
    expected = float(n_pairs) * 4.0 / max(nb * nb, 1)
    theta = float(thetas[k])
    # Refine the shift as the median offset of the pairs inside the window.
    c, s = math.cos(theta), math.sin(theta)
    rot = src @ np.array([[c, s], [-s, c]])
    d = (ref[None, :, :] - rot[:, None, :]).reshape(-1, 2)
    lo = np.array([bx, by]) * bin_size - max_offset
    inside = np.all((d >= lo) & (d < lo + 2 * bin_size), axis=1)
    offset = np.median(d[inside], axis=0) if inside.any() else lo + bin_size
    return VoteResult(theta, offset, peak, expected)


@dataclass
class Similarity:
    """``ref ≈ a · (flip(src)) + b`` in complex notation; flip negates y when parity is -1."""

    a: complex
    b: complex
    parity: int
    n_matches: int = 0

    def apply(self, pts):
        z = pts[:, 0] + 1j * self.parity * pts[:, 1]
        w = self.a * z + self.b
        return np.column_stack([w.real, w.imag])
