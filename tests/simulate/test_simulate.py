"""Tests of the synthetic sky (promptcal.simulate) and the upstream fixture."""

from __future__ import annotations

import argparse

import astropy.units as u
import numpy as np
import oracles_more as om
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from scipy.optimize import curve_fit
from scipy.special import gammaincinv

from promptcal.kernels.render import render_sources
from promptcal.simulate import SkyConfig, refcat_table_from_truth, simulate_exposure
from promptcal.simulate.core import background_model
from promptcal.simulate.detector import bleed_columns
from promptcal.simulate.render import sersic_mixture
from promptcal.simulate.upstream import (
    CENTROIDS,
    K_VALUES,
    make_bad_centroid_variant,
    make_upstream_dataset,
    make_upstream_snaps,
)

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

SMALL = dict(width=240, height=170, x0=13, y0=-7, n_stars=40, background=500.0, read_noise=4.0)


def sources_only(sim):
    return sim.noiseless.astype(np.float64) - background_model(sim.config)


def pixel_grid(sim):
    h, w = sim.noiseless.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return xx + sim.config.x0, yy + sim.config.y0


def clean_stars(sim, margin_fwhm=5.0):
    """Isolated stars whose aperture lies inside the image, no bad column nearby."""
    t = sim.truth
    c = sim.config
    m = margin_fwhm * np.asarray(t["fwhm"])
    ok = np.asarray(t["isolated"]) & ~np.asarray(t["is_galaxy"])
    ok &= (t["x"] - m >= c.x0) & (t["x"] + m <= c.x0 + c.width - 1)
    ok &= (t["y"] - m >= c.y0) & (t["y"] + m <= c.y0 + c.height - 1)
    return t[ok]


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


# --- determinism, geometry ---------------------------------------------------------------


def test_deterministic_from_seed():
    cfg = SkyConfig(**SMALL, n_cosmic_rays=3, n_bad_columns=1, n_galaxies=3)
    a = simulate_exposure(cfg, seed=5)
    b = simulate_exposure(cfg, seed=5)
    c = simulate_exposure(cfg, seed=6)
    np.testing.assert_array_equal(a.exposure.image, b.exposure.image)
    np.testing.assert_array_equal(a.exposure.mask.array, b.exposure.mask.array)
    assert np.array_equal(np.asarray(a.truth["x"]), np.asarray(b.truth["x"]))
    assert not np.array_equal(np.asarray(a.truth["x"]), np.asarray(c.truth["x"]))
    # Independent streams: cosmic rays do not move the stars.
    d = simulate_exposure(cfg.with_overrides({"n_cosmic_rays": 0}), seed=5)
    np.testing.assert_array_equal(np.asarray(a.truth["x"]), np.asarray(d.truth["x"]))


def test_non_square_origin_and_metadata():
    cfg = SkyConfig(**SMALL, exposure_id=77, detector_id=3, band="i", gain=2.0)
    sim = simulate_exposure(cfg, seed=1)
    exp = sim.exposure
    assert exp.image.shape == (170, 240) and exp.xy0 == (13, -7)
    assert exp.bbox == (13, -7, 252, 162)
    assert exp.image.dtype == np.float32 and exp.variance.dtype == np.float32
    t = sim.truth
    assert np.all((t["x"] >= 12.5) & (t["x"] < 252.5) & (t["y"] >= -7.5) & (t["y"] < 162.5))
    # The brightest star peaks at the pixel containing its parent position.
    i = int(np.argmax(t["inst_flux"]))
    src = sources_only(sim)
    iy, ix = np.unravel_index(np.argmax(src), src.shape)
    assert (ix + 13, iy - 7) == (round(t["x"][i]), round(t["y"][i]))
    assert exp.visit_info.exposure_id == 77 and exp.visit_info.exposure_time == 30.0
    assert exp.visit_info.date.mjd == pytest.approx(60000.5)
    assert exp.visit_info.observatory.lat.deg == pytest.approx(-30.2446, abs=1e-3)
    assert exp.detector.id == 3 and exp.detector.gain == 2.0 and exp.band == "i"
    assert exp.detector.saturation == 60000.0


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


