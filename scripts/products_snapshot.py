#!/usr/bin/env python
"""Calibrate a fixed set of exposures and compare their products between two trees.

``python scripts/products_snapshot.py make OUT`` calibrates, with ``promptcal calibrate``
in subprocesses (so only the command line is used and any version of the package works):

- ``sky``: the benchmark sky (``promptcal simulate``, 4096×4072 px, 3,000 stars, two
  snaps, seed 1) with a reference catalog built from its truth;
- ``microobs``, ``decam``, ``spitzer``: the three real frames of ``../shared/data/real``
  with the instrument configs of ``configs/`` (as in ``tests/test_real_data.py``).

``python scripts/products_snapshot.py compare A B`` compares every product file of two
such directories byte for byte; ``summary.json`` is compared as JSON without the keys
that legitimately differ between runs or releases: wall-clock values (``created``,
``timings``) and provenance (``config_hash``, which changes with the configuration's
layout, and ``software_version``). Prints a JSON report; exit 1 when anything differs.

Used to show that refactors change no product (issue 11: "byte-identical before and
after").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from shared_data import real_data_dir  # scripts/ is on sys.path as a script

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
VOLATILE_SUMMARY_KEYS = ("created", "timings", "config_hash", "software_version")


def promptcal(*args: str) -> None:
    """Run the ``promptcal`` command line in a child process; fail loudly."""
    subprocess.run([sys.executable, "-m", "promptcal", *args], check=True, cwd=REPO)


def make(out: Path) -> None:
    """Calibrate the benchmark sky and the three real frames under ``out``."""
    real = real_data_dir()
    sim = out / "inputs" / "sky"
    promptcal("simulate", "--output", str(sim), "--width", "4096", "--height", "4072",
              "--stars", "3000", "--snaps", "2", "--seed", "1")  # fmt: skip
    snaps = sorted(str(p) for p in sim.glob("*_snap?.fits"))
    (refcat_source,) = sim.glob("*_refcat.parquet")
    decam, stem = real / "decam-legacypipe-n6", "c4d_171113_060340_oo{}_r_ls9.N6.fits"
    cases = {
        "sky": (
            [str(refcat_source), "--ra", "ra", "--dec", "dec", "--band", "r=r_flux:nJy"],
            [*snaps],
        ),
        "microobs": (
            [str(real / "microobs-hatp32" / "gaia_dr3_g10_hatp32_r1.5deg.csv"),
             "--ra", "ra", "--dec", "dec", "--band", "G=phot_g_mean_mag:mag"],
            [str(real / "microobs-hatp32" / "HATP-32171220013343.fits"), "--saturation", "4095",
             "--band", "G", "--config", str(CONFIGS / "microobservatory.json")],
        ),
        "decam": (
            [str(decam / "gaia-dr2-chunk-05483.fits"), "--ra", "ra", "--dec", "dec",
             "--band", "G=phot_g_mean_mag:mag", "--pm-ra", "pmra", "--pm-dec", "pmdec",
             "--epoch", "2015.5"],
            [str(decam / stem.format("i")), "--weight", str(decam / stem.format("w")),
             "--mask", str(decam / stem.format("d")),
             "--config", str(CONFIGS / "decam-cutout.json")],
        ),
        "spitzer": (
            [str(real / "spitzer-glimpse-irac2" / "spitzer_example_catalog_icrs.derived.csv"),
             "--ra", "ra", "--dec", "dec", "--band", "irac2=mag4_5:mag"],
            [str(real / "spitzer-glimpse-irac2" / "spitzer_example_image.fits"), "--band",
             "irac2", "--config", str(CONFIGS / "spitzer-irac.json")],
        ),
    }  # fmt: skip
    for name, (build, calibrate) in cases.items():
        refcat = out / "inputs" / f"{name}_refcat"
        promptcal("refcat", "build", *build, "--output", str(refcat))
        promptcal("calibrate", *calibrate, "--refcat", str(refcat), "--output",
                  str(out / "products" / name))  # fmt: skip


def _summary(path: Path) -> dict:
    data = json.loads(path.read_text())
    for key in VOLATILE_SUMMARY_KEYS:
        data.pop(key, None)
    return data


def compare(a: Path, b: Path) -> dict:
    """Compare the products of two ``make`` directories; return a report."""
    files_a = {p.relative_to(a) for p in (a / "products").rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in (b / "products").rglob("*") if p.is_file()}
    differing, identical = [], 0
    for rel in sorted(files_a & files_b):
        if rel.name == "summary.json":
            same = _summary(a / rel) == _summary(b / rel)
        else:
            digest = [hashlib.sha256((d / rel).read_bytes()).hexdigest() for d in (a, b)]
            same = digest[0] == digest[1]
        if same:
            identical += 1
        else:
            differing.append(str(rel))
    return {
        "identical": identical,
        "differing": differing,
        "only_in_a": sorted(map(str, files_a - files_b)),
        "only_in_b": sorted(map(str, files_b - files_a)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("make").add_argument("out", type=Path)
    cmp_parser = sub.add_parser("compare")
    cmp_parser.add_argument("a", type=Path)
    cmp_parser.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "make":
        make(args.out)
        return 0
    report = compare(args.a, args.b)
    print(json.dumps(report, indent=1))
    same = not (report["differing"] or report["only_in_a"] or report["only_in_b"])
    return 0 if same and report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
