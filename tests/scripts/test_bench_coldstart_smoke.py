"""``scripts/bench_coldstart.py`` end to end on a small exposure, so it cannot rot.

The times of a 600×560 image mean nothing; the test checks that every part of the
report is there, that the cold and in-process calibrations ran, and that the new
process found the kernel manifest its predecessors recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptcal.core.kernel_cache import manifest_path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_coldstart.py"


@pytest.mark.slow
def test_bench_coldstart_reports_every_part():
    command = [
        sys.executable, str(SCRIPT), "--sky", "moffat", "--width", "600", "--height", "560",
        "--stars", "150", "--repeat", "1", "--no-worker", "--top", "5",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["calibrate_help"]["exit_codes"] == [0]
    assert report["cold_calibrate"]["exit_codes"] == [0]
    assert report["cold_breakdown"]["main"] > 0
    phases = report["phases"]
    assert phases["first_calibrate_seconds"] > 0 and phases["second_calibrate_seconds"] > 0
    assert phases["kernels_called"] >= 10
    assert {"cli", "calibrate"} == set(report["importtime"])
    assert report["first_calibrate_profile"]["own"]
    assert (
        set(report["within_limits"])
        == set(report["limits"])
        == {
            "cold_calibrate_seconds",
            "cold_over_in_process",
            "calibrate_help_seconds",
        }
    )
    # The cold runs were real command-line processes: they recorded their kernels.
    assert "measure._measure_core" in json.loads(manifest_path().read_text())["kernels"]
