"""Astrometric calibration: synthetic truth (default and recovery modes, LSST fixture-like
small N), failure reporting, coordinates with errors, and three real data sets."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS, Sip
from astropy.wcs.utils import proj_plane_pixel_scales
from realdata import REAL, requires_real_data

from promptcal.core.errors import AstrometryError, BadAstrometryFit
from promptcal.pipeline.astrometry.fitter import (
    AstrometryConfig,
    AstrometryResult,
    PointingHint,
    check_astrometry,
    fit_astrometry,
    sky_coordinates,
)
from promptcal.pipeline.astrometry.tan_sip import tan_sip_from_mapping, wcs_pixel_to_icrs

BBOX = (0, 0, 4095, 4071)
MAS_PER_DEG = 3.6e6


def make_wcs(
    crval=(150.0, 2.2), scale=0.2, rot_deg=0.0, crpix=(2048.5, 2036.5), sip=True, mirrored=False
):
    """TAN(-SIP) WCS; the SIP terms give a few px of distortion at the corners."""
    w = WCS(naxis=2)
    w.wcs.crpix = list(crpix)
    w.wcs.crval = list(crval)
    t = np.radians(rot_deg)
    cd = scale / 3600 * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    if mirrored:
        cd[:, 0] *= -1
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    if sip:
        a, b = np.zeros((4, 4)), np.zeros((4, 4))
        a[2, 0], a[1, 1], a[0, 2], a[3, 0], a[1, 2] = 4e-7, -2e-7, 1.5e-7, 1e-10, 6e-11
        b[0, 2], b[1, 1], b[2, 0], b[0, 3], b[2, 1] = 3e-7, 2.5e-7, -1e-7, 1.2e-10, -5e-11
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    else:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.set()
    return w


def make_field(wcs, bbox=BBOX, n_stars=1500, margin=300, noise=0.01, seed=1):
    """Refs over the bbox + margin; sources = 70% of the on-chip stars + 30% spurious."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = bbox
    px = rng.uniform(x0 - margin, x1 + margin, n_stars)
    py = rng.uniform(y0 - margin, y1 + margin, n_stars)
    ra, dec = wcs.all_pix2world(px, py, 0)
    mag = 16 + 6 * rng.power(3.0, n_stars)
    ref_flux = 10 ** (-0.4 * (mag - 31.4))
    on = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
    idx = np.nonzero(on & (rng.uniform(size=n_stars) > 0.3))[0]
    n_add = int(0.3 * len(idx))
    sx = np.concatenate([px[idx] + rng.normal(0, noise, len(idx)), rng.uniform(x0, x1, n_add)])
    sy = np.concatenate([py[idx] + rng.normal(0, noise, len(idx)), rng.uniform(y0, y1, n_add)])
    flux = ref_flux[idx] / 12.3 * 10 ** rng.normal(0, 0.02, len(idx))
    fake = 10 ** (-0.4 * (16 + 6 * rng.power(3.0, n_add) - 31.4)) / 12.3
    err = np.full(len(sx), noise)
    return {
        "args": (sx, sy, np.concatenate([flux, fake]), err, err, ra, dec, ref_flux),
        "truth_ref": np.concatenate([idx, np.full(n_add, -1)]),
    }


def grid_rms_mas(truth, fitted, bbox=BBOX, n=30):
    """RMS and max sky distance [mas] between two WCSs over a pixel grid."""
    gx, gy = np.meshgrid(np.linspace(bbox[0], bbox[2], n), np.linspace(bbox[1], bbox[3], n))
    ra1, de1 = truth.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ra2, de2 = fitted.all_pix2world(gx.ravel(), gy.ravel(), 0)
    d = np.hypot((ra1 - ra2) * np.cos(np.radians(de1)), de1 - de2) * MAS_PER_DEG
    return float(np.sqrt(np.mean(d**2))), float(d.max())


def shifted(dx_arcsec, dy_arcsec, dec=2.2):
    return (150.0 + dx_arcsec / 3600 / np.cos(np.radians(dec)), dec + dy_arcsec / 3600)


# ------------------------------------------------------------------ synthetic truth


