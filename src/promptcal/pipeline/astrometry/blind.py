"""Blind astrometric solving from a pointing hint: triangle voting with a false-alarm test.

The solver finds the similarity (scale, rotation, parity, shift) that maps the brightest
sources onto references projected on the tangent plane at the hint, when the hint is
wrong by up to half the field diagonal, at any rotation and parity and a scale within a
few percent. Method and decisions: ``docs/astrometry.md`` ("Blind solving").

1. *Hypotheses*: all triangles of the brightest sources (added in brightness steps, so
   that bright fields stop early) and of the brightest references near the hint. Side
   ratios (L2/L1, L3/L1) do not depend on scale, rotation or parity; a pair of triangles
   with equal ratios within their centroid errors gives one candidate similarity.
2. *Verification*: a candidate is accepted only when the matches of the *other* sources
   are very unlikely by chance: under "the candidate is unrelated to the sky", each
   source lands within r of one of the M references on the candidate's footprint with
   probability ``p = M·π·r²/A``; the number of matches among the n brightest test
   sources is then at most Binomial(n, p). The smallest tail probability over a few
   prefixes n and radii r, times the number of candidates, steps and (n, r) tests
   examined (a Bonferroni bound over everything tried), must be below
   ``max_log10_false_alarm``. The candidate is tested as the triangle gave it (refining
   it on the matches first would make them less surprising than they are), then refined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.pipeline.astrometry.matchers import Similarity, nn_match
from promptcal.pipeline.astrometry.tan_sip import fit_similarity

#: Numbers of test sources (brightest first) whose match counts are tested.
PREFIXES = (4, 8, 16, 32)
#: Extent of the scale window on the size axis of the triangle KD-tree [1].
SCALE_AXIS = 0.02
#: Radii of the tests as fractions of the match radius.
RADIUS_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


class BlindSolveConfig(Config):
    """Blind (recovery-mode) solving around a pointing hint."""

    max_offset_fraction: float = Field(
        0.5, ge=0, description="Largest pointing error searched [fraction of the diagonal]."
    )
    max_scale_error: float = Field(
        0.05, ge=0, lt=0.5, description="Pixel-scale tolerance around the hint [fraction]."
    )
    max_sources: int = Field(30, ge=4, le=64, description="Brightest sources used [1].")
    max_refs: int = Field(120, ge=4, le=200, description="Brightest references used [1].")
    depth_steps: tuple[int, ...] = Field(
        (10, 20, 30), description="Source counts at which triangles are added and tried [1]."
    )
    position_sigma_px: float = Field(
        0.7, gt=0, description="Position error setting the triangle-ratio tolerance [px]."
    )
    min_side_px: float = Field(15.0, gt=0, description="Shortest triangle side used [px].")
    min_longest_fraction: float = Field(
        0.1, ge=0, lt=1, description="Longest triangle side used at least [fraction of diagonal]."
    )
    match_radius_px: float = Field(
        2.5, gt=0, description="Radius of a match when verifying a candidate [px]."
    )
    max_log10_false_alarm: float = Field(
        -6.0, le=0, description="Accept when log10(chance of a false match) is below this [1]."
    )
    min_matches: int = Field(
        5, ge=4, description="Sources within the match radius (triangle included) to test [1]."
    )
    n_verify: int = Field(
        12, ge=1, description="Best-counted candidates of each step that are fully tested [1]."
    )


@dataclass
class BlindResult:
    """Accepted solution of :func:`blind_solve`.

    Attributes
    ----------
    similarity : Similarity
        ``ref ≈ a·flip(src) + b`` [px of the hint plane], refined on all matches.
    n_matches : int
        One-to-one matches of the refined solution within the match radius.
    log10_false_alarm : float
        Bonferroni-bounded chance that a wrong candidate did as well [log10].
    n_candidates : int
        Candidate similarities examined.
    n_sources, n_refs : int
        Sources and references used.
    """

    similarity: Similarity
    n_matches: int
    log10_false_alarm: float
    n_candidates: int
    n_sources: int
    n_refs: int


class BlindSolveFailed(Exception):
    """No candidate passed the false-alarm test; the message says what was tried.

    ``best_log10_false_alarm`` is that of the best candidate tested (None when no
    candidate had enough matches to be tested).
    """

    def __init__(self, message: str, best_log10_false_alarm: float | None = None):
        super().__init__(message)
        self.best_log10_false_alarm = best_log10_false_alarm


def triangles(pts, lo: int, hi: int, min_side: float, max_side: float, min_longest: float = 0.0):
    """Triangles of ``pts`` whose last vertex index is in [lo, hi), canonically ordered.

    Vertices are ordered (opposite the longest, middle, shortest side). Triangles with a
    side shorter than ``min_side`` or longer than ``max_side``, a longest side shorter
    than ``min_longest`` (small triangles extrapolate poorly), or two nearly equal sides
    (whose vertex order would be ambiguous) are dropped.

    Returns
    -------
    verts : numpy.ndarray
        (t, 3) int64 vertex indices.
    inv : numpy.ndarray
        (t, 2) invariants (L2/L1, L3/L1).
    l1 : numpy.ndarray
        (t,) longest side.
    sign : numpy.ndarray
        (t,) orientation (+1 counter-clockwise, -1 clockwise).
    """
    dist = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    usable = (dist >= min_side) & (dist <= max_side)
    parts = []
    for c in range(max(lo, 2), hi):
        # Only pairs of usable edges to c can make a usable triangle.
        nb = np.flatnonzero(usable[c, :c])
        i, j = np.triu_indices(len(nb), 1)
        i, j = nb[i], nb[j]
        ok = usable[i, j]
        parts.append(np.column_stack([i[ok], j[ok], np.full(int(ok.sum()), c)]))
    tris = np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 3), np.int64)
    # side k is opposite vertex k
    sides = np.column_stack(
        [dist[tris[:, 1], tris[:, 2]], dist[tris[:, 0], tris[:, 2]], dist[tris[:, 0], tris[:, 1]]]
    )
    order = np.argsort(-sides, axis=1)
    ls = np.take_along_axis(sides, order, axis=1)
    verts = np.take_along_axis(tris, order, axis=1)
    q = pts[verts]
    d1, d2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    gap = np.minimum(ls[:, 0] - ls[:, 1], ls[:, 1] - ls[:, 2])
    keep = (ls[:, 0] >= min_longest) & (gap > 0.02 * ls[:, 0])
    l1 = ls[keep, 0]
    inv = ls[keep, 1:] / l1[:, None]
    return verts[keep], inv, l1, np.sign(cross[keep])


def invariant_points(tri, s_max: float) -> np.ndarray:
    """Triangles as points (L2/L1, L3/L1, w·ln L1) of a KD-tree: the scaled log size puts
    the whole scale window (±ln s_max) within :data:`SCALE_AXIS` of the invariant axes."""
    return np.column_stack([tri[1], np.log(tri[2]) * (SCALE_AXIS / math.log(s_max))])


def _candidates(src, ref, stri, rtri, rtree, sigma, s_range, max_offset):
    """Similarities of source/reference triangle pairs with equal invariants.

    ``stri``/``rtri`` are :func:`triangles` outputs; ``rtree`` a cKDTree of the
    reference :func:`invariant_points`. Returns (a, b, parity, source triangle vertices).
    """
    verts_s, inv_s, l1_s, sign_s = stri
    verts_r, inv_r, l1_r, sign_r = rtri
    # Ratio errors are about 2σ/L1 per side ratio; 3σ of both triangles.
    tol = np.clip(6.0 * sigma / l1_s, 2e-3, 0.04)
    hits = rtree.query_ball_point(
        invariant_points(stri, s_range[1]), np.hypot(tol, SCALE_AXIS), return_sorted=False
    )
    counts = np.fromiter(map(len, hits), np.int64, len(hits))
    if counts.sum() == 0:
        return None
    ai = np.repeat(np.arange(len(hits)), counts)
    bi = np.fromiter(chain.from_iterable(hits), np.int64, int(counts.sum()))
    ratio = l1_r[bi] / l1_s[ai]
    ok = (ratio >= s_range[0]) & (ratio <= s_range[1])
    ok &= np.hypot(*(inv_r[bi] - inv_s[ai]).T) <= tol[ai]
    ai, bi = ai[ok], bi[ok]
    parity = (sign_s[ai] * sign_r[bi]).astype(np.int64)
    zs = src[verts_s[ai], 0] + 1j * parity[:, None] * src[verts_s[ai], 1]
    zr = ref[verts_r[bi], 0] + 1j * ref[verts_r[bi], 1]
    ms, mr = zs.mean(axis=1), zr.mean(axis=1)
    den = np.maximum(np.sum(np.abs(zs - ms[:, None]) ** 2, axis=1), 1e-300)
    a = np.sum((zr - mr[:, None]) * np.conj(zs - ms[:, None]), axis=1) / den
    b = mr - a * ms
    ok = (np.abs(a) >= s_range[0]) & (np.abs(a) <= s_range[1]) & (np.abs(b) <= max_offset)
    return a[ok], b[ok], parity[ok], verts_s[ai[ok]]


def chance_probability(sim: Similarity, ref, width, height, radius) -> float:
    """Probability that a random point of the chip lands within ``radius`` [px] of one of
    the references on the chip's footprint under ``sim`` (union bound, uniform sky)."""
    z = (ref[:, 0] + 1j * ref[:, 1] - sim.b) / sim.a
    x, y = z.real, sim.parity * z.imag
    on = (np.abs(x) <= 0.5 * width + radius) & (np.abs(y) <= 0.5 * height + radius)
    return min(1.0, float(on.sum()) * math.pi * radius**2 / (width * height))


