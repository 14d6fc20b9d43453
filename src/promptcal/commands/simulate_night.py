"""``promptcal simulate-night``: a synthetic night of visits, its refcat and manifest.

``promptcal simulate-night --camera toy3x3 --visits 20 --detectors 0-3 --size 512x512
--output DIR`` writes one FITS file per (visit, detector, snap) under ``DIR/raw/``,
the camera (``camera.json``), a reference catalog covering every exposure
(``refcat/``) and ``manifest.json`` (visits, snaps, URIs, times, bands, pointing,
rotation, and the truth: seeing, sky, transparency, zero point). The night follows a
pointing sequence with band changes, a seeing random walk, twilight sky and drifting
transparency; it is fully determined by ``--seed``. See ``docs/replay-and-report.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from promptcal.core.errors import InvalidInputError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate-night`` on the ``promptcal`` sub-command parser."""
    p = subparsers.add_parser(
        "simulate-night",
        help="simulate a night of visits (snaps, refcat, manifest) for replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--camera", default="toy3x3", help="toy3x3, lsstcam-like or a camera JSON")
    p.add_argument("--visits", type=int, required=True, help="number of visits")
    p.add_argument("--detectors", help="detector ids, e.g. '0,1,4' or '0-3,94' (default: all)")
    p.add_argument("--size", help="detector size WxH [px] (default: the camera's)")
    p.add_argument("--output", required=True, type=Path, help="directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the night (default 0)")
    p.add_argument("--snaps", choices=("1", "2", "mixed"), default="mixed", help="snaps/visit")
    p.add_argument("--bands", default="g,r,i", help="bands in order of use (default g,r,i)")
    p.add_argument("--visits-per-band", type=int, default=5, help="visits between filter changes")
    p.add_argument("--instrument", help="instrument name (default: the camera's name)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override another NightConfig field (value read as JSON); repeatable",
    )
    p.set_defaults(handler=run)
    return p


def parse_detectors(text: str | None) -> tuple[int, ...] | None:
    """``"0,1,4"`` / ``"0-3,94"`` → detector ids (sorted, unique)."""
    if text is None:
        return None
    ids: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError(part)
                ids.update(range(lo, hi + 1))
            elif part:
                ids.add(int(part))
    except ValueError as exc:
        raise InvalidInputError(
            f"--detectors {text!r}: expected ids like '0,1,4' or '0-3'"
        ) from exc
    if not ids:
        raise InvalidInputError(f"--detectors {text!r} names no detector")
    return tuple(sorted(ids))


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    """``"512x256"`` → (512, 256) [px]; ``"512"`` → (512, 512)."""
    if text is None:
        return None, None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError as exc:
        raise InvalidInputError(f"--size {text!r}: expected WxH, e.g. 512x512") from exc
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 64:
        raise InvalidInputError(f"--size {text!r}: expected WxH with both >= 64 px")
    return parts[0], parts[1]


def build_config(args: argparse.Namespace):
    """The NightConfig of the options."""
    from promptcal.core.config import parse_set_option
    from promptcal.night.plan import NightConfig

    width, height = parse_size(args.size)
    data = {
        "camera": args.camera,
        "n_visits": args.visits,
        "detectors": parse_detectors(args.detectors),
        "width": width,
        "height": height,
        "seed": args.seed,
        "snaps": args.snaps,
        "bands": tuple(b.strip() for b in args.bands.split(",") if b.strip()),
        "visits_per_band": args.visits_per_band,
        "instrument": args.instrument,
    }
    try:
        config = NightConfig(**data)
    except Exception as exc:  # pydantic.ValidationError
        raise InvalidInputError(f"invalid night: {exc}") from exc
    overrides = dict(parse_set_option(text) for text in args.set)
    return config.with_overrides(overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    """Simulate the night; print the manifest path and a summary."""
    from promptcal.night.simulate import simulate_night

    config = build_config(args)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rsimulated {done}/{total} visit-detectors", end="", file=sys.stderr)

    path = simulate_night(config, args.output, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    from promptcal.night.manifest import read_manifest

    manifest, _ = read_manifest(path)
    bands = sorted({v.band for v in manifest.visits})
    print(
        f"{len(manifest.visits)} visits, {len(manifest.exposures)} snap files, "
        f"bands {','.join(bands)}, instrument {manifest.instrument}"
    )
    print(f"manifest: {path}")
    return 0
