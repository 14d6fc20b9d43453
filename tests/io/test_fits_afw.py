"""Exposure FITS I/O in the afw layout: lossless round trips, compression, mask planes,
origin cards, extra HDUs and byte-identical writing.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.hdu.compressed import _codecs as fits_codecs
from astropy.wcs import WCS
from exposure_fits import assert_exposures_equal, make_exposure, same_bits, sip_wcs, sky, write_afw

from promptcal.core.errors import InvalidInputError
from promptcal.io import build_hdulist, read_exposure, read_extra_hdus, write_exposure


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
def test_written_bytes_equal_astropys_own_writeto(tmp_path, compress, monkeypatch):
    """The one-pass plane writer produces exactly the file astropy would."""
    # Every gzipped tile carries the wall-clock second it was written (gzip MTIME):
    # pinned here so that two writes straddling a second boundary still compare equal.
    monkeypatch.setattr(fits_codecs, "gzip_compress", functools.partial(gzip.compress, mtime=0))
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
