"""The named benchmark skies (promptcal.simulate.presets) against what they promise."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from scipy.stats import kstest

from promptcal.simulate import SkyConfig, simulate_exposure
from promptcal.simulate.presets import BENCH_SKIES, benchmark_sky, flux_at_snr

SMALL = dict(width=700, height=640, n_stars=250)


def test_legacy_is_the_first_benchmark_sky():
    # What scripts/bench_core.py simulated before the named skies, field by field.
    old = SkyConfig(
        width=4096,
        height=4072,
        n_stars=3000,
        star_flux_min=3000.0,
        psf_fwhm=3.5,
        n_galaxies=200,
        n_cosmic_rays=50,
    )
    sky = benchmark_sky("legacy")
    assert sky.config.config_hash() == old.config_hash()
    assert sky.refcat_options == {}
    assert benchmark_sky("legacy", n_stars=1500).config.n_galaxies == 100


def test_unknown_sky_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark sky"):
        benchmark_sky("spiral")


def test_crowded_has_twenty_thousand_sources():
    c = benchmark_sky("crowded").config
    assert c.n_stars + c.n_galaxies == 20000
    assert (c.width, c.height) == (4072, 4000)
    assert (
        benchmark_sky("moffat").config.n_stars + benchmark_sky("moffat").config.n_galaxies == 3300
    )


@pytest.mark.parametrize("name", ["moffat", "gaussian"])
def test_faintest_stars_have_snr_five(name):
    # A narrow flux range just above the S/N-5 flux, so every star is a faint one.
    sky = benchmark_sky(
        name, **SMALL, star_flux_max=1.6 * flux_at_snr(benchmark_sky(name).config, 5)
    )
    sim = simulate_exposure(sky.config, seed=5)
    t = sim.truth
    c = sky.config
    mean_fwhm = 0.5 * (c.psf_fwhm + c.psf_fwhm_max)
    ok = np.asarray(t["isolated"]) & ~np.asarray(t["is_galaxy"])
    ok &= np.abs(np.asarray(t["fwhm"]) - mean_fwhm) < 0.06
    ok &= (t["x"] > 30) & (t["x"] < c.width - 30) & (t["y"] > 30) & (t["y"] < c.height - 30)
    assert ok.sum() >= 10
    # The simulator's own S/N (rendered model over the expected variance), scaled
    # to the faintest flux, is 5 within the FWHM spread and the source noise.
    scaled = np.asarray(t["snr_expected"])[ok] * c.star_flux_min / np.asarray(t["inst_flux"])[ok]
    assert np.median(scaled) == pytest.approx(5.0, rel=0.04)


def test_moffat_sky_saturates_bleeds_and_misleads_the_header():
    sky = benchmark_sky("moffat", **SMALL)
    c = sky.config
    sim = simulate_exposure(c, seed=2)
    t = sim.truth
    stars = ~np.asarray(t["is_galaxy"])
    flux = np.asarray(t["inst_flux"])[stars]
    # Log-uniform fluxes from S/N 5 to 3e6 (F^-2, the legacy law, gives p ~ 1e-30).
    u_flux = np.log(flux / c.star_flux_min) / np.log(c.star_flux_max / c.star_flux_min)
    assert kstest(u_flux, "uniform").pvalue > 0.01
    assert flux.min() >= c.star_flux_min and flux.max() <= c.star_flux_max

    saturated = np.asarray(t["is_saturated"])
    assert saturated[stars].mean() > 0.03
    image, mask = sim.exposure.image, sim.exposure.mask
    sat = (mask.array & mask.bit("SAT")) != 0
    assert np.all(image[sat] == np.float32(c.saturation))
    # Bleed trails: SAT pixels whose own model is well below the level, every one in
    # the column of a pixel whose model exceeds it.
    core = sim.noiseless > c.saturation
    trail = sat & (sim.noiseless < 0.9 * c.saturation)
    assert trail.sum() > 2 * saturated.sum()
    assert trail[:, ~core.any(axis=0)].sum() == 0

    # FWHM 3.2 -> 4.0 px corner to corner.
    fwhm = sim.psf_fwhm_at([0, c.width - 1], [0, c.height - 1])
    assert fwhm == pytest.approx([3.2, 4.0])
    # Header WCS: 20 arcsec off at the centre and rotated by 0.5 deg.
    cx, cy = (c.width - 1) / 2, (c.height - 1) / 2
    true = sim.truth_wcs.pixel_to_world(cx, cy)
    header_wcs = sim.exposure.wcs
    header = header_wcs.pixel_to_world(cx, cy)
    assert header.separation(true).to_value(u.arcsec) == pytest.approx(20.0, rel=0.02)
    # CD = s [[-cos θ, sin θ], [sin θ, cos θ]], θ the position angle of +y.
    angles = [
        np.degrees(np.arctan2(w.wcs.cd[0, 1], w.wcs.cd[1, 1])) for w in (header_wcs, sim.truth_wcs)
    ]
    assert angles[0] - angles[1] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("name", BENCH_SKIES)
def test_every_sky_simulates(name):
    sky = benchmark_sky(name, width=300, height=280, n_stars=40)
    sim = simulate_exposure(sky.config, seed=1)
    assert len(sim.truth) == sky.config.n_stars + sky.config.n_galaxies
    assert np.isfinite(sim.exposure.image).all()
