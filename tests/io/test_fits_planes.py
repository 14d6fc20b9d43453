"""Plane conversion after reading: byte order and non-finite pixels."""

from __future__ import annotations

import numpy as np
import pytest

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Mask
from promptcal.io.fits_hdus import finalize_planes, to_native


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_big_endian_planes_are_swapped_in_place(dtype):
    values = (np.arange(-600, 600).reshape(30, 40) * 3.25).astype(dtype)
    disk = values.astype(np.dtype(dtype).newbyteorder(">"))  # as astropy reads it
    native = to_native(disk, dtype)
    assert native.dtype == np.dtype(dtype) and native.dtype.isnative
    assert native.flags.c_contiguous
    np.testing.assert_array_equal(native, values)
    assert np.shares_memory(native, disk)  # no second copy of the plane


def test_planes_that_cannot_be_swapped_in_place_are_copied():
    values = np.linspace(-5, 5, 1200, dtype=np.float32).reshape(30, 40)
    read_only = values.astype(">f4")
    read_only.flags.writeable = False
    strided = values.astype(">f4")[:, ::2]
    other_type = values.astype(">f8")
    for data, expected in ((read_only, values), (strided, values[:, ::2]), (other_type, values)):
        native = to_native(data, np.float32)
        assert native.dtype == np.float32 and native.dtype.isnative and native.flags.c_contiguous
        np.testing.assert_array_equal(native, expected)
        assert not np.shares_memory(native, data)
    np.testing.assert_array_equal(read_only, values)  # the caller's data untouched
    already = values.copy()
    assert to_native(already, np.float32) is already


def test_non_finite_pixels_become_no_data_in_every_row_block():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(700, 33)).astype(np.float32)
    variance = np.ones_like(image)
    bad_image = [(0, 0), (255, 7), (256, 7), (511, 32), (699, 32)]
    bad_variance = [(300, 3), (512, 0)]
    for y, x in bad_image:
        image[y, x] = np.nan if x % 2 else np.inf
    for y, x in bad_variance:
        variance[y, x] = np.nan
    mask = Mask(np.zeros(image.shape, np.int32))
    mask.array[10, 10] = mask.bit("SAT")
    expected_bad = np.zeros(image.shape, bool)
    for y, x in bad_image + bad_variance:
        expected_bad[y, x] = True
    kept_image = image[~expected_bad].copy()
    finalize_planes(image, variance, mask, "test.fits")
    no_data = (mask.array & mask.bit("NO_DATA")) != 0
    np.testing.assert_array_equal(no_data, expected_bad)
    assert mask.array[10, 10] == mask.bit("SAT")  # other planes kept
    assert np.all(image[expected_bad] == 0.0) and np.all(np.isinf(variance[expected_bad]))
    np.testing.assert_array_equal(image[~expected_bad], kept_image)
    assert np.all(variance[~expected_bad] == 1.0)


def test_one_finite_pixel_in_the_last_block_is_enough():
    image = np.full((600, 5), np.nan, np.float32)
    image[599, 4] = 1.0
    mask = Mask(np.zeros(image.shape, np.int32))
    finalize_planes(image, np.ones_like(image), mask, "x.fits")
    assert ((mask.array & mask.bit("NO_DATA")) != 0).sum() == image.size - 1
    nothing = np.full((600, 5), np.nan, np.float32)
    with pytest.raises(InvalidInputError, match=r"x\.fits: image has no finite pixels"):
        finalize_planes(
            nothing, np.ones_like(nothing), Mask(np.zeros((600, 5), np.int32)), "x.fits"
        )
