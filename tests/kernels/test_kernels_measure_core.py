"""The fused per-source measurement and the boxed-noise kernels.

``measure_core`` must give exactly what the per-source kernels give one at a time
(:mod:`per_source`) with the equivalent noise plane; the fast Gaussian weights must
match the direct ``exp``.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_measure
import oracles_more as om
import oracles_noise as on
import per_source as ps
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.kernels import fluxes as fk
from promptcal.kernels import measure as mk
from promptcal.kernels import noise as nk


def _crowded_field(seed, shape=(120, 150), n=14, sigma=1.6):
    """Noisy stars in disc footprints that touch their neighbours, with boxed noise."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(5, shape[1] - 5, n)
    ys = rng.uniform(5, shape[0] - 5, n)
    flux = rng.uniform(500, 5e4, n)
    image = sum(
        oracles.gaussian(shape, x, y, f, sigma**2) for x, y, f in zip(xs, ys, flux, strict=True)
    )
    image = (image + rng.normal(0, 1.0, shape)).astype(np.float32)
    variance = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i in range(n):
        labels[(x - xs[i]) ** 2 + (y - ys[i]) ** 2 <= rng.uniform(4, 11) ** 2] = i + 1
    bbox = om.label_bboxes(labels, n)
    values, table = nk.footprint_noise_boxes(labels, bbox, 1.0, seed)
    own = np.arange(1, n + 1, dtype=np.int32)
    return image, variance, labels, own, np.floor(xs + 0.5), np.floor(ys + 0.5), values, table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measure_core_equals_the_separate_kernels(seed):
    image, var, labels, own, xs, ys, values, table = _crowded_field(seed)
    plane = on.noise_plane(values, table, labels)
    sigma, radii = 1.6, np.array([12.0, 6.0, 12.0, 20.4])
    got = mk.measure_core(
        image, var, values, table, labels, own, xs, ys, sigma, radii, 20, 100, 1e-6
    )
    x, y, xe, ye, cf = ps.centroids(image, var, plane, labels, own, xs, ys, sigma, 20)
    assert_array_equal(got.centroid, [x, y, xe, ye])
    assert_array_equal(got.centroid_flags, cf)
    ixx, iyy, ixy, sf = mk.adaptive_moments(image, plane, labels, own, x, y, sigma, 100, 1e-6)
    assert_array_equal(got.shape, [ixx, iyy, ixy])
    assert_array_equal(got.shape_flags, sf)
    flux, err, trunc = ps.aperture_fluxes(image, var, plane, labels, own, x, y, radii)
    assert_array_equal(got.ap_flux, flux)
    assert_array_equal(got.ap_err, err)
    assert_array_equal(got.ap_truncated, trunc)
    assert_array_equal(
        got.gaussian, ps.gaussian_fluxes(image, var, plane, labels, own, x, y, ixx, iyy, ixy)
    )
    assert trunc.any()  # the apertures reach off the image
    # And the apertures are the oracle's masked sums of what each source sees.
    for i in range(own.size):
        for k, r in enumerate(radii):
            expected = oracles_measure.aperture_sums(
                image, var, plane, labels, own[i], x[i], y[i], r
            )
            assert_allclose([got.ap_flux[i, k], got.ap_err[i, k]], expected, rtol=1e-12)


def test_measure_core_without_gaussian_or_with_fewer_radii_changes_nothing_else():
    # The PSF phase's fitting passes skip the Gaussian flux and the tophat radii.
    image, var, labels, own, xs, ys, values, table = _crowded_field(3)
    args = (image, var, values, table, labels, own, xs, ys, 1.6)
    full = mk.measure_core(*args, np.array([12.0, 6.0, 20.4]), 20, 100, 1e-6)
    part = mk.measure_core(*args, np.array([12.0]), 20, 100, 1e-6, gaussian=False)
    for name in ("centroid", "centroid_flags", "shape", "shape_flags"):
        assert_array_equal(getattr(part, name), getattr(full, name))
    for name in ("ap_flux", "ap_err", "ap_truncated"):
        assert_array_equal(getattr(part, name), getattr(full, name)[:, :1])
    assert np.isnan(part.gaussian).all()
    assert np.isfinite(full.gaussian).all()


def test_boxed_psf_fluxes_equal_plane_psf_fluxes():
    image, var, labels, own, xs, ys, values, table = _crowded_field(4)
    plane = on.noise_plane(values, table, labels)
    rng = np.random.default_rng(5)
    stamps = rng.uniform(0, 1, (own.size, 13, 13))
    stamps /= stamps.sum(axis=(1, 2), keepdims=True)
    x0 = xs.astype(np.int64) - 6
    y0 = ys.astype(np.int64) - 6
    got = fk.boxed_psf_fluxes(image, var, values, table, labels, own, stamps, x0, y0)
    expected = ps.psf_fluxes(image, var, plane, labels, own, stamps, x0, y0)
    for a, b in zip(got, expected, strict=True):
        assert_array_equal(a, b)
    for i in range(own.size):
        ef, ee, et = oracles_measure.psf_flux(
            image, var, plane, labels, own[i], stamps[i], x0[i], y0[i]
        )
        assert_allclose([got.flux[i], got.flux_err[i]], [ef, ee], rtol=1e-9)
        assert got.truncated[i] == et


