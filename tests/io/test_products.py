"""Products of a calibration: writers, readers, round trips and determinism.

Runs CalibrateImageTask on LSST's upstream test fixture (spec §D) whose truth is known:
calibration 12.3 nJy/count, PSF σ = 2 px, star positions.
"""

from __future__ import annotations

import hashlib
import json

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import MaskedColumn, Table
from fixture_refcat import FIXTURE_OVERRIDES, make_refcat

from promptcal.core.errors import AlgorithmError, InvalidInputError
from promptcal.core.task import Struct
from promptcal.io.catalogs import read_catalog, read_table, write_catalog
from promptcal.io.files import sync_paths
from promptcal.io.products import (
    read_background,
    read_calexp,
    start_products,
    summary_from_hdu,
    summary_to_hdu,
    write_products,
)
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.pipeline.task import CalibrateImageTask
from promptcal.refcat import RefcatLoader
from promptcal.simulate.upstream import make_upstream_dataset


def calibrate_fixture(refcat_dir):
    task = CalibrateImageTask(
        CalibrateImageConfig().with_overrides(FIXTURE_OVERRIDES), refcat=RefcatLoader(refcat_dir)
    )
    return task, task.run(exposures=make_upstream_dataset().exposure)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("outputs")
    refcat_dir = make_refcat(base, make_upstream_dataset().truth)
    task, result = calibrate_fixture(refcat_dir)
    paths = write_products(result, base / "products", task=task, inputs=["visit.fits"])
    return Struct(task=task, result=result, paths=paths, base=base, refcat=refcat_dir)


def test_all_products_written(run):
    expected = {
        "calexp",
        "stars",
        "psf_stars",
        "stars_footprints",
        "psf_stars_footprints",
        "astrometry_matches",
        "photometry_matches",
        "background",
        "summary",
    }
    assert set(run.paths) == expected
    for path in run.paths.values():
        assert path.stat().st_size > 0
    # No temporary file is left behind by the atomic writes.
    assert not [p for p in (run.base / "products").iterdir() if p.name.startswith(".")]


def test_calexp_round_trip(run):
    original = run.result.output_exposure
    exposure, background = read_calexp(run.paths["calexp"])
    np.testing.assert_array_equal(exposure.image, original.image)
    np.testing.assert_array_equal(exposure.variance, original.variance)
    np.testing.assert_array_equal(exposure.mask.array, original.mask.array)
    assert exposure.xy0 == original.xy0 == (5, 4)
    assert exposure.photo_calib.mean == 1.0
    cx, cy = original.center
    # PSF: same model, σ = 2 px truth.
    sigma = exposure.psf.determinant_radius(cx, cy)
    assert sigma == pytest.approx(original.psf.determinant_radius(cx, cy), rel=1e-12)
    assert sigma == pytest.approx(2.0, rel=1e-2)
    for x, y in ((10.0, 10.0), (cx, cy), (200.0, 180.0)):
        np.testing.assert_allclose(
            exposure.psf.kernel_image(x, y), original.psf.kernel_image(x, y), rtol=1e-12
        )
    # Aperture corrections evaluate identically.
    assert set(exposure.ap_corr_map) == set(original.ap_corr_map)
    xs, ys = np.array([10.0, cx, 200.0]), np.array([10.0, cy, 180.0])
    for name, field in original.ap_corr_map.items():
        np.testing.assert_allclose(
            exposure.ap_corr_map[name].evaluate(xs, ys), field.evaluate(xs, ys), rtol=1e-12
        )
    # Summary statistics, NaN where NaN.
    assert set(exposure.summary) == set(original.summary)
    for key, value in original.summary.items():
        np.testing.assert_array_equal(np.asarray(exposure.summary[key], float), value, key)
    # WCS: same sky position of every corner to 1e-9 deg.
    xs = np.array([5.0, 205.0, 5.0, 205.0])
    ys = np.array([4.0, 4.0, 184.0, 184.0])
    np.testing.assert_allclose(
        exposure.wcs.all_pix2world(xs, ys, 0), original.wcs.all_pix2world(xs, ys, 0), atol=1e-9
    )
    # Background: 4 elements (legacy path), the same total image, ~500 count × 12.3 nJy.
    assert len(background) == len(run.result.background) == 4
    np.testing.assert_allclose(background.image(), run.result.background.image(), rtol=1e-12)
    assert np.median(background.image()) == pytest.approx(500 * 12.3, rel=1e-2)
    separate = read_background(run.paths["background"])
    np.testing.assert_allclose(separate.image(), background.image(), rtol=1e-12)