# --- WCS -------------------------------------------------------------------------------------


def test_wcs_truth_header_and_conventions():
    cfg = SkyConfig(
        **SMALL,
        ra=10.0,
        dec=-30.0,
        rotation=30.0,
        pointing_error=5.0,
        pointing_error_angle=60.0,
        rotation_error=0.5,
        sip_order=0,
    )
    sim = simulate_exposure(cfg, seed=1)
    truth, header = sim.truth_wcs, sim.exposure.wcs
    cx, cy = cfg.x0 + (cfg.width - 1) / 2, cfg.y0 + (cfg.height - 1) / 2
    centre = truth.pixel_to_world(cx, cy)
    assert centre.ra.deg == pytest.approx(10.0, abs=1e-10)
    assert centre.dec.deg == pytest.approx(-30.0, abs=1e-10)
    ra, dec = truth.all_pix2world(sim.truth["x"], sim.truth["y"], 0)
    np.testing.assert_allclose(sim.truth["ra"], ra, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sim.truth["dec"], dec, rtol=0, atol=1e-12)
    # +y points at position angle `rotation`; +x is 90° further (east-left parity).
    up = truth.pixel_to_world(cx, cy + 100)
    right = truth.pixel_to_world(cx + 100, cy)
    assert centre.position_angle(up).deg == pytest.approx(30.0, abs=1e-3)
    assert centre.position_angle(right).deg == pytest.approx(300.0, abs=1e-3)
    assert centre.separation(up).arcsec == pytest.approx(20.0, rel=1e-4)
    # Header: offset by the pointing error at its angle, rotated by the rotation error.
    h_centre = header.pixel_to_world(cx, cy)
    assert centre.separation(h_centre).arcsec == pytest.approx(5.0, abs=1e-6)
    assert centre.position_angle(h_centre).deg == pytest.approx(60.0, abs=1e-3)
    h_up = header.pixel_to_world(cx, cy + 100)
    assert h_centre.position_angle(h_up).deg == pytest.approx(30.5, abs=1e-3)
    assert sim.exposure.visit_info.boresight_ra_dec == pytest.approx(
        (h_centre.ra.deg, h_centre.dec.deg)
    )


@pytest.mark.parametrize("order", [2, 3])
def test_sip_amplitude_at_corner(order):
    cfg = SkyConfig(**SMALL, sip_order=order, sip_amplitude=2.5, header_has_sip=False)
    sim = simulate_exposure(cfg, seed=3)
    wcs = sim.truth_wcs
    sip = wcs.sip
    assert sip is not None and sim.exposure.wcs.sip is None
    # SIP: u = x - (CRPIX - 1) in parent pixels; displacement f(u, v) = Σ A_pq u^p v^q.
    crpix0 = wcs.wcs.crpix - 1.0
    assert tuple(crpix0) == (cfg.x0 + (cfg.width - 1) / 2, cfg.y0 + (cfg.height - 1) / 2)

    def poly(coeffs, uu, vv):
        return sum(
            coeffs[p, q] * uu**p * vv**q
            for p in range(coeffs.shape[0])
            for q in range(coeffs.shape[1])
        )

    xs = np.array([cfg.x0, cfg.x0 + cfg.width - 1] * 2, dtype=float)
    ys = np.array([cfg.y0] * 2 + [cfg.y0 + cfg.height - 1] * 2, dtype=float)
    uu, vv = xs - crpix0[0], ys - crpix0[1]
    fu, fv = poly(sip.a, uu, vv), poly(sip.b, uu, vv)
    assert np.hypot(fu, fv).max() == pytest.approx(2.5, rel=1e-9)
    assert max(p + q for p in range(order + 1) for q in range(order + 1) if sip.a[p, q]) == order
    # astropy applies the same convention: distorted world = TAN world at the shifted pixel.
    tan = wcs.deepcopy()
    tan.sip = None
    a = SkyCoord(*wcs.all_pix2world(xs, ys, 0), unit="deg")
    b = SkyCoord(*tan.wcs_pix2world(xs + fu, ys + fv, 0), unit="deg")
    assert a.separation(b).arcsec.max() < 1e-6
    # Inverse terms undo the distortion to < 0.01 px.
    big_u, big_v = uu + fu, vv + fv
    assert np.abs(big_u + poly(sip.ap, big_u, big_v) - uu).max() < 0.01
    assert np.abs(big_v + poly(sip.bp, big_u, big_v) - vv).max() < 0.01


