"""Photometric calibration: matching, zero-point fit, catalog and pixel calibration."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from promptcal.core.background_model import BackgroundList, BackgroundModel
from promptcal.core.catalog import SourceCatalog
from promptcal.core.errors import InvalidInputError, MatcherFailure, PhotometryError
from promptcal.core.exposure import Exposure, PhotoCalib
from promptcal.pipeline.photometry import (
    AB_ZERO_NJY,
    PhotometryConfig,
    calibrate_catalog,
    calibrate_pixels,
    fit_zero_point,
    match_photometric,
    resolve_ref_band,
    run_photometry,
)

CALIB = "base_NormalizedCompensatedTophatFlux"


def tan_wcs(crval=(245.0, -45.0), crpix0=(105.0, 94.0), scale_arcsec=0.2) -> WCS:
    """TAN WCS in 0-based parent pixels: ``crpix0`` maps to ``crval``."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [crpix0[0] + 1.0, crpix0[1] + 1.0]
    wcs.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
    return wcs


def make_stars(x, y, inst, inst_err, wcs, *, sky=None, jitter_mas=0.0, seed=0) -> SourceCatalog:
    """A star catalog with CalibFlux pointing at the normalized tophat, as after A5."""
    rng = np.random.default_rng(seed)
    n = len(x)
    ra, dec = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    dec = dec + rng.normal(0, jitter_mas, n) / 3.6e6
    cat = SourceCatalog()
    cat["id"] = np.arange(1, n + 1, dtype=np.int64) * 10
    cat["coord_ra"] = u.Quantity(np.deg2rad(ra), u.rad)
    cat["coord_dec"] = u.Quantity(np.deg2rad(dec), u.rad)
    cat["base_SdssCentroid_x"] = np.asarray(x, float)
    cat["base_SdssCentroid_y"] = np.asarray(y, float)
    cat["sky_source"] = np.zeros(n, bool) if sky is None else np.asarray(sky, bool)
    for name, scale in ((CALIB, 1.0), ("base_PsfFlux", 0.98)):
        cat[f"{name}_instFlux"] = np.asarray(inst, float) * scale
        cat[f"{name}_instFluxErr"] = np.asarray(inst_err, float) * scale
        cat[f"{name}_flag"] = np.zeros(n, bool)
    cat["psf_id"] = np.arange(n, dtype=np.int64) + 100
    cat.set_slot("slot_CalibFlux", CALIB)
    return cat


def make_refs(x, y, flux_njy, wcs, band="truth") -> Table:
    ra, dec = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    refs = Table()
    refs["id"] = np.arange(len(ra), dtype=np.int64) + 1000
    refs["ra"] = u.Quantity(ra, u.deg)
    refs["dec"] = u.Quantity(dec, u.deg)
    refs[f"{band}_flux"] = u.Quantity(flux_njy, u.nJy)
    refs[f"{band}_fluxErr"] = u.Quantity(0.01 * np.asarray(flux_njy), u.nJy)
    return refs


# ------------------------------------------------------------------ the LSST fixture


def lsst_fixture(seed=1):
    """spec D: 6 point sources (+ 1 extended in the refcat only) and 2 sky sources."""
    wcs = tan_wcs()
    psf_scale = np.sqrt(4 * np.pi * 2.0**2)
    k = np.array([6, 12, 45, 150, 400, 1000, 500], float)
    x = np.array([162, 40, 100, 50, 92, 175, 100], float)
    y = np.array([22, 70, 160, 120, 35, 154, 100], float)
    true_inst = k * 10 * psf_scale
    refs = make_refs(x, y, true_inst * 12.3, wcs)
    rng = np.random.default_rng(seed)
    err = np.full(6, 250.0)  # ~ a 12-px tophat on σ=10 noise
    inst = true_inst[:6] + rng.normal(0, 1, 6) * err
    sx = np.concatenate([x[:6], [30.0, 180.0]])
    sy = np.concatenate([y[:6], [170.0, 60.0]])
    stars = make_stars(
        sx,
        sy,
        np.concatenate([inst, [12.0, -30.0]]),
        np.concatenate([err, [250.0, 250.0]]),
        wcs,
        sky=[False] * 6 + [True, True],
        jitter_mas=10.0,
        seed=seed,
    )
    return stars, refs