def test_default_mode_recovers_distorted_truth_to_mas():
    truth = make_wcs()
    field = make_field(truth)
    header = make_wcs(crval=shifted(12.0, 16.0), rot_deg=0.5)  # 20" off, rotated 0.5°
    result = fit_astrometry(*field["args"], initial_wcs=header, bbox=BBOX)
    assert not result.used_recovery
    rms, worst = grid_rms_mas(truth, result.wcs)
    assert rms <= 10.0 and worst <= 30.0
    assert "SIP" in result.wcs.wcs.ctype[0]
    np.testing.assert_allclose(result.wcs.wcs.crpix, [2048.5, 2036.5])  # bbox centre, 1-based
    # Matches are the true pairs; the spurious 30% found nothing.
    m = result.matches
    assert len(m) > 0.95 * np.sum(field["truth_ref"] >= 0)
    assert np.all(field["truth_ref"][m["src_index"]] == m["ref_index"])
    assert result.offset_mean < 0.01 and result.offset_median <= result.offset_mean * 1.5
    assert result.metadata["SFM_ASTROM_OFFSET_MEAN"] == result.offset_mean
    # The inverse (AP/BP) maps the references back onto their sources.
    x, y = result.wcs.all_world2pix(m["ref_ra"], m["ref_dec"], 0)
    assert np.max(np.hypot(x - m["src_x"], y - m["src_y"])) < 0.1


def test_saturated_stars_sit_out_the_vote_on_both_sides():
    # The 300 brightest stars on the chip are saturated: not in the source list. Without
    # telling the solver, the 150 brightest references that vote are all of them.
    truth = make_wcs()
    sx, sy, flux, ex, ey, ra, dec, ref_flux = make_field(truth, n_stars=3000)["args"]
    keep = np.argsort(-flux)[300:]
    args = (sx[keep], sy[keep], flux[keep], ex[keep], ey[keep], ra, dec, ref_flux)
    header = make_wcs(crval=shifted(12.0, 16.0), rot_deg=0.5)
    config = AstrometryConfig(do_recovery=False)
    with pytest.raises(AstrometryError, match="pattern vote peak"):
        fit_astrometry(*args, initial_wcs=header, bbox=BBOX, config=config)
    result = fit_astrometry(*args, initial_wcs=header, bbox=BBOX, config=config, n_saturated=300)
    assert result.metadata["n_refs_left_out_as_saturated"] >= 300
    rms, _ = grid_rms_mas(truth, result.wcs)
    assert rms <= 10.0


def test_default_mode_adds_distortion_missing_from_initial_wcs():
    truth = make_wcs()
    field = make_field(truth, seed=2)
    header = make_wcs(crval=shifted(-15.0, 5.0), rot_deg=-0.3, sip=False)
    result = fit_astrometry(*field["args"], initial_wcs=header, bbox=BBOX)
    rms, _ = grid_rms_mas(truth, result.wcs)
    assert rms <= 10.0
    assert result.metadata["correction_order"] == 3


@pytest.mark.parametrize("mirrored", [True, False])
def test_recovery_mode_from_pointing_hint_only(mirrored):
    truth = make_wcs(rot_deg=137.0, mirrored=mirrored)
    field = make_field(truth, seed=3)
    ra, dec = truth.all_pix2world([[2047.5 + 4096 / 3, 2035.5]], 0)[0]  # 1/3 detector off
    hint = PointingHint(ra, dec, 0.2 * 1.03)  # scale off by 3%
    result = fit_astrometry(*field["args"], initial_wcs=None, bbox=BBOX, pointing_hint=hint)
    assert result.used_recovery
    assert result.metadata["recovery_n_matches"] >= 5
    rms, _ = grid_rms_mas(truth, result.wcs)
    assert rms <= 10.0


def test_recovery_mode_when_initial_wcs_is_far_off():
    truth = make_wcs()
    field = make_field(truth, seed=4)
    header = make_wcs(crval=shifted(150.0, -90.0), rot_deg=40.0)  # 875 px and 40° off
    result = fit_astrometry(*field["args"], initial_wcs=header, bbox=BBOX)
    assert result.used_recovery
    assert "default mode" in result.metadata["attempts"][0]
    assert grid_rms_mas(truth, result.wcs)[0] <= 10.0


