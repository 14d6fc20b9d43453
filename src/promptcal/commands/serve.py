"""``promptcal serve``: the streaming calibration worker.

``promptcal serve --bootstrap HOST:PORT --group G --refcat DIR --output URI [options]``
consumes ``next-visit`` and ``image-ready``, preloads reference shards, calibrates each
visit-detector and publishes ``calibrated`` and ``metrics`` messages (see
``docs/worker.md``). It serves ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

SIGTERM or SIGINT: stop polling, finish the exposure in hand, flush, commit, exit 0
within ``--grace-period`` seconds (past it the process exits with code 4 and the
exposure in hand is redone by another worker). A second signal exits at once (4).
Exit codes: 0 clean stop; 2 invalid configuration; 4 broker or storage failure
beyond the retries.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

log = logging.getLogger("promptcal.stream.serve")

#: Exit code when the grace period runs out (the cli's transient-failure code).
EXIT_GRACE_EXCEEDED = 4


# Long: a flat list of the documented `serve` options (docs/worker.md); splitting it by
# topic would only hide options from the reader of --help's source.
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``serve`` sub-command."""
    p = subparsers.add_parser(
        "serve",
        help="run a streaming calibration worker (Kafka in, products and results out)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers HOST:PORT[,...]")
    p.add_argument("--group", required=True, help="consumer group of the instrument's workers")
    p.add_argument("--refcat", required=True, help="reference-catalog directory")
    p.add_argument("--output", required=True, help="product root: directory or file:// URI")
    p.add_argument("--config", help="JSON file of calibration config overrides")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="calibration config override (repeatable)",
    )
    p.add_argument("--prefix", default="", help="topic-name prefix, e.g. 'lsstcam.'")
    p.add_argument(
        "--camera",
        default="lsstcam-like",
        help="camera for the preload footprint: built-in name or JSON file",
    )
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port (0: any free)")
    p.add_argument("--poll-timeout", type=float, default=0.1, help="longest poll wait [s]")
    p.add_argument(
        "--snap-wait", type=float, default=60.0, help="wait for the other snaps after the first [s]"
    )
    p.add_argument(
        "--next-visit-wait",
        type=float,
        default=0.0,
        help="hold a complete exposure for its next-visit until no message came for this "
        "long [s] (replays at full speed; 0: no hold)",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="SIGTERM to exit, including the exposure in hand [s]",
    )
    p.add_argument(
        "--max-exposure-seconds",
        type=float,
        default=300.0,
        help="worst-case time of one exposure; sets max.poll.interval.ms [s]",
    )
    p.add_argument("--retries", type=int, default=5, help="retries of a publish or write")
    p.add_argument(
        "--retry-backoff", type=float, default=0.5, help="first retry wait, doubled each retry [s]"
    )
    p.add_argument(
        "--delivery-timeout",
        type=float,
        default=10.0,
        help="longest wait for the broker's acknowledgement [s]",
    )
    p.add_argument(
        "--statistics-interval-ms",
        type=int,
        default=5000,
        help="librdkafka statistics period for the lag gauge [ms]; 0: off",
    )
    p.add_argument(
        "--refcat-cache-mb", type=float, default=256.0, help="reference-shard cache budget [MiB]"
    )
    p.add_argument(
        "--heap-reserve-mb",
        type=float,
        default=None,
        help="heap faulted in before ready [MB] (default: 64 B per pixel of the camera's "
        "largest detector; 0: off)",
    )
    p.add_argument(
        "--cpus",
        type=_parse_cpus,
        default=None,
        metavar="LIST",
        help="run this worker's threads on these CPUs only, e.g. '3' or '0,1' (one worker "
        "per core without a container CPU limit); default: all CPUs",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the kernel warm-up (the first exposure pays for it)",
    )
    p.add_argument(
        "--consumer-option",
        dest="consumer_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka consumer setting (repeatable)",
    )
    _add_safety_options(p)
    p.set_defaults(handler=run)
    return p


def _add_safety_options(p: argparse.ArgumentParser) -> None:
    """Input confinement and limits, Kafka security settings, HTTP interface (issue 15)."""
    p.add_argument(
        "--http-host",
        default=os.environ.get("PROMPTCAL_HTTP_HOST", "127.0.0.1"),
        help="interface of the read-only HTTP endpoints (default $PROMPTCAL_HTTP_HOST or "
        "loopback; a pod needs 0.0.0.0 or its IP for probes and scrapes)",
    )
    p.add_argument(
        "--input-root",
        dest="input_roots",
        action="append",
        default=[],
        metavar="DIR",
        help="directory snap files must resolve into, symlinks resolved (repeatable); "
        "without one, snaps are read from anywhere (a warning at start)",
    )
    p.add_argument("--max-file-mb", type=float, default=1024.0, help="largest snap file [MiB]")
    p.add_argument(
        "--max-pixels", type=int, default=2**26, help="largest image plane of a snap [pixels]"
    )
    p.add_argument(
        "--file-wait",
        type=float,
        default=10.0,
        help="wait for a snap file that is missing or still being written [s]",
    )
    p.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="librdkafka settings of every client (security.protocol, sasl.*, ssl.*): "
        "name=value lines; PROMPTCAL_KAFKA_<NAME> variables override them (_ for .). "
        "Keep secrets there, not on the command line",
    )


