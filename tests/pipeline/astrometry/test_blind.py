"""Blind solving (recovery mode): synthetic frames with a known WCS, the triangle and
false-alarm building blocks against plain oracles, and scrambled synthetic inputs."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from promptcal.pipeline.astrometry.blind import (
    BlindSolveConfig,
    BlindSolveFailed,
    blind_solve,
    chance_probability,
    log10_binomial_tail,
    log10_tail,
    triangles,
)
from promptcal.pipeline.astrometry.fitter import PointingHint, fit_astrometry
from promptcal.pipeline.astrometry.matchers import Similarity

W, H = 650, 500
BBOX = (0, 0, W - 1, H - 1)
HALF_DIAG = 0.5 * math.hypot(W, H)


def truth_wcs(rng, scale, mirrored):
    """TAN WCS at a random rotation, mirrored or not, centred on the chip."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [rng.uniform(0, 360), rng.uniform(-60, 60)]
    w.wcs.crpix = [(W - 1) / 2 + 1, (H - 1) / 2 + 1]
    t = rng.uniform(0, 2 * np.pi)
    cd = scale / 3600 * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    if mirrored:
        cd[:, 0] *= -1
    w.wcs.cd = cd
    w.wcs.set()
    return w


def synthetic_frame(seed, *, n_refs_on=12, n_saturated=3, keep_saturated=True, mirrored=False):
    """A frame with ~``n_refs_on`` reference stars on the chip (the brightest
    ``n_saturated`` of them saturated: centroids off by ~0.7 px, fluxes clipped, or
    dropped), 150 fainter stars without reference, and a hint off by up to half the
    diagonal with the scale off by up to 5 %."""
    rng = np.random.default_rng(seed)
    scale = 5.0
    truth = truth_wcs(rng, scale, mirrored)
    # Exactly n_refs_on on the chip, the same density around it over a disc covering
    # every footprint the solver searches.
    radius = 3.2 * HALF_DIAG
    n_around = rng.poisson(n_refs_on * np.pi * radius**2 / (W * H))
    r, a = radius * np.sqrt(rng.uniform(0, 1, n_around)), rng.uniform(0, 2 * np.pi, n_around)
    px, py = (W - 1) / 2 + r * np.cos(a), (H - 1) / 2 + r * np.sin(a)
    off_chip = (px < -0.5) | (px > W - 0.5) | (py < -0.5) | (py > H - 0.5)
    px = np.concatenate([rng.uniform(0, W - 1, n_refs_on), px[off_chip]])
    py = np.concatenate([rng.uniform(0, H - 1, n_refs_on), py[off_chip]])
    n_refs = len(px)
    ra, dec = truth.all_pix2world(px, py, 0)
    mag = rng.uniform(6.0, 10.0, n_refs)
    on = np.arange(n_refs_on)
    on = on[np.argsort(mag[on])]
    flux = 10 ** (-0.4 * (mag[on] - 25)) * 10 ** rng.normal(0, 0.1, len(on))
    sx, sy = px[on] + rng.normal(0, 0.1, len(on)), py[on] + rng.normal(0, 0.1, len(on))
    sat = np.arange(len(on)) < n_saturated
    sx[sat] += rng.normal(0, 0.7, sat.sum())
    sy[sat] += rng.normal(0, 0.7, sat.sum())
    flux[sat] = flux[n_saturated] * rng.uniform(1.0, 1.5, sat.sum())  # clipped
    keep = np.ones(len(on), bool) if keep_saturated else ~sat
    n_faint = 150
    faint = 10 ** (-0.4 * (rng.uniform(9.5, 14, n_faint) - 25))
    x = np.concatenate([sx[keep], rng.uniform(0, W - 1, n_faint)])
    y = np.concatenate([sy[keep], rng.uniform(0, H - 1, n_faint)])
    f = np.concatenate([flux[keep], faint])
    off = HALF_DIAG * np.sqrt(rng.uniform(0, 1))
    b = rng.uniform(0, 2 * np.pi)
    hra, hdec = truth.all_pix2world(
        [[(W - 1) / 2 + off * np.cos(b), (H - 1) / 2 + off * np.sin(b)]], 0
    )[0]
    hint = PointingHint(hra, hdec, scale * (1 + rng.uniform(-0.05, 0.05)))
    return {"src": (x, y, f), "refs": (ra, dec, 10 ** (-0.4 * mag)), "hint": hint,
            "truth": truth, "n_usable": int(keep.sum())}  # fmt: skip