def test_lsst_fixture_calibration_and_matches():
    stars, refs = lsst_fixture()
    config = PhotometryConfig()
    matches = match_photometric(stars, refs, "truth", config)
    snr = stars[f"{CALIB}_instFlux"] / stars[f"{CALIB}_instFluxErr"]
    expected = (snr > 10) & ~stars["sky_source"]
    assert expected.sum() == 4  # k = 45 ... 1000 (k = 6, 12 fail S/N; sky sources excluded)
    assert sorted(matches["src_id"]) == sorted(stars["id"][expected])
    # Denormalized columns, with the slot aliases materialised.
    assert np.array_equal(matches["src_slot_Centroid_x"], matches["src_base_SdssCentroid_x"])
    assert np.array_equal(matches["src_slot_CalibFlux_instFlux"], matches[f"src_{CALIB}_instFlux"])
    assert "src_psf_id" in matches.colnames
    assert matches["ref_coord_ra"].unit == u.rad and matches["ref_truth_flux"].unit == u.nJy
    assert np.all(matches["distance"] < 0.25) and matches["distance"].unit == u.arcsec
    # Each match is the right reference: same pixel position through the WCS.
    ref_index = np.searchsorted(refs["id"], matches["ref_id"])
    np.testing.assert_allclose(
        matches["ref_coord_dec"], np.deg2rad(refs["dec"][ref_index]), rtol=0, atol=1e-12
    )
    fit = fit_zero_point(matches, config)
    assert fit.n_used == 4
    np.testing.assert_allclose(fit.calibration, 12.3, rtol=1e-2)
    np.testing.assert_allclose(fit.zero_point, 2.5 * np.log10(AB_ZERO_NJY / fit.calibration))


def test_run_photometry_flags_and_calibrates_catalog():
    stars, refs = lsst_fixture()
    config = PhotometryConfig(band_map={"r": "truth"})
    result = run_photometry(stars, refs, "r", config)
    assert result.photo_calib.mean == pytest.approx(12.3, rel=1e-2)
    used = np.asarray(stars["calib_photometry_used"])
    assert used.sum() == 4 and not used[np.asarray(stars["sky_source"])].any()
    assert set(stars["id"][used]) == set(result.matches["src_id"][result.fit.used])
    # The test of spec D: slot_PsfFlux_flux vs truth within 10 %, mags within 1 %.
    real = ~np.asarray(stars["sky_source"]) & used
    truth = np.asarray(refs["truth_flux"])[[2, 3, 4, 5]]
    np.testing.assert_allclose(np.asarray(stars["slot_PsfFlux_flux"])[real], truth, rtol=0.1)
    truth_mag = -2.5 * np.log10(truth / AB_ZERO_NJY)
    np.testing.assert_allclose(np.asarray(stars["slot_PsfFlux_mag"])[real], truth_mag, rtol=0.01)
    assert stars["slot_PsfFlux_flux"].unit == u.nJy
    assert stars["slot_PsfFlux_mag"].unit == u.ABmag


# ------------------------------------------------------------------ the zero-point fit