# --- artefacts ---------------------------------------------------------------------------------


def test_cosmic_rays_in_image_not_model():
    cfg = SkyConfig(**SMALL, n_cosmic_rays=8, cr_amplitude_min=2000, cr_amplitude_max=3000)
    sim = simulate_exposure(cfg, seed=4)
    pix = sim.cosmic_ray_pixels
    assert len(sim.cosmic_rays) == 8 and len(pix) >= 8
    assert np.all(sim.cosmic_rays["n_pixels"] <= 4)
    iy, ix = np.asarray(pix["y"]) - cfg.y0, np.asarray(pix["x"]) - cfg.x0
    excess = sim.exposure.image[iy, ix] - sim.noiseless[iy, ix]
    noise = np.sqrt(sim.exposure.variance[iy, ix])
    hit = np.zeros(sim.noiseless.shape, bool)
    hit[iy, ix] = True
    # Deposits are in the image (beyond 6σ of noise), and not in the model or the mask.
    assert np.all(np.abs(excess - np.asarray(pix["counts"])) < 6 * noise)
    assert not sim.exposure.mask.is_set("CR").any()
    pull = (sim.exposure.image - sim.noiseless) / np.sqrt(sim.exposure.variance)
    assert np.abs(pull[~hit]).max() < 7
    masked = simulate_exposure(cfg.with_overrides({"do_mask_cosmic_rays": True}), seed=4)
    np.testing.assert_array_equal(masked.exposure.mask.is_set("CR"), hit)


def test_saturation_and_bleed_trails():
    cfg = SkyConfig(
        **{**SMALL, "n_stars": 6, "width": 200, "height": 300},
        star_flux_min=1e6,
        star_flux_max=3e6,
        saturation=30000.0,
        psf_fwhm=3.0,
    )
    sim = simulate_exposure(cfg, seed=5)
    exp = sim.exposure
    assert np.all(sim.truth["is_saturated"])
    sat = exp.mask.is_set("SAT")
    assert exp.image.max() <= 30000.0
    assert np.all(exp.image[sat] == 30000.0)
    # Every pixel whose model exceeds saturation is flagged, plus the bleed trails.
    assert np.all(sat[sim.noiseless > 30000.0])
    assert sat.sum() > (sim.noiseless > 30000.0).sum()
    # Trails run along columns: the flagged region is taller than wide.
    row = sim.truth[np.argmax(sim.truth["inst_flux"])]
    ix, iy = round(row["x"]) - cfg.x0, round(row["y"]) - cfg.y0
    assert sat[:, ix].sum() > 2 * sat[iy, :].sum()


def test_bleed_columns_conserves_charge():
    model = np.full((40, 3), 100.0, dtype=np.float32)
    model[18:21, 1] = [30000.0, 50000.0, 30000.0]
    before = model.sum()
    bleed_columns(model, 20000.0)
    assert model.max() == 20000.0
    assert model.sum() == pytest.approx(before, rel=1e-6)
    assert np.all(model[:, [0, 2]] == 100.0)
    trail = np.nonzero(model[:, 1] == 20000.0)[0]
    # 50000 excess spread both ways over ~2.5 pixels each, around the original run.
    assert trail.min() < 18 and trail.max() > 20 and np.all(np.diff(trail) == 1)


