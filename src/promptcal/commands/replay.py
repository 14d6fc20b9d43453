"""``promptcal replay``: replay a night's messages with their archived cadence.

``promptcal replay MANIFEST --to kafka --bootstrap HOST:PORT [--prefix P] [--speed 1|10|max]
[--output DIR]`` publishes ``next-visit`` (``next_visit_lead`` ≥ 20 s before each
visit, scaled by the speed) and ``image-ready`` messages to running ``promptcal serve``
workers and waits for their ``calibrated`` results (``--no-wait``: publish only).

``promptcal replay MANIFEST --to local --output DIR [--workers N] [--speed S]`` runs
the worker's processing path in N processes without Kafka.

Both show a progress bar (exposures done, failures, rate) and skip exposures whose
products in ``--output`` are complete, so an interrupted replay resumes. Results are
logged to ``DIR/replay/results.jsonl`` for ``promptcal report``. Exit codes: 0 every
exposure calibrated; 3 some calibrations failed or snaps were unreadable; 4 some
exposures got no result (broker down, no worker) or the replay was interrupted.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from promptcal.core.errors import InvalidInputError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on the ``promptcal`` sub-command parser."""
    p = subparsers.add_parser(
        "replay",
        help="replay a night (manifest) to Kafka workers or through the local worker path",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", type=Path, help="manifest.json of the night (or its directory)")
    p.add_argument("--to", choices=("kafka", "local"), required=True, help="destination")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers HOST:PORT (--to kafka)")
    p.add_argument("--prefix", default="", help="topic-name prefix (--to kafka)")
    p.add_argument("--speed", default="max", help="night-time speed-up: 1, 10, ... or max")
    p.add_argument("--output", type=Path, help="product root (required with --to local)")
    p.add_argument("--workers", type=int, default=1, help="processes (--to local)")
    p.add_argument("--config", help="calibration config JSON (--to local)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="calibration config override (--to local; repeatable)",
    )
    p.add_argument("--no-wait", dest="wait", action="store_false", help="publish only (kafka)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this long without results [s]"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Replay; print a summary line; return the exit code."""
    from promptcal.replay.jobs import parse_speed
    from promptcal.replay.kafka import replay_kafka
    from promptcal.replay.local import replay_local

    speed = parse_speed(args.speed)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()  # stop releasing messages; exposures in hand complete

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.to == "kafka":
            if not args.bootstrap:
                raise InvalidInputError("--to kafka needs --bootstrap HOST:PORT")
            summary = replay_kafka(
                args.manifest,
                args.bootstrap,
                prefix=args.prefix,
                speed=speed,
                output=args.output,
                wait=args.wait,
                timeout=args.timeout,
                progress=args.progress,
                stop=stop,
            )
        else:
            if args.output is None:
                raise InvalidInputError("--to local needs --output DIR")
            from promptcal.commands.calibrate import build_config

            summary = replay_local(
                args.manifest,
                args.output,
                workers=args.workers,
                speed=speed,
                config=build_config(args.config, args.overrides),
                progress=args.progress,
                stop=stop,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(
        f"{summary.total} exposures: {summary.skipped} already done, {summary.succeeded} "
        f"calibrated, {summary.failed} failed, {summary.dead_letters} unreadable, "
        f"{len(summary.missing)} without result, in {summary.wall_time:.1f} s"
    )
    if summary.missing or stop.is_set():
        return 4
    return 3 if summary.failed or summary.dead_letters else 0
