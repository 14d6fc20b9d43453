"""PSF resampling and pixel-basis PSF stamp kernels against NumPy oracles and analytic truth."""

from __future__ import annotations

import numpy as np
import oracles
import oracles_measure as om
import oracles_more
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.kernels.noise import flat, plane_table
from promptcal.kernels.psf import lanczos_weights, pixel_psf_stamps, registered_stamps, shift_stamp


def _f32(a):
    return np.ascontiguousarray(a, np.float32)


# ------------------------------------------------------------------ Lanczos


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("offset", [0.0, 1e-13, 0.1, 0.5, 0.73, 0.999])
def test_lanczos_weights_match_sinc_formula(order, offset):
    w = lanczos_weights(offset, order)
    taps = np.arange(-order + 1, order + 1)
    expected = om.lanczos(offset - taps, order)
    assert_allclose(w, expected / expected.sum(), rtol=1e-9, atol=1e-12)
    assert_allclose(w.sum(), 1.0, rtol=1e-12)
    if offset == 0.0:
        assert_allclose(w, np.eye(2 * order)[order - 1], atol=1e-15)


@pytest.mark.parametrize(
    ("dx", "dy"), [(0.3, -0.2), (-0.9, 0.45), (1.7, -2.3), (0.0, 0.0), (2.0, -1.0)]
)
def test_shift_stamp_matches_lanczos_matrix(dx, dy):
    rng = np.random.default_rng(1)
    stamp = rng.normal(size=(21, 27))
    out = shift_stamp(stamp, dx, dy, 3)
    assert out.shape == stamp.shape
    assert_allclose(out, om.shift_stamp(stamp, dx, dy, 3), atol=1e-12)
    if dx == int(dx) and dy == int(dy):  # integer shifts translate exactly, zeros enter
        expected = np.zeros_like(stamp)
        sx, sy = int(dx), int(dy)
        h, w = stamp.shape
        dst = np.s_[max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)]
        src = np.s_[max(-sy, 0) : h - max(sy, 0), max(-sx, 0) : w - max(sx, 0)]
        expected[dst] = stamp[src]
        assert_allclose(out, expected, atol=1e-14)


def test_shift_stamp_of_gaussian_matches_analytic_shift():
    # Normalised Lanczos-3 is good to 3.7e-3 of the peak here: its weights have a first
    # moment of 0.282 for an offset of 0.3 (a 0.018 px bias). This pins that accuracy;
    # a better resampler (quintic spline, FFT) is a documented follow-up.
    dx, dy = 0.3, -0.2
    size, c, sigma = 31, 15.0, 2.0
    stamp = oracles.gaussian((size, size), c, c, 1.0, sigma**2)
    out = shift_stamp(stamp, dx, dy, 3)
    truth = oracles.gaussian((size, size), c + dx, c + dy, 1.0, sigma**2)
    assert np.max(np.abs(out - truth)) < 4e-3 * truth.max()
    # The centroid moves by the shift, within Lanczos-3's bias.
    y, x = np.mgrid[0:size, 0:size]
    assert_allclose([np.sum(out * x) / out.sum(), np.sum(out * y) / out.sum()],
                    [c + dx, c + dy], atol=0.02)  # fmt: skip


def test_registered_stamps_match_oracle_with_noise_replacement():
    rng = np.random.default_rng(2)
    shape = (50, 64)
    image = _f32(rng.normal(size=shape) * 10)
    variance = _f32(rng.uniform(1, 2, shape))
    labels = np.zeros(shape, np.int32)
    labels[10:25, 10:30] = 1
    labels[20:40, 25:45] = 2
    noise = _f32(rng.normal(size=shape))
    xc = np.array([20.3, 33.8, 3.2, 60.5, 48.0])
    yc = np.array([17.6, 30.1, 25.0, 25.0, 45.9])
    own = np.array([1, 2, 1, 2, 0], np.int32)
    size, order = 15, 3
    stamps, variances, off = registered_stamps(
        image, variance, flat(noise), plane_table(noise), labels, own, xc, yc, size, order
    )
    assert off.tolist() == [False, False, True, True, True]
    assert not stamps[off].any() and not variances[off].any()
    for i in np.flatnonzero(~off):
        e_stamp, e_var = om.registered_stamp(
            image, variance, noise, labels, own[i], xc[i], yc[i], size, order
        )
        assert_allclose(stamps[i], e_stamp, atol=1e-10)
        assert_array_equal(variances[i], e_var)


