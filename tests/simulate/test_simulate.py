"""Tests of the synthetic sky (promptcal.simulate): determinism, geometry, WCS,
detector artefacts, the reference catalog and the command line.
"""

from __future__ import annotations

import argparse

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from simulated_sky import SMALL, sources_only

from promptcal.simulate import SkyConfig, refcat_table_from_truth, simulate_exposure
from promptcal.simulate.detector import bleed_columns

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