def log10_tail(sim: Similarity, src, exclude, ref, tree, width, height, radius):
    """Smallest log10 binomial tail of the match counts over prefixes and radii.

    ``src`` is sorted brightest first; the sources in ``exclude`` (those that made the
    candidate) are not tests. Counts are taken among the n brightest test sources (n in
    :data:`PREFIXES`) within each radius of :data:`RADIUS_FRACTIONS` × ``radius``: a
    precise match is much stronger evidence than a loose one.

    Returns
    -------
    log10_tail : float
        Smallest tail probability [log10] (0 without matches).
    n_tests : int
        Number of (prefix, radius) tests, for the Bonferroni factor.
    """
    keep = np.ones(len(src), bool)
    keep[np.asarray(exclude, np.int64)] = False
    test = src[keep]
    si, _, dist = nn_match(sim.apply(test), ref, radius, tree)
    sizes = sorted({n for n in PREFIXES if n < len(test)} | {len(test)})
    best = 0.0
    for frac in RADIUS_FRACTIONS:
        rho = frac * radius
        p = chance_probability(sim, ref, width, height, rho)
        matched = np.zeros(len(test), bool)
        matched[si[dist <= rho]] = True
        cum = np.cumsum(matched)
        for n in sizes:
            k = int(cum[n - 1])
            if k > 0 and p > 0:
                best = min(best, log10_binomial_tail(k, n, p))
    return best, len(sizes) * len(RADIUS_FRACTIONS)


