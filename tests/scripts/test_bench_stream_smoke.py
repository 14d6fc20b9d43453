"""``scripts/bench_stream.py`` end to end on tiny exposures, so the benchmark cannot rot.

The numbers of a 256×256 run mean nothing; the test checks that every phase ran
against real worker processes and the bundled broker, and that the report is whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_stream.py"


@pytest.mark.slow
@pytest.mark.kafka
def test_bench_stream_runs_every_phase():
    command = [
        sys.executable, str(SCRIPT), "--exposures", "2", "--width", "256", "--height", "256",
        "--stars", "60", "--bursts", "1",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["worker_exit_codes"] == [0, 0]  # both drained on SIGTERM
    assert report["n_exposures"] == 2
    assert len(report["latency_one_worker"]["all"]) == 2
    throughput = report["throughput"]
    assert throughput["one_worker"]["n"] == throughput["two_workers"]["n"] == 2
    assert len(throughput["one_worker"]["all_seconds"]) == 1
    assert throughput["two_workers_split"] == [1, 1]  # one exposure per worker
    assert throughput["ratio_two_to_one"] > 0
    assert set(report["within_limits"]) == set(report["limits"])
    assert set(report["n_failed"]) == {"latency", "one_worker", "two_workers"}
    assert report["image"]["sky"] == "moffat"  # the default benchmark sky
    cpus = sorted(os.sched_getaffinity(0))[:2]  # one core each, in order
    assert report["worker_cpus"] == {"w1": cpus[0], "w2": cpus[-1]}
