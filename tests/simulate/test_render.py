"""The source renderer of the synthetic sky: the kernel against its oracle, and the
photometry and PSF of the rendered stars and galaxies against their truth.
"""

from __future__ import annotations

import numpy as np
import oracles_more as om
import pytest
from scipy.optimize import curve_fit
from scipy.special import gammaincinv
from simulated_sky import FWHM_PER_SIGMA, SMALL, clean_stars, pixel_grid, sources_only

from promptcal.kernels.render import render_sources
from promptcal.simulate import SkyConfig, simulate_exposure
from promptcal.simulate.render import sersic_mixture

# --- kernel ---------------------------------------------------------------------------------


def _kernel_inputs():
    src_start = np.array([0, 1, 2, 4], dtype=np.int64)
    xc = np.array([12.3, 30.7, 20.0])
    yc = np.array([9.6, 22.2, 15.5])
    amp = np.array([50.0, 80.0, 10.0, 5.0])
    qa = np.array([0.3, 0.2, 0.05, 0.02])
    qb = np.array([0.05, 0.0, 0.01, -0.005])
    qc = np.array([0.25, 0.2, 0.06, 0.03])
    kind = np.array([0, 1, 0, 0], dtype=np.int64)
    beta = np.array([2.5, 3.0, 2.5, 2.5])
    return src_start, xc, yc, amp, qa, qb, qc, kind, beta


def test_render_kernel_matches_numpy_oracle():
    src_start, xc, yc, amp, qa, qb, qc, kind, beta = _kernel_inputs()
    shape, x0, y0 = (33, 41), 3, -2
    big = np.full(3, 200.0)
    image = np.zeros(shape, dtype=np.float64)
    total, snr2 = render_sources(
        image, x0, y0, src_start, xc, yc, big, np.zeros(3), 1,
        amp, qa, qb, qc, kind, beta, image, 0,
    )  # fmt: skip
    oracle = om.render_sources(shape, x0, y0, src_start, xc, yc, amp, qa, qb, qc, kind, beta)
    np.testing.assert_allclose(image, oracle, rtol=1e-12, atol=1e-12)
    assert total.sum() == pytest.approx(oracle.sum(), rel=1e-12)
    assert np.all(snr2 == 0)
    # S/N mode: Σ model² / variance per source, image untouched.
    variance = np.full(shape, 4.0)
    _, snr2 = render_sources(
        variance, x0, y0, src_start[:2], xc[:1], yc[:1], big[:1], np.zeros(1), 1,
        amp, qa, qb, qc, kind, beta, variance, 1,
    )  # fmt: skip
    one = om.render_sources(shape, x0, y0, src_start[:2], xc, yc, amp, qa, qb, qc, kind, beta)
    assert snr2[0] == pytest.approx((one**2).sum() / 4.0, rel=1e-12)
    assert np.all(variance == 4.0)


def test_render_kernel_aperture_mode():
    src_start, xc, yc, amp, qa, qb, qc, kind, beta = _kernel_inputs()
    shape, x0, y0 = (33, 41), 3, -2
    image = np.random.default_rng(0).normal(size=shape)
    radius = np.array([3.5, 6.0, 30.0])
    own, total = render_sources(
        image, x0, y0, src_start, xc, yc, radius, np.zeros(3), 1,
        amp, qa, qb, qc, kind, beta, image, 2,
    )  # fmt: skip
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for s in range(3):
        inside = np.hypot(xx + x0 - xc[s], yy + y0 - yc[s]) <= radius[s]
        one = om.render_sources(
            shape, x0, y0, src_start[s : s + 2] - src_start[s], xc[s : s + 1], yc[s : s + 1],
            *(a[src_start[s] : src_start[s + 1]] for a in (amp, qa, qb, qc, kind, beta)),
        )  # fmt: skip
        assert total[s] == pytest.approx(image[inside].sum(), rel=1e-12)
        assert own[s] == pytest.approx(one[inside].sum(), rel=1e-12)


def test_render_kernel_stamp_and_supersampling():
    src_start, xc, yc, amp, qa, qb, qc, kind, beta = _kernel_inputs()
    shape, x0, y0 = (33, 41), 3, -2
    radius = np.array([4.0, 5.0, 6.0])
    image = np.zeros(shape)
    render_sources(
        image, x0, y0, src_start[:2], xc[:1], yc[:1], radius[:1], np.zeros(1), 1,
        amp, qa, qb, qc, kind, beta, image, 0,
    )  # fmt: skip
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.hypot(xx + x0 - xc[0], yy + y0 - yc[0])
    assert np.all(image[d > 4.0] == 0) and np.all(image[d <= 4.0] > 0)
    # Supersampled pixels hold the mean of the sub-pixel samples.
    ss = np.zeros(shape)
    render_sources(
        ss, x0, y0, src_start[:2], xc[:1], yc[:1], np.array([50.0]), np.array([50.0]), 3,
        amp, qa, qb, qc, kind, beta, ss, 0,
    )  # fmt: skip
    fine = np.zeros(shape)
    for sy in (-1 / 3, 0, 1 / 3):
        for sx in (-1 / 3, 0, 1 / 3):
            fine += om.render_sources(
                shape, x0 + sx, y0 + sy, src_start[:2], xc, yc, amp, qa, qb, qc, kind, beta
            )
    np.testing.assert_allclose(ss, fine / 9.0, rtol=1e-10, atol=1e-12)