def test_lsst_fixture_like_small_n():
    """LSST's test: 6 sources, 7 refs, 201×181 px at 0.2"/px; all within 35 mas."""
    bbox = (5, 4, 205, 184)
    truth = make_wcs(crval=(245.0, -45.0), crpix=(106.0, 95.0), sip=False)
    pos = np.array(
        [(162, 22), (40, 70), (100, 160), (50, 120), (92, 35), (175, 154), (100, 100)], float
    )
    ref_ra, ref_dec = truth.all_pix2world(pos[:, 0], pos[:, 1], 0)
    k = np.array([6, 12, 45, 150, 400, 1000, 500], float)
    ref_flux = k * 141.8 * 12.3
    rng = np.random.default_rng(7)
    src = pos[:6] + rng.normal(0, 0.02, (6, 2))
    header = make_wcs(
        crval=(245.0 + 1.5 / 3600, -45.0 - 1.0 / 3600), crpix=(106.0, 95.0), rot_deg=0.2, sip=False
    )
    config = AstrometryConfig(num_points_for_shape=3, magnitude_outlier_rejection_nsigma=9)
    err = np.full(6, 0.02)
    result = fit_astrometry(
        src[:, 0],
        src[:, 1],
        k[:6] * 141.8,
        err,
        err,
        ref_ra,
        ref_dec,
        ref_flux,
        initial_wcs=header,
        bbox=bbox,
        config=config,
    )
    assert sorted(result.matches["src_index"]) == list(range(6))
    assert np.all(result.matches["ref_index"] == result.matches["src_index"])
    ra, dec, ra_err, dec_err = sky_coordinates(result.wcs, src[:, 0], src[:, 1], err, err)
    d = (
        np.hypot(
            (np.degrees(ra) - ref_ra[:6]) * np.cos(np.radians(-45)), np.degrees(dec) - ref_dec[:6]
        )
        * MAS_PER_DEG
    )
    assert np.all(d < 35.0)
    # Errors from the Jacobian: 0.02 px × 0.2"/px = 4 mas in dec, /cos(dec) in RA.
    np.testing.assert_allclose(np.degrees(dec_err) * MAS_PER_DEG, 4.0, rtol=0.02)
    np.testing.assert_allclose(
        np.degrees(ra_err) * MAS_PER_DEG, 4.0 / np.cos(np.radians(45)), rtol=0.02
    )
    # Four PSF stars (LSST's astrometry sources) are enough too.
    four = fit_astrometry(
        src[2:, 0],
        src[2:, 1],
        k[2:6] * 141.8,
        err[2:],
        err[2:],
        ref_ra,
        ref_dec,
        ref_flux,
        initial_wcs=header,
        bbox=bbox,
        config=config,
    )
    assert len(four.matches) == 4
    assert grid_rms_mas(truth, four.wcs, bbox)[1] < 35.0


def test_unrelated_catalog_raises_with_what_was_tried():
    truth = make_wcs()
    field = make_field(truth, n_stars=600, seed=5)
    rng = np.random.default_rng(9)
    sx, sy, sf, ex, ey, ra, dec, rf = field["args"]
    ra = rng.uniform(ra.min(), ra.max(), len(ra))
    dec = rng.uniform(dec.min(), dec.max(), len(dec))
    with pytest.raises(AstrometryError) as info:
        fit_astrometry(sx, sy, sf, ex, ey, ra, dec, rf, initial_wcs=truth, bbox=BBOX)
    msg = str(info.value)
    assert "default mode: pattern vote peak" in msg and "recovery mode" in msg
    assert info.value.metadata["n_sources"] == len(sx)
    assert info.value.metadata["n_refs"] == len(ra)
    assert info.value.metadata["n_matches"] == 0


def test_check_astrometry_threshold():
    result = AstrometryResult(make_wcs(), Table(), 0.73, 0.1, 0.7, 3, False, {})
    with pytest.raises(BadAstrometryFit, match=r"mean offset 0\.73 arcsec exceeds 0\.5 arcsec"):
        check_astrometry(result)
    check_astrometry(result, max_mean_offset_arcsec=1.0)


def test_tan_sip_approximation_of_a_known_mapping():
    truth = make_wcs(rot_deg=33.0)
    wcs, max_err = tan_sip_from_mapping(lambda x, y: wcs_pixel_to_icrs(truth, x, y), BBOX, 3)
    assert max_err < 1e-4  # arcsec: an order-3 SIP is reproduced exactly
    assert grid_rms_mas(truth, wcs)[1] < 0.1
    ra, dec = truth.all_pix2world([10.0, 4000.0], [4000.0, 20.0], 0)
    x, y = wcs.all_world2pix(ra, dec, 0)
    np.testing.assert_allclose(x, [10.0, 4000.0], atol=1e-3)
    np.testing.assert_allclose(y, [4000.0, 20.0], atol=1e-3)


# ------------------------------------------------------------------ real data


def _sep_sources(image, thresh):
    image = np.ascontiguousarray(image, dtype=np.float64)
    bkg = sep.Background(image)
    back = bkg.back()
    objects = sep.extract(image - back, thresh, err=bkg.globalrms)
    return objects, back


