"""Matching kernels against their NumPy oracles, and the matchers built on them."""

from __future__ import annotations

import math

import numpy as np
import oracles_more as om
import pytest

from promptcal.kernels.match import vote_offsets
from promptcal.pipeline.astrometry.matchers import (
    nn_match,
    vote_match,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vote_offsets_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-300, 300, (40, 2))
    ref = rng.uniform(-400, 400, (55, 2))
    thetas = np.linspace(-0.02, 0.02, 5)
    args = (
        src[:, 0].copy(),
        src[:, 1].copy(),
        ref[:, 0].copy(),
        ref[:, 1].copy(),
        np.cos(thetas),
        np.sin(thetas),
        120.0,
        7.0,
    )
    got = vote_offsets(*args)
    want = om.vote_offsets(*args)
    assert got.shape == want.shape == (5, 35, 35)
    np.testing.assert_array_equal(got, want)
    assert got.sum() > 0


def test_vote_finds_rotation_and_shift_among_unrelated_points():
    rng = np.random.default_rng(3)
    src = rng.uniform(-1000, 1000, (120, 2))
    theta, shift = math.radians(0.6), np.array([-83.0, 141.0])
    c, s = math.cos(theta), math.sin(theta)
    ref = src @ np.array([[c, s], [-s, c]]) + shift
    # Half the sources have no reference and the references get as many unrelated ones.
    ref = np.vstack([ref[:60], rng.uniform(-1200, 1200, (60, 2))])
    vote = vote_match(
        src, ref, max_offset=250, max_rotation=math.radians(1), bin_size=4, r_max=1414
    )
    assert vote.peak >= 55
    assert vote.expected < 2
    assert abs(vote.rotation - theta) < 4 / 1414
    np.testing.assert_allclose(vote.offset, shift, atol=3.0)


def test_nn_match_is_one_to_one_and_respects_radius():
    src = np.array([[0.0, 0.0], [0.3, 0.0], [10.0, 10.0], [50.0, 50.0]])
    ref = np.array([[0.2, 0.0], [10.5, 10.0], [80.0, 80.0]])
    si, ri, d = nn_match(src, ref, 1.0)
    pairs = sorted(zip(si.tolist(), ri.tolist(), strict=True))
    # Sources 0 and 1 both want ref 0; source 1 is closer and keeps it.
    assert pairs == [(1, 0), (2, 1)]
    np.testing.assert_allclose(np.sort(d), [0.1, 0.5], atol=1e-12)