# --- photometry, PSF ---------------------------------------------------------------------


@pytest.mark.parametrize("fwhm", [2.0, 3.0, 5.5])
def test_gaussian_normalised_exactly(fwhm):
    cfg = SkyConfig(width=96, height=80, n_stars=8, psf_fwhm=fwhm, background=100.0)
    sim = simulate_exposure(cfg, seed=2)
    # rendered_flux is per source (neighbours do not enter); keep whole stamps only.
    t = sim.truth
    m = 3.0 * fwhm
    t = t[(t["x"] > m) & (t["x"] < 95 - m) & (t["y"] > m) & (t["y"] < 79 - m)]
    assert len(t) >= 2
    np.testing.assert_allclose(t["rendered_flux"], t["inst_flux"], rtol=1e-3)


@pytest.mark.parametrize(
    ("psf", "extra"),
    [("gaussian", {}), ("moffat", {"psf_supersample": 3, "psf_beta": 3.0})],
)
def test_isolated_star_flux_in_image(psf, extra):
    cfg = SkyConfig(
        **{**SMALL, "n_stars": 25, "width": 300, "height": 260},
        psf_model=psf,
        psf_fwhm=3.0,
        psf_fwhm_max=4.5,
        isolation_max_blend=1e-3,
        **extra,
    )
    sim = simulate_exposure(cfg, seed=4)
    t = clean_stars(sim, margin_fwhm=4.0)
    assert len(t) >= 3
    src = sources_only(sim)
    xx, yy = pixel_grid(sim)
    for row in t:
        r = cfg.isolation_radius * row["fwhm"]  # the aperture `isolated` is judged in
        aperture = np.hypot(xx - row["x"], yy - row["y"]) <= r
        enclosed = 1.0
        if psf == "moffat":  # analytic Moffat encircled energy at r
            alpha = row["fwhm"] / (2 * np.sqrt(2 ** (1 / 3.0) - 1))
            enclosed = 1.0 - (1.0 + (r / alpha) ** 2) ** (1.0 - 3.0)
        assert src[aperture].sum() == pytest.approx(row["inst_flux"] * enclosed, rel=5e-3)


def test_blend_fraction_and_isolation():
    cfg = SkyConfig(**{**SMALL, "n_stars": 120}, psf_fwhm=3.0, isolation_max_blend=0.02)
    sim = simulate_exposure(cfg, seed=21)
    t = sim.truth[
        (sim.truth["x"] > cfg.x0 + 10) & (sim.truth["x"] < cfg.x0 + cfg.width - 11)
        & (sim.truth["y"] > cfg.y0 + 10) & (sim.truth["y"] < cfg.y0 + cfg.height - 11)
    ]  # fmt: skip
    assert 0 < t["isolated"].sum() < len(t)
    np.testing.assert_array_equal(t["isolated"], t["blend_fraction"] < 0.02)
    src = sources_only(sim)
    xx, yy = pixel_grid(sim)
    for row in t:
        aperture = np.hypot(xx - row["x"], yy - row["y"]) <= 3.0 * 3.0
        # A 3-FWHM aperture holds all of a Gaussian's own flux; the rest is neighbours.
        blend = src[aperture].sum() / row["inst_flux"] - 1.0
        assert blend == pytest.approx(row["blend_fraction"], abs=1e-3)


def _fwhm_measured(src, xx, yy, x, y, psf):
    """FWHM of the centre-sampled radial profile, fitting amplitude and FWHM [px]."""
    r = np.hypot(xx - x, yy - y)
    near = r < 10
    if psf == "gaussian":

        def model(rr, amp, fwhm):
            return amp * np.exp(-0.5 * (rr * FWHM_PER_SIGMA / fwhm) ** 2)
    else:

        def model(rr, amp, fwhm):
            alpha = fwhm / (2 * np.sqrt(2 ** (1 / 2.5) - 1))
            return amp * (1 + (rr / alpha) ** 2) ** -2.5

    (_, fwhm), _ = curve_fit(model, r[near], src[near], p0=(src[near].max(), 4.0))
    return fwhm


@pytest.mark.parametrize("psf", ["gaussian", "moffat"])
def test_fwhm_map(psf):
    cfg = SkyConfig(
        **{**SMALL, "n_stars": 30, "width": 320},
        psf_model=psf,
        psf_fwhm=3.0,
        psf_fwhm_max=6.0,
        psf_variation="x",
        star_flux_min=5e4,
        star_flux_max=1e5,
        saturation=None,
    )
    sim = simulate_exposure(cfg, seed=8)
    assert sim.psf_fwhm_at(cfg.x0, 0) == pytest.approx(3.0)
    assert sim.psf_fwhm_at(cfg.x0 + cfg.width - 1, 50) == pytest.approx(6.0)
    t = clean_stars(sim, margin_fwhm=3.0)
    assert len(t) >= 3 and np.ptp(t["x"]) > 100
    src = sources_only(sim)
    xx, yy = pixel_grid(sim)
    for row in t:
        expected = 3.0 + 3.0 * (row["x"] - cfg.x0) / (cfg.width - 1)
        assert row["fwhm"] == pytest.approx(expected)
        measured = _fwhm_measured(src, xx, yy, row["x"], row["y"], psf)
        assert measured == pytest.approx(expected, rel=0.005)


