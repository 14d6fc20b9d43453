"""The IERS cache: the table rebuilt from the cache file equals astropy's parse."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.time import Time

from promptcal.pipeline.summary import earth_orientation as eo


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTCAL_CACHE_DIR", str(tmp_path))
    eo.earth_orientation_table.cache_clear()
    yield tmp_path
    eo.earth_orientation_table.cache_clear()


def test_first_use_writes_the_cache_and_the_rebuilt_table_is_identical(fresh_cache):
    parsed = eo.earth_orientation_table()
    (path,) = fresh_cache.glob("iers-*.npz")
    rebuilt = eo._load(path)
    # Dates across the table: measured (IERS-B), IERS-A, and predicted values.
    times = Time(np.linspace(50000.0, float(parsed["MJD"][-1].value) - 1.0, 997), format="mjd")
    np.testing.assert_array_equal(rebuilt.ut1_utc(times).value, parsed.ut1_utc(times).value)
    for axis_rebuilt, axis_parsed in zip(rebuilt.pm_xy(times), parsed.pm_xy(times), strict=True):
        np.testing.assert_array_equal(axis_rebuilt.value, axis_parsed.value)
    np.testing.assert_array_equal(
        rebuilt.ut1_utc(times, return_status=True)[1], parsed.ut1_utc(times, return_status=True)[1]
    )


def test_a_corrupt_cache_file_is_replaced(fresh_cache):
    path = eo._cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz file")
    table = eo.earth_orientation_table()
    assert len(table) > 10000
    assert eo._load(path)["UT1_UTC"].unit == "s"  # rewritten, readable
