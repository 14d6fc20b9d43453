"""Real frames end to end: ``promptcal refcat build`` then ``promptcal calibrate``.

Data: ../shared/data/real (see each PROVENANCE.md). Instrument configs: configs/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from realdata import REAL, requires_real_data

from promptcal.commands.cli import main
from promptcal.io.catalogs import read_table
from promptcal.io.products import read_calexp
from promptcal.pipeline.references import icrs_deg, pixel_scale_arcsec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

pytestmark = requires_real_data


def _calibrate(tmp: Path, name: str, catalog: str, build: list[str], calibrate: list[str]):
    refcat = tmp / f"{name}_refcat"
    out = tmp / name
    assert main(["refcat", "build", catalog, "--output", str(refcat), *build]) == 0
    assert main(["calibrate", *calibrate, "--refcat", str(refcat), "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "success"
    return out, summary


@pytest.fixture(scope="module")
def spitzer(tmp_path_factory):
    d = REAL / "spitzer-glimpse-irac2"
    return _calibrate(
        tmp_path_factory.mktemp("spitzer"),
        "spitzer",
        str(d / "spitzer_example_catalog_icrs.derived.csv"),
        ["--ra", "ra", "--dec", "dec", "--band", "irac2=mag4_5:mag"],
        [str(d / "spitzer_example_image.fits"), "--band", "irac2",
         "--config", str(CONFIGS / "spitzer-irac.json")],
    )  # fmt: skip


def test_spitzer_astrometry_has_many_tight_matches(spitzer):
    out, _ = spitzer
    matches = read_table(out / "astrometry_matches.parquet")
    exposure, _ = read_calexp(out / "calexp.fits")
    scale = pixel_scale_arcsec(exposure.wcs, *exposure.center)
    assert abs(scale - 1.2) < 0.01  # the CAR header's 0.000333 deg/px
    assert len(matches) >= 200
    assert np.median(np.asarray(matches["distance"], float)) / scale < 0.6


def test_spitzer_zero_point_scatter_is_small(spitzer):
    out, summary = spitzer
    matches = read_table(out / "photometry_matches.parquet")
    used = np.asarray(matches["src_calib_photometry_used"], bool)
    ref_mag = -2.5 * np.log10(np.asarray(matches["ref_irac2_flux"], float)[used] / 3631e9)
    inst = -2.5 * np.log10(np.asarray(matches["src_slot_CalibFlux_instFlux"], float)[used])
    d = ref_mag - inst
    assert used.sum() >= 30
    assert 1.4826 * np.median(np.abs(d - np.median(d))) < 0.1
    assert abs(np.median(d) - summary["summary"]["zeroPoint"]) < 0.05


def test_microobservatory_solved_from_pointing_and_scale_only(tmp_path):
    d = REAL / "microobs-hatp32"
    image = d / "HATP-32171220013343.fits"
    header = fits.getheader(image)
    assert "CTYPE1" not in header  # no WCS at all: the solver works from the hint
    out, _ = _calibrate(
        tmp_path,
        "microobs",
        str(d / "gaia_dr3_g10_hatp32_r1.5deg.csv"),
        ["--ra", "ra", "--dec", "dec", "--band", "G=phot_g_mean_mag:mag"],
        [str(image), "--pointing", str(header["RA"]), str(header["DEC"]),
         "--pixel-scale", str(header["IM_SCALE"]), "--saturation", "4095",
         "--config", str(CONFIGS / "microobservatory.json")],
    )  # fmt: skip
    matches = read_table(out / "astrometry_matches.parquet")
    assert len(matches) >= 15
    exposure, _ = read_calexp(out / "calexp.fits")
    truth = WCS(fits.Header.fromtextfile(d / "HATP-32171220013343.derived_wcs.hdr"))
    cx, cy = exposure.center
    ra, dec = icrs_deg(exposure.wcs, [cx], [cy])
    ra_t, dec_t = truth.all_pix2world([cx], [cy], 0)
    offset = np.hypot((ra[0] - ra_t[0]) * np.cos(np.radians(dec_t[0])), dec[0] - dec_t[0])
    assert offset * 3600 < 10.0
    scale, scale_t = pixel_scale_arcsec(exposure.wcs, cx, cy), pixel_scale_arcsec(truth, cx, cy)
    assert abs(scale / scale_t - 1) < 0.02
    # The frame is mirrored (det CD > 0 in RA/Dec): the fit must have found the parity.
    assert np.sign(np.linalg.det(exposure.wcs.pixel_scale_matrix)) == np.sign(
        np.linalg.det(truth.pixel_scale_matrix)
    )


def test_decam_tpv_cutout_with_weight_and_mask(tmp_path):
    d = REAL / "decam-legacypipe-n6"
    stem = "c4d_171113_060340_oo{}_r_ls9.N6.fits"
    out, _ = _calibrate(
        tmp_path,
        "decam",
        str(d / "gaia-dr2-chunk-05483.fits"),
        ["--ra", "ra", "--dec", "dec", "--band", "G=phot_g_mean_mag:mag",
         "--pm-ra", "pmra", "--pm-dec", "pmdec", "--epoch", "2015.5"],
        [str(d / stem.format("i")), "--weight", str(d / stem.format("w")),
         "--mask", str(d / stem.format("d")), "--config", str(CONFIGS / "decam-cutout.json")],
    )  # fmt: skip
    matches = read_table(out / "astrometry_matches.parquet")
    assert len(matches) >= 6
    assert np.max(np.asarray(matches["distance"], float)) / 0.262 < 1.0


def test_microobservatory_hint_comes_from_the_header(tmp_path):
    # RA/DEC and IM_SCALE cards are enough: no command-line pointing needed.
    d = REAL / "microobs-hatp32"
    out, summary = _calibrate(
        tmp_path,
        "microobs_header",
        str(d / "gaia_dr3_g10_hatp32_r1.5deg.csv"),
        ["--ra", "ra", "--dec", "dec", "--band", "G=phot_g_mean_mag:mag"],
        [str(d / "HATP-32171220013343.fits"), "--saturation", "4095", "--band", "G"],
    )
    assert len(read_table(out / "astrometry_matches.parquet")) >= 15
    assert abs(summary["summary"]["zeroPoint"] - 20.70) < 0.1  # PROVENANCE.md: 20.70