def test_psf_ellipticity_moments():
    cfg = SkyConfig(**SMALL, psf_fwhm=4.0, psf_e1=0.2, psf_e2=-0.1, star_flux_min=2e4)
    sim = simulate_exposure(cfg, seed=3)
    t = clean_stars(sim)
    assert len(t) >= 1
    src = sources_only(sim)
    xx, yy = pixel_grid(sim)
    row = t[np.argmax(t["inst_flux"])]
    dx, dy = xx - row["x"], yy - row["y"]
    w = src * (np.hypot(dx, dy) < 15)
    ixx, iyy, ixy = ((w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()) / w.sum()
    exx, eyy, exy = sim.psf_moments_at(row["x"], row["y"])
    np.testing.assert_allclose([ixx, iyy, ixy], [exx, eyy, exy], atol=0.02)
    assert (ixx - iyy) / (ixx + iyy) == pytest.approx(0.2, abs=0.01)
    assert 2 * ixy / (ixx + iyy) == pytest.approx(-0.1, abs=0.01)


def test_expected_snr_of_faint_star():
    # Sky-dominated (the source adds < 1% to the variance at its peak).
    cfg = SkyConfig(
        **{**SMALL, "background": 5000.0},
        star_flux_min=300,
        star_flux_max=400,
        psf_fwhm=3.0,
        gain=1.5,
    )
    sim = simulate_exposure(cfg, seed=9)
    sigma = 3.0 / FWHM_PER_SIGMA
    t = clean_stars(sim, margin_fwhm=3.0)
    assert len(t) >= 3
    sky_var = 5000.0 / 1.5 + (4.0 / 1.5) ** 2
    # Optimal S/N of a Gaussian on a flat background: F / sqrt(4π σ² var).
    analytic = np.asarray(t["inst_flux"]) / np.sqrt(4 * np.pi * sigma**2 * sky_var)
    np.testing.assert_allclose(t["snr_expected"], analytic, rtol=5e-3)


def test_noise_matches_variance_plane():
    cfg = SkyConfig(**{**SMALL, "read_noise": 6.0}, gain=2.0, saturation=None)
    sim = simulate_exposure(cfg, seed=11)
    exp = sim.exposure
    expected_var = sim.noiseless / 2.0 + (6.0 / 2.0) ** 2
    np.testing.assert_allclose(exp.variance, expected_var, rtol=1e-5)
    pull = (exp.image - sim.noiseless) / np.sqrt(exp.variance)
    assert abs(pull.mean()) < 0.02
    assert pull.std() == pytest.approx(1.0, abs=0.02)


def test_galaxies_flagged_extended_and_flux():
    cfg = SkyConfig(
        **{**SMALL, "n_stars": 0},
        n_galaxies=6,
        galaxy_hlr_min=3.0,
        galaxy_hlr_max=4.0,
        galaxy_flux_min=2e4,
        psf_fwhm=3.0,
    )
    sim = simulate_exposure(cfg, seed=12)
    t = sim.truth
    assert np.all(t["is_galaxy"]) and len(t) == 6
    inner = (t["x"] > cfg.x0 + 40) & (t["x"] < cfg.x0 + cfg.width - 40)
    inner &= (t["y"] > cfg.y0 + 40) & (t["y"] < cfg.y0 + cfg.height - 40)
    assert inner.sum() >= 1
    np.testing.assert_allclose(t["rendered_flux"][inner], t["inst_flux"][inner], rtol=0.01)
    src = sources_only(sim)
    xx, yy = pixel_grid(sim)
    row = t[inner][0]
    dx, dy = xx - row["x"], yy - row["y"]
    w = src * (np.hypot(dx, dy) < 10)
    size = ((w * (dx**2 + dy**2)).sum() / w.sum()) / 2
    assert size > 2.0 * (3.0 / FWHM_PER_SIGMA) ** 2


@pytest.mark.parametrize("n", [1.0, 4.0])
def test_sersic_mixture(n):
    w, v = sersic_mixture(n)
    assert w.sum() == pytest.approx(1.0) and np.all(w > 0)
    assert np.sum(w * (1 - np.exp(-0.5 / v))) == pytest.approx(0.5, abs=1e-9)
    r = np.array([0.2, 0.5, 2.0, 3.0])
    mog = (w / (2 * np.pi * v) * np.exp(-0.5 * r[:, None] ** 2 / v)).sum(1)
    at_re = (w / (2 * np.pi * v) * np.exp(-0.5 / v)).sum()
    sersic = np.exp(-gammaincinv(2 * n, 0.5) * (r ** (1 / n) - 1))
    np.testing.assert_allclose(mog / at_re, sersic, rtol=0.1)