def test_zero_point_recovered_with_outliers_rejected():
    rng = np.random.default_rng(42)
    n = 600
    wcs = tan_wcs(crpix0=(2000.0, 2000.0))
    x, y = rng.uniform(0, 4000, n), rng.uniform(0, 4000, n)
    true_mag = rng.uniform(16.0, 21.0, n)
    true_flux = AB_ZERO_NJY * 10 ** (-0.4 * true_mag)
    calibration = 0.0731  # nJy / count
    inst_true = true_flux / calibration
    rel_err = rng.uniform(0.005, 0.03, n)
    inst = inst_true * (1 + rng.normal(0, 1, n) * rel_err)
    outlier = np.zeros(n, bool)
    outlier[rng.choice(n, n // 10, replace=False)] = True
    # Outliers: blends, variables, mismatches: 0.3-2 mag off, both signs.
    offset = rng.uniform(0.3, 2.0, outlier.sum()) * rng.choice([-1, 1], outlier.sum())
    inst[outlier] *= 10 ** (-0.4 * offset)
    stars = make_stars(x, y, inst, inst * rel_err, wcs, jitter_mas=20.0, seed=3)
    refs = make_refs(x, y, true_flux, wcs)
    matches = match_photometric(stars, refs, "truth", PhotometryConfig())
    assert len(matches) == n
    fit = fit_zero_point(matches, PhotometryConfig())
    assert abs(fit.calibration / calibration - 1) < 3e-3
    is_outlier = np.isin(matches["src_id"], stars["id"][outlier])
    assert not fit.used[is_outlier].any()
    # The clip width comes from the IQR of the whole (0.5-3 %) error mixture, so the
    # noisiest inliers lose their tails: most, but not all, inliers survive.
    assert fit.used[~is_outlier].mean() > 0.9
    # The reported error is consistent with the actual error (a 5σ sanity bound).
    zp_true = 2.5 * np.log10(AB_ZERO_NJY / calibration)
    assert abs(fit.zero_point - zp_true) < 5 * fit.zero_point_err + 1e-4


def test_weighted_mean_and_errors_by_hand():
    # Tiny scatter so nothing is clipped: the fit must be the plain weighted mean.
    d = np.array([28.00, 28.01, 27.99, 28.02, 28.00])
    err_mag = np.array([0.01, 0.02, 0.01, 0.04, 0.02])
    inst = np.array([1e4, 2e4, 3e4, 5e4, 8e4])
    ref_flux = AB_ZERO_NJY * 10 ** (-0.4 * (d - 2.5 * np.log10(inst)))
    matches = Table(
        {
            "ref_truth_flux": ref_flux,
            f"src_{CALIB}_instFlux": inst,
            f"src_{CALIB}_instFluxErr": err_mag * inst / (2.5 / np.log(10)),
        },
        meta={"ref_band": "truth", "flux_field": CALIB},
    )
    fit = fit_zero_point(matches, PhotometryConfig())
    w = 1 / err_mag**2
    zp = np.sum(w * d) / np.sum(w)
    sigma = np.sqrt(1 / np.sum(w))
    assert fit.used.all() and fit.n_used == 5
    np.testing.assert_allclose(fit.zero_point, zp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fit.zero_point_err, sigma, rtol=1e-12)
    cal = 3631e9 / 10 ** (0.4 * zp)
    np.testing.assert_allclose(fit.calibration, cal, rtol=1e-12)
    np.testing.assert_allclose(fit.calibration_err, cal * 0.4 * np.log(10) * sigma, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_matches_are_used_unclipped(n):
    # One bright unsaturated reference on a small telescope's frame is a valid (noisy)
    # calibration: its own d is the zero point, not clipped away by a zero IQR.
    d = np.array([20.70, 20.76])[:n]
    inst = np.array([2e4, 3e4])[:n]
    err_mag = np.array([0.02, 0.03])[:n]
    matches = Table(
        {
            "ref_truth_flux": AB_ZERO_NJY * 10 ** (-0.4 * (d - 2.5 * np.log10(inst))),
            f"src_{CALIB}_instFlux": inst,
            f"src_{CALIB}_instFluxErr": err_mag * inst / (2.5 / np.log(10)),
        },
        meta={"ref_band": "truth", "flux_field": CALIB},
    )
    fit = fit_zero_point(matches, PhotometryConfig())
    w = 1 / err_mag**2
    assert fit.n_used == n and fit.used.all()
    np.testing.assert_allclose(fit.zero_point, np.sum(w * d) / np.sum(w), atol=1e-12)
    np.testing.assert_allclose(fit.zero_point_err, np.sqrt(1 / np.sum(w)), rtol=1e-12)


def test_clip_is_bounded_by_max_clip_sigma():
    # A broad (0.4 mag) core: 0.741 IQR > 0.25, so the clip is 3 × 0.25 = 0.75 mag.
    rng = np.random.default_rng(5)
    d = np.concatenate([rng.normal(27.0, 0.4, 400), [27.9, 28.2, 26.0]])
    inst = np.full(d.size, 1e4)
    matches = Table(
        {
            "ref_truth_flux": AB_ZERO_NJY * 10 ** (-0.4 * (d - 2.5 * np.log10(inst))),
            f"src_{CALIB}_instFlux": inst,
            f"src_{CALIB}_instFluxErr": np.full(d.size, 100.0),
        },
        meta={"ref_band": "truth", "flux_field": CALIB},
    )
    fit = fit_zero_point(matches, PhotometryConfig())
    centre = np.median(d[fit.used])
    assert np.all(np.abs(d[fit.used] - centre) <= 0.75 + 0.05)
    assert not fit.used[-3:].any()
    assert fit.used.sum() < 400  # the wide core's own tails beyond 0.75 mag are cut too


def test_no_match_raises_matcher_failure():
    stars, refs = lsst_fixture()
    refs["dec"] = refs["dec"] + (1.0 / 3600.0) * u.deg  # every ref 1" away
    with pytest.raises(MatcherFailure) as info:
        match_photometric(stars, refs, "truth", PhotometryConfig())
    assert info.value.metadata["n_selected"] == 4
    assert info.value.metadata["n_refs"] == 7


def test_only_sky_sources_raises_matcher_failure():
    stars, refs = lsst_fixture()
    stars["sky_source"] = True
    with pytest.raises(MatcherFailure, match="0 usable stars"):
        match_photometric(stars, refs, "truth", PhotometryConfig())


def test_too_few_matches_raise_photometry_error():
    stars, refs = lsst_fixture()
    config = PhotometryConfig(min_n_stars=5)
    matches = match_photometric(stars, refs, "truth", config)
    with pytest.raises(PhotometryError) as info:
        fit_zero_point(matches, config)
    assert not isinstance(info.value, MatcherFailure)
    assert info.value.metadata["n_usable"] == 4


def test_missing_ref_band_is_invalid_input():
    stars, refs = lsst_fixture()
    with pytest.raises(InvalidInputError, match="r_flux"):
        match_photometric(stars, refs, "r", PhotometryConfig())


def test_resolve_ref_band():
    config = PhotometryConfig(band_map={"r": "monster_ComCam_r"})
    assert resolve_ref_band("r", config) == "monster_ComCam_r"
    assert resolve_ref_band("g", config) == "g"
    fallback = PhotometryConfig(default_ref_band="phot_g_mean")
    assert resolve_ref_band("g", fallback) == "phot_g_mean"
    with pytest.raises(InvalidInputError):
        resolve_ref_band(None, PhotometryConfig())


# ------------------------------------------------------------------ calibrating outputs


def test_calibrate_catalog_values_and_units():
    cat = SourceCatalog()
    cat["base_PsfFlux_instFlux"] = np.array([1000.0, 250.0, -40.0])
    cat["base_PsfFlux_instFluxErr"] = np.array([10.0, 20.0, 30.0])
    cat["base_GaussianFlux_instFlux"] = np.array([900.0, 200.0, 5.0])
    cat["base_GaussianFlux_instFluxErr"] = np.array([9.0, 8.0, 7.0])
    calib = PhotoCalib(12.3, 0.2)
    calibrate_catalog(cat, calib)
    flux = cat["slot_PsfFlux_flux"]
    assert flux.unit == u.nJy and cat["slot_PsfFlux_mag"].unit == u.ABmag
    assert cat["base_GaussianFlux_magErr"].unit == u.mag
    np.testing.assert_allclose(flux, [12300.0, 3075.0, -492.0])
    expected_err = np.sqrt(
        (np.array([10, 20, 30]) * 12.3) ** 2 + (np.array([1000, 250, -40]) * 0.2) ** 2
    )
    np.testing.assert_allclose(cat["base_PsfFlux_fluxErr"], expected_err)
    # 1 nJy is AB 31.4; AB mag = 31.4 − 2.5 log10(flux/nJy).
    np.testing.assert_allclose(
        cat["slot_PsfFlux_mag"][:2], 31.4 - 2.5 * np.log10([12300, 3075]), atol=1e-3
    )
    assert np.isnan(cat["slot_PsfFlux_mag"][2]) and np.isnan(cat["slot_PsfFlux_magErr"][2])
    np.testing.assert_allclose(
        cat["base_PsfFlux_magErr"][:2], 2.5 / np.log(10) * expected_err[:2] / [12300, 3075]
    )
    # Quantity round trip: the units are real astropy units.
    assert (cat["base_PsfFlux_flux"].quantity[0]).to_value(u.Jy) == pytest.approx(12300e-9)


def _exposure_and_background(seed=2):
    rng = np.random.default_rng(seed)
    height, width = 150, 200
    image = rng.normal(0, 10, (height, width)).astype(np.float32)
    variance = np.full((height, width), 100.0, np.float32)
    exposure = Exposure.from_image(image, variance)
    yy, xx = np.mgrid[0:3, 0:4]
    values = 500.0 + 3.0 * xx + 2.0 * yy
    background = BackgroundList(
        [
            BackgroundModel(
                64, values, [25.0, 75.0, 125.0, 175.0], [25.0, 75.0, 125.0], (height, width), 1, 1
            )
        ]
    )
    return exposure, background


def test_calibrate_pixels_scales_image_variance_and_background():
    exposure, background = _exposure_and_background()
    original = exposure.image.astype(np.float64) + background.image()
    variance = exposure.variance.copy()
    calib = PhotoCalib(12.3, 0.123)
    out, scaled = calibrate_pixels(exposure, background, calib)
    assert out is exposure
    total = exposure.image.astype(np.float64) + scaled.image()
    np.testing.assert_allclose(total / 12.3, original, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(exposure.variance, variance * 12.3**2, rtol=1e-6)
    assert exposure.photo_calib.mean == 1.0
    assert exposure.photo_calib.error == pytest.approx(0.01)
    assert exposure.metadata["BUNIT"] == "nJy"
    np.testing.assert_allclose(background[0].values * 12.3, scaled[0].values)  # input untouched
    with pytest.raises(InvalidInputError, match="already calibrated"):
        calibrate_pixels(exposure, scaled, calib)
