"""``promptcal calibrate`` end to end on LSST's upstream fixture, and its failure modes.

The CLI runs in-process through ``promptcal.commands.cli.main`` (fast); one test runs the
installed console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fixture_refcat import FIXTURE_OVERRIDES, make_refcat

from promptcal.commands.cli import main
from promptcal.io import write_exposure
from promptcal.simulate.upstream import make_upstream_dataset

SET_ARGS = [arg for key, value in FIXTURE_OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Input files: the fixture as FITS, two snaps, bad inputs, refcats, a config file."""
    base = tmp_path_factory.mktemp("cli")
    dataset = make_upstream_dataset()
    exposure = dataset.exposure
    paths = {"base": base, "exposure": base / "visit.fits"}
    write_exposure(exposure, paths["exposure"])
    for index in (0, 1):  # upstream's test_run_2_snaps: image/2 and variance/2 each
        snap = exposure.copy()
        snap.image /= 2
        snap.variance /= 2
        paths[f"snap{index}"] = base / f"snap{index}.fits"
        write_exposure(snap, paths[f"snap{index}"])
    raw = paths["exposure"].read_bytes()
    paths["truncated"] = base / "truncated.fits"
    paths["truncated"].write_bytes(raw[: len(raw) // 2])
    with fits.open(paths["exposure"]) as hdul:
        no_variance = fits.HDUList([h.copy() for h in hdul if h.name != "VARIANCE"])
        paths["no_variance"] = base / "no_variance.fits"
        no_variance.writeto(paths["no_variance"])
    nan = exposure.copy()
    nan.image[:] = np.nan
    paths["all_nan"] = base / "all_nan.fits"
    write_exposure(nan, paths["all_nan"])
    blank = exposure.copy()  # noise around the sky level, no sources, the fixture's WCS
    blank.image[:] = 500.0 + 10.0 * np.random.default_rng(5).standard_normal(blank.image.shape)
    blank.mask.array[:] = 0
    paths["blank"] = base / "blank.fits"
    write_exposure(blank, paths["blank"])
    paths["refcat"] = make_refcat(base, dataset.truth)
    offset_dir = base / "offset"
    offset_dir.mkdir()
    paths["refcat_offset"] = make_refcat(offset_dir, dataset.truth, dec_offset=10.0)
    paths["config"] = base / "config.json"  # nested form of the same overrides
    paths["config"].write_text(
        json.dumps(
            {
                "sky_sources": {"n_sources": 2},
                "astrometry": {"num_points_for_shape": 3, "magnitude_outlier_rejection_nsigma": 9},
            }
        )
    )
    return paths


def _calibrate(data, inputs, output, *extra, refcat=None):
    argv = ["calibrate", *map(str, inputs), "--refcat", str(refcat or data["refcat"])]
    return main([*argv, "--output", str(output), *extra])


def _summary(output: Path) -> dict:
    return json.loads((output / "summary.json").read_text())


def test_success(data, tmp_path, capsys):
    code = _calibrate(data, [data["exposure"]], tmp_path, *SET_ARGS)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "calexp.fits",
        "stars.parquet",
        "psf_stars.parquet",
        "stars_footprints.parquet",
        "psf_stars_footprints.parquet",
        "astrometry_matches.parquet",
        "photometry_matches.parquet",
        "background.fits",
        "summary.json",
    }
    doc = _summary(tmp_path)
    assert doc["status"] == "success" and doc["error"] is None
    assert doc["applied_calibration"]["mean"] == pytest.approx(12.3, rel=1e-2)
    assert doc["inputs"] == ["visit.fits"]
    assert doc["timings"]["read"] > 0
    # The human summary reports the fitted values.
    assert "zero point" in captured.out and "PSF FWHM" in captured.out
    zp = doc["summary"]["zeroPoint"]
    assert f"{zp:.3f}" in captured.out
    assert zp == pytest.approx(2.5 * np.log10(3631e9 / 12.3), abs=0.011)


def test_config_file_and_ids(data, tmp_path, capsys):
    args = ["--config", str(data["config"]), "--visit", "77", "--detector", "3"]
    code = _calibrate(data, [data["exposure"]], tmp_path, *args)
    assert code == 0, capsys.readouterr().err
    doc = _summary(tmp_path)
    assert (doc["visit"], doc["detector"]) == (77, 3)
    assert doc["applied_calibration"]["mean"] == pytest.approx(12.3, rel=1e-2)


def test_two_snaps(data, tmp_path, capsys):
    code = _calibrate(data, [data["snap0"], data["snap1"]], tmp_path, *SET_ARGS)
    assert code == 0, capsys.readouterr().err
    doc = _summary(tmp_path)
    assert doc["status"] == "success"
    assert doc["inputs"] == ["snap0.fits", "snap1.fits"]
    # Two half-flux snaps sum to the single exposure: the same calibration.
    assert doc["applied_calibration"]["mean"] == pytest.approx(12.3, rel=1e-2)


def test_plots(data, tmp_path, capsys):
    code = _calibrate(data, [data["exposure"]], tmp_path, *SET_ARGS, "--plots")
    assert code == 0, capsys.readouterr().err
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["astrometry_residuals.png", "photometry_residuals.png", "psf_grid.png"]
    for name in pngs:
        content = (tmp_path / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000


@pytest.mark.parametrize(
    ("input_key", "extra", "refcat_key", "message"),
    [
        ("truncated", [], None, "truncated"),
        ("no_variance", [], None, "VARIANCE"),
        ("all_nan", [], None, "no finite pixels"),
        ("exposure", [], "refcat_offset", "does not cover the field"),
        ("exposure", ["--band", "r"], None, "band 'r' is not in the refcat"),
        ("exposure", ["--set", "psf.no_such_field=1"], None, "unknown config field"),
        ("exposure", ["--pointing", "245", "-45"], None, "--pixel-scale"),
    ],
)
def test_invalid_input(data, tmp_path, capsys, input_key, extra, refcat_key, message):
    refcat = data[refcat_key] if refcat_key else None
    code = _calibrate(data, [data[input_key]], tmp_path, *SET_ARGS, *extra, refcat=refcat)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptcal: invalid input:")
    assert message in lines[0]
    assert not (tmp_path / "summary.json").exists()


def test_missing_files_are_invalid_input(data, tmp_path, capsys):
    for argv in (
        [tmp_path / "absent.fits"],
        [data["exposure"], "--config", str(tmp_path / "absent.json")],
    ):
        code = _calibrate(data, argv, tmp_path / "out", *SET_ARGS)
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code = _calibrate(data, [data["exposure"]], tmp_path, refcat=tmp_path / "no_refcat")
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json" in err


def test_too_few_stars_is_algorithm_failure(data, tmp_path, capsys):
    code = _calibrate(data, [data["blank"]], tmp_path, *SET_ARGS)
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback" not in err
    doc = _summary(tmp_path)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] in err
    assert doc["error"]["type"].endswith("Error") and doc["error"]["message"]
    assert doc["applied_calibration"] is None
    assert (tmp_path / "calexp.fits").exists()  # the partial exposure is kept


def test_console_script(data, tmp_path):
    script = Path(sys.executable).with_name("promptcal")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "promptcal"]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(sys.executable).parents[1] / "numba-cache"))
    argv = ["calibrate", str(data["exposure"]), "--refcat", str(data["refcat"])]
    completed = subprocess.run(
        [*command, *argv, "--output", str(tmp_path), *SET_ARGS],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "zero point" in completed.stdout
    assert _summary(tmp_path)["status"] == "success"
    # The process recorded the kernels it ran, for the next one to preload.
    manifest = Path(env["NUMBA_CACHE_DIR"]) / "promptcal-kernels.json"
    assert "measure._measure_core" in json.loads(manifest.read_text())["kernels"]
