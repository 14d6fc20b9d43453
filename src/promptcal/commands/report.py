"""``promptcal report DIR``: a self-contained HTML night report of a product root.

Reads every ``DIR/<instrument>/<visit>/<detector>/summary.json`` (and the replay's
``DIR/replay/results.jsonl`` for latencies and unreadable snaps) and writes
``index.html`` (figures embedded), the PNG figures and ``report.json`` to ``--output``
(default ``DIR/report``): zero point, PSF FWHM, sky and astrometric scatter against
time, a focal-plane map per quantity, the latency histogram and percentiles, and a
failures table. Prints the page's path and a one-screen summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on the ``promptcal`` sub-command parser."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML night report (quality, latency, failures) of a product root",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("directory", type=Path, help="product root (the replay/worker --output)")
    p.add_argument("--output", type=Path, help="report directory (default DIR/report)")
    p.add_argument("--camera", help="camera for the focal-plane maps (default: the night's)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the report; print its path and the summary."""
    from promptcal.report.html import one_screen_summary, write_report

    index, numbers = write_report(args.directory, args.output, camera=args.camera)
    print(one_screen_summary(numbers))
    print(f"report: {index}")
    return 0
