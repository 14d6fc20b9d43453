"""Summary statistics against known truth: analytic PSFs, TAN WCSs, hand formulas."""

from __future__ import annotations

import math
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.wcs import WCS

from promptcal.core.apcorr_map import ApCorrMap, ChebyshevField
from promptcal.core.background_model import BackgroundList, BackgroundModel
from promptcal.core.catalog import SourceCatalog
from promptcal.core.exposure import Detector, Exposure, Mask, PhotoCalib, VisitInfo
from promptcal.core.psf_model import GaussianPsf, PixelPsf
from promptcal.pipeline.summary.psf_robustness import (
    grid_points,
    max_distance_to_nearest_psf,
    psf_image_deltas,
)
from promptcal.pipeline.summary.statistics import (
    NAN_FIELDS,
    SummaryConfig,
    clipped_mean_std,
    compute_summary_stats,
    zenith_distance,
)

RUBIN = EarthLocation(lat=-30.2444 * u.deg, lon=-70.7494 * u.deg, height=2650 * u.m)
X0, Y0, WIDTH, HEIGHT = 5, 4, 201, 181  # spec D: bbox (5,4)-(205,184)
CALIB = PhotoCalib(12.3, 0.05)


def tan_wcs(crval=(245.0, -45.0), crpix0=(105.0, 94.0), scale=(0.2, 0.2)) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [crpix0[0] + 1.0, crpix0[1] + 1.0]  # FITS is 1-based
    wcs.wcs.cdelt = [-scale[0] / 3600.0, scale[1] / 3600.0]
    return wcs


def flat_background(shape, level) -> BackgroundList:
    h, w = shape
    return BackgroundList(
        [
            BackgroundModel(
                64, np.full((2, 2), level), [w / 4, 3 * w / 4], [h / 4, 3 * h / 4], shape, 0, 0
            )
        ]
    )


def make_exposure(*, band="r", detector=True, seed=1) -> Exposure:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 10, (HEIGHT, WIDTH)).astype(np.float32)
    exposure = Exposure(
        image,
        np.full((HEIGHT, WIDTH), 100.0, np.float32),
        Mask(np.zeros((HEIGHT, WIDTH), np.int32)),
        xy0=(X0, Y0),
        band=band,
        visit_info=VisitInfo(1234, 30.0, Time(60000.0, format="mjd", scale="tai"), RUBIN),
        detector=Detector(12, "R22_S11", gain=1.5, read_noise=6.0) if detector else None,
    )
    return exposure


def run(exposure, stars=None, *, psf=None, wcs=None, photo_calib=None, background=None, **kw):
    background = (
        background if background is not None else flat_background(exposure.image.shape, 500.0)
    )
    return compute_summary_stats(
        exposure, stars, background, psf=psf, wcs=wcs, photo_calib=photo_calib, **kw
    )


