"""The ``promptcal refcat`` command line: build, info, and one-line failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from realdata import requires_real_data
from refcat_data import (
    MICROOBS_CSV,
)

import promptcal.commands.cli
from promptcal.refcat import (
    RefcatLoader,
)

# ------------------------------------------------------------------------ CLI


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setitem(promptcal.commands.cli.COMMAND_MODULES, "refcat", "refcat")
    return promptcal.commands.cli.main


@requires_real_data
def test_cli_build_and_info(cli, tmp_path, capsys):
    out = tmp_path / "rc"
    code = cli(
        [
            "refcat",
            "build",
            str(MICROOBS_CSV),
            "--output",
            str(out),
            "--ra",
            "ra",
            "--dec",
            "dec",
            "--band",
            "G=phot_g_mean_mag:mag",
            "--band",
            "BP=phot_bp_mean_mag",
            "--id",
            "source_id",
            "--nside",
            "16",
        ]
    )
    assert code == 0
    assert "123 rows" in capsys.readouterr().out
    manifest = RefcatLoader(out).manifest
    assert manifest.nside == 16 and sorted(manifest.bands) == ["BP", "G"]
    assert manifest.bands["BP"].source_unit == "mag"
    assert cli(["refcat", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["total_rows"] == 123


def _binary_file(directory: Path) -> Path:
    (directory / "x.dat").write_bytes(b"\x00\x01\x02")
    return directory / "x.dat"


def _header_only_csv(directory: Path) -> Path:
    (directory / "e.csv").write_text("ra,dec,phot_g_mean_mag\n")
    return directory / "e.csv"


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (lambda d: MICROOBS_CSV, ["--band", "G=nope"], "has no column 'nope'"),
        (_binary_file, [], "cannot tell the format"),
        (_header_only_csv, [], "has no rows"),
        (lambda d: MICROOBS_CSV, ["--pm-ra", "ra", "--pm-dec", "dec"], "epoch"),
    ],
    ids=["missing-column", "unknown-format", "empty", "pm-without-epoch"],
)
def test_cli_failures_exit_2_with_one_line(cli, tmp_path, capsys, make_input, extra, message):
    args = ["refcat", "build", str(make_input(tmp_path)), "-o", str(tmp_path / "rc")]
    args += ["--ra", "ra", "--dec", "dec", *extra]
    if "--band" not in extra:
        args += ["--band", "G=phot_g_mean_mag"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptcal: invalid input:") and message in err
    assert not (tmp_path / "rc").exists()