def test_bad_columns():
    cfg = SkyConfig(**SMALL, n_bad_columns=3)
    sim = simulate_exposure(cfg, seed=6)
    bad = sim.exposure.mask.is_set("BAD")
    cols = np.asarray(sim.bad_columns) - cfg.x0
    assert len(cols) == 3
    assert np.all(bad[:, cols]) and bad.sum() == 3 * cfg.height
    assert np.all(sim.exposure.image[:, cols] < cfg.bad_column_max_value)
    pull = (sim.exposure.image[:, cols] - sim.noiseless[:, cols]) / 50
    assert np.abs(pull).mean() > 10  # garbage, not the sky


def test_two_snaps():
    cfg = SkyConfig(**SMALL, n_snaps=2, saturation=None, n_cosmic_rays=4)
    sim = simulate_exposure(cfg, seed=7)
    s0, s1 = sim.snaps
    assert s0.visit_info.exposure_time == 15.0 and s1.visit_info.exposure_id == 2
    dt = (s1.visit_info.date - s0.visit_info.date).to_value(u.s)
    assert dt == pytest.approx(15.0, abs=1e-3)
    assert s0.wcs.to_header() == s1.wcs.to_header()
    half = sim.noiseless / 2
    np.testing.assert_allclose(s0.variance, half + (4.0) ** 2, rtol=1e-5)
    hit = np.zeros(half.shape, bool)
    hit[
        np.asarray(sim.cosmic_ray_pixels["y"]) - cfg.y0,
        np.asarray(sim.cosmic_ray_pixels["x"]) - cfg.x0,
    ] = True
    for snap in (s0, s1):
        pull = ((snap.image - half) / np.sqrt(snap.variance))[~hit]
        assert abs(pull.mean()) < 0.02 and pull.std() == pytest.approx(1.0, abs=0.02)
    # Independent realisations: the difference has the summed variance.
    diff = ((s0.image - s1.image) / np.sqrt(s0.variance + s1.variance))[~hit]
    assert diff.std() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(sim.exposure.image, s0.image + s1.image)
    total_pull = ((sim.exposure.image - sim.noiseless) / np.sqrt(sim.exposure.variance))[~hit]
    assert total_pull.std() == pytest.approx(1.0, abs=0.02)


# --- refcat -------------------------------------------------------------------------------------


def test_refcat_from_truth():
    sim = simulate_exposure(SkyConfig(**{**SMALL, "n_stars": 200}), seed=2)
    ref = refcat_table_from_truth(sim.truth, "r")
    assert ref.colnames == ["id", "ra", "dec", "r_flux", "r_fluxErr"]
    assert ref["r_flux"].unit == u.nJy and ref["ra"].unit == u.deg
    np.testing.assert_allclose(ref["r_flux"], sim.truth["inst_flux"] * 20.0)
    mag = 31.4 - 2.5 * np.log10(np.asarray(ref["r_flux"]))
    np.testing.assert_allclose(sim.truth["mag"], mag)
    noisy = refcat_table_from_truth(
        sim.truth, "r", mag_scatter=0.05, missing_fraction=0.25, extra_fraction=0.1, seed=3
    )
    real = noisy[noisy["id"] > 0]
    assert 120 <= len(real) <= 180 and (noisy["id"] < 0).sum() == 20
    dmag = -2.5 * np.log10(real["r_flux"] / sim.truth["flux_nJy"][real["id"] - 1])
    assert np.std(dmag) == pytest.approx(0.05, rel=0.2)
    assert np.all(noisy["r_fluxErr"] > 0)


# --- upstream fixture -------------------------------------------------------------------------