def test_star_catalog_round_trip(run):
    stars = run.result.stars
    back = read_catalog(run.paths["stars"])
    assert back.colnames == stars.colnames
    assert back.meta["slots"] == stars.meta["slots"]
    for name in stars.colnames:
        assert back[name].unit == stars[name].unit, name
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(stars[name]), name)
    flux = back["slot_PsfFlux_flux"]
    assert flux.unit == u.nJy
    assert back["slot_PsfFlux_mag"].unit == u.ABmag
    np.testing.assert_array_equal(np.asarray(flux), np.asarray(stars["base_PsfFlux_flux"]))
    # A reader without promptcal sees the slot aliases as real columns, with units.
    schema = pq.read_schema(run.paths["stars"])
    assert "slot_PsfFlux_flux" in schema.names
    assert schema.field("slot_PsfFlux_flux").metadata[b"unit"] == b"nJy"
    assert schema.field("slot_PsfFlux_flux").metadata[b"alias_of"] == b"base_PsfFlux_flux"
    assert schema.field("coord_ra").metadata[b"unit"] == b"rad"


def test_psf_stars_and_matches_round_trip(run):
    psf_stars = read_catalog(run.paths["psf_stars"])
    assert len(psf_stars) == len(run.result.psf_stars)
    assert int(np.sum(psf_stars["calib_psf_used"])) == 3
    for key in ("astrometry_matches", "photometry_matches"):
        original = getattr(run.result, key)
        back = read_table(run.paths[key])
        assert back.colnames == original.colnames
        np.testing.assert_array_equal(back["src_slot_Centroid_x"], original["src_slot_Centroid_x"])
        assert back["distance"].unit == u.arcsec


@pytest.mark.parametrize("kind", ["stars", "psf_stars"])
def test_footprint_spans_cover_centroids(run, kind):
    catalog = getattr(run.result, kind)
    footprints = getattr(run.result, f"{kind}_footprints")
    spans = read_table(run.paths[f"{kind}_footprints"])
    assert spans.colnames == ["id", "y", "x0", "x1"]
    assert set(np.asarray(spans["id"])) == set(np.asarray(catalog["id"]))
    for row in catalog:
        mine = spans[spans["id"] == row["id"]]
        x = round(float(row["slot_Centroid_x"]))
        y = round(float(row["slot_Centroid_y"]))
        hit = (mine["y"] == y) & (mine["x0"] <= x) & (mine["x1"] >= x)
        assert hit.sum() == 1, f"{kind} {row['id']} centroid not covered"
    # Span pixel counts equal the footprint areas (no pixel lost or duplicated).
    area = np.asarray(spans["x1"] - spans["x0"] + 1)
    assert area.sum() == np.count_nonzero(footprints.labels)


