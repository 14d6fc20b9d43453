"""Durability and crash leftovers of product files (issue 15): the parents of new product
directories are fsynced, and temporary files of dead writers are removed, those of live
writers kept."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from promptcal.io.files import (
    TEMP_PATTERN,
    atomic_write,
    remove_stale_temporaries,
    sync_directories,
    temp_owner,
)
from promptcal.service.locations import product_dir_parents, recent_product_dirs

HOST = socket.gethostname()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_names_say_who_writes_them(tmp_path):
    seen = []

    def write(tmp: str) -> None:
        seen.append(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("x")

    atomic_write(tmp_path / "calexp.fits", write)
    match = TEMP_PATTERN.match(seen[0])
    assert match and int(match["pid"]) == os.getpid() and match["host"] == HOST
    assert seen[0].startswith(".calexp.fits.") and temp_owner() == f"{os.getpid()}@{HOST}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calexp.fits"]


def test_only_dead_or_silent_writers_lose_their_temporary_files(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files = {
            "dead": f".calexp.fits.a1.{_dead_pid()}@{HOST}.tmp",
            "self": f".calexp.fits.a2.{os.getpid()}@{HOST}.tmp",  # a previous life
            "live": f".calexp.fits.a3.{live.pid}@{HOST}.tmp",
            "other-host-fresh": ".calexp.fits.a4.7@elsewhere.tmp",
            "other-host-old": ".stars.parquet.a5.7@elsewhere.tmp",
            "product": "calexp.fits",
            "not-ours": ".hidden.tmp",
        }
        for name in files.values():
            (tmp_path / name).write_bytes(b"\0" * 1000)
        old = time.time() - 3600
        os.utime(tmp_path / files["other-host-old"], (old, old))
        removed = remove_stale_temporaries([tmp_path, tmp_path / "missing"], stale_after=600)
        assert {p.name for p in removed} == {
            files["dead"],
            files["self"],
            files["other-host-old"],
        }
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {files[k] for k in ("live", "other-host-fresh", "product", "not-ours")}
    finally:
        live.kill()
        live.wait()


def test_the_sweep_finds_recent_product_directories_only(tmp_path):
    recent = tmp_path / "ToyCam" / "12" / "3"
    old = tmp_path / "ToyCam" / "5" / "1"
    recent.mkdir(parents=True)
    old.mkdir(parents=True)
    week_ago = time.time() - 7 * 86400
    os.utime(old.parent, (week_ago, week_ago))
    assert recent_product_dirs(tmp_path, window=86400) == [recent]
    assert product_dir_parents(recent, tmp_path) == [recent.parent, recent.parent.parent, tmp_path]


def test_new_product_directories_are_made_durable_in_their_parents(tmp_path, monkeypatch):
    """Spy on os.fsync: make_durable must fsync the visit, instrument and root
    directories, whose entries a crash would otherwise lose (the files survive, unnamed)."""
    from promptcal.service.outcome import Outcome
    from promptcal.service.process import ExposureProcessor

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    root = tmp_path / "out"
    directory = root / "ToyCam" / "7" / "2"
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text("{}")

    class Config:
        def config_hash(self) -> str:
            return "h"

    processor = ExposureProcessor(Config(), None, str(root))
    outcome = Outcome(
        instrument="ToyCam", visit=7, detector=2, status="success", summary={},
        products={"summary": (directory / "summary.json").as_uri()}, timings={},
        config_hash="h", wall_time=0.0, cpu_time=None, peak_rss=None, preload_hit=None,
        preload_duration=None, queue_wait=None, last_produced_at=0.0,
    )  # fmt: skip
    processor.make_durable(outcome)
    expected = [directory / "summary.json", directory, directory.parent, root / "ToyCam", root]
    assert [str(p) for p in expected] == synced


def test_sync_directories_fsyncs_each_once(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(os.readlink(f"/proc/self/fd/{fd}")))
    sync_directories([tmp_path, str(tmp_path), tmp_path / "sub" / ".."])
    assert calls == [str(tmp_path), str(tmp_path)]  # the same path spelled twice: once
    with pytest.raises(FileNotFoundError):
        sync_directories([tmp_path / "absent"])
