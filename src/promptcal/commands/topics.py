"""``promptcal topics``: manage the promptcal Kafka topics.

``promptcal topics create --bootstrap HOST:PORT --partitions N [--prefix P]`` creates
``<P>next-visit``, ``<P>image-ready``, ``<P>calibrated``, ``<P>metrics`` and
``<P>dead-letter``; topics that already exist are left as they are.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``topics`` on the console script's sub-parsers."""
    parser = subparsers.add_parser(
        "topics",
        help="create the promptcal Kafka topics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="topics_action", required=True)
    create = actions.add_parser("create", help="create the five topics (idempotent)")
    create.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers HOST:PORT")
    create.add_argument(
        "--partitions",
        type=int,
        required=True,
        help="partitions per topic (the maximum number of busy workers per group)",
    )
    create.add_argument("--prefix", default="", help="topic-name prefix, e.g. 'lsstcam.'")
    create.add_argument(
        "--replication-factor",
        type=int,
        default=-1,
        help="replicas per partition (default -1: the broker's default)",
    )
    create.add_argument("--timeout", type=float, default=15.0, help="bound on the call [s]")
    create.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Create the topics and print one line per topic."""
    from promptcal.stream.clients import load_client_settings
    from promptcal.stream.topics import create_topics

    created = create_topics(
        args.bootstrap,
        args.partitions,
        args.prefix,
        replication_factor=args.replication_factor,
        timeout=args.timeout,
        client_options=load_client_settings(),  # PROMPTCAL_KAFKA_*: SASL/TLS
    )
    for name, is_new in created.items():
        print(f"{name}\t{'created' if is_new else 'exists'}")
    return 0
