"""Night simulation and replay (issue 6).

- the plan: deterministic in the seed, band changes with a filter-change pause, seeing
  and transparency within bounds, mixed snaps, Rubin visit ids;
- the schedule: next-visit ≥ 20 s (night time) before the shutter, snaps in order, and
  the pacer's wall-time scaling;
- a 20-visit × 4-detector night (256 px) replayed through Kafka at speed max to a worker
  (in a thread, the same code as ``promptcal serve``) gives byte-identical star
  catalogs and calexps, and identical summaries, to ``replay --to local`` in 2
  processes; both agree with the simulation's true zero points, seeing and sky;
- ``promptcal replay --to local`` killed (SIGKILL) midway and run again finishes the
  rest without touching the exposures finished before the kill.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from worker_helpers import poll_until

from promptcal.commands.cli import main as cli_main
from promptcal.commands.simulate_night import parse_detectors, parse_size
from promptcal.core.camera import load_camera
from promptcal.core.constants import FWHM_PER_SIGMA
from promptcal.core.errors import InvalidInputError
from promptcal.night.manifest import read_manifest
from promptcal.night.plan import NightConfig, plan_night
from promptcal.night.simulate import simulate_night
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.refcat import RefcatLoader
from promptcal.replay.jobs import Pacer, build_jobs, parse_speed, read_results, schedule
from promptcal.replay.kafka import replay_kafka
from promptcal.replay.local import replay_local
from promptcal.stream.settings import WorkerSettings
from promptcal.stream.topics import TopicNames, create_topics
from promptcal.stream.worker import Worker

pytest_plugins = ["kafka_fixtures"]

FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
NIGHT = NightConfig(n_visits=20, detectors=(0, 1, 3, 4), width=256, height=256, seed=7)


def test_plan_is_deterministic_with_band_changes_and_varying_conditions():
    camera = load_camera("toy3x3")
    plan = plan_night(NIGHT, camera)
    assert plan == plan_night(NIGHT, camera)
    assert plan != plan_night(NIGHT.with_overrides({"seed": 8}), camera)
    assert [v.band for v in plan] == [b for b in "gri" for _ in range(5)] + ["g"] * 5
    for prev, cur in itertools.pairwise(plan):
        gap = (cur.start_time - prev.start_time).total_seconds()
        change = NIGHT.filter_change_time if cur.band != prev.band else 0.0
        assert gap == pytest.approx(NIGHT.visit_time + NIGHT.overhead + change)
        assert cur.visit == prev.visit + 1
    assert str(plan[0].visit) == "2026022300001"  # evening of the night's day_obs
    seeing = np.array([v.seeing for v in plan])
    transparency = np.array([v.transparency for v in plan])
    assert seeing.min() >= 0.6 and seeing.max() <= 1.3 and np.ptp(seeing) > 0.05
    assert transparency.min() >= 0.6 and transparency.max() <= 1.0 and np.ptp(transparency) > 0
    assert {v.n_snaps for v in plan} == {1, 2}
    for v in plan:
        assert v.exposure_time * v.n_snaps == pytest.approx(NIGHT.visit_time)
        assert v.zero_point == pytest.approx(31.4 - 2.5 * np.log10(v.calibration))


def test_cli_option_parsing():
    assert parse_detectors("0-3,94,2") == (0, 1, 2, 3, 94)
    assert parse_size("512x256") == (512, 256) and parse_size("300") == (300, 300)
    for bad in ("a", "3-1", ","):
        with pytest.raises(InvalidInputError):
            parse_detectors(bad)
    with pytest.raises(InvalidInputError):
        parse_size("32x32")
    assert parse_speed("max") == float("inf") and parse_speed("10") == 10.0
    with pytest.raises(InvalidInputError):
        parse_speed("0")


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """The 20-visit × 4-detector night, simulated once."""
    return simulate_night(NIGHT, tmp_path_factory.mktemp("night"))


def test_simulated_night_files_and_schedule(night):
    manifest, base = read_manifest(night)
    assert len(manifest.visits) == 20
    assert len(manifest.exposures) == 4 * sum(v.n_snaps for v in manifest.visits)
    assert all((base / e.uri).is_file() for e in manifest.exposures)
    assert (base / manifest.refcat / "manifest.json").is_file()
    jobs = build_jobs(manifest)
    assert len(jobs) == 80
    events = schedule(manifest, jobs)
    assert len(events) == 80 + len(manifest.exposures)
    assert [e.at for e in events] == sorted(e.at for e in events)
    announced: dict[tuple[int, int], float] = {}
    for event in events:
        if event.kind == "next-visit":
            announced[event.job.key] = event.at
            continue
        # At 1x the announcement precedes the pixels by >= 20 s (Rubin's fan-out).
        lead = event.at - announced[event.job.key]
        shutter_to_ready = (
            NIGHT.readout_time + (event.snap.snap + 1) * event.job.visit.exposure_time
        )
        assert lead == pytest.approx(NIGHT.next_visit_lead + shutter_to_ready)
        assert lead >= 20.0
    pacer = Pacer(10.0)
    assert pacer.due_in(50.0) == pytest.approx(5.0, abs=0.05)
    assert Pacer(float("inf")).due_in(1e6) == 0.0


def _hashes(root: Path, instrument: str) -> dict[tuple[int, int, str], str]:
    out = {}
    for path in sorted((root / instrument).glob("*/*/*")):
        if path.name in ("stars.parquet", "calexp.fits", "psf_stars.parquet"):
            key = (int(path.parent.parent.name), int(path.parent.name), path.name)
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _summaries(root: Path, instrument: str) -> dict[tuple[int, int], dict]:
    return {
        (int(p.parent.parent.name), int(p.parent.name)): json.loads(p.read_text())
        for p in (root / instrument).glob("*/*/summary.json")
    }


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_replay_gives_the_same_products_as_local(night, kafka_broker, tmp_path):
    manifest, base = read_manifest(night)
    names = TopicNames(f"n{uuid.uuid4().hex[:8]}.")
    create_topics(kafka_broker.bootstrap, partitions=3, prefix=names.prefix)
    kafka_out, local_out = tmp_path / "kafka", tmp_path / "local"
    settings = WorkerSettings(
        bootstrap=kafka_broker.bootstrap,
        group_id=f"g{uuid.uuid4().hex[:8]}",
        output=str(kafka_out),
        topic_prefix=names.prefix,
        http_host="127.0.0.1",
        http_port=0,
        snap_wait=30.0,
        statistics_interval_ms=0,
        do_warmup=False,
        consumer_overrides=FAST_GROUP,
    )
    worker = Worker(
        settings,
        config=CalibrateImageConfig(),
        refcat=RefcatLoader(base / manifest.refcat),
        camera=load_camera(base / manifest.camera),
        registry=CollectorRegistry(),
    )
    thread = threading.Thread(target=worker.run, name="worker")
    thread.start()
    try:
        via_kafka = replay_kafka(
            night, kafka_broker.bootstrap, prefix=names.prefix, output=kafka_out,
            timeout=60.0, progress=False,
        )  # fmt: skip
    finally:
        worker.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    via_local = replay_local(night, local_out, workers=2, progress=False)
    for summary in (via_kafka, via_local):
        assert summary.total == 80 and summary.skipped == 0 and not summary.missing
        assert summary.processed == 80 and summary.dead_letters == 0
    assert via_kafka.succeeded == via_local.succeeded >= 68  # 256 px: a few fail

    hashes_kafka = _hashes(kafka_out, manifest.instrument)
    hashes_local = _hashes(local_out, manifest.instrument)
    stars = [k for k in hashes_kafka if k[2] == "stars.parquet"]
    assert len(stars) >= 68
    assert hashes_kafka == hashes_local
    summaries_kafka = _summaries(kafka_out, manifest.instrument)
    summaries_local = _summaries(local_out, manifest.instrument)
    assert len(summaries_kafka) == 80
    for key, doc in summaries_kafka.items():
        other = summaries_local[key]
        for field in ("status", "error", "summary", "n_stars", "n_psf_stars", "config_hash"):
            assert doc[field] == other[field], (key, field)

    # Both logs hold one calibrated message per exposure, with a latency.
    for root in (kafka_out, local_out):
        calibrated = {
            (r["visit"], r["detector"]): r["message"]
            for r in read_results(root)
            if r["kind"] == "calibrated"
        }
        assert len(calibrated) == 80
        assert all(m["end_to_end_latency"] is not None for m in calibrated.values())

    # The calibration recovers the simulated conditions of every visit.
    for (visit, _det), doc in summaries_kafka.items():
        if doc["status"] != "success":
            continue
        truth, stats = manifest.visit(visit), doc["summary"]
        assert doc["band"] == truth.band
        assert stats["zeroPoint"] == pytest.approx(truth.zero_point, abs=0.1)
        fwhm = stats["psfSigma"] * FWHM_PER_SIGMA * stats["pixelScale"]
        assert fwhm == pytest.approx(truth.seeing, rel=0.1)
        assert stats["skyBg"] == pytest.approx(truth.sky, rel=0.02)


def _finished(root: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.glob("*/*/*/summary.json")}


@pytest.mark.slow
def test_local_replay_resumes_after_being_killed(tmp_path):
    small = NightConfig(n_visits=6, detectors=(0, 4), width=256, height=256, seed=3, snaps="1")
    manifest_path = simulate_night(small, tmp_path / "night")
    out = tmp_path / "products"
    # At speed 20 a visit is released every (30 + 7) / 20 = 1.85 s, so the kill
    # after two finished exposures comes long before the last visit is released.
    command = [
        sys.executable, "-m", "promptcal", "replay", str(manifest_path), "--to", "local",
        "--output", str(out), "--speed", "20", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        poll_until(lambda: len(_finished(out)) >= 2, 60.0, "two finished exposures")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = _finished(out)
    assert 2 <= len(before) < 12, "the kill must come midway"
    started = time.time()
    summary = replay_local(manifest_path, out, progress=False)
    assert summary.total == 12 and summary.skipped == len(before)
    assert summary.processed == 12 - len(before) and not summary.missing
    after = _finished(out)
    assert len(after) == 12
    for path, (mtime, content) in before.items():
        assert after[path] == (mtime, content), f"{path} was recomputed"
    redone = [p for p in after if p not in before]
    assert all(after[p][0] >= int(started * 1e9) - 10**9 for p in redone)
    # A third run has nothing left to do.
    again = replay_local(manifest_path, out, progress=False)
    assert again.skipped == 12 and again.processed == 0


def test_simulate_night_command(tmp_path, capsys):
    code = cli_main(
        ["simulate-night", "--camera", "lsstcam-like", "--visits", "2", "--detectors", "94",
         "--size", "128x96", "--snaps", "2", "--output", str(tmp_path), "--seed", "5"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "2 visits, 4 snap files" in out and "manifest:" in out
    manifest, base = read_manifest(tmp_path)
    assert manifest.instrument == "lsstcam-like"
    camera = load_camera(base / manifest.camera)
    assert (camera.detector(94).width, camera.detector(94).height) == (128, 96)
    first = manifest.exposures[0]
    assert first.ready_time - first.mid_exposure_time == dt.timedelta(seconds=7.5 + 2.0)