def test_kernels_accept_a_non_contiguous_noise_plane():
    image, var, labels, own, xs, ys, values, table = _crowded_field(6)
    plane = on.noise_plane(values, table, labels)
    strided = np.zeros((plane.shape[0], 2 * plane.shape[1]), np.float32)[:, ::2]
    strided[...] = plane
    radii = np.array([3.0, 9.0])
    a = mk.measure_core(
        image, var, nk.flat(plane), nk.plane_table(plane), labels, own, xs, ys, 1.6, radii,
        20, 100, 1e-6,
    )  # fmt: skip
    b = mk.measure_core(
        image, var, nk.flat(strided), nk.plane_table(strided), labels, own, xs, ys, 1.6,
        radii, 20, 100, 1e-6,
    )  # fmt: skip
    for u, v in zip(a, b, strict=True):
        assert_array_equal(u, v)


@pytest.mark.parametrize(
    ("wxx", "wyy", "wxy"),
    [
        (2.3, 2.1, 0.3),  # a typical star: row recurrence
        (0.6, 0.5, 0.1),  # narrower than a pixel: direct exp
        (30.0, 1.2, 4.0),  # elongated: the inverse covariance exceeds 1 along y
        (900.0, 700.0, -300.0),  # box clamped at 64 px
        (3.0, 3.0, 2.99),  # nearly singular
    ],
)
def test_gaussian_flux_weights_match_direct_exp(wxx, wyy, wxy):
    rng = np.random.default_rng(8)
    shape = (140, 150)
    image = rng.normal(10.0, 3.0, shape).astype(np.float32)
    var = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    own = np.zeros(1, np.int32)
    xc, yc = np.array([74.3]), np.array([69.8])
    g, g_err = ps.gaussian_fluxes(
        image, var, image, labels, own, xc, yc, np.array([wxx]), np.array([wyy]), np.array([wxy])
    )
    expected = oracles_measure.gaussian_flux(
        image, var, image, labels, 0, xc[0], yc[0], wxx, wyy, wxy
    )
    assert_allclose([g[0], g_err[0]], expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("ixx", "iyy", "ixy"), [(9.0, 2.0, 3.5), (2.0, 16.0, -1.0), (40.0, 35.0, 5.0)]
)
def test_adaptive_moments_of_extended_sources_reach_the_oracle_fixed_point(ixx, iyy, ixy):
    shape = (150, 160)
    xc, yc = 80.37, 74.81
    image = oracles.gaussian(shape, xc, yc, 1e6, ixx, iyy, ixy).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    sigma0 = np.sqrt(0.5 * (ixx + iyy))
    got = mk.adaptive_moments(
        image, image, labels, np.zeros(1, np.int32), np.array([xc]), np.array([yc]), sigma0, 200,
        1e-12,
    )  # fmt: skip
    assert got.flags[0] == 0
    w = np.array([got.ixx[0], got.iyy[0], got.ixy[0]])
    # The fixed point: the oracle's weighted moments under W are W / 2.
    assert_allclose(
        oracles_measure.weighted_moments(image.astype(np.float64), xc, yc, *w),
        0.5 * w,
        rtol=1e-9,
    )
    assert_allclose(w, [ixx, iyy, ixy], rtol=0.02, atol=0.05)


@pytest.mark.parametrize("seed", range(4))
def test_moment_sums_over_runs_equal_the_sums_that_test_every_pixel(seed):
    rng = np.random.default_rng(seed)
    seen = rng.normal(0.0, 1.0, 129 * 129)
    for _ in range(300):
        x_lo, y_lo = rng.integers(0, 60, 2)
        width, height = rng.integers(1, 45, 2)
        box = np.array([x_lo, x_lo + width, y_lo, y_lo + height], np.int64)
        xc = rng.uniform(x_lo - 8.0, x_lo + width + 8.0)
        yc = rng.uniform(y_lo - 8.0, y_lo + height + 8.0)
        # weights from narrower than a pixel (direct exp) to wide and elongated
        sxx, syy = np.exp(rng.uniform(np.log(0.3), np.log(80.0), 2))
        sxy = rng.uniform(-0.95, 0.95) * np.sqrt(sxx * syy)
        det = sxx * syy - sxy * sxy
        inverse = (syy / det, sxx / det, -sxy / det)
        got = mk._moment_sums(seen, box, xc, yc, *inverse)
        assert got == mk._moment_sums_tested(seen, box, xc, yc, *inverse)