def _parse_cpus(text: str) -> frozenset[int]:
    try:
        cpus = frozenset(int(part) for part in text.split(","))
    except ValueError:
        cpus = frozenset()
    if not cpus or min(cpus) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of CPUs")
    return cpus


def pin_to_cpus(cpus: frozenset[int]) -> None:
    """Run every thread of this process, and those it starts later, on ``cpus`` only.

    A worker's helper threads (the calexp writer, the finisher, librdkafka's) then
    share its core instead of borrowing another worker's, like under a container CPU
    limit of one core.

    Raises
    ------
    InvalidInputError
        A CPU this process may not use, or no CPU affinity on this platform.
    """
    from promptcal.core.errors import InvalidInputError

    if not hasattr(os, "sched_setaffinity"):
        raise InvalidInputError("--cpus: this platform has no CPU affinity")
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        raise InvalidInputError(
            f"--cpus {sorted(cpus)}: this process may only use CPUs {sorted(allowed)}"
        )
    # The calling thread's mask is inherited by new threads; threads started by
    # imports (if any) are set one by one.
    for task in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(task), cpus)


def _parse_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value), the value as written: librdkafka parses text, and a
    cast would mangle values such as ``007`` or ``1e3``."""
    from promptcal.core.errors import InvalidInputError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidInputError(f"--consumer-option {text!r}: expected KEY=VALUE")
    return key, value


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
        return up - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def run(args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM/SIGINT; returns the exit code."""
    from promptcal.commands.calibrate import build_config
    from promptcal.core.camera import load_camera
    from promptcal.refcat import RefcatLoader
    from promptcal.stream.worker import Worker

    if args.verbose == 0:  # the worker's INFO lines are its operational log
        for layer in ("promptcal.stream", "promptcal.service"):
            logging.getLogger(layer).setLevel(logging.INFO)
    if args.cpus is not None:
        pin_to_cpus(args.cpus)
        log.info("running on CPUs %s", ",".join(map(str, sorted(args.cpus))))
    settings = _settings(args)
    config = build_config(args.config, args.overrides)
    refcat = RefcatLoader(args.refcat, cache_bytes=int(args.refcat_cache_mb * 2**20))
    camera = load_camera(settings.camera)
    stop = threading.Event()

    def on_ready(event: str, info: dict[str, Any]) -> None:
        if event == "ready":
            age = process_age()
            log.info(
                "ready on http port %s, %s s after process start",
                info["http_port"],
                "?" if age is None else f"{age:.2f}",
            )

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            os._exit(EXIT_GRACE_EXCEEDED)  # second signal: the operator insists
        log.info(
            "%s received: draining (grace period %.1f s)",
            signal.Signals(signum).name,
            settings.grace_period,
        )
        stop.set()
        watchdog = threading.Timer(settings.grace_period, _grace_exceeded, (time.monotonic(),))
        watchdog.daemon = True
        watchdog.start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = Worker(
            settings,
            config=config,
            refcat=refcat,
            camera=camera,
            stop_event=stop,
            listener=on_ready,
        )
        code = worker.run()
        log.info("stopped cleanly")
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _settings(args: argparse.Namespace):
    """The :class:`~promptcal.stream.settings.WorkerSettings` of the command line."""
    from promptcal.stream.clients import load_client_settings
    from promptcal.stream.settings import WorkerSettings

    return WorkerSettings(
        bootstrap=args.bootstrap,
        group_id=args.group,
        output=args.output,
        input_roots=tuple(args.input_roots),
        max_file_mb=args.max_file_mb,
        max_pixels=args.max_pixels,
        file_wait=args.file_wait,
        topic_prefix=args.prefix,
        poll_timeout=args.poll_timeout,
        snap_wait=args.snap_wait,
        next_visit_wait=args.next_visit_wait,
        grace_period=args.grace_period,
        http_host=args.http_host,
        http_port=args.http_port,
        max_exposure_seconds=args.max_exposure_seconds,
        retries=args.retries,
        retry_backoff=args.retry_backoff,
        delivery_timeout=args.delivery_timeout,
        camera=args.camera,
        statistics_interval_ms=args.statistics_interval_ms,
        do_warmup=args.warmup,
        heap_reserve_mb=args.heap_reserve_mb,
        consumer_overrides=dict(_parse_option(t) for t in args.consumer_options),
        client_settings=load_client_settings(args.kafka_config),
    )


def _grace_exceeded(since: float) -> None:
    print(
        f"promptcal serve: still running {time.monotonic() - since:.1f} s after the stop "
        "signal (grace period exceeded); exiting, the exposure in hand will be redone",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXIT_GRACE_EXCEEDED)