def centre_error_arcsec(wcs, truth):
    c = [[(W - 1) / 2, (H - 1) / 2]]
    (ra, dec), (rt, dt) = wcs.all_pix2world(c, 0)[0], truth.all_pix2world(c, 0)[0]
    return float(np.hypot((ra - rt) * np.cos(np.radians(dt)), dec - dt) * 3600)


def solve_frame(frame):
    x, y, f = frame["src"]
    err = np.full(len(x), 0.1)
    return fit_astrometry(
        x, y, f, err, err, *frame["refs"], initial_wcs=None, bbox=BBOX,
        pointing_hint=frame["hint"],
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("mirrored", [False, True])
def test_blind_solve_any_rotation_parity_offset_and_scale(seed, mirrored):
    frame = synthetic_frame(100 + seed, mirrored=mirrored)
    result = solve_frame(frame)
    truth = frame["truth"]
    assert result.used_recovery
    assert result.metadata["recovery_log10_false_alarm"] <= -6
    # Sources map onto (east, north) through a flip unless the frame is mirrored.
    assert result.metadata["recovery_parity"] == (1 if mirrored else -1)
    # Saturated centroids are off by ~0.7 px: the fit is good to a fraction of that.
    assert centre_error_arcsec(result.wcs, truth) < 2.5  # 0.5 px
    scale = np.sqrt(abs(np.linalg.det(result.wcs.pixel_scale_matrix)))
    assert scale / np.sqrt(abs(np.linalg.det(truth.pixel_scale_matrix))) == pytest.approx(
        1, abs=1e-3
    )
    assert np.sign(np.linalg.det(result.wcs.wcs.cd)) == np.sign(np.linalg.det(truth.wcs.cd))
    assert len(result.matches) >= frame["n_usable"] - 2


@pytest.mark.parametrize("seed", range(4))
def test_blind_solve_with_saturated_stars_excluded(seed):
    # Nine usable references remain once the three saturated ones are dropped.
    frame = synthetic_frame(200 + seed, keep_saturated=False)
    assert frame["n_usable"] <= 11
    result = solve_frame(frame)
    assert centre_error_arcsec(result.wcs, frame["truth"]) < 2.5


def test_blind_solve_at_the_largest_offset_and_scale_error():
    # Hint a full half diagonal off along the diagonal, scale 5 % off: the edge of the search.
    frame = synthetic_frame(300)
    truth = frame["truth"]
    corner = truth.all_pix2world([[W - 1.0, H - 1.0]], 0)[0]
    centre = truth.all_pix2world([[(W - 1) / 2, (H - 1) / 2]], 0)[0]
    frame["hint"] = PointingHint(
        centre[0] + 0.98 * (corner[0] - centre[0]),
        centre[1] + 0.98 * (corner[1] - centre[1]),
        5.0 * 1.049,
    )
    result = solve_frame(frame)
    assert centre_error_arcsec(result.wcs, truth) < 2.5


# ------------------------------------------------------------------ building blocks


def test_triangles_against_brute_force():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 300, (12, 2))
    verts, inv, l1, sign = triangles(pts, 4, 12, 20.0, 350.0, 60.0)
    rows = zip(verts.tolist(), inv, l1, sign, strict=True)
    got = {tuple(sorted(v)): (tuple(v), i, l, s) for v, i, l, s in rows}
    expected = set()
    for tri in combinations(range(12), 3):
        if max(tri) < 4:
            continue  # only triangles whose last vertex is in [4, 12)
        side = {}
        for v in tri:
            u, w = (t for t in tri if t != v)
            side[v] = np.linalg.norm(pts[u] - pts[w])
        order = sorted(tri, key=lambda v: -side[v])  # opposite the longest side first
        ls = [side[v] for v in order]
        if (
            ls[2] < 20
            or ls[0] > 350
            or ls[0] < 60
            or min(ls[0] - ls[1], ls[1] - ls[2]) <= 0.02 * ls[0]
        ):
            continue
        expected.add(tri)
        v, i, l, s = got[tri]
        assert v == tuple(order)
        np.testing.assert_allclose(i, [ls[1] / ls[0], ls[2] / ls[0]], rtol=1e-12)
        assert l == pytest.approx(ls[0])
        a, b, c = pts[list(order)]
        assert s == np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    assert set(got) == expected and len(expected) > 50


