"""Blind solving against real data: false alarms on scrambled inputs built from the
real night (issue 12, acceptance b) and control solves from a displaced hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.wcs import WCS
from realdata import REAL, requires_real_data

from promptcal.qa.astrometry_trials import (
    KINDS,
    other_sky_patches,
    read_frame,
    read_refs,
    run_trials,
)

pytestmark = requires_real_data
ROOT = Path(__file__).resolve().parents[3]
SINGLE = REAL / "microobs-hatp32"


@pytest.fixture(scope="module")
def inputs():
    paths = sorted((REAL / "microobs-hatp32-night").glob("*.fits"))
    frames = [read_frame(p) for p in paths[::13]]
    refs = read_refs(SINGLE / "gaia_dr3_g10_hatp32_r1.5deg.csv")
    target = frames[0].hint[:2]
    truth = WCS(fits.Header.fromtextfile(SINGLE / "HATP-32171220013343.derived_wcs.hdr"))
    return frames, refs, target, truth, read_frame(SINGLE / "HATP-32171220013343.fits")


def test_scrambled_inputs_are_rejected_and_true_ones_accepted(inputs):
    frames, refs, target, truth, truth_frame = inputs
    patches = other_sky_patches(REAL, refs, target)
    assert [p["name"] for p in patches] == ["hatp32_beyond", "decam_gaia_dr2", "spitzer_glimpse"]
    result = run_trials(
        frames, refs, target, patches, truth_frame, truth, n_per_kind=12, n_control=5, seed=7
    )
    assert result["n_scrambled"] == 12 * len(KINDS)
    assert result["n_wrong_accepted"] == 0
    for kind in result["kinds"].values():
        closest = kind["min_log10_false_alarm"]
        assert closest is None or closest > -6
    control = result["control"]
    assert control["accepted"] == control["correct"] == 5
    assert control["worst_log10_false_alarm"] < -20
    assert control["worst_centre_error_arcmin"] < 0.05


def test_full_false_positive_script_accepts_no_wrong_solution():
    # The >= 200-trial run of scripts/astrometry_false_positives.py (~30 s).
    script = ROOT / "scripts" / "astrometry_false_positives.py"
    out = subprocess.run(
        [sys.executable, str(script)], check=True, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PROMPTCAL_REAL_DATA": str(REAL)},
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["n_scrambled"] >= 200
    assert result["n_wrong_accepted"] == 0
    assert all(k["accepted"] == 0 for k in result["kinds"].values())
    assert result["control"]["trials"] == result["control"]["correct"] == 20
