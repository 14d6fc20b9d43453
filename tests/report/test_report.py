"""The night report (issue 6): its numbers are the products' numbers.

A 4-visit × 3-detector night is replayed locally with two exposures spoiled: one snap
file deleted (the worker's dead-letter case) and one replaced by an empty sky (an
algorithm failure). The report must show, for every exposure, exactly the values of
its ``summary.json``; aggregates and latency percentiles computed from those values
and from the replay's ``calibrated`` messages; both failures with their error types;
the simulated observation times; and embed every figure it writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from promptcal.commands.cli import main as cli_main
from promptcal.core.constants import FWHM_PER_SIGMA
from promptcal.io import read_exposure, write_exposure
from promptcal.night.manifest import read_manifest
from promptcal.night.plan import NightConfig
from promptcal.night.simulate import simulate_night
from promptcal.replay.jobs import build_jobs, read_results
from promptcal.replay.local import replay_local
from promptcal.report.html import write_report
from promptcal.report.night_data import PERCENTILES, QUANTITIES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """(product root, manifest, manifest dir, deleted job key, emptied job key)."""
    tmp = tmp_path_factory.mktemp("report")
    config = NightConfig(
        n_visits=4, detectors=(0, 4, 8), width=256, height=256, seed=11, snaps="1",
        visits_per_band=2,
    )  # fmt: skip
    manifest_path = simulate_night(config, tmp / "night")
    manifest, base = read_manifest(manifest_path)
    jobs = build_jobs(manifest)
    deleted, emptied = jobs[1], jobs[5]
    (base / deleted.snaps[0].uri).unlink()
    spoiled = read_exposure(base / emptied.snaps[0].uri)  # same WCS, band, ...
    rng = np.random.default_rng(0)
    spoiled.image[...] = rng.normal(1000.0, 30.0, spoiled.image.shape)  # no stars at all
    write_exposure(spoiled, base / emptied.snaps[0].uri)
    root = tmp / "products"
    summary = replay_local(manifest_path, root, progress=False)
    assert summary.dead_letters == 1 and summary.failed == 1 and summary.succeeded == 10
    return root, manifest, deleted.key, emptied.key


def test_report_numbers_are_the_products_numbers(replayed):
    root, manifest, deleted, emptied = replayed
    index, numbers = write_report(root)
    assert json.loads((index.parent / "report.json").read_text())["exposures"] == json.loads(
        json.dumps(numbers["exposures"])
    )
    rows = {(e["visit"], e["detector"]): e for e in numbers["exposures"]}
    assert len(rows) == 12
    assert numbers["status"] == {"success": 10, "failed": 1, "dead_letter": 1}
    summaries = {}
    for path in root.glob(f"{manifest.instrument}/*/*/summary.json"):
        doc = json.loads(path.read_text())
        key = (int(path.parent.parent.name), int(path.parent.name))
        summaries[key] = doc
        row, stats = rows[key], doc["summary"]
        assert row["status"] == doc["status"] and row["band"] == doc["band"]
        assert row["n_stars"] == doc["n_stars"]
        if doc["status"] != "success":
            continue
        assert row["zero_point"] == stats["zeroPoint"]
        assert row["sky"] == stats["skyBg"]
        assert row["astrom_scatter"] == stats["astromOffsetStd"]
        assert row["psf_fwhm"] == stats["psfSigma"] * FWHM_PER_SIGMA * stats["pixelScale"]
    assert len(summaries) == 11 and deleted not in summaries
    good = [doc["summary"] for doc in summaries.values() if doc["status"] == "success"]
    for name, (key, _label, _unit) in QUANTITIES.items():
        st = numbers["quantities"][name]
        values = [s[key] for s in good]
        if name == "psf_fwhm":
            values = [s["psfSigma"] * FWHM_PER_SIGMA * s["pixelScale"] for s in good]
        assert st["n"] == 10
        assert st["median"] == pytest.approx(float(np.median(values)), rel=1e-12)
        assert st["max"] == max(values) and st["min"] == min(values)

    latencies = {
        (r["visit"], r["detector"]): r["message"]["end_to_end_latency"]
        for r in read_results(root)
        if r["kind"] == "calibrated"
    }
    assert len(latencies) == 11
    for key, latency in latencies.items():
        assert rows[key]["latency"] == latency
    for p in PERCENTILES:
        expected = float(np.percentile(list(latencies.values()), p))
        assert numbers["latency"][f"p{p}"] == pytest.approx(expected, rel=1e-12)

    assert rows[deleted]["status"] == "dead_letter"
    assert rows[deleted]["error_type"] == "InvalidInputError"
    failed_type = summaries[emptied]["error"]["type"]
    assert rows[emptied]["status"] == "failed" and rows[emptied]["error_type"] == failed_type
    assert numbers["failures_by_type"] == {"InvalidInputError": 1, failed_type: 1} or (
        failed_type == "InvalidInputError" and numbers["failures_by_type"] == {failed_type: 2}
    )

    # Observation times are the simulated mid-exposure times; zero points the truth.
    for (visit, _det), row in rows.items():
        truth = manifest.visit(visit)
        if row["status"] != "success":
            continue
        mid = truth.start_time + dt.timedelta(seconds=truth.exposure_time / 2)
        assert dt.datetime.fromisoformat(row["time"].replace("Z", "+00:00")) == pytest.approx(
            mid, abs=dt.timedelta(milliseconds=1)
        )
        assert row["zero_point"] == pytest.approx(truth.zero_point, abs=0.1)


def test_report_page_embeds_its_figures_and_tables(replayed):
    root, _manifest, _deleted, emptied = replayed
    out = root.parent / "page"
    index, numbers = write_report(root, out)
    page = index.read_text(encoding="utf-8")
    names = ["timeseries", *[f"focal_plane_{q}" for q in QUANTITIES], "latency"]
    names += ["drift", "drift_track"]
    assert sorted(numbers["figures"]) == sorted(names)
    for name in names:
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert base64.b64encode(png).decode("ascii") in page  # self-contained
    assert page.count("data:image/png;base64,") == len(names)
    assert "<img" in page and 'src="http' not in page and "<script" not in page
    zp = numbers["quantities"]["zero_point"]
    assert f"{zp['median']:.4g}" in page
    assert "InvalidInputError" in page and f">{emptied[0]}</td>" in page
    assert f"{numbers['latency']['p95']:.4g}" in page


def test_report_pointing_section_finds_the_simulated_pointing_error(replayed, tmp_path):
    """The simulated headers point 2" off: every solved centre is that close to where
    the header and the camera put the detector (off-axis detectors included)."""
    _, numbers = write_report(replayed[0], tmp_path)
    pointing = numbers["pointing"]
    solved = [r for r in pointing["rows"] if r["solved"]]
    assert len(solved) == 10 and pointing["n_solved"] == 10
    assert {r["detector"] for r in solved} == {0, 4, 8}
    assert max(r["offset"] for r in solved) < 5.0 / 60.0  # arcmin
    assert pointing["median_pixel_scale"] == pytest.approx(0.2, rel=0.01)
    assert len(pointing["not_solved"]) == 2 and all(m["reason"] for m in pointing["not_solved"])


def test_report_command_prints_summary(replayed, capsys, tmp_path):
    root = replayed[0]
    assert cli_main(["report", str(root), "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'index.html'}" in out
    assert "12 (4 visits" in out and "10 calibrated, 1 failed, 1 unreadable" in out
    assert "zero point" in out and "latency" in out
    assert (tmp_path / "report.json").is_file()


def test_report_of_an_empty_directory_is_invalid_input(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "no products" in capsys.readouterr().err


def test_report_without_replay_log_or_camera(replayed, tmp_path):
    """Products alone (e.g. from `promptcal serve` without replay): no latency, no maps."""
    root = replayed[0]
    bare = tmp_path / "bare"
    for path in root.glob("*/*/*/summary.json"):
        target = bare / path.relative_to(root)
        target.parent.mkdir(parents=True)
        target.write_bytes(path.read_bytes())
    index, numbers = write_report(bare)
    assert numbers["latency"]["n"] == 0 and numbers["status"]["dead_letter"] == 0
    assert sorted(numbers["figures"]) == []  # no times (no calexp), no camera, no latency
    assert Path(index).is_file() and numbers["n_exposures"] == 11
