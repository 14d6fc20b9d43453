"""Exposure FITS reading of the real datasets (Spitzer, MicroObservatory, DECam)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from exposure_fits import assert_exposures_equal, sky
from realdata import REAL, requires_real_data

from promptcal.io import read_exposure, write_exposure

DECAM = REAL / "decam-legacypipe-n6"
DECAM_IMAGE = DECAM / "c4d_171113_060340_ooi_r_ls9.N6.fits"
DECAM_WEIGHT = DECAM / "c4d_171113_060340_oow_r_ls9.N6.fits"
DECAM_DQ = DECAM / "c4d_171113_060340_ood_r_ls9.N6.fits"
MICROOBS = REAL / "microobs-hatp32" / "HATP-32171220013343.fits"
SPITZER = REAL / "spitzer-glimpse-irac2" / "spitzer_example_image.fits"


@requires_real_data
def test_real_spitzer_float32_car_wcs():
    exposure = read_exposure(SPITZER, read_noise=0.0)
    with fits.open(SPITZER) as hdul:
        raw = hdul[0].data
        reference = WCS(hdul[0].header)
    assert raw.dtype.byteorder == ">" and exposure.image.dtype.isnative
    assert exposure.image.shape == (513, 1025)
    finite = np.isfinite(raw)
    assert 0 < (~finite).sum() < raw.size // 10  # the mosaic has blank (NaN) pixels
    np.testing.assert_array_equal(exposure.image[finite], raw[finite].astype(np.float32))
    np.testing.assert_array_equal(exposure.mask.is_set("NO_DATA"), ~finite)
    assert np.all(exposure.image[~finite] == 0) and np.all(np.isposinf(exposure.variance[~finite]))
    x = np.array([0.0, 512.0, 1024.0])
    y = np.array([0.0, 256.0, 512.0])
    np.testing.assert_allclose(sky(exposure.wcs, x, y), sky(reference, x, y), atol=1e-12)
    centre = exposure.wcs.pixel_to_world(512, 256)
    assert centre.frame.name == "galactic"
    assert abs(centre.l.deg - 18.3) < 0.1 and abs(centre.b.deg - 0.2) < 0.1  # PROVENANCE.md
    assert exposure.detector.gain == 3.7 and exposure.metadata["BUNIT"] == "MJy/sr"
    assert exposure.visit_info.exposure_time == 1.2


@requires_real_data
def test_real_microobs_int16_no_wcs():
    exposure = read_exposure(MICROOBS, gain=1.4, read_noise=9.0, saturation=4095)
    with fits.open(MICROOBS) as hdul:
        raw = hdul[0].data.astype(np.float64)
    assert exposure.wcs is None and exposure.image.shape == (500, 650)
    np.testing.assert_array_equal(exposure.image, raw.astype(np.float32))
    expected = (np.maximum(raw, 0) / 1.4 + (9.0 / 1.4) ** 2).astype(np.float32)
    np.testing.assert_array_equal(exposure.variance, expected)
    np.testing.assert_array_equal(exposure.mask.is_set("SAT"), raw >= 4095)
    assert exposure.band == "Clear" and exposure.visit_info.exposure_time == 60.0
    assert exposure.visit_info.boresight_ra_dec == (31.312099, 46.769087)
    # DATE-OBS is local time at UTC-7; mid-exposure = UT start + 30 s.
    mid = Time("2017-12-20T01:34:13.317", scale="utc")
    assert abs((exposure.visit_info.date - mid).to_value(u.s)) < 1e-6


@requires_real_data
def test_real_decam_tpv_weight_dq(tmp_path):
    exposure = read_exposure(DECAM_IMAGE, weight_path=DECAM_WEIGHT, mask_path=DECAM_DQ)
    with fits.open(DECAM_WEIGHT) as hdul:
        weight = hdul[1].data.astype(np.float64)
    with fits.open(DECAM_DQ) as hdul:
        dq = hdul[1].data
    assert exposure.image.shape == (375, 280)
    np.testing.assert_array_equal(exposure.mask.is_set("NO_DATA"), ~(weight > 0))
    np.testing.assert_array_equal(exposure.mask.is_set("BAD"), dq != 0)
    np.testing.assert_allclose(exposure.variance, 1.0 / weight, rtol=1e-7)
    ra, dec = exposure.wcs.all_pix2world(279 / 2, 374 / 2, 0)
    assert abs(ra - 121.0262) < 2e-4 and abs(dec - 5.1135) < 2e-4  # PROVENANCE.md
    # Pixel scale from the TPV solution: 0.262"/px.
    ra1, dec1 = exposure.wcs.all_pix2world(279 / 2, 374 / 2 + 100, 0)
    step = np.hypot((ra1 - ra) * np.cos(np.deg2rad(dec)), dec1 - dec) * 3600 / 100
    assert step == pytest.approx(0.262, abs=0.003)
    assert exposure.band == "r" and exposure.visit_info.exposure_id == 695765
    assert exposure.detector.id == 37 and exposure.detector.saturation == pytest.approx(49912.81)
    start = Time("2017-11-13T06:03:40.037227", scale="utc")
    assert abs((exposure.visit_info.date - start).to_value(u.s) - 22.5) < 1e-6
    # TPV survives write -> read; with a non-zero origin too.
    write_exposure(exposure, tmp_path / "calexp.fits", compress=True)
    back = read_exposure(tmp_path / "calexp.fits")
    with fits.open(tmp_path / "calexp.fits") as hdul:
        assert hdul["IMAGE"].header["CTYPE1"] == "RA---TPV"
    assert_exposures_equal(exposure, back, wcs_tol_deg=1e-9)
    exposure.xy0 = (2048, 1024)
    exposure.wcs.wcs.crpix += [2048, 1024]
    exposure.wcs.wcs.set()
    write_exposure(exposure, tmp_path / "shifted.fits")
    shifted = read_exposure(tmp_path / "shifted.fits")
    assert shifted.xy0 == (2048, 1024)
    got = shifted.wcs.all_pix2world(2048 + 279 / 2, 1024 + 374 / 2, 0)
    assert np.allclose(got, (ra, dec), rtol=0, atol=1e-9)


@requires_real_data
def test_real_decam_synthetic_zero_weights(tmp_path):
    """The real weight map has no zeros; zero a block of a copy to check NO_DATA."""
    with fits.open(DECAM_WEIGHT) as hdul:
        weight = hdul[1].data.copy()
        header = hdul[1].header.copy()
    weight[100:110, 50:60] = 0.0
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.CompImageHDU(weight, header=header, compression_type="GZIP_2", quantize_level=0.0),
        ]
    ).writeto(tmp_path / "w.fits")
    exposure = read_exposure(DECAM_IMAGE, weight_path=tmp_path / "w.fits")
    no_data = exposure.mask.is_set("NO_DATA")
    assert no_data.sum() == 100 and no_data[100:110, 50:60].all()
    assert np.all(exposure.image[no_data] == 0) and np.all(np.isposinf(exposure.variance[no_data]))