def log10_binomial_tail(k: int, n: int, p: float) -> float:
    """log10 P(X ≥ k) for X ~ Binomial(n, p); floored at 1e-300 (scipy.stats, which
    would give the same, takes ~0.7 s to import: most of a cold start)."""
    from scipy.special import bdtrc  # deferred: see pipeline.DEFERRED_IMPORTS

    return math.log10(max(float(bdtrc(k - 1, n, p)), 1e-300))


def _count_matches(a, b, parity, src, tree, radius):
    """Sources with a reference within ``radius`` under each candidate (not one-to-one)."""
    z = np.where(parity[:, None] > 0, src[:, 0] + 1j * src[:, 1], src[:, 0] - 1j * src[:, 1])
    w = (a[:, None] * z + b[:, None]).ravel()
    d, _ = tree.query(np.column_stack([w.real, w.imag]), distance_upper_bound=radius)
    return np.isfinite(d).reshape(len(a), -1).sum(axis=1)


def refine(sim: Similarity, src, ref, tree, radius, n_iter: int = 3) -> Similarity:
    """Least-squares similarity on the one-to-one matches, iterated."""
    for _ in range(n_iter):
        si, ri, _ = nn_match(sim.apply(src), ref, radius, tree)
        if len(si) < 3:
            break
        a, b = fit_similarity(src[si] * np.array([1.0, sim.parity]), ref[ri])
        sim = Similarity(complex(a), complex(b), sim.parity)
    sim.n_matches = len(nn_match(sim.apply(src), ref, radius, tree)[0])
    return sim


