"""The full ``CalibrateImageTask.run`` on a full-size synthetic LSST-like CCD with known
answers (issue 4 acceptance b).

A 4096×4072 px exposure at 0.2″/px with third-order SIP distortion (3 px at the
corners), a header WCS 20″ and 0.5° off, ~3000 stars (most above S/N 10), 200
galaxies and a known calibration of 20 nJy/count; the refcat is the truth. The run
happens once (module scope, ~7 s with the simulation). Acceptance:

- astrometric RMS against truth ≤ 10 mas for stars with S/N > 50;
- zero point within 5 mmag of truth;
- ≥ 99 % of isolated, unsaturated truth stars with expected S/N > 20 are in ``stars``.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from scipy.spatial import cKDTree

from promptcal.core.task import Struct
from promptcal.pipeline.task import CalibrateImageTask
from promptcal.refcat import RefcatLoader
from promptcal.simulate import SkyConfig, simulate_exposure

CONFIG = SkyConfig(
    width=4096,
    height=4072,
    x0=0,
    y0=0,
    pixel_scale=0.2,
    sip_order=3,
    sip_amplitude=3.0,
    pointing_error=20.0,
    rotation_error=0.5,
    n_stars=3000,
    # Sky noise ≈ 32 count/px and a 4-px FWHM: S/N 10 at ≈ 1900 count, so with
    # dN/dF ∝ F⁻² from 2500 count ~97 % of the stars are above S/N 10.
    star_flux_min=2500.0,
    star_flux_max=2.0e6,  # a few saturated stars
    n_galaxies=200,
    calibration=20.0,
)
SEED = 3
RMS_LIMIT_MAS = 10.0
ZP_LIMIT_MMAG = 5.0
COMPLETENESS_MIN = 0.99


def xy(catalog) -> np.ndarray:
    return np.column_stack(
        [
            np.asarray(catalog["slot_Centroid_x"], float),
            np.asarray(catalog["slot_Centroid_y"], float),
        ]
    )


def truth_zero_point(calibration: float) -> float:
    """AB magnitude of 1 count for a calibration [nJy/count] (LSST's ``zeroPoint``)."""
    return 2.5 * np.log10(3631e9 / calibration)


@pytest.fixture(scope="module")
def run(truth_refcat):
    sim = simulate_exposure(CONFIG, seed=SEED)
    refcat = truth_refcat(sim.truth, CONFIG.band)
    task = CalibrateImageTask(refcat=RefcatLoader(refcat))
    captured = {}
    find_stars = task.find_stars

    def capture(*args, **kwargs):
        # Keep every measured source (before star selection) for the detection test.
        captured["star_phase"] = find_stars(*args, **kwargs)
        return captured["star_phase"]

    task.find_stars = capture
    result = task.run(exposures=sim.exposure)
    return Struct(sim=sim, task=task, result=result, sources=captured["star_phase"].sources)


@pytest.fixture(scope="module")
def bright_star_offsets(run):
    """Per non-sky star with S/N(PsfFlux) > 50: offset to the nearest truth star [mas]
    and whether that truth star is isolated."""
    stars = run.result.stars
    stars = stars[~np.asarray(stars["sky_source"], bool)]
    snr = np.asarray(stars["slot_PsfFlux_instFlux"], float) / np.asarray(
        stars["slot_PsfFlux_instFluxErr"], float
    )
    stars = stars[snr > 50]
    truth = run.sim.truth
    truth = truth[~np.asarray(truth["is_galaxy"], bool)]
    measured = SkyCoord(
        np.asarray(stars["coord_ra"], float) * u.rad, np.asarray(stars["coord_dec"], float) * u.rad
    )
    index, separation, _ = measured.match_to_catalog_sky(SkyCoord(truth["ra"], truth["dec"]))
    return separation.to_value(u.mas), np.asarray(truth["isolated"], bool)[index]


def test_astrometric_rms_bright_stars(bright_star_offsets):
    offsets, _ = bright_star_offsets
    assert offsets.size > 300
    rms = float(np.sqrt(np.mean(offsets**2)))
    assert rms <= RMS_LIMIT_MAS, (
        f"RMS {rms:.2f} mas over {offsets.size} stars with S/N > 50 "
        f"(median {np.median(offsets):.2f}, max {offsets.max():.1f} mas)"
    )


def test_astrometric_rms_isolated_bright_stars(bright_star_offsets):
    """The same on isolated stars only: centroid noise plus the WCS error."""
    offsets, isolated = bright_star_offsets
    offsets = offsets[isolated]
    assert offsets.size > 300
    rms = float(np.sqrt(np.mean(offsets**2)))
    assert rms <= RMS_LIMIT_MAS, f"RMS {rms:.2f} mas over {offsets.size} isolated stars"


def test_fitted_wcs_matches_truth_on_grid(run):
    """The fitted WCS against the simulation's true WCS on a 41×41 grid over the bbox."""
    x_min, y_min, x_max, y_max = run.result.output_exposure.bbox
    gx, gy = np.meshgrid(np.linspace(x_min, x_max, 41), np.linspace(y_min, y_max, 41))
    fitted = SkyCoord(
        *run.result.output_exposure.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0), unit="deg"
    )
    true = SkyCoord(*run.sim.truth_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0), unit="deg")
    error = fitted.separation(true).to_value(u.mas)
    rms = float(np.sqrt(np.mean(error**2)))
    assert rms <= RMS_LIMIT_MAS, f"grid RMS {rms:.2f} mas, max {error.max():.1f} mas"
    assert error.max() <= 35.0, f"grid max {error.max():.1f} mas (RMS {rms:.2f})"


def test_zero_point(run):
    expected = truth_zero_point(CONFIG.calibration)
    zero_point = run.result.summary["zeroPoint"]
    assert abs(zero_point - expected) * 1000 <= ZP_LIMIT_MMAG, (zero_point, expected)
    applied = truth_zero_point(run.result.applied_photo_calib.mean)
    assert abs(applied - expected) * 1000 <= ZP_LIMIT_MMAG, (applied, expected)
    assert applied == pytest.approx(zero_point, abs=1e-9)


def _completeness(truth, catalog) -> tuple[float, int]:
    want = (
        np.asarray(truth["isolated"], bool)
        & ~np.asarray(truth["is_saturated"], bool)
        & ~np.asarray(truth["is_galaxy"], bool)
        & (np.asarray(truth["snr_expected"], float) > 20)
    )
    targets = np.column_stack([truth["x"], truth["y"]])[want]
    distance, _ = cKDTree(xy(catalog)).query(targets)
    return float(np.mean(distance < 1.0)), int(want.sum())


def test_star_catalog_completeness(run):
    """Acceptance b: isolated stars with expected S/N > 20 are in ``stars``."""
    catalog = run.result.stars
    fraction, n = _completeness(run.sim.truth, catalog[~np.asarray(catalog["sky_source"], bool)])
    assert n > 1000
    assert fraction >= COMPLETENESS_MIN, f"{fraction:.4f} of {n} truth stars are in stars"


def test_detection_completeness(run):
    """The same truth stars among all measured star-phase sources (before selection)."""
    sources = run.sources
    fraction, n = _completeness(run.sim.truth, sources[~np.asarray(sources["sky_source"], bool)])
    assert fraction >= COMPLETENESS_MIN, f"{fraction:.4f} of {n} truth stars were measured"
