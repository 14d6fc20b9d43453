"""Astrometric matchers: nearest-neighbour matching, the default rotation × offset vote,
and the scale/rotation/parity-free triangle matcher used for recovery.

Positions are 2-D arrays (n, 2) in a common pixel-like unit (see ``astrometry.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

from promptcal.kernels.match import vote_offsets
from promptcal.pipeline.astrometry.tan_sip import fit_similarity


def nn_match(src, ref, radius: float, tree: cKDTree | None = None):
    """One-to-one nearest-neighbour match within ``radius``.

    Each source takes its nearest reference; a reference claimed by several sources
    keeps only the closest one.

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


def _triangles(pts, k, max_all):
    """Triangles to index: all of them when there are at most ``max_all``, otherwise those
    formed by each point and pairs of its k nearest neighbours (deduplicated)."""
    n = len(pts)
    if n < 3:
        return np.zeros((0, 3), np.int64)
    if math.comb(n, 3) <= max_all:
        return np.array(list(combinations(range(n), 3)), np.int64)
    k = min(k, n - 1)
    _, nbr = cKDTree(pts).query(pts, k=k + 1)
    tris = set()
    for i in range(n):
        for a, b in combinations(nbr[i, 1:], 2):
            tris.add(tuple(sorted((i, int(a), int(b)))))
    return np.array(sorted(tris), np.int64).reshape(-1, 3)


def _canonical(pts, tris):
    """Invariants and canonical vertex order of triangles.

    Vertices are ordered as (opposite the longest side, opposite the middle, opposite the
    shortest). Returns (invariants (L2/L1, L3/L1), ordered vertex indices, L1, orientation
    sign, distinctness = min side-length gap / L1).
    """
    p = pts[tris]  # (t, 3, 2)
    # side i is opposite vertex i
    sides = np.stack(
        [
            np.linalg.norm(p[:, 1] - p[:, 2], axis=1),
            np.linalg.norm(p[:, 0] - p[:, 2], axis=1),
            np.linalg.norm(p[:, 0] - p[:, 1], axis=1),
        ],
        axis=1,
    )
    order = np.argsort(-sides, axis=1)
    ls = np.take_along_axis(sides, order, axis=1)
    verts = np.take_along_axis(tris, order, axis=1)
    q = pts[verts]
    cross = (q[:, 1, 0] - q[:, 0, 0]) * (q[:, 2, 1] - q[:, 0, 1]) - (q[:, 1, 1] - q[:, 0, 1]) * (
        q[:, 2, 0] - q[:, 0, 0]
    )
    l1 = np.maximum(ls[:, 0], 1e-12)
    inv = np.column_stack([ls[:, 1] / l1, ls[:, 2] / l1])
    gap = np.minimum(ls[:, 0] - ls[:, 1], ls[:, 1] - ls[:, 2]) / l1
    return inv, verts, ls[:, 0], np.sign(cross), gap


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


def triangle_candidates(
    src,
    ref,
    *,
    k_neighbours: int,
    invariant_tol: float,
    min_side: float,
    scale_range: tuple[float, float],
    max_offset: float,
    max_candidates: int,
    cluster_radius: float,
    max_all_triangles: int,
):
    """Candidate similarity transforms from matched triangle invariants, best-voted first.

    Small lists use all triangles (robust when most sources have no reference); large
    ones use local triangles. The invariants (L2/L1, L3/L1) do not depend on scale,
    rotation or parity; the parity
    of a candidate is the product of the two triangles' orientation signs. Candidates are
    ranked by how many other candidates (same parity) agree within ``cluster_radius``
    [px] on the image of the detector centre and of a point ``r`` away along each axis.
    """
    ts = _triangles(src, k_neighbours, max_all_triangles)
    tr = _triangles(ref, k_neighbours, max_all_triangles)
    if len(ts) == 0 or len(tr) == 0:
        return []
    inv_s, vs, l1s, sgn_s, gap_s = _canonical(src, ts)
    inv_r, vr, l1r, sgn_r, gap_r = _canonical(ref, tr)
    good_s = (l1s >= min_side) & (gap_s > 2 * invariant_tol) & (inv_s[:, 1] > 0.1)
    good_r = (l1r >= min_side * scale_range[0]) & (gap_r > 2 * invariant_tol)
    good_r &= inv_r[:, 1] > 0.1
    si, ri = np.nonzero(good_s)[0], np.nonzero(good_r)[0]
    if len(si) == 0 or len(ri) == 0:
        return []
    pairs = cKDTree(inv_r[ri]).query_ball_point(inv_s[si], invariant_tol)
    a_idx = np.repeat(si, [len(p) for p in pairs])
    b_idx = ri[np.concatenate([np.asarray(p, np.int64) for p in pairs])] if len(a_idx) else []
    if len(a_idx) == 0:
        return []
    ratio = l1r[b_idx] / l1s[a_idx]
    ok = (ratio >= scale_range[0]) & (ratio <= scale_range[1])
    a_idx, b_idx = a_idx[ok], np.asarray(b_idx)[ok]
    if len(a_idx) == 0:
        return []
    parity = (sgn_s[a_idx] * sgn_r[b_idx]).astype(int)
    zs = src[vs[a_idx], 0] + 1j * parity[:, None] * src[vs[a_idx], 1]
    zr = ref[vr[b_idx], 0] + 1j * ref[vr[b_idx], 1]
    ms, mr = zs.mean(axis=1), zr.mean(axis=1)
    a = np.sum((zr - mr[:, None]) * np.conj(zs - ms[:, None]), axis=1) / np.sum(
        np.abs(zs - ms[:, None]) ** 2, axis=1
    )
    b = mr - a * ms
    ok = (np.abs(a) >= scale_range[0]) & (np.abs(a) <= scale_range[1])
    ok &= np.abs(b) <= max_offset
    a, b, parity = a[ok], b[ok], parity[ok]
    if len(a) == 0:
        return []
    # Feature: where the centre and a point r along x land; agreeing candidates cluster.
    r = max(float(np.ptp(src[:, 0])), float(np.ptp(src[:, 1])), 1.0) / 2.0
    feat = np.column_stack([b.real, b.imag, (a * r).real, (a * r).imag])
    votes = np.zeros(len(a), np.int64)
    for sign in (-1, 1):
        sel = np.nonzero(parity == sign)[0]
        if len(sel):
            tree = cKDTree(feat[sel])
            votes[sel] = tree.query_ball_point(feat[sel], cluster_radius, return_length=True)
    order = np.argsort(-votes, kind="stable")
    chosen, taken = [], []
    for i in order:
        if len(chosen) >= max_candidates:
            break
        if any(
            parity[j] == parity[i] and np.linalg.norm(feat[j] - feat[i]) < cluster_radius
            for j in taken
        ):
            continue
        taken.append(i)
        chosen.append(Similarity(complex(a[i]), complex(b[i]), int(parity[i]), int(votes[i])))
    return chosen


def verify_similarity(cand: Similarity, src, ref, ref_tree, radius, n_refine: int = 2):
    """Count one-to-one matches of a candidate and refine it on them by least squares."""
    best = cand
    for _ in range(n_refine + 1):
        si, ri, _ = nn_match(best.apply(src), ref, radius, ref_tree)
        best = Similarity(best.a, best.b, best.parity, len(si))
        if len(si) < 3:
            break
        flipped = src[si] * np.array([1.0, best.parity])
        a, b = fit_similarity(flipped, ref[ri])
        best = Similarity(complex(a), complex(b), best.parity, len(si))
    si, _, _ = nn_match(best.apply(src), ref, radius, ref_tree)
    best.n_matches = len(si)
    return best