def test_chance_probability_counts_refs_on_the_footprint():
    sim = Similarity(complex(0, 1.0), complex(100.0, 0.0), 1)  # 90° turn, then 100 px shift
    # Refs given in the plane; inside the footprint iff sim⁻¹(ref) is on the chip.
    chip = np.array([[0, 0], [300, 240], [-320, -245], [330, 0], [0, 400]], float)
    ref = sim.apply(chip)
    p = chance_probability(sim, ref, W, H, 2.0)
    assert p == pytest.approx(3 * np.pi * 4.0 / (W * H))


def binomial_log10_sf(k, n, p):
    """log10 P(K >= k), K ~ Binomial(n, p), summed term by term."""
    return math.log10(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1)))


def test_log10_tail_is_the_smallest_binomial_tail_over_prefixes_and_radii():
    rng = np.random.default_rng(3)
    sim = Similarity(complex(1.0, 0.0), complex(0.0, 0.0), 1)
    ref = rng.uniform(-300, 300, (20, 2)) * [1, 0.75]
    # 10 sources, brightest first; 0-2 make the candidate; 3, 5, 6 sit 0.1 px from refs.
    src = rng.uniform(-300, 300, (10, 2)) * [1, 0.75]
    src[:3] = ref[:3]
    for i, j in ((3, 3), (5, 4), (6, 5)):
        src[i] = ref[j] + [0.1, 0.0]
    tree = cKDTree(ref)
    tail, n_tests = log10_tail(sim, src, [0, 1, 2], ref, tree, W, H, 2.5)
    # Test list: sources 3..9; matches at positions 0, 2, 3 within every radius >= 0.3 px.
    best = 0.0
    for frac in (0.125, 0.25, 0.5, 1.0):
        p = chance_probability(sim, ref, W, H, frac * 2.5)
        for n, k in ((4, 3), (7, 3)):
            best = min(best, binomial_log10_sf(k, n, p))
    assert tail == pytest.approx(best, rel=1e-9)
    assert n_tests == 2 * 4  # prefixes (4, all 7) × radii


def test_random_inputs_are_never_accepted():
    rng = np.random.default_rng(11)
    config = BlindSolveConfig()
    closest = []
    for _ in range(20):
        src = rng.uniform(-0.5, 0.5, (int(rng.integers(40, 300)), 2)) * [W, H]
        ref = rng.uniform(-1.6, 1.6, (int(rng.integers(30, 120)), 2)) * HALF_DIAG
        with pytest.raises(BlindSolveFailed) as info:
            blind_solve(
                src, rng.uniform(1, 100, len(src)), ref, rng.uniform(1, 9, len(ref)), W, H, config
            )
        closest.append(info.value.best_log10_false_alarm)
    tested = [c for c in closest if c is not None]
    assert min(tested, default=0.0) > -4.0  # far from the -6 that accepts


@pytest.mark.parametrize("n", [3, 8, 20, 60])
def test_log10_binomial_tail_against_a_direct_sum(n):
    for p in (1e-4, 0.01, 0.2, 0.7):
        for k in range(1, n + 1):
            tail = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
            expected = math.log10(max(tail, 1e-300))
            assert log10_binomial_tail(k, n, p) == pytest.approx(expected, rel=1e-9, abs=1e-12)