def test_upstream_fixture_numbers():
    data = make_upstream_dataset()
    exp = data.exposure
    assert exp.image.shape == (181, 201) and exp.xy0 == (5, 4)
    assert exp.bbox == (5, 4, 205, 184)
    centre = exp.wcs.pixel_to_world(105, 94)
    assert centre.ra.deg == pytest.approx(245.0, abs=1e-12)
    assert centre.dec.deg == pytest.approx(-45.0, abs=1e-12)
    east = exp.wcs.pixel_to_world(104, 94)
    assert centre.separation(east).arcsec == pytest.approx(0.2, rel=1e-6)
    assert centre.position_angle(east).deg == pytest.approx(90.0, abs=1e-4)
    assert np.all(exp.variance == 100.0)
    assert exp.metadata["TRUTH_CALIBRATION"] == 12.3
    assert exp.metadata["PSF_FWHM"] == pytest.approx(4.7096, abs=1e-4)
    assert exp.visit_info.exposure_id == 1234 and exp.visit_info.exposure_time == 30.0
    assert exp.visit_info.date.mjd == 60000.0 and exp.detector.id == 12
    assert exp.photo_calib is None and exp.band == "truth"

    t = data.truth
    psf_scale = np.sqrt(4 * np.pi * 4.0)
    np.testing.assert_allclose(
        t["truth_instFlux"], np.array([*K_VALUES, 500]) * 10 * psf_scale, rtol=1e-12
    )
    np.testing.assert_allclose(t["truth_flux"], t["truth_instFlux"] * 12.3)
    np.testing.assert_allclose(t["truth_mag"], 31.4 - 2.5 * np.log10(t["truth_flux"]))
    assert list(t["is_extended"]) == [False] * 6 + [True]
    assert [(r["x"], r["y"]) for r in t[:6]] == list(CENTROIDS)
    ra, dec = exp.wcs.all_pix2world(t["x"], t["y"], 0)
    np.testing.assert_allclose(t["ra"], ra)
    np.testing.assert_allclose(t["dec"], dec)

    # Pixel truth: each source's flux within 5σ_psf (extended: wider), and its moments.
    yy, xx = np.mgrid[0:181, 0:201].astype(float)
    xx += 5
    yy += 4
    for row in t:
        r = np.hypot(xx - row["x"], yy - row["y"])
        aperture = r <= (25 if row["is_extended"] else 12)
        got = data.truth_image[aperture].sum()
        assert got == pytest.approx(row["truth_instFlux"], rel=2e-3 if row["is_extended"] else 1e-5)
    ext = t[6]
    w = data.truth_image * (np.hypot(xx - 100, yy - 100) < 40)
    dx, dy = xx - 100, yy - 100
    mom = np.array([(w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()]) / w.sum()
    np.testing.assert_allclose(mom, [ext["truth_xx"], ext["truth_yy"], ext["truth_xy"]], rtol=0.01)
    assert tuple(mom.round(1)) == (12.0, 13.0, 3.0)

    # Noise: upstream's RandomState(1).randn × 10, then +500 on the image only.
    noise = exp.image - data.truth_image - 500.0
    np.testing.assert_allclose(noise, np.random.RandomState(1).randn(181, 201) * 10, atol=1e-3)
    assert np.median(exp.image) == pytest.approx(500.0, abs=1.0)
    np.testing.assert_array_equal(data.original_image, exp.image)
    # DETECTED: source centres in, a far corner out.
    det = exp.mask.is_set("DETECTED")
    for row in t:
        assert det[int(row["y"]) - 4, int(row["x"]) - 5]
    assert not det[0, 0] and 0.02 < det.mean() < 0.2
    # Unpacks like a tuple, and builds a refcat in the "truth" band.
    exposure, truth, truth_image = data
    assert exposure is exp and truth is t and truth_image is data.truth_image
    ref = refcat_table_from_truth(t, t.meta["band"])
    np.testing.assert_allclose(ref["truth_flux"], t["truth_flux"])
    assert len(ref) == 7 and np.all(ref["truth_fluxErr"] > 0)


def test_upstream_snaps_and_bad_centroids():
    base = make_upstream_dataset()
    s0, s1 = make_upstream_snaps()
    np.testing.assert_array_equal(s0.image, base.exposure.image / 2)
    np.testing.assert_array_equal(s1.image, s0.image)
    assert np.all(s0.variance == 50.0) and s1 is not s0

    bad = make_bad_centroid_variant()
    img, ref = bad.exposure.image, base.exposure.image
    for (px, py), _k in zip(CENTROIDS, K_VALUES, strict=True):
        iy, ix = py - 4, px - 5
        # Centre keeps 1 − 1/1.1 of its excess (the gradient adds < 0.45 count).
        assert img[iy, ix] - 500 == pytest.approx((ref[iy, ix] - 500) / 11, abs=0.45)
        assert np.all(img[iy + 7 : iy + 10, ix] == ref[iy + 7 : iy + 10, ix])
    assert img[100 - 4, 100 - 5] == 500.0
    changed = img != ref
    assert 0 < changed.sum() < 6 * 100 + 1
    assert np.abs(img - ref)[~changed].max() == 0
    holes = np.zeros(img.shape, bool)
    for px, py in CENTROIDS:
        holes[py - 5 : py - 2, px - 6 : px - 3] = True
    holes[96, 95] = True
    assert np.abs(img - ref)[changed & ~holes].max() < 0.45  # 170 / flux(k=6): gentle
    assert (img - ref)[changed & ~holes].min() > 0


# --- CLI and files --------------------------------------------------------------------------------


def test_cli_writes_files(tmp_path, monkeypatch):
    from promptcal.commands import cli
    from promptcal.io.fits_read import read_exposure

    monkeypatch.setitem(cli.COMMAND_MODULES, "simulate", "simulate")
    argv = [
        "simulate", "--output", str(tmp_path), "--seed", "3", "--width", "90", "--height", "70",
        "--stars", "12", "--fwhm", "3.5", "--psf", "moffat", "--snaps", "2",
        "--set", "n_cosmic_rays=2", "--set", "x0=4",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    cfg = SkyConfig(
        width=90, height=70, n_stars=12, psf_fwhm=3.5, psf_model="moffat", n_snaps=2,
        n_cosmic_rays=2, x0=4,
    )  # fmt: skip
    sim = simulate_exposure(cfg, seed=3)
    truth = pq.read_table(tmp_path / "sim_v1_d0_truth.parquet").to_pydict()
    np.testing.assert_array_equal(truth["x"], sim.truth["x"])
    np.testing.assert_array_equal(truth["is_galaxy"], sim.truth["is_galaxy"])
    refcat = pq.read_table(tmp_path / "sim_v1_d0_refcat.parquet").to_pydict()
    assert len(refcat["id"]) == 12 and "r_fluxErr" in refcat
    for i in (0, 1):
        back = read_exposure(tmp_path / f"sim_v1_d0_snap{i}.fits")
        np.testing.assert_array_equal(back.image, sim.snaps[i].image)
        assert back.xy0 == (4, 0)
    text = (tmp_path / "sim_v1_d0_truth_wcs.txt").read_text()
    assert "CRPIX1" in text and "A_2_0" in text
    assert (tmp_path / "sim_v1_d0_cosmic_rays.parquet").exists()
    # A written config reproduces the run through --config.
    parser = argparse.ArgumentParser()
    from promptcal.commands import simulate as command

    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["simulate", "--output", str(tmp_path / "again"), "--seed", "3",
         "--config", str(tmp_path / "sim_v1_d0_config.json")]
    )  # fmt: skip
    assert args.handler(args) == 0
    again = pq.read_table(tmp_path / "again" / "sim_v1_d0_truth.parquet").to_pydict()
    np.testing.assert_array_equal(again["inst_flux"], truth["inst_flux"])


def test_cli_rejects_bad_override(tmp_path, monkeypatch, capsys):
    from promptcal.commands import cli

    monkeypatch.setitem(cli.COMMAND_MODULES, "simulate", "simulate")
    code = cli.main(["simulate", "--output", str(tmp_path), "--set", "psf_model=airy"])
    assert code == cli.EXIT_INVALID_INPUT
    assert "psf_model" in capsys.readouterr().err
