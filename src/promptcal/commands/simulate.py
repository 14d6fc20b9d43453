"""``promptcal simulate``: write a synthetic exposure with its truth and refcat."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from promptcal.core.errors import InvalidInputError

#: Command-line flag -> SkyConfig field.
_FLAG_FIELDS = {
    "width": "width",
    "height": "height",
    "stars": "n_stars",
    "fwhm": "psf_fwhm",
    "psf": "psf_model",
    "snaps": "n_snaps",
}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate`` on the ``promptcal`` sub-command parser."""
    parser = subparsers.add_parser(
        "simulate",
        help="write a synthetic exposure, its truth catalog and a refcat",
        description=__doc__,
    )
    parser.add_argument("--output", required=True, type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--width", type=int, help="image width [px]")
    parser.add_argument("--height", type=int, help="image height [px]")
    parser.add_argument("--stars", type=int, help="number of stars")
    parser.add_argument("--fwhm", type=float, help="PSF FWHM [px]")
    parser.add_argument("--psf", choices=("gaussian", "moffat"), help="PSF profile")
    parser.add_argument("--snaps", type=int, choices=(1, 2), help="snaps per visit")
    parser.add_argument("--config", type=Path, help="SkyConfig as a JSON file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a SkyConfig field (value read as JSON when it parses); repeatable",
    )
    parser.add_argument("--compress", action="store_true", help="tile-compress the FITS planes")
    parser.set_defaults(handler=run)
    return parser


def build_config(args: argparse.Namespace):
    """The SkyConfig of ``args``: file, then flags, then ``--set`` overrides."""
    from promptcal.core.config import parse_set_option
    from promptcal.simulate import SkyConfig

    data: dict[str, Any] = {}
    if args.config is not None:
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"cannot read --config {args.config}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInputError(f"--config {args.config} must hold a JSON object")
        data = data.get("config", data)  # also accept write_simulation's *_config.json
    try:
        config = SkyConfig.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError
        raise InvalidInputError(f"invalid SkyConfig in {args.config}: {exc}") from exc
    overrides = {
        field: getattr(args, flag)
        for flag, field in _FLAG_FIELDS.items()
        if getattr(args, flag) is not None
    }
    overrides.update(parse_set_option(text) for text in args.set)
    return config.with_overrides(overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    """Simulate and write; print one ``kind: path`` line per file."""
    from promptcal.simulate import simulate_exposure, write_simulation

    config = build_config(args)
    sim = simulate_exposure(config, seed=args.seed)
    paths = write_simulation(sim, args.output, compress=args.compress)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
