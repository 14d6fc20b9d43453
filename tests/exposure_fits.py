"""Exposures and afw-layout files of known content for the FITS I/O tests (tests/io)."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, Sip

from promptcal.core.exposure import Detector, Exposure, Mask, PhotoCalib, VisitInfo


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
