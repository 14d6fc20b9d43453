"""``promptcal broker``: run the bundled local Kafka-protocol broker in the foreground.

Prints the bootstrap address (``127.0.0.1:PORT``) on stdout, then serves until
SIGINT or SIGTERM. Memory only: everything is lost when it stops. For the demo and
for development; production uses Apache Kafka.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``broker`` on the console script's sub-parsers."""
    parser = subparsers.add_parser(
        "broker",
        help="run a local memory-only Kafka-protocol broker (demo, development)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--log", default=None, help="broker log file (default: a temp file)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="also create the promptcal topics with this many partitions",
    )
    parser.add_argument("--prefix", default="", help="topic-name prefix for --partitions")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Start the broker, print its address and wait for SIGINT/SIGTERM."""
    from promptcal.stream.broker import LocalBroker
    from promptcal.stream.topics import create_topics

    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalBroker(args.port, host=args.host, log_path=args.log) as broker:
            if args.partitions is not None:
                create_topics(broker.bootstrap, args.partitions, args.prefix)
            print(broker.bootstrap, flush=True)
            print(
                f"promptcal broker: listening on {broker.bootstrap} (pid {broker.pid}, "
                f"log {broker.log_path}); stop with Ctrl-C",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(0.5):
                if not broker.is_running():
                    print(
                        f"promptcal broker: broker process died; log {broker.log_path}",
                        file=sys.stderr,
                    )
                    return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
