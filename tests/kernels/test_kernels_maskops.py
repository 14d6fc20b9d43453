"""Mask-bit kernels against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from promptcal.kernels.maskops import any_bits_set, bits_set

SIGN_BIT = np.int32(-(2**31))


def _random_mask(rng, shape, p=0.3):
    bits = rng.random((*shape, 32)) < p
    words = (bits * (1 << np.arange(32, dtype=np.uint64))).sum(-1).astype(np.uint32)
    return words.view(np.int32)


@pytest.mark.parametrize("bits", [0, 1, 1 << 5, (1 << 3) | (1 << 9), int(SIGN_BIT), -1])
def test_bits_set_and_any_bits_set(bits):
    rng = np.random.default_rng(30)
    mask = _random_mask(rng, (23, 31), p=0.05)
    bits = np.int32(bits)
    expected = (mask & bits) != 0
    got = bits_set(mask, bits)
    assert got.dtype == np.bool_
    assert_array_equal(got, expected)
    assert any_bits_set(mask, bits) == expected.any()
    # Only the very last pixel carries the bits, then none does.
    lone = np.zeros((23, 31), np.int32)
    lone[-1, -1] = bits
    assert any_bits_set(lone, bits) == (bits != 0)
    assert bits_set(lone, bits).sum() == (bits != 0)
    assert not any_bits_set(np.where(expected, 0, mask).astype(np.int32), bits)
