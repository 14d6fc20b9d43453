"""The cache-warming read against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from promptcal.kernels.warm import warm_rows


def _oracle(plane, x_lo, x_hi, y_lo, y_hi):
    """One value per 64-byte line of the clipped box, and the last column, summed."""
    x_lo, y_lo = max(x_lo, 0), max(y_lo, 0)
    x_hi, y_hi = min(x_hi, plane.shape[1] - 1), min(y_hi, plane.shape[0] - 1)
    if x_lo > x_hi or y_lo > y_hi:
        return 0.0
    step = 64 // plane.itemsize
    columns = np.minimum(np.arange(x_lo, x_hi + step, step), x_hi)
    return float(plane[y_lo : y_hi + 1][:, columns].astype(np.float64).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64])
@pytest.mark.parametrize(
    "box",
    [
        (3, 40, 2, 9),  # inside
        (-5, 7, -3, 4),  # clipped at the low edges
        (50, 90, 20, 40),  # clipped at the high edges
        (10, 10, 5, 5),  # one pixel
        (70, 90, 0, 3),  # entirely off the plane in x
        (8, 4, 0, 3),  # empty
    ],
)
def test_warm_rows_sums_one_value_per_line_of_the_clipped_box(dtype, box):
    plane = (np.random.default_rng(1).random((31, 64)) * 100).astype(dtype)
    assert_allclose(warm_rows(plane, *box), _oracle(plane, *box), rtol=1e-12)
