"""Exposure FITS I/O: both layouts, round trips, error cases and the real datasets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import EarthLocation
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, Sip
from realdata import REAL, requires_real_data

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Detector, Exposure, Mask, PhotoCalib, VisitInfo
from promptcal.io import build_hdulist, read_exposure, read_extra_hdus, write_exposure

DECAM = REAL / "decam-legacypipe-n6"
DECAM_IMAGE = DECAM / "c4d_171113_060340_ooi_r_ls9.N6.fits"
DECAM_WEIGHT = DECAM / "c4d_171113_060340_oow_r_ls9.N6.fits"
DECAM_DQ = DECAM / "c4d_171113_060340_ood_r_ls9.N6.fits"
MICROOBS = REAL / "microobs-hatp32" / "HATP-32171220013343.fits"
SPITZER = REAL / "spitzer-glimpse-irac2" / "spitzer_example_image.fits"


# ---------------------------------------------------------------- helpers


def sip_wcs(crpix: tuple[float, float]) -> WCS:
    """A TAN-SIP WCS with distortion of a few pixels at the corners."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crval = [150.123456789012, 2.2345678901234]
    wcs.wcs.crpix = list(crpix)
    scale = 0.2 / 3600.0
    theta = np.deg2rad(17.0)
    wcs.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2], a[3, 0] = 2.1e-6, -1.3e-6, 7.7e-7, 3.0e-10
    b[0, 2], b[1, 1], b[2, 0], b[1, 2] = 1.9e-6, 9.1e-7, -4.4e-7, -2.0e-10
    wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def make_exposure(shape=(64, 96), xy0=(1234, 567), seed=3) -> Exposure:
    """Synthetic exposure with every field set and a non-default mask plane layout."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 30.0, shape).astype(np.float32)
    variance = rng.uniform(800.0, 1200.0, shape).astype(np.float32)
    planes = {"SAT": 0, "BAD": 3, "CR": 1, "CUSTOM_PLANE": 12, "NO_DATA": 20}
    mask = Mask(rng.integers(0, 1 << 21, shape).astype(np.int32), planes)
    centre = (xy0[0] + shape[1] / 2.0, xy0[1] + shape[0] / 2.0)
    visit = VisitInfo(
        exposure_id=2024031500123,
        exposure_time=15.0,
        date=Time("2024-03-15T03:04:05.123456789", scale="tai"),
        observatory=EarthLocation.from_geodetic(-70.7494 * u.deg, -30.2444 * u.deg, 2663 * u.m),
        boresight_ra_dec=(150.1, 2.2),
        rotation_angle=93.25,
    )
    metadata = {
        "OBJECT": "COSMOS",
        "AIRMASS": 1.234,
        "NCOMBINE": 2,
        "ISGOOD": True,
        "BUNIT": "nJy",
        "PSF_FWHM": 3.25,
        "A_LONG_METADATA_KEY": 7,
        "LONGTEXT": "x" * 150,
    }
    return Exposure(
        image,
        variance,
        mask,
        xy0=xy0,
        wcs=sip_wcs(centre),
        photo_calib=PhotoCalib(0.0573123456789, 0.000123),
        visit_info=visit,
        detector=Detector(id=94, name="R22_S11", gain=1.61, read_noise=6.2, saturation=98000.0),
        band="r",
        metadata=metadata,
    )


def sky(wcs: WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array(wcs.all_pix2world(x, y, 0))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_exposures_equal(a: Exposure, b: Exposure, wcs_tol_deg: float = 1e-9) -> None:
    assert same_bits(a.image, b.image)
    assert same_bits(a.variance, b.variance)
    assert same_bits(a.mask.array, b.mask.array)
    assert a.mask.planes == b.mask.planes
    assert a.xy0 == b.xy0
    assert a.band == b.band
    assert a.detector == b.detector
    assert a.photo_calib == b.photo_calib
    va, vb = a.visit_info, b.visit_info
    assert (va.exposure_id, va.exposure_time) == (vb.exposure_id, vb.exposure_time)
    assert va.boresight_ra_dec == vb.boresight_ra_dec
    assert va.rotation_angle == vb.rotation_angle
    assert va.date.scale == vb.date.scale
    assert abs((va.date - vb.date).to_value(u.s)) < 1e-9
    assert np.allclose(
        u.Quantity(va.observatory.geocentric).to_value(u.m),
        u.Quantity(vb.observatory.geocentric).to_value(u.m),
        rtol=0,
        atol=1e-6,
    )
    rng = np.random.default_rng(0)
    x = a.xy0[0] + rng.uniform(-50, a.width + 50, 500)
    y = a.xy0[1] + rng.uniform(-50, a.height + 50, 500)
    assert np.abs(sky(a.wcs, x, y) - sky(b.wcs, x, y)).max() < wcs_tol_deg


def write_afw(path: Path, image, variance, mask, *, image_cards=(), mask_cards=(), primary=()):
    """An afw-layout file written directly with astropy (independent of write_exposure)."""
    hdus = [fits.PrimaryHDU(header=fits.Header(list(primary)))]
    hdus.append(fits.ImageHDU(image, header=fits.Header(list(image_cards)), name="IMAGE"))
    if mask is not None:
        hdus.append(fits.ImageHDU(mask, header=fits.Header(list(mask_cards)), name="MASK"))
    if variance is not None:
        hdus.append(fits.ImageHDU(variance, name="VARIANCE"))
    fits.HDUList(hdus).writeto(path)


# ---------------------------------------------------------------- afw layout round trips


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_lossless(tmp_path, compress):
    original = make_exposure()
    original.image[5, 7] = np.nan  # becomes NO_DATA on the first read
    write_exposure(original, tmp_path / "a.fits", compress=compress)
    first = read_exposure(tmp_path / "a.fits")
    write_exposure(first, tmp_path / "b.fits", compress=compress)
    second = read_exposure(tmp_path / "b.fits")
    assert_exposures_equal(first, second)
    assert first.metadata == second.metadata
    # First read against the in-memory original (known truth).
    assert first.image[5, 7] == 0.0 and np.isinf(first.variance[5, 7])
    assert first.mask.array[5, 7] & (1 << 20)  # NO_DATA kept its unusual bit 20
    keep = np.ones(original.image.shape, bool)
    keep[5, 7] = False
    assert np.array_equal(first.image[keep], original.image[keep])
    assert same_bits(first.variance[keep], original.variance[keep])
    np.testing.assert_array_equal(first.mask.array[keep], original.mask.array[keep])
    original.image[5, 7] = 0.0
    original.variance[5, 7] = np.inf
    original.mask.array[5, 7] |= 1 << 20
    assert_exposures_equal(original, first)
    for key, value in original.metadata.items():
        assert first.metadata[key] == value
    assert isinstance(first.metadata["PSF_FWHM"], float)
    with fits.open(tmp_path / "a.fits") as hdul:
        kinds = [type(h).__name__ for h in hdul[1:4]]
        assert [h.name for h in hdul[1:4]] == ["IMAGE", "MASK", "VARIANCE"]
        image_header = hdul["IMAGE"].header
        assert image_header["BUNIT"] == "nJy"
        assert (image_header["LTV1"], image_header["LTV2"]) == (-1234, -567)
        assert (image_header["CRVAL1A"], image_header["CRVAL2A"]) == (1234, 567)
        assert image_header["CTYPE1A"] == "LINEAR"
        assert image_header["CTYPE1"] == "RA---TAN-SIP"
        # The file's WCS is relative to the array: CRPIX moved by -xy0.
        assert image_header["CRPIX1"] == pytest.approx(original.wcs.wcs.crpix[0] - 1234)
        assert hdul["MASK"].header["MP_CUSTOM_PLANE"] == 12
        assert hdul[0].header["PHOTOCAL"] == pytest.approx(0.0573123456789, rel=1e-14)
        assert hdul[0].header["EXPID"] == 2024031500123
    expected = "CompImageHDU" if compress else "ImageHDU"
    assert kinds == [expected] * 3


def test_compression_is_lossless_and_smaller(tmp_path):
    exposure = make_exposure(shape=(200, 300))
    # Quantised-looking data compress well; noise bits must survive exactly.
    exposure.image[:] = np.round(exposure.image, 1)
    write_exposure(exposure, tmp_path / "plain.fits")
    write_exposure(exposure, tmp_path / "packed.fits", compress=True)
    packed = read_exposure(tmp_path / "packed.fits")
    assert same_bits(packed.image, exposure.image)
    assert same_bits(packed.variance, exposure.variance)
    assert same_bits(packed.mask.array, exposure.mask.array)
    assert os.path.getsize(tmp_path / "packed.fits") < os.path.getsize(tmp_path / "plain.fits")


def test_mask_planes_with_unusual_bits(tmp_path):
    shape = (10, 12)
    mask = np.zeros(shape, np.int32)
    mask[0, 0] = 1 << 0  # SAT in this file
    mask[1, 1] = 1 << 5  # BAD in this file (DETECTED in afw's default order)
    mask[2, 2] = 1 << 13  # an instrument-specific plane
    cards = [("MP_SAT", 0), ("MP_BAD", 5), ("MP_INTRP", 2), ("HIERARCH MP_XTALK_GHOST", 13)]
    image = np.ones(shape, np.float32)
    write_afw(tmp_path / "m.fits", image, image, mask, mask_cards=cards)
    exposure = read_exposure(tmp_path / "m.fits")
    planes = exposure.mask.planes
    assert (planes["SAT"], planes["BAD"], planes["XTALK_GHOST"], planes["INTRP"]) == (0, 5, 13, 2)
    assert exposure.mask.is_set("BAD").sum() == 1 and exposure.mask.is_set("BAD")[1, 1]
    assert exposure.mask.is_set("SAT")[0, 0] and exposure.mask.is_set("XTALK_GHOST")[2, 2]
    # Default planes missing from the file get bits that collide with nothing declared.
    assert len(set(planes.values())) == len(planes)
    assert not exposure.mask.is_set("DETECTED").any()


@pytest.mark.parametrize(
    ("cards", "xy0"),
    [
        ([("LTV1", -100.0), ("LTV2", -250.0)], (100, 250)),
        ([("CRVAL1A", 40), ("CRVAL2A", -7), ("CRPIX1A", 1.0), ("CRPIX2A", 1.0)], (40, -7)),
        ([("CTYPE1A", "LINEAR"), ("CRVAL1A", 10), ("CRVAL2A", 20)], (10, 20)),
    ],
)
def test_origin_cards_and_wcs_shift(tmp_path, cards, xy0):
    local = sip_wcs((20.0, 15.0))  # relative to the array, as in the file
    header = local.to_header(relax=True)
    for key, value in cards:
        header[key] = value
    image = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    write_afw(
        tmp_path / "o.fits",
        image,
        image + 1,
        np.zeros_like(image, np.int32),
        image_cards=header.cards,
    )
    exposure = read_exposure(tmp_path / "o.fits")
    assert exposure.xy0 == xy0
    i, j = np.meshgrid(np.arange(0, 40, 7.0), np.arange(0, 30, 7.0))
    # Array pixel (i, j) is parent pixel (i + x0, j + y0): same sky either way.
    expected = sky(WCS(header), i.ravel(), j.ravel())
    got = sky(exposure.wcs, i.ravel() + xy0[0], j.ravel() + xy0[1])
    assert np.abs(got - expected).max() < 1e-12


def test_nan_and_inf_pixels_become_no_data(tmp_path):
    image = np.full((8, 9), 5.0, np.float32)
    variance = np.full((8, 9), 2.0, np.float32)
    image[1, 2] = np.nan
    image[3, 4] = -np.inf
    variance[6, 7] = np.nan
    variance[0, 8] = np.inf
    write_afw(
        tmp_path / "n.fits",
        image,
        variance,
        np.zeros((8, 9), np.int32),
        mask_cards=[("HIERARCH MP_NO_DATA", 8)],
    )
    exposure = read_exposure(tmp_path / "n.fits")
    bad = np.zeros((8, 9), bool)
    bad[1, 2] = bad[3, 4] = bad[6, 7] = bad[0, 8] = True
    np.testing.assert_array_equal(exposure.mask.is_set("NO_DATA"), bad)
    assert np.all(exposure.image[bad] == 0.0) and np.all(np.isposinf(exposure.variance[bad]))
    assert np.all(exposure.image[~bad] == 5.0) and np.all(exposure.variance[~bad] == 2.0)


def test_missing_mask_is_an_empty_mask(tmp_path, caplog):
    image = np.ones((5, 6), np.float32)
    write_afw(tmp_path / "nomask.fits", image, image, None)
    with caplog.at_level(logging.WARNING, logger="promptcal.io.fits_read"):
        exposure = read_exposure(tmp_path / "nomask.fits")
    assert not exposure.mask.array.any()
    assert "no MASK HDU" in caplog.text


def test_extra_hdus_round_trip(tmp_path):
    exposure = make_exposure(shape=(20, 30))
    psf = fits.BinTableHDU.from_columns(
        [fits.Column(name="coeff", format="D", array=np.array([1.0, 2.5, -3.0]))], name="PSF"
    )
    background = fits.ImageHDU(np.full((4, 5), 7.5, np.float32), name="BACKGROUND")
    write_exposure(exposure, tmp_path / "x.fits", extra_hdus=[psf, background])
    extras = read_extra_hdus(tmp_path / "x.fits")  # the file is closed on return
    assert list(extras) == ["PSF", "BACKGROUND"]
    np.testing.assert_array_equal(extras["PSF"].data["coeff"], [1.0, 2.5, -3.0])
    assert np.all(extras["BACKGROUND"].data == 7.5)
    # Extra HDUs do not disturb the planes.
    assert same_bits(read_exposure(tmp_path / "x.fits").image, exposure.image)


def test_write_is_atomic_and_overwrites(tmp_path):
    exposure = make_exposure(shape=(10, 10))
    target = tmp_path / "deep" / "dir" / "calexp.fits"
    write_exposure(exposure, target)
    exposure.image += 1.0
    write_exposure(exposure, target)  # replaces in place
    assert same_bits(read_exposure(target).image, exposure.image)
    before = target.read_bytes()
    clash = fits.ImageHDU(np.zeros((2, 2)), name="MASK")
    with pytest.raises(InvalidInputError, match="already used"):
        write_exposure(exposure, target, extra_hdus=[clash])
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["calexp.fits"]


@pytest.mark.parametrize("compress", [False, True])
def test_written_bytes_equal_astropys_own_writeto(tmp_path, compress):
    """The one-pass plane writer produces exactly the file astropy would."""
    exposure = make_exposure(shape=(37, 53))
    extras = [
        fits.ImageHDU(np.arange(12.0).reshape(3, 4), name="PSF"),
        fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0, 2.0])], name="T"),
        fits.ImageHDU(np.ones((2, 2), np.float32), name="BKGD0"),
    ]
    write_exposure(exposure, tmp_path / "ours.fits", extra_hdus=extras, compress=compress)
    build_hdulist(exposure, extra_hdus=extras, compress=compress).writeto(
        tmp_path / "astropy.fits", output_verify="exception"
    )
    assert (tmp_path / "ours.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()


def test_write_leaves_the_callers_planes_untouched(tmp_path):
    """The planes are converted to FITS byte order in copies: read-only arrays can be
    written, and another thread reading them meanwhile never sees swapped bytes."""
    exposure = make_exposure(shape=(12, 9))
    expected = exposure.image.copy()
    for plane in (exposure.image, exposure.variance, exposure.mask.array):
        plane.flags.writeable = False
    write_exposure(exposure, tmp_path / "x.fits", durable=False)
    assert exposure.image.dtype.isnative and same_bits(exposure.image, expected)
    back = read_exposure(tmp_path / "x.fits")
    assert same_bits(back.image, expected)
    assert same_bits(back.variance, exposure.variance)
    assert np.array_equal(back.mask.array, exposure.mask.array)


def test_unwritable_metadata_is_skipped(tmp_path, caplog):
    exposure = make_exposure(shape=(6, 6))
    exposure.metadata.update({"BADNAN": float("nan"), "ALIST": [1, 2], "lower": 3})
    with caplog.at_level(logging.WARNING, logger="promptcal.io.header"):
        write_exposure(exposure, tmp_path / "m.fits")
    metadata = read_exposure(tmp_path / "m.fits").metadata
    assert "BADNAN" not in metadata and "ALIST" not in metadata
    assert metadata["LOWER"] == 3  # keys are upper-cased
    assert "BADNAN" in caplog.text and "ALIST" in caplog.text


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
    with caplog.at_level(logging.WARNING, logger="promptcal.io.fits_read"):
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


# ---------------------------------------------------------------- real data


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
