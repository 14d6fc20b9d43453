"""Exposure FITS reading of single-HDU files (gain, weight and DQ companions, HDU
choice, dates) and of invalid input.
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from exposure_fits import make_exposure, write_afw

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Detector
from promptcal.io import read_exposure, write_exposure

# ---------------------------------------------------------------- single-HDU layout


def test_single_hdu_big_endian_gain_variance_and_saturation(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.uniform(-50, 60000, (40, 50)).astype(">f4")
    header = fits.Header(
        [
            ("GAIN", 2.0),
            ("RDNOISE", 5.0),
            ("SATURATE", 50000.0),
            ("EXPTIME", 30.0),
            ("DATE-OBS", "2020-01-02T03:04:05.5"),
            ("EXPNUM", 42),
            ("FILTER", "g DECam"),
            ("RA", 10.5),
            ("DEC", -5.25),
            ("OBS-LAT", -30.0),
            ("OBS-LONG", -70.0),
            ("OBS-ELEV", 2000.0),
            ("ROTPA", 12.5),
            ("CCDNUM", 7),
            ("CCDNAME", "S7"),
            ("PSF_FWHM", 4),
            ("OBSERVER", "me"),
        ]
    )
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "be.fits")
    exposure = read_exposure(tmp_path / "be.fits")
    assert exposure.image.dtype == np.float32 and exposure.image.dtype.isnative
    assert exposure.image.flags.c_contiguous
    np.testing.assert_array_equal(exposure.image, data.astype(np.float32))
    expected = (np.maximum(data.astype(np.float64), 0) / 2.0 + (5.0 / 2.0) ** 2).astype(np.float32)
    np.testing.assert_array_equal(exposure.variance, expected)
    np.testing.assert_array_equal(exposure.mask.is_set("SAT"), data >= 50000.0)
    assert exposure.mask.is_set("SAT").sum() > 0
    assert exposure.wcs is None and exposure.xy0 == (0, 0)
    info = exposure.visit_info
    assert info.exposure_id == 42 and info.exposure_time == 30.0
    assert abs((info.date - Time("2020-01-02T03:04:20.5", scale="utc")).to_value(u.s)) < 1e-6
    assert info.boresight_ra_dec == (10.5, -5.25) and info.rotation_angle == 12.5
    assert info.observatory.lat.to_value(u.deg) == pytest.approx(-30.0)
    assert info.observatory.lon.to_value(u.deg) == pytest.approx(-70.0)
    assert info.observatory.height.to_value(u.m) == pytest.approx(2000.0)
    assert exposure.band == "g"
    assert exposure.detector == Detector(
        id=7, name="S7", gain=2.0, read_noise=5.0, saturation=50000.0
    )
    assert exposure.metadata["PSF_FWHM"] == 4.0 and isinstance(exposure.metadata["PSF_FWHM"], float)
    assert exposure.metadata["OBSERVER"] == "me"
    assert exposure.metadata["FILTER"] == "g DECam"  # the full filter name is kept
    for used in ("GAIN", "EXPTIME", "DATE-OBS", "EXPNUM", "CCDNUM", "RA"):
        assert used not in exposure.metadata
    # Arguments win over the header.
    override = read_exposure(
        tmp_path / "be.fits", gain=4.0, read_noise=0.0, saturation=1e9, band="i"
    )
    np.testing.assert_array_equal(
        override.variance, (np.maximum(data.astype(np.float64), 0) / 4.0).astype(np.float32)
    )
    assert not override.mask.is_set("SAT").any() and override.band == "i"


def test_single_hdu_without_gain_uses_measured_sky_noise(tmp_path, caplog):
    # Without weight, gain argument or GAIN card the variance is the measured sky noise.
    rng = np.random.default_rng(5)
    data = 100.0 + 0.01 * np.arange(120)[None, :] + rng.normal(0, 7.0, (100, 120))
    data[40:45, 50:55] += 5000.0  # a bright source must not inflate the estimate
    fits.PrimaryHDU(data.astype(np.float32)).writeto(tmp_path / "plain.fits")
    with caplog.at_level(logging.WARNING, logger="promptcal.io.fits_single"):
        exposure = read_exposure(tmp_path / "plain.fits")
    assert "no weight, gain given or GAIN card" in caplog.text
    sigma = np.sqrt(exposure.variance)
    assert np.ptp(sigma) == 0.0
    assert abs(sigma[0, 0] / 7.0 - 1.0) < 0.05
    assert exposure.detector.gain == 1.0 and exposure.detector.read_noise == 0.0


def test_single_hdu_compressed_with_weight_and_dq(tmp_path):
    rng = np.random.default_rng(11)
    image = rng.normal(100, 5, (30, 40)).astype(np.float32)
    weight = rng.uniform(0.5, 2.0, image.shape).astype(np.float32)
    weight[3:6, 10:12] = 0.0
    weight[20, 20] = np.nan
    dq = np.zeros(image.shape, np.int32)
    dq[7, 8] = 4
    dq[9, 1] = 1
    image[25, 30] = np.nan
    header = fits.Header([("TPV_TEST", 1)])
    fits.HDUList(
        [
            fits.PrimaryHDU(header=fits.Header([("EXPTIME", 10.0)])),
            fits.CompImageHDU(
                image, header=header, name="CCD1", compression_type="GZIP_2", quantize_level=0.0
            ),
        ]
    ).writeto(tmp_path / "img.fits")
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.zeros((2, 2)), name="OTHER"),
            fits.CompImageHDU(weight, name="CCD1", compression_type="GZIP_2", quantize_level=0.0),
        ]
    ).writeto(tmp_path / "wt.fits")
    fits.PrimaryHDU(dq).writeto(tmp_path / "dq.fits")
    exposure = read_exposure(
        tmp_path / "img.fits", weight_path=tmp_path / "wt.fits", mask_path=tmp_path / "dq.fits"
    )
    no_data = ~(weight > 0) | np.isnan(image)
    np.testing.assert_array_equal(exposure.mask.is_set("NO_DATA"), no_data)
    np.testing.assert_array_equal(exposure.mask.is_set("BAD"), dq != 0)
    good = ~no_data
    np.testing.assert_allclose(exposure.variance[good], 1.0 / weight[good], rtol=1e-7)
    assert np.all(np.isposinf(exposure.variance[no_data])) and np.all(exposure.image[no_data] == 0)
    np.testing.assert_array_equal(exposure.image[good], image[good])
    assert exposure.visit_info.exposure_time == 10.0  # primary cards are merged
    assert exposure.metadata["TPV_TEST"] == 1


def test_select_hdu_explicitly(tmp_path):
    fits.HDUList(
        [
            fits.PrimaryHDU(np.zeros((3, 3), np.float32)),
            fits.ImageHDU(np.full((4, 5), 9.0, np.float32), name="SCI"),
        ]
    ).writeto(tmp_path / "two.fits")
    assert read_exposure(tmp_path / "two.fits", hdu="SCI", gain=1.0).image.shape == (4, 5)
    assert read_exposure(tmp_path / "two.fits", gain=1.0).image.shape == (3, 3)
    with pytest.raises(InvalidInputError, match="no HDU 'NOPE'"):
        read_exposure(tmp_path / "two.fits", hdu="NOPE")


def test_date_cards(tmp_path):
    def date_of(cards):
        path = tmp_path / f"d{len(list(tmp_path.iterdir()))}.fits"
        fits.PrimaryHDU(np.ones((2, 2), np.float32), header=fits.Header(cards)).writeto(path)
        return read_exposure(path, gain=1.0, read_noise=1.0).visit_info.date

    avg = date_of(
        [
            ("DATE-AVG", "2021-05-06T07:08:09.5"),
            ("DATE-OBS", "2000-01-01T00:00:00"),
            ("EXPTIME", 100.0),
            ("TIMESYS", "TAI"),
        ]
    )
    assert avg.scale == "tai" and avg.isot == "2021-05-06T07:08:09.500"
    mjd = date_of([("MJD-OBS", 59000.5), ("EXPTIME", 86400.0)])
    assert mjd.mjd == pytest.approx(59001.0, abs=1e-9)
    # MicroObservatory style: local time with a UTC offset.
    offset = date_of([("DATE-OBS", "2017-12-19T18:33:43.317-0700"), ("EXPTIME", 60.0)])
    assert abs((offset - Time("2017-12-20T01:34:13.317", scale="utc")).to_value(u.s)) < 1e-6
    assert date_of([("EXPTIME", 1.0)]) is None


# ---------------------------------------------------------------- errors


def test_truncated_file_is_invalid(tmp_path):
    write_exposure(make_exposure(shape=(100, 120)), tmp_path / "full.fits")
    data = (tmp_path / "full.fits").read_bytes()
    for cut in (len(data) - 5000, 6000, 1000):
        (tmp_path / "cut.fits").write_bytes(data[:cut])
        with pytest.raises(InvalidInputError) as info:
            read_exposure(tmp_path / "cut.fits")
        assert "\n" not in str(info.value) and "cut.fits" in str(info.value)


def test_not_fits_is_invalid(tmp_path):
    (tmp_path / "junk.fits").write_bytes(b"this is not a FITS file\n" * 200)
    with pytest.raises(InvalidInputError, match="not a readable FITS file"):
        read_exposure(tmp_path / "junk.fits")
    with pytest.raises(InvalidInputError, match="no such file"):
        read_exposure(tmp_path / "missing.fits")


def test_missing_variance_is_invalid(tmp_path):
    image = np.ones((5, 5), np.float32)
    write_afw(tmp_path / "novar.fits", image, None, np.zeros((5, 5), np.int32))
    with pytest.raises(InvalidInputError, match="lacks the VARIANCE HDU"):
        read_exposure(tmp_path / "novar.fits")


def test_all_nan_image_is_invalid(tmp_path):
    fits.PrimaryHDU(np.full((6, 6), np.nan, np.float32)).writeto(tmp_path / "nan.fits")
    with pytest.raises(InvalidInputError, match="image has no finite pixels"):
        read_exposure(tmp_path / "nan.fits", gain=1.0)
    nan = np.full((6, 6), np.nan, np.float32)
    write_afw(tmp_path / "nan_afw.fits", nan, np.ones_like(nan), np.zeros((6, 6), np.int32))
    with pytest.raises(InvalidInputError, match="image has no finite pixels"):
        read_exposure(tmp_path / "nan_afw.fits")


def test_no_2d_data_is_invalid(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    with pytest.raises(InvalidInputError, match="no HDU with 2-D image data"):
        read_exposure(tmp_path / "table.fits")
    fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)).writeto(tmp_path / "cube.fits")
    with pytest.raises(InvalidInputError, match="no 2-D image data"):
        read_exposure(tmp_path / "cube.fits", hdu=0)


def test_bad_companion_files_are_invalid(tmp_path):
    fits.PrimaryHDU(np.ones((4, 4), np.float32)).writeto(tmp_path / "i.fits")
    fits.PrimaryHDU(np.ones((4, 5), np.float32)).writeto(tmp_path / "w.fits")
    with pytest.raises(InvalidInputError, match=r"weight shape \(4, 5\)"):
        read_exposure(tmp_path / "i.fits", weight_path=tmp_path / "w.fits")
    write_exposure(make_exposure(shape=(4, 4)), tmp_path / "afw.fits")
    with pytest.raises(InvalidInputError, match="single-image files only"):
        read_exposure(tmp_path / "afw.fits", weight_path=tmp_path / "w.fits")
    with pytest.raises(InvalidInputError, match="gain must be > 0"):
        read_exposure(tmp_path / "i.fits", gain=0.0)
