"""``promptcal archive index``: index an observatory's directory of FITS files as a night.

``promptcal archive index DIR --output NIGHT/manifest.json [--config MAPPING]
[--glob PATTERN] [--refcat REFCAT]`` reads only the headers of the files in DIR,
derives each exposure's UTC time, exposure time, band, instrument, detector, pointing
hint and pixel scale through a header mapping (``--config``: a JSON file or a name in
``configs/archive/``, e.g. ``microobservatory``; default: the standard cards), groups
the files into visits and writes the manifest that ``promptcal replay`` reads, with
``camera.json`` beside it. Every file that cannot be used is printed with its reason
(and kept in the manifest's ``skipped``). Exit codes: 0 some files indexed; 2 none
usable (nothing written). See ``docs/archive.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``archive`` (sub-command ``index``) on the ``promptcal`` parser."""
    p = subparsers.add_parser(
        "archive",
        help="index a directory of archived FITS frames as a replayable night",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("index", help="write a night manifest of a directory of FITS files")
    q.add_argument("directory", type=Path, help="the archive directory")
    q.add_argument("--output", type=Path, required=True, help="manifest.json to write")
    q.add_argument("--config", help="header mapping: JSON file or name in configs/archive/")
    q.add_argument("--glob", default="*", help="file-name pattern ('**/*.fits' recurses)")
    q.add_argument("--refcat", type=Path, help="reference-catalog directory of the night")
    q.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Index; print what was indexed and every skipped file; return the exit code."""
    from promptcal.archive import index_archive, load_mapping

    mapping = load_mapping(args.config)
    result = index_archive(
        args.directory, args.output, mapping=mapping, pattern=args.glob, refcat=args.refcat
    )
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    rate = f"{result.files_per_second:.0f} files/s" if result.scan_time > 0 else "-"
    print(
        f"{result.n_files} files read in {result.scan_time:.3f} s ({rate}), mapping "
        f"{mapping.name}: {len(result.frames)} indexed in {result.n_visits} visits, "
        f"{len(result.skipped)} skipped"
    )
    if result.manifest_path is None:
        print(f"nothing usable in {args.directory}: no manifest written")
        return 2
    frames = result.frames
    first, last = min(f.mid_time for f in frames), max(f.mid_time for f in frames)
    print(
        f"instrument {result.instrument}, {first:%Y-%m-%dT%H:%M:%S} → {last:%Y-%m-%dT%H:%M:%S}"
        f" UTC; manifest: {result.manifest_path}"
    )
    return 0