def _args(obj):
    return obj["x"], obj["y"], obj["flux"], np.sqrt(obj["errx2"]), np.sqrt(obj["erry2"])


@requires_real_data
def test_real_spitzer_galactic_car_header():
    folder = REAL / "spitzer-glimpse-irac2"
    with fits.open(folder / "spitzer_example_image.fits") as hdul:
        image, header = hdul[0].data.astype(np.float64), hdul[0].header
    header_wcs = WCS(header)  # GLON/GLAT CAR; fit_astrometry converts to ICRS
    obj, _ = _sep_sources(image, 5.0)
    cat = Table.read(folder / "spitzer_example_catalog_icrs.derived.csv")
    ref_flux = 10 ** (-0.4 * (np.asarray(cat["mag4_5"], float) - 31.4))
    ny, nx = image.shape
    result = fit_astrometry(
        *_args(obj),
        np.asarray(cat["ra"], float),
        np.asarray(cat["dec"], float),
        ref_flux,
        initial_wcs=header_wcs,
        bbox=(0, 0, nx - 1, ny - 1),
    )
    scale = proj_plane_pixel_scales(result.wcs).mean() * 3600
    assert scale == pytest.approx(1.2, rel=0.01)
    assert len(result.matches) >= 200
    assert result.offset_median / scale < 0.6
    assert result.wcs.wcs.radesys == "ICRS"


@requires_real_data
def test_real_microobs_recovery_without_wcs():
    folder = REAL / "microobs-hatp32"
    with fits.open(folder / "HATP-32171220013343.fits") as hdul:
        image, h = hdul[0].data.astype(np.float64), hdul[0].header
    obj, back = _sep_sources(image, 5.0)
    raw_peak = obj["peak"] + back[obj["y"].astype(int), obj["x"].astype(int)]
    unsaturated = raw_peak < 0.9 * 4095
    cat = Table.read(folder / "gaia_dr3_g10_hatp32_r1.5deg.csv")
    ref_flux = 10 ** (-0.4 * (np.asarray(cat["phot_g_mean_mag"], float) - 31.4))
    hint = PointingHint(h["RA"], h["DEC"], h["IM_SCALE"])
    ny, nx = image.shape
    solved = WCS(fits.Header.fromtextfile(folder / "HATP-32171220013343.derived_wcs.hdr"))
    centre = solved.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
    ref_scale = proj_plane_pixel_scales(solved).mean()
    refs = (np.asarray(cat["ra"], float), np.asarray(cat["dec"], float), ref_flux)
    n_matches = {}
    for name, keep in (("unsaturated", unsaturated), ("all", np.ones(len(obj), bool))):
        result = fit_astrometry(
            *(a[keep] for a in _args(obj)),
            *refs,
            initial_wcs=None,
            bbox=(0, 0, nx - 1, ny - 1),
            pointing_hint=hint,
        )
        got = result.wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
        offset = (
            np.hypot((got[0] - centre[0]) * np.cos(np.radians(centre[1])), got[1] - centre[1])
            * 3600
        )
        assert result.used_recovery
        assert offset < 10.0
        assert proj_plane_pixel_scales(result.wcs).mean() == pytest.approx(ref_scale, rel=0.02)
        assert np.linalg.det(result.wcs.wcs.cd) > 0  # mirrored frame
        n_matches[name] = len(result.matches)
    # 15 of the 21 Gaia stars on the chip are saturated: 6 usable ones remain.
    assert n_matches["unsaturated"] >= 6
    assert n_matches["all"] >= 15


@requires_real_data
def test_real_decam_tpv():
    folder = REAL / "decam-legacypipe-n6"
    with fits.open(folder / "c4d_171113_060340_ooi_r_ls9.N6.fits") as hdul:
        image, header_wcs = hdul[1].data.astype(np.float64), WCS(hdul[1].header)
    obj, _ = _sep_sources(image, 3.0)
    gaia = vstack([Table.read(folder / f"gaia-dr2-chunk-{c}.fits") for c in ("05483", "05611")])
    ref_flux = 10 ** (-0.4 * (np.asarray(gaia["phot_g_mean_mag"], float) - 31.4))
    ny, nx = image.shape
    result = fit_astrometry(
        *_args(obj),
        np.asarray(gaia["ra"], float),
        np.asarray(gaia["dec"], float),
        ref_flux,
        initial_wcs=header_wcs,
        bbox=(0, 0, nx - 1, ny - 1),
    )
    assert len(result.matches) >= 6
    assert np.max(result.matches["distance"]) / 0.262 < 1.0
    check_astrometry(result)