def _brightest(flux, n):
    """Indices of the n largest finite fluxes, brightest first (non-finite last)."""
    key = np.where(np.isfinite(flux), -np.asarray(flux, float), np.inf)
    return np.argsort(key, kind="stable")[:n]


def blind_solve(src, src_flux, ref, ref_flux, width, height, config: BlindSolveConfig):
    """Find and verify the similarity mapping sources onto references.

    Parameters
    ----------
    src : numpy.ndarray
        (n, 2) source positions relative to the chip centre [px].
    src_flux : numpy.ndarray
        (n,) brightness ranking the sources (any unit; larger is brighter).
    ref : numpy.ndarray
        (m, 2) references on the tangent plane at the hint, in hint pixels [px].
    ref_flux : numpy.ndarray
        (m,) reference fluxes ranking the references (NaN last).
    width, height : float
        Chip size [px].
    config : BlindSolveConfig

    Returns
    -------
    BlindResult

    Raises
    ------
    BlindSolveFailed
        When no candidate passes the false-alarm test.
    """
    c = config
    diag = math.hypot(width, height)
    max_offset = c.max_offset_fraction * diag
    s_range = (1.0 - c.max_scale_error, 1.0 + c.max_scale_error)
    finite = np.isfinite(ref).all(axis=1)
    dist = np.hypot(*np.where(finite[:, None], ref, np.inf).T)
    near = np.nonzero(dist <= 0.5 * diag * s_range[1] + max_offset)[0]
    r = ref[near[_brightest(np.asarray(ref_flux, float)[near], c.max_refs)]]
    good = np.nonzero(np.isfinite(src).all(axis=1))[0]
    s = src[good[_brightest(np.asarray(src_flux, float)[good], c.max_sources)]]
    radius = c.match_radius_px
    if len(s) < 4 or len(r) < 3:
        raise BlindSolveFailed(f"{len(s)} sources and {len(r)} refs near the hint")
    min_longest = c.min_longest_fraction * diag
    rtri = triangles(
        r, 0, len(r), c.min_side_px * s_range[0], diag * s_range[1], min_longest * s_range[0]
    )
    if len(rtri[1]) == 0:
        raise BlindSolveFailed(f"no usable triangle among {len(r)} refs near the hint")
    from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

    inv_tree, tree = cKDTree(invariant_points(rtri, s_range[1])), cKDTree(r)
    steps = sorted({min(d, len(s)) for d in c.depth_steps} | {len(s)})
    n_cand, lo, best = 0, 0, None
    for hi in steps:
        stri = triangles(s, lo, hi, c.min_side_px, diag, min_longest)
        lo = hi
        cands = _candidates(s, r, stri, rtri, inv_tree, c.position_sigma_px, s_range, max_offset)
        if cands is None or len(cands[0]) == 0:
            continue
        a, b, parity, verts = cands
        n_cand += len(a)
        counts = _count_matches(a, b, parity, s, tree, radius)
        for i in np.argsort(-counts, kind="stable")[: c.n_verify]:
            if counts[i] < c.min_matches:
                break
            sim = Similarity(complex(a[i]), complex(b[i]), int(parity[i]))
            tail, n_tests = log10_tail(sim, s, verts[i], r, tree, width, height, radius)
            alarm = tail + math.log10(n_cand * len(steps) * n_tests)
            if best is None or alarm < best[0]:
                best = (alarm, sim)
        if best is not None and best[0] <= c.max_log10_false_alarm:
            break
    if best is None or best[0] > c.max_log10_false_alarm:
        got = "no candidate" if best is None else f"best log10 false alarm {best[0]:.1f}"
        raise BlindSolveFailed(
            f"{got} among {n_cand} triangle candidates of {len(s)} sources and {len(r)} refs "
            f"(needed <= {c.max_log10_false_alarm:g} and >= {c.min_matches} matches; any "
            f"rotation, both parities, scale ±{c.max_scale_error:.0%}, shifts <= "
            f"{max_offset:.0f} px)",
            None if best is None else best[0],
        )
    sim = refine(best[1], s, r, tree, radius)
    return BlindResult(sim, sim.n_matches, best[0], n_cand, len(s), len(r))
