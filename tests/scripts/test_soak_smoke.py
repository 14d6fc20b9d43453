"""``scripts/soak.py``, the CI variant (issue 15, deliverable 6): 60 exposures of
512×512 px through two ``promptcal serve`` workers and the bundled broker, ~30 s.

The full soak (500 exposures of 1024×1024 px) is run by hand; its figures are in
``docs/worker.md``. Here: nothing lost, duplicates identical, both workers drained
cleanly, every figure of the report present, and resident memory after warm-up
bounded (10 % here, where the short run makes the medians noisy; 5 % in the full soak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.mark.slow
@pytest.mark.kafka
def test_soak_ci_variant(record_property):
    command = [sys.executable, str(SCRIPT), "--exposures", "60", "--size", "512"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=180, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    record_property("soak", {k: v for k, v in report.items() if k != "rss"})
    assert report["lost"] == 0 and report["duplicates_identical"]
    assert report["statuses"]["success"] == 60
    assert report["worker_exit_codes"] == [0, 0]
    assert report["throughput_per_s"] > 0.5
    latency = report["latency_s"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 30
    for worker in ("w0", "w1"):
        series = report["rss"][worker]["mb_over_time"]
        assert len(series) >= 5 and all(mb > 50 for _, mb in series)
    assert report["rss_growth_after_warmup_max"] <= 0.10