def test_registered_stamps_flags_only_cutouts_that_need_off_image_pixels():
    shape, size, order = (40, 40), 11, 3
    image = np.ones(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    # Lowest centre whose taps start at pixel 0: floor(x) - 5 - 2 = 0.
    xc = np.array([7.0, 6.99, 20.0, 20.0])
    yc = np.array([20.0, 20.0, 7.5, 6.5])
    stamps, _, off = registered_stamps(
        image, image, flat(image), plane_table(image), labels, np.zeros(4, np.int32),
        xc, yc, size, order,
    )  # fmt: skip
    assert off.tolist() == [False, True, False, True]
    assert_allclose(stamps[~off], 1.0, rtol=1e-12)  # normalised weights keep a flat image flat


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_registered_stamps_recentre_a_subpixel_star(seed):
    rng = np.random.default_rng(seed)
    shape, sigma, size = (48, 56), 1.8, 21
    x0, y0 = 27 + rng.uniform(-0.5, 0.5), 22 + rng.uniform(-0.5, 0.5)
    image = _f32(oracles.gaussian(shape, x0, y0, 1e4, sigma**2))
    var = np.ones(shape, np.float32)
    stamps, _, off = registered_stamps(
        image, var, flat(image), plane_table(image), np.zeros(shape, np.int32),
        np.zeros(1, np.int32),
        np.array([x0]), np.array([y0]), size, 3,
    )  # fmt: skip
    truth = oracles.gaussian((size, size), size // 2, size // 2, 1e4, sigma**2)
    assert not off[0]
    assert np.unravel_index(np.argmax(stamps[0]), stamps[0].shape) == (size // 2, size // 2)
    # Lanczos-3 limits the accuracy to ~5e-3 of the peak and ~0.02 px (its weights' bias).
    assert np.max(np.abs(stamps[0] - truth)) < 5e-3 * truth.max()
    y, x = np.mgrid[0:size, 0:size]
    centre = [np.sum(stamps[0] * x) / stamps[0].sum(), np.sum(stamps[0] * y) / stamps[0].sum()]
    assert_allclose(centre, [size // 2, size // 2], atol=0.025)


# ------------------------------------------------------------------ PSF stamps


@pytest.mark.parametrize("n_terms", [1, 3, 6])
def test_pixel_psf_stamps_match_tensordot_shift_and_normalise(n_terms):
    rng = np.random.default_rng(n_terms)
    size, n = 19, 5
    base = oracles.gaussian((size, size), size // 2, size // 2, 1.0, 2.2**2)
    coefficients = np.stack(
        [base] + [0.02 * rng.normal(size=(size, size)) * base.max() for _ in range(n_terms - 1)]
    )
    xy = rng.uniform(-1, 1, (2, n))
    terms = np.stack([np.ones(n), *xy, xy[0] ** 2, xy[0] * xy[1], xy[1] ** 2])[:n_terms]
    dx = np.array([0.0, 0.31, -0.47, 0.5, -1.3])
    dy = np.array([0.0, -0.22, 0.05, -0.5, 0.9])
    got = pixel_psf_stamps(coefficients, terms, dx, dy, 3)
    assert got.shape == (n, size, size) and got.dtype == np.float64
    assert_allclose(got, oracles_more.pixel_psf_stamps(coefficients, terms, dx, dy, 3), rtol=1e-10,
                    atol=1e-14)  # fmt: skip
    assert_allclose(got.sum(axis=(1, 2)), 1.0, rtol=1e-12)
    if n_terms == 1:  # no shift: the normalised basis image itself
        assert_allclose(got[0], base / base.sum(), rtol=1e-12)