def test_psf_wcs_and_photometry_fields():
    exposure = make_exposure()
    s = run(exposure, psf=GaussianPsf(2.0, 17), wcs=tan_wcs(), photo_calib=CALIB)
    assert s["psfSigma"] == pytest.approx(2.0, rel=1e-3)
    assert s["psfIxx"] == pytest.approx(4.0, rel=2e-3) and s["psfIyy"] == pytest.approx(
        4.0, rel=2e-3
    )
    assert abs(s["psfIxy"]) < 1e-6
    assert s["psfArea"] == pytest.approx(4 * np.pi * 2.0**2, rel=1e-2)
    # The centre (105, 94) is crpix: exact crval.
    assert s["ra"] == pytest.approx(245.0, abs=1e-10) and s["dec"] == pytest.approx(
        -45.0, abs=1e-10
    )
    assert s["pixelScale"] == pytest.approx(0.2, rel=1e-9)
    # Corners at the Box2D edges (±0.5 px): on a TAN projection the angular distance
    # from the tangent point is atan(r · scale), r the pixel radius.
    centre = SkyCoord(245.0 * u.deg, -45.0 * u.deg)
    corners = SkyCoord(np.array(s["raCorners"]) * u.deg, np.array(s["decCorners"]) * u.deg)
    dx = np.array([-100.5, 100.5, 100.5, -100.5])
    dy = np.array([-90.5, -90.5, 90.5, 90.5])
    expected = np.degrees(np.arctan(np.radians(np.hypot(dx, dy) * 0.2 / 3600)))
    np.testing.assert_allclose(centre.separation(corners).deg, expected, rtol=1e-9)
    # East is +RA: pixel x grows westwards (cdelt1 < 0), so corners 0 and 3 have larger RA.
    assert s["raCorners"][0] > 245 > s["raCorners"][1]
    assert s["decCorners"][0] < -45 < s["decCorners"][2]
    assert s["zeroPoint"] == pytest.approx(2.5 * np.log10(3631e9 / 12.3), abs=1e-12)
    assert s["expTime"] == 30.0
    assert s["skyBg"] == pytest.approx(500.0)
    # 3σ clipping (twice) of a σ = 10 Gaussian leaves a standard deviation of ≈ 9.86.
    assert s["skyNoise"] == pytest.approx(9.86, rel=0.015)
    assert s["meanVar"] == pytest.approx(100.0, rel=1e-6)
    for name in NAN_FIELDS:
        assert math.isnan(s[name])
    assert s["shapeletsCoeffs"] == [] and s["nShapeletsStar"] == 0


def test_pixel_scale_of_rectangular_pixels():
    s = run(make_exposure(), wcs=tan_wcs(scale=(0.3, 0.2)))
    assert s["pixelScale"] == pytest.approx(np.sqrt(0.3 * 0.2), rel=1e-9)


def test_missing_models_give_nan_not_errors():
    exposure = make_exposure()
    s = run(exposure, psf=None, wcs=None, photo_calib=None, background=BackgroundList())
    for name in (
        "psfSigma", "psfArea", "psfIxx", "ra", "dec", "pixelScale", "zenithDistance",
        "zeroPoint", "skyBg", "magLim", "effTime", "effTimePsfSigmaScale",
        "effTimeSkyBgScale", "effTimeZeroPointScale", "maxDistToNearestPsf",
        "psfTraceRadiusDelta", "psfApFluxDelta", "psfApCorrSigmaScaledDelta",
    ):  # fmt: skip
        assert math.isnan(s[name]), name
    assert all(math.isnan(v) for v in s["raCorners"] + s["decCorners"])
    # What does not depend on them is still there.
    assert s["expTime"] == 30.0 and s["meanVar"] == pytest.approx(100.0)


def test_sky_noise_ignores_no_data_and_suspect():
    exposure = make_exposure()
    exposure.image[:40] = 1e6
    exposure.variance[:40] = 1e9
    exposure.mask.array[:20] |= exposure.mask.bit("NO_DATA")
    exposure.mask.array[20:40] |= exposure.mask.bit("SUSPECT")
    exposure.image[60:62] = 5e4  # unmasked outliers: clipped away
    s = run(exposure)
    assert s["skyNoise"] == pytest.approx(9.86, rel=0.02)
    assert s["meanVar"] == pytest.approx(100.0, rel=1e-6)


def test_clipped_mean_std_oracle():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(5.0, 2.0, 20000), np.full(200, 1e4), [np.nan]])
    mean, std = clipped_mean_std(v, 3.0, 2)
    # NumPy oracle of the same definition.
    finite = v[np.isfinite(v)]
    q25, q50, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    centre, hw = q50, 3 * 0.741 * (q75 - q25)
    for _ in range(2):
        kept = finite[np.abs(finite - centre) <= hw]
        centre, hw = kept.mean(), 3 * kept.std(ddof=1)
    assert mean == pytest.approx(centre, rel=1e-12) and std == pytest.approx(hw / 3, rel=1e-12)
    assert mean == pytest.approx(5.0, abs=0.05) and std == pytest.approx(2.0 * 0.9865, rel=0.03)


