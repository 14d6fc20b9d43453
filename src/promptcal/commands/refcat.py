"""``promptcal refcat``: build and inspect reference catalogs.

``promptcal refcat build CATALOG --output DIR --ra COL --dec COL --band NAME=COL[:mag|:nJy]``
converts a CSV/FITS/VOTable/Parquet catalog into a HEALPix-sharded refcat directory;
``promptcal refcat info DIR`` prints a summary of an existing one.
"""

from __future__ import annotations

import argparse
import json

from promptcal.core.errors import InvalidInputError

_BAND_HELP = "band NAME=COLUMN[:mag|:nJy] (repeatable; magnitudes are AB, default :mag)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``refcat`` and its ``build``/``info`` sub-commands."""
    parser = subparsers.add_parser("refcat", help="build or inspect a reference catalog")
    actions = parser.add_subparsers(dest="refcat_command", required=True)

    build = actions.add_parser("build", help="shard a catalog file into a refcat directory")
    build.add_argument("catalog", help="input catalog (CSV, FITS table, VOTable or Parquet)")
    build.add_argument("--output", "-o", required=True, help="refcat directory to write")
    build.add_argument("--ra", required=True, help="RA column [deg, ICRS]")
    build.add_argument("--dec", required=True, help="Dec column [deg, ICRS]")
    build.add_argument("--band", action="append", required=True, help=_BAND_HELP)
    build.add_argument(
        "--band-err", action="append", default=[], help="error column NAME=COLUMN (repeatable)"
    )
    build.add_argument("--pm-ra", help="proper motion mu_alpha* column [mas/yr]")
    build.add_argument("--pm-dec", help="proper motion mu_delta column [mas/yr]")
    build.add_argument("--epoch", type=float, help="epoch of the positions [Julian year]")
    build.add_argument("--nside", type=int, default=32, help="HEALPix nside of the shards")
    build.add_argument("--id", dest="id_col", help="integer id column (default: row index)")
    build.add_argument(
        "--format",
        choices=("csv", "fits", "votable", "parquet"),
        help="input format (default: from the extension or content)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing refcat")
    build.set_defaults(handler=run)

    info = actions.add_parser("info", help="print the manifest summary of a refcat")
    info.add_argument("directory", help="refcat directory")
    info.set_defaults(handler=run)
    return parser


def _split(text: str, option: str) -> tuple[str, str]:
    name, sep, column = text.partition("=")
    if not sep or not name.strip() or not column.strip():
        raise InvalidInputError(f"{option} expects NAME=COLUMN, got {text!r}")
    return name.strip(), column.strip()


def parse_band(text: str) -> tuple[str, tuple[str, str]]:
    """Parse ``NAME=COLUMN[:mag|:nJy]`` into ``(name, (column, unit))``."""
    name, column = _split(text, "--band")
    unit = "mag"
    if ":" in column:
        column, unit = column.rsplit(":", 1)
        if unit not in ("mag", "nJy"):
            raise InvalidInputError(f"--band unit must be 'mag' or 'nJy', got {unit!r} in {text!r}")
    return name, (column, unit)


def run(args: argparse.Namespace) -> int:
    """Run ``refcat build`` or ``refcat info``; returns the exit code."""
    from promptcal.refcat import build_refcat, read_manifest

    if args.refcat_command == "info":
        manifest = read_manifest(args.directory)
        print(json.dumps({k: v for k, v in manifest.to_dict().items() if k != "shards"}, indent=2))
        return 0
    bands = dict(parse_band(text) for text in args.band)
    if len(bands) != len(args.band):
        raise InvalidInputError("a band name was given more than once with --band")
    band_errors = dict(_split(text, "--band-err") for text in args.band_err)
    manifest = build_refcat(
        args.catalog,
        args.output,
        ra_col=args.ra,
        dec_col=args.dec,
        bands=bands,
        band_errors=band_errors,
        pm_ra_col=args.pm_ra,
        pm_dec_col=args.pm_dec,
        epoch=args.epoch,
        nside=args.nside,
        input_format=args.format,
        id_col=args.id_col,
        overwrite=args.overwrite,
    )
    print(
        f"refcat {args.output}: {manifest.total_rows} rows in {len(manifest.shards)} shards "
        f"(nside {manifest.nside}), bands {sorted(manifest.bands)}, "
        f"{manifest.n_dropped_nonfinite} rows dropped (non-finite RA/Dec)"
    )
    return 0
