"""Snap combination: sums, mask OR, visit-info merge and the error cases."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.time import Time
from astropy.wcs import WCS

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Detector, Exposure, Mask, PhotoCalib, VisitInfo
from promptcal.pipeline.snaps import combine_snaps


def snap(seed: int, *, date: str | None, exposure_id: int, xy0=(10, 20)) -> Exposure:
    rng = np.random.default_rng(seed)
    shape = (12, 17)
    mask = Mask(np.zeros(shape, np.int32))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0 + seed, -5.0]
    wcs.wcs.crpix = [8.0, 6.0]
    wcs.wcs.cdelt = [-5e-5, 5e-5]
    return Exposure(
        rng.normal(100.0, 3.0, shape).astype(np.float32),
        rng.uniform(9.0, 11.0, shape).astype(np.float32),
        mask,
        xy0=xy0,
        wcs=wcs,
        photo_calib=PhotoCalib(1.5 + seed),
        visit_info=VisitInfo(
            exposure_id=exposure_id,
            exposure_time=15.0,
            date=None if date is None else Time(date, scale="tai"),
            boresight_ra_dec=(10.0 + seed, -5.0),
        ),
        detector=Detector(id=seed, name=f"D{seed}", gain=1.0 + seed),
        band="r",
        metadata={"SNAP": seed},
    )


def test_one_snap_is_returned_as_is():
    single = snap(0, date="2024-01-01T00:00:00", exposure_id=1)
    assert combine_snaps([single]) is single


def test_two_snaps_are_summed():
    a = snap(0, date="2024-01-01T00:00:00", exposure_id=100)
    b = snap(1, date="2024-01-01T00:00:17", exposure_id=101)
    no_data = a.mask.bit("NO_DATA")
    a.mask.array[2, 3] |= no_data
    a.variance[2, 3] = np.inf
    b.mask.array[4, 5] |= no_data | a.mask.bit("CR")
    a.mask.array[4, 5] |= a.mask.bit("SAT")
    a.mask.add_plane("ONLY_A")
    b.mask.planes["ONLY_B"] = 25
    b.mask.array[0, 0] |= 1 << 25
    combined = combine_snaps([a, b])

    np.testing.assert_array_equal(combined.image, a.image + b.image)
    np.testing.assert_array_equal(combined.variance, a.variance + b.variance)
    assert np.isposinf(combined.variance[2, 3])
    np.testing.assert_array_equal(combined.mask.array, a.mask.array | b.mask.array)
    assert combined.mask.is_set("NO_DATA")[2, 3] and combined.mask.is_set("NO_DATA")[4, 5]
    assert combined.mask.is_set("NO_DATA").sum() == 2
    assert combined.mask.is_set("SAT")[4, 5] and combined.mask.is_set("CR")[4, 5]
    assert combined.mask.planes["ONLY_A"] == a.mask.planes["ONLY_A"]
    assert combined.mask.planes["ONLY_B"] == 25 and combined.mask.is_set("ONLY_B")[0, 0]

    info = combined.visit_info
    assert info.exposure_time == 30.0 and info.exposure_id == 100
    assert abs((info.date - Time("2024-01-01T00:00:08.5", scale="tai")).to_value(u.s)) < 1e-9
    assert info.boresight_ra_dec == a.visit_info.boresight_ra_dec
    assert combined.detector == a.detector and combined.band == "r"
    assert combined.metadata == {"SNAP": 0} and combined.photo_calib == a.photo_calib
    assert combined.xy0 == (10, 20)
    assert np.allclose(combined.wcs.wcs.crval, a.wcs.wcs.crval)
    # Results are new objects: the inputs are untouched.
    assert combined.image is not a.image and combined.metadata is not a.metadata
    combined.metadata["X"] = 1
    assert "X" not in a.metadata


def test_single_known_date_is_kept():
    a = snap(0, date=None, exposure_id=1)
    b = snap(1, date="2024-01-01T00:00:17", exposure_id=2)
    assert combine_snaps([a, b]).visit_info.date == b.visit_info.date


@pytest.mark.parametrize("count", [0, 3])
def test_wrong_number_of_snaps(count):
    snaps = [snap(i, date=None, exposure_id=i) for i in range(count)]
    with pytest.raises(InvalidInputError, match=f"expected 1 or 2 snaps, got {count}"):
        combine_snaps(snaps)


def test_mismatched_snaps_are_invalid():
    a = snap(0, date=None, exposure_id=1)
    b = snap(1, date=None, exposure_id=2, xy0=(11, 20))
    with pytest.raises(InvalidInputError, match="origins differ"):
        combine_snaps([a, b])
    small = Exposure.from_image(np.ones((5, 5), np.float32), xy0=(10, 20))
    with pytest.raises(InvalidInputError, match="shapes differ"):
        combine_snaps([a, small])
    other_band = snap(2, date=None, exposure_id=3)
    other_band.band = "i"
    with pytest.raises(InvalidInputError, match="bands differ"):
        combine_snaps([a, other_band])


def test_conflicting_mask_planes_are_invalid():
    a = snap(0, date=None, exposure_id=1)
    b = snap(1, date=None, exposure_id=2)
    b.mask.planes["CR"] = 30
    with pytest.raises(InvalidInputError, match="plane CR is bit 3 in snap 0 but bit 30"):
        combine_snaps([a, b])
    c = snap(2, date=None, exposure_id=3)
    c.mask.planes["STREAK"] = a.mask.planes["BAD"]
    with pytest.raises(InvalidInputError, match="mask bit 0 is plane BAD in snap 0 but STREAK"):
        combine_snaps([a, c])
