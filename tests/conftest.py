"""Shared fixtures: reference catalogs built from a simulation's truth table."""

from __future__ import annotations

import itertools

import pytest

from promptcal.refcat import build_refcat
from promptcal.simulate import refcat_table_from_truth


@pytest.fixture(scope="session")
def truth_refcat(tmp_path_factory):
    """Factory ``(truth, band, *, dec_offset=0.0) -> refcat directory``.

    The truth table goes through ``refcat_table_from_truth`` → Parquet →
    ``build_refcat`` (fluxes in nJy with their errors), as a user of
    ``promptcal refcat build`` would; ``dec_offset`` [deg] moves every source in Dec
    (a refcat that does not cover the field).
    """
    counter = itertools.count()

    def make(truth, band: str, *, dec_offset: float = 0.0):
        directory = tmp_path_factory.mktemp(f"refcat{next(counter)}")
        table = refcat_table_from_truth(truth, band)
        table["dec"] = table["dec"] + dec_offset
        source = directory / "refcat_source.parquet"
        table.write(source, format="parquet")
        build_refcat(
            source,
            directory / "refcat",
            ra_col="ra",
            dec_col="dec",
            bands={band: (f"{band}_flux", "nJy")},
            band_errors={band: f"{band}_fluxErr"},
        )
        return directory / "refcat"

    return make