def test_zenith_distance_against_astropy_and_the_zenith():
    time = Time(60000.25, format="mjd", scale="utc")
    visit = VisitInfo(1, 30.0, time, RUBIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = AltAz(obstime=time, location=RUBIN)
        ref = SkyCoord(245 * u.deg, -45 * u.deg).transform_to(frame)
        lst = time.sidereal_time("apparent", longitude=RUBIN.lon).deg
    assert zenith_distance(245.0, -45.0, visit) == pytest.approx(90 - ref.alt.deg, abs=1e-8)
    # A star on the local meridian at the site's latitude is at the zenith (to within
    # precession since J2000, ~0.3°).
    assert zenith_distance(lst, RUBIN.lat.deg, visit) < 0.5
    # The antipode is 180° away from it.
    assert zenith_distance((lst + 180) % 360, -RUBIN.lat.deg, visit) > 179.5
    assert math.isnan(zenith_distance(245.0, -45.0, VisitInfo(1, 30.0, None, RUBIN)))
    assert math.isnan(zenith_distance(245.0, -45.0, VisitInfo(1, 30.0, time, None)))


def test_summary_zenith_distance_uses_the_centre():
    exposure = make_exposure()
    s = run(exposure, wcs=tan_wcs())
    assert s["zenithDistance"] == pytest.approx(zenith_distance(245.0, -45.0, exposure.visit_info))
    assert 0 < s["zenithDistance"] < 180


# ------------------------------------------------------------------ depth


def _hand_mag_lim(psf_area, sky, zp, gain, read_noise_e, snr=5.0):
    rn = read_noise_e / gain
    b = (sky / gain + rn**2) * psf_area
    c = snr**2 / (2 * gain) + np.sqrt(snr**4 / (4 * gain**2) + snr**2 * b)
    # The solution really has S/N = snr under the SMTN-002 noise model.
    assert c / np.sqrt(c / gain + b) == pytest.approx(snr, rel=1e-12)
    return zp - 2.5 * np.log10(c)


def test_mag_lim_and_effective_time_by_hand():
    exposure = make_exposure(band="r")
    s = run(exposure, psf=GaussianPsf(2.0, 17), wcs=tan_wcs(), photo_calib=CALIB)
    zp = 2.5 * np.log10(3631e9 / 12.3)
    mag_lim = _hand_mag_lim(s["psfArea"], 500.0, zp, 1.5, 6.0)
    assert s["magLim"] == pytest.approx(mag_lim, abs=1e-12)
    # LSSTCam r fiducials: σ 1.56 px, zp(1 s) 27.80, sky 19.62 ADU/s; magLim_fid 25, 30 s.
    assert s["effTimePsfSigmaScale"] == pytest.approx((s["psfSigma"] / 1.56) ** -2, rel=1e-12)
    assert s["effTimeSkyBgScale"] == pytest.approx(19.62 / (500.0 / 30.0), rel=1e-12)
    c_eff = 10 ** (-0.8 * (27.80 - (zp - 2.5 * np.log10(30.0))))
    assert s["effTimeZeroPointScale"] == pytest.approx(c_eff, rel=1e-12)
    assert s["effTime"] == pytest.approx(10 ** (0.8 * (mag_lim - 25.0)) * 30.0, rel=1e-12)


def test_electron_images_use_unit_gain_and_missing_detector_gives_nan():
    exposure = make_exposure()
    exposure.metadata["LSST ISR UNITS"] = "electron"
    s = run(exposure, psf=GaussianPsf(2.0, 17), photo_calib=CALIB)
    zp = 2.5 * np.log10(3631e9 / 12.3)
    assert s["magLim"] == pytest.approx(_hand_mag_lim(s["psfArea"], 500.0, zp, 1.0, 6.0), abs=1e-12)
    s = run(make_exposure(detector=False), psf=GaussianPsf(2.0, 17), photo_calib=CALIB)
    assert math.isnan(s["magLim"]) and math.isnan(s["effTime"])
    assert not math.isnan(s["effTimeSkyBgScale"])


def test_band_fallbacks_and_transparency_cap():
    config = SummaryConfig(max_effective_transparency=1.0)
    exposure = make_exposure(band="truth")  # not an LSSTCam band: task defaults
    s = run(exposure, psf=GaussianPsf(2.0, 17), photo_calib=PhotoCalib(1e-3), config=config)
    assert s["effTimePsfSigmaScale"] == pytest.approx(0.25, rel=1e-3)  # (2 / 1.0)^-2
    assert s["effTimeSkyBgScale"] == pytest.approx(1.0 / (500.0 / 30.0))
    assert s["effTimeZeroPointScale"] == 1.0  # zp ≈ 38.9 would give ≫ 1
    assert s["effTime"] == pytest.approx(10 ** (0.8 * (s["magLim"] - 25.0)) * 30.0)
    s = run(make_exposure(band=None), psf=GaussianPsf(2.0, 17), photo_calib=CALIB)
    assert math.isnan(s["effTime"]) and not math.isnan(s["magLim"])


# ------------------------------------------------------------------ PSF stars


def psf_star_catalog():
    """8 qualifying PSF stars with known shapes, plus 5 rows that must be ignored."""
    star_xx = np.array([4.4, 4.5, 4.3, 4.6, 4.4, 4.2, 4.8, 4.4])
    star_yy = np.array([3.6, 3.5, 3.7, 3.6, 3.4, 3.8, 3.6, 3.6])
    star_xy = np.array([0.3, 0.2, 0.4, 0.3, 0.1, 0.3, 0.5, 0.2])
    bad = 5
    cat = SourceCatalog()
    n = star_xx.size + bad
    cat["base_SdssCentroid_x"] = np.linspace(20, 190, n) + X0
    cat["base_SdssCentroid_y"] = np.linspace(30, 150, n) + Y0
    cat["ext_shapeHSM_HsmSourceMoments_xx"] = np.concatenate([star_xx, np.full(bad, 50.0)])
    cat["ext_shapeHSM_HsmSourceMoments_yy"] = np.concatenate([star_yy, np.full(bad, 1.0)])
    cat["ext_shapeHSM_HsmSourceMoments_xy"] = np.concatenate([star_xy, np.full(bad, 9.0)])
    cat["ext_shapeHSM_HsmSourceMoments_flag"] = np.array(
        [False] * 8 + [False, False, True, False, False]
    )
    cat["ext_shapeHSM_HsmPsfMoments_xx"] = np.full(n, 4.0)
    cat["ext_shapeHSM_HsmPsfMoments_yy"] = np.full(n, 4.0)
    cat["ext_shapeHSM_HsmPsfMoments_xy"] = np.zeros(n)
    # S/N: 8 good in (50, 1000); then S/N 2000, S/N 20, good S/N but flagged shape,
    # flagged PsfFlux, and not calib_psf_used.
    cat["base_PsfFlux_instFlux"] = np.array([1e4] * 8 + [2e5, 2e3, 1e4, 1e4, 1e4])
    cat["base_PsfFlux_instFluxErr"] = np.full(n, 100.0)
    cat["base_PsfFlux_flag"] = np.array([False] * 11 + [True, False])
    cat["calib_psf_used"] = np.array([True] * 12 + [False])
    return cat, star_xx, star_yy, star_xy


def test_psf_star_shape_statistics():
    cat, xx, yy, xy = psf_star_catalog()
    s = run(make_exposure(), cat, psf=GaussianPsf(2.0, 17))
    assert s["nPsfStar"] == 12  # every calib_psf_used star, before the stats cuts
    e1, e2 = (xx - yy) / (xx + yy), 2 * xy / (xx + yy)  # the PSF model is round
    size, psf_size = np.sqrt((xx + yy) / 2), 2.0
    mad = lambda v: 1.482602218505602 * np.median(np.abs(v - np.median(v)))  # noqa: E731
    assert s["psfStarDeltaE1Median"] == pytest.approx(np.median(e1), abs=1e-14)
    assert s["psfStarDeltaE2Median"] == pytest.approx(np.median(e2), abs=1e-14)
    assert s["psfStarDeltaE1Scatter"] == pytest.approx(mad(e1), abs=1e-14)
    assert s["psfStarDeltaE2Scatter"] == pytest.approx(mad(e2), abs=1e-14)
    assert s["psfStarDeltaSizeMedian"] == pytest.approx(np.median(size - psf_size), abs=1e-14)
    assert s["psfStarDeltaSizeScatter"] == pytest.approx(mad(size), abs=1e-14)
    assert s["psfStarScaledDeltaSizeScatter"] == pytest.approx(mad(size) / np.median(size))
    assert s["starEMedian"] == pytest.approx(np.median(np.hypot(e1, e2)), abs=1e-14)
    assert s["starUnNormalizedEMedian"] == pytest.approx(np.median(np.hypot(xx - yy, 2 * xy)))
    # Concrete values: star 0 has e1 = 0.8/8 = 0.1 and e2 = 0.6/8 = 0.075.
    assert e1[0] == pytest.approx(0.1) and e2[0] == pytest.approx(0.075)
    assert 0.09 < s["psfStarDeltaE1Median"] < 0.13


def test_max_distance_to_nearest_psf_matches_brute_force():
    cat, *_ = psf_star_catalog()
    exposure = make_exposure()
    exposure.mask.array[:, 150:] |= exposure.mask.bit("BAD")  # the far right is masked
    s = run(exposure, cat, psf=GaussianPsf(2.0, 17))
    # Brute force over the unmasked 8-px grid, in parent coordinates.
    gy, gx = np.mgrid[0:HEIGHT:8, 0:WIDTH:8]
    keep = gx < 150
    sx = np.asarray(cat["base_SdssCentroid_x"])[:8]
    sy = np.asarray(cat["base_SdssCentroid_y"])[:8]
    d = np.hypot(gx[keep][:, None] + X0 - sx, gy[keep][:, None] + Y0 - sy).min(axis=1)
    assert s["maxDistToNearestPsf"] == pytest.approx(d.max(), rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_branch_and_bound_distance_is_exact(seed):
    rng = np.random.default_rng(seed)
    good = rng.random((rng.integers(5, 90), rng.integers(5, 90))) > rng.uniform(0, 0.9)
    n_star = rng.integers(1, 30)
    sx, sy = rng.uniform(-50, 800, n_star), rng.uniform(-50, 800, n_star)
    xy0 = (int(rng.integers(-20, 20)), int(rng.integers(-20, 20)))
    gy, gx = np.nonzero(good)
    px, py = gx * 8 + xy0[0], gy * 8 + xy0[1]
    brute = np.hypot(px[:, None] - sx, py[:, None] - sy).min(axis=1).max() if good.any() else np.nan
    got = max_distance_to_nearest_psf(good, 8, xy0, sx, sy, block=int(rng.integers(2, 9)))
    np.testing.assert_allclose(got, brute, rtol=1e-12)


def _varying_pixel_psf(size=21):
    """σ_x grows linearly with x across the detector: 1.6 px at x0 → 2.4 px at the far side."""
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    gauss = lambda sx, sy: np.exp(-0.5 * (xx**2 / sx**2 + yy**2 / sy**2))  # noqa: E731
    base, wide = gauss(2.0, 2.0), gauss(2.4, 2.0)
    coeffs = np.zeros((3, size, size))
    coeffs[0], coeffs[1] = base, wide - base  # terms: 1, u, v (order 1)
    centre = (X0 + 100.0, Y0 + 90.0)
    return PixelPsf(coeffs, 1, centre, (100.0, 90.0), 2.0)


def test_psf_robustness_deltas_against_full_grid_oracle():
    psf = _varying_pixel_psf()
    exposure = make_exposure()
    exposure.mask.array[100:130, 90:130] |= exposure.mask.bit("CR")
    _, _, good = grid_points(exposure.mask, ("CR",), 32, exposure.xy0)
    trace, ap = psf_image_deltas(psf, good, 32, exposure.xy0, 6.0, per_axis=4)
    gy, gx = np.nonzero(good)
    px, py = gx * 32.0 + X0, gy * 32.0 + Y0
    traces = [np.sqrt(0.5 * sum(psf.shape(x, y)[:2])) for x, y in zip(px, py, strict=True)]
    half = psf.size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    inside = xx**2 + yy**2 <= 36.0
    fluxes = [psf.kernel_image(x, y)[inside].sum() for x, y in zip(px, py, strict=True)]
    # The trace radius is monotonic in x, so the edge-including subgrid finds the extremes.
    assert trace == pytest.approx(np.ptp(traces), rel=1e-9)
    assert trace > 0.1
    assert ap == pytest.approx(np.ptp(fluxes), rel=1e-9)
    assert ap > 1e-3
    g_trace, g_ap = psf_image_deltas(GaussianPsf(2.0, 17), good, 32, exposure.xy0, 6.0, 4)
    assert g_trace == 0.0 and g_ap == 0.0


def test_ap_corr_sigma_scaled_delta():
    exposure = make_exposure()
    bbox = (X0, Y0, X0 + WIDTH - 1, Y0 + HEIGHT - 1)
    ap_corr = ApCorrMap()
    # 1 + 0.02 u: over grid x = 0, 96, 192 (+X0) the range is 0.02 · 192 / 100.
    ap_corr["base_PsfFlux_instFlux"] = ChebyshevField(np.array([[1.0, 0.0], [0.02, 0.0]]), bbox)
    exposure.ap_corr_map = ap_corr
    s = run(exposure, psf=GaussianPsf(2.0, 17))
    expected = 0.02 * (2 * 192 / (WIDTH - 1)) / s["psfSigma"]
    assert s["psfApCorrSigmaScaledDelta"] == pytest.approx(expected, rel=1e-9)
    assert s["psfTraceRadiusDelta"] == 0.0


def test_passthrough_fields():
    s = run(
        make_exposure(),
        astrom_offsets=(0.012, 0.004),
        ref_cat_source_density=39470.04,
        psf_adaptive=(12.0, 5.0),
    )
    assert (s["astromOffsetMean"], s["astromOffsetStd"]) == (0.012, 0.004)
    assert s["refCatSourceDensity"] == 39470.04
    assert s["psfAdaptiveThresholdValue"] == 12.0
    assert s["psfAdaptiveIncludeThresholdMultiplier"] == 5.0


def test_degenerate_inputs_do_not_warn_or_raise():
    # A non-positive calibration and a negative sky are NaN, not RuntimeWarnings (errors here).
    s = run(
        make_exposure(),
        psf=GaussianPsf(2.0, 17),
        photo_calib=PhotoCalib(-1.0),
        background=flat_background((HEIGHT, WIDTH), -1e6),
    )
    assert math.isnan(s["zeroPoint"]) and math.isnan(s["magLim"])
    cat, *_ = psf_star_catalog()
    for prefix in ("ext_shapeHSM_HsmSourceMoments", "ext_shapeHSM_HsmPsfMoments"):
        for m in ("xx", "yy", "xy"):
            cat[f"{prefix}_{m}"] = 0.0
    s = run(make_exposure(), cat, psf=GaussianPsf(2.0, 17))
    assert math.isnan(s["psfStarDeltaE1Median"]) and s["nPsfStar"] == 12
