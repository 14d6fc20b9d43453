"""The README demo: a small synthetic night through Kafka, calibrated, with its report.

``python -m promptcal.commands.night_demo [--output DIR] [--visits N] [--size PX]``:

1. simulate a small night (toy3x3 camera, 4 detectors, band changes, varying seeing,
   sky and transparency, one or two snaps) with its reference catalog;
2. start the bundled Kafka-protocol broker and create the topics;
3. start a worker (``promptcal serve``, a subprocess) and wait until it is ready;
4. replay the night through Kafka as fast as possible and wait for every result;
5. stop the worker (SIGTERM: it drains and commits), write the night report, and print
   its path and a one-screen summary.

Everything goes under ``--output`` (default: a new directory in the system's temporary
directory, kept so the report can be opened). Exit 0 when every exposure was
calibrated.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

INSTRUMENT_PREFIX = "demo."


def _wait_ready(port: int, worker: subprocess.Popen, timeout: float, log: Path) -> float:
    """Poll the worker's ``/readyz`` until 200; returns the wait [s]."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; log: {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout:.0f} s; log: {log}")


def run_demo(output: Path, visits: int, size: int, seed: int) -> int:
    """Run the five steps; returns the exit code."""
    from promptcal.night.plan import NightConfig
    from promptcal.night.simulate import simulate_night
    from promptcal.replay.kafka import replay_kafka
    from promptcal.report.html import one_screen_summary, write_report
    from promptcal.stream.broker import LocalBroker, free_port
    from promptcal.stream.topics import create_topics

    t0 = time.monotonic()
    night_dir, products = output / "night", output / "products"
    config = NightConfig(
        camera="toy3x3", n_visits=visits, detectors=(0, 1, 3, 4), width=size, height=size,
        seed=seed, visits_per_band=max(1, visits // 3),
    )  # fmt: skip
    print(f"[1/5] simulating {visits} visits x 4 detectors of {size}x{size} px ...", flush=True)
    manifest = simulate_night(config, night_dir)
    print(f"      {manifest} ({time.monotonic() - t0:.1f} s)")
    with LocalBroker() as broker:
        create_topics(broker.bootstrap, partitions=4, prefix=INSTRUMENT_PREFIX)
        print(f"[2/5] broker on {broker.bootstrap}, topics {INSTRUMENT_PREFIX}*", flush=True)
        port, log = free_port(), output / "worker.log"
        command = [
            sys.executable, "-m", "promptcal", "serve",
            "--bootstrap", broker.bootstrap, "--group", "demo-workers",
            "--refcat", str(night_dir / "refcat"), "--output", str(products),
            "--input-root", str(night_dir),
            "--camera", str(night_dir / "camera.json"), "--prefix", INSTRUMENT_PREFIX,
            "--http-host", "127.0.0.1", "--http-port", str(port), "--snap-wait", "30",
            # Quick group joins for a one-worker demo (production keeps the defaults).
            "--consumer-option", "session.timeout.ms=6000",
            "--consumer-option", "heartbeat.interval.ms=500",
        ]  # fmt: skip
        with open(log, "w") as log_stream:
            worker = subprocess.Popen(command, stdout=log_stream, stderr=subprocess.STDOUT)
        try:
            print("[3/5] starting a worker (warm-up compiles kernels on a cold cache) ...")
            waited = _wait_ready(port, worker, 300.0, log)
            print(f"      ready in {waited:.1f} s; log {log}", flush=True)
            print("[4/5] replaying the night through Kafka (speed max) ...", flush=True)
            summary = replay_kafka(
                manifest, broker.bootstrap, prefix=INSTRUMENT_PREFIX, output=products,
                timeout=120.0,
            )  # fmt: skip
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(40)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    print("[5/5] writing the night report ...", flush=True)
    index, numbers = write_report(products)
    print()
    print(one_screen_summary(numbers))
    print(f"report      {index}")
    print(f"wall time   {time.monotonic() - t0:.1f} s")
    ok = not (summary.missing or summary.failed or summary.dead_letters)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="directory for the night, products, report")
    parser.add_argument("--visits", type=int, default=9, help="visits in the night")
    parser.add_argument("--size", type=int, default=512, help="detector width = height [px]")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    output = args.output or Path(tempfile.mkdtemp(prefix="promptcal-night-"))
    output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run_demo(output.resolve(), args.visits, args.size, args.seed)


if __name__ == "__main__":
    sys.exit(main())
