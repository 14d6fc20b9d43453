"""LSST's upstream test fixture as a calibration input: its config overrides and a
reference catalog built from its truth (shared by the product and CLI tests)."""

from __future__ import annotations

from promptcal.refcat import build_refcat
from promptcal.simulate import refcat_table_from_truth

FIXTURE_OVERRIDES = {
    "sky_sources.n_sources": 2,
    "astrometry.num_points_for_shape": 3,
    "astrometry.magnitude_outlier_rejection_nsigma": 9.0,
}


def make_refcat(directory, truth, *, dec_offset: float = 0.0):
    """Refcat directory built from the fixture truth (optionally moved in Dec) [deg]."""
    table = refcat_table_from_truth(truth, "truth")
    table["dec"] = table["dec"] + dec_offset
    source = directory / "refcat_source.parquet"
    table.write(source, format="parquet", overwrite=True)
    build_refcat(
        source,
        directory / "refcat",
        ra_col="ra",
        dec_col="dec",
        bands={"truth": ("truth_flux", "nJy")},
        band_errors={"truth": "truth_fluxErr"},
    )
    return directory / "refcat"
