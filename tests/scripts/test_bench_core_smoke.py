"""``scripts/bench_core.py`` end to end on small exposures, so the benchmark cannot rot.

The times of a 600×560 run mean nothing; the test checks that every method ran on
every sky, that ``run()`` and the DIY peer both calibrated (their WCS close to the
truth, their zero points sensible) and that the report is whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_core.py"


@pytest.mark.slow
def test_bench_core_reports_every_sky():
    command = [
        sys.executable, str(SCRIPT), "--sky", "moffat", "crowded", "legacy", "--width", "600",
        "--height", "560", "--stars", "150", "--repeat", "1",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert set(report["variants"]) == {"moffat", "crowded", "legacy"}
    for name, variant in report["variants"].items():
        assert variant["image"]["sky"] == name
        assert (variant["image"]["width"], variant["image"]["height"]) == (600, 560)
        assert "failure" not in variant["run"], variant["run"]
        assert variant["memory"]["failure"] is None
        for method in ("sep", "psf_phase", "run", "diy"):
            assert len(variant[method]["all"]) == 1 and variant[method]["seconds"] > 0
        assert variant["run"]["stages"]["run"] > 0 and "compute_psf" in variant["run"]["stages"]
        # Both calibrations land within a few tens of mas of the true WCS (the header
        # is 20 arcsec off for the realistic skies) and their zero points near truth.
        assert variant["run"]["wcs_error"]["median_mas"] < 30
        assert variant["diy"]["wcs_error"]["median_mas"] < 100
        assert abs(variant["run"]["zero_point_error_mmag"]) < 30, name
        # The peer has no aperture correction: its 1.5-FWHM apertures miss ~10-30% of a
        # Moffat star's light (and pick up neighbours' in the crowded sky).
        assert abs(variant["diy"]["zero_point_error_mmag"]) < 400, name
        assert set(variant["ratios"]) >= {"run_over_diy", "psf_phase_over_sep"}
        assert set(variant["within_limits"]) == set(variant["limits"]) | {
            "cold_calibrate_s",
            "cold_over_in_process",
        }
        assert variant["run_failure"] is None
        assert variant["calibrate_cli"]["exit_codes"] == [0]
        assert variant["calibrate_cli"]["cold_exit_code"] == 0
        assert variant["calibrate_cli"]["cold_process_seconds"] > 0
    assert report["variants"]["moffat"]["image"]["n_saturated_stars"] > 0