def test_summary_json(run):
    text = run.paths["summary"].read_text()

    def reject(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    doc = json.loads(text, parse_constant=reject)
    assert doc["status"] == "success"
    assert doc["error"] is None
    assert doc["applied_calibration"]["mean"] == pytest.approx(12.3, rel=1e-2)
    assert doc["applied_calibration"]["error"] > 0
    assert doc["exposure_calibration"]["mean"] == 1.0
    assert doc["summary"]["psfSigma"] == pytest.approx(2.0, rel=1e-2)
    assert doc["summary"]["shapeletsIqScore"] is None  # NaN -> null
    assert doc["summary"]["nPsfStar"] == 3
    assert doc["n_stars"] == 6
    assert doc["timings"]["run"] > 0
    assert set(doc["timings"]) >= {"compute_psf", "astrometry", "photometry", "summary"}
    assert doc["config_hash"] == run.task.config.config_hash()
    assert doc["inputs"] == ["visit.fits"]
    assert (doc["visit"], doc["detector"], doc["band"]) == (1234, 12, "truth")
    assert doc["products"]["calexp"] == "calexp.fits"


def test_products_deterministic(run, tmp_path):
    """A second run on the same input gives byte-identical pixel and catalog products."""
    task, result = calibrate_fixture(run.refcat)
    paths = write_products(result, tmp_path, task=task)
    for kind, path in run.paths.items():
        if kind == "summary":
            continue  # holds the wall-clock timings and creation time
        assert _digest(paths[kind]) == _digest(path), kind


def test_products_written_for_later_sync(run, tmp_path):
    """``durable=False`` writes the same bytes; :func:`sync_paths` makes them durable."""
    task, result = calibrate_fixture(run.refcat)
    paths = write_products(result, tmp_path, task=task, durable=False)
    assert set(paths) == set(run.paths)
    for kind, path in paths.items():
        if kind != "summary":
            assert _digest(path) == _digest(run.paths[kind]), kind
    sync_paths(paths.values(), drop_cache=True)  # evicted from the cache, still readable
    for kind, path in paths.items():
        if kind != "summary":
            assert _digest(path) == _digest(run.paths[kind]), kind
    with pytest.raises(FileNotFoundError):
        sync_paths([tmp_path / "missing.fits"])
    gone = tmp_path / "missing.fits"
    assert sync_paths([paths["stars"], gone], missing_ok=True) == [gone]


def test_started_products_are_complete_only_after_finish(run, tmp_path):
    """``start_products`` writes the catalogs at once; ``summary.json`` (the mark of a
    complete set) comes only from ``finish``, after the calexp, with the same bytes."""
    task, result = calibrate_fixture(run.refcat)
    pending = start_products(result, tmp_path, task=task, durable=False)
    assert not (tmp_path / "summary.json").exists()
    assert pending.paths["stars"].exists()
    assert "calexp" not in pending.paths
    paths = pending.finish()
    assert set(paths) == set(run.paths)
    for kind, path in paths.items():
        if kind != "summary":
            assert _digest(path) == _digest(run.paths[kind]), kind
    doc = json.loads(paths["summary"].read_text())
    assert doc["products"]["calexp"] == "calexp.fits"


def test_failed_calexp_write_leaves_no_summary(run, tmp_path, monkeypatch):
    """An error writing the calexp surfaces in ``finish``; no summary marks the set."""
    task, result = calibrate_fixture(run.refcat)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("promptcal.io.products.write_calexp", full_disk)
    pending = start_products(result, tmp_path, task=task)
    with pytest.raises(OSError, match="No space"):
        pending.finish()
    assert not (tmp_path / "summary.json").exists()


def test_failed_result_records_error(tmp_path):
    exposure = make_upstream_dataset().exposure
    error = AlgorithmError("only 1 usable PSF star", n_usable=1)
    result = Struct(output_exposure=exposure, applied_photo_calib=None)
    result.failure = {"type": "NoPsfStarsError", "message": str(error), "metadata": error.metadata}
    paths = write_products(result, tmp_path / "deep" / "dir")
    assert set(paths) == {"calexp", "summary"}
    doc = json.loads(paths["summary"].read_text())
    assert doc["status"] == "failed"
    assert doc["error"] == {
        "type": "NoPsfStarsError",
        "message": "only 1 usable PSF star",
        "metadata": {"n_usable": 1},
    }
    assert doc["applied_calibration"] is None
    back, background = read_calexp(paths["calexp"])
    np.testing.assert_array_equal(back.image, exposure.image)
    assert back.psf is None and len(background) == 0


def test_status_is_validated(tmp_path):
    with pytest.raises(InvalidInputError, match="status"):
        write_products(Struct(), tmp_path, status="ok")


def test_summary_hdu_round_trip():
    summary = {"a": 1.5, "n": 3, "flag": True, "nan": float("nan"), "empty": [], "lst": [1.0, 2]}
    back = summary_from_hdu(summary_to_hdu(summary))
    assert back["a"] == 1.5 and back["n"] == 3 and back["flag"] is True
    assert isinstance(back["n"], int)
    assert np.isnan(back["nan"])
    assert back["empty"] == [] and back["lst"] == [1.0, 2.0]


def test_generic_table_round_trip(tmp_path):
    table = Table()
    table["x"] = np.array([1.0, np.nan, 3.0]) * u.pix
    table["name"] = ["a", "bb", "ccc"]
    table["m"] = MaskedColumn([1, 2, 3], mask=[False, True, False])
    table["v"] = np.arange(6.0).reshape(3, 2)
    table.meta["band"] = "r"
    write_catalog(table, tmp_path / "t.parquet")
    back = read_table(tmp_path / "t.parquet")
    assert back["x"].unit == u.pix
    np.testing.assert_array_equal(back["x"], table["x"])
    assert list(back["name"]) == ["a", "bb", "ccc"]
    assert list(back["m"].mask) == [False, True, False]
    assert back["m"][0] == 1 and back["m"][2] == 3
    np.testing.assert_array_equal(back["v"], table["v"])
    assert back.meta["band"] == "r"
    with pytest.raises(InvalidInputError, match="Parquet"):
        read_table(tmp_path / "missing.parquet")
