#!/usr/bin/env python
"""False positives of the blind solver on scrambled inputs (issue 12, acceptance b).

Runs ``--per-kind`` trials of each scrambled kind (random source lists, a real source
list against real stars of other sky areas, shuffled source positions, shuffled
reference positions; see ``promptcal.qa.astrometry_trials``) on source lists of real frames
of ``microobs-hatp32-night`` (sep, 5σ), plus ``--controls`` trials that must solve the
real frame from a hint moved by up to half the diagonal. No scrambled input has a true
solution, so every accepted one is wrong (a wrong solution is a centre > 1 arcmin from
the truth or a scale off by > 2 %; these have no truth at all).

Prints one JSON object: per kind the trials, acceptances and the closest call (smallest
log10 false-alarm figure; the solver accepts at <= -6), the control results, and times.

Usage: ``python scripts/astrometry_false_positives.py [--per-kind 55] [--controls 20]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from astropy.io import fits
from astropy.wcs import WCS
from shared_data import real_data_dir  # scripts/ is on sys.path as a script

from promptcal.qa.astrometry_trials import other_sky_patches, read_frame, read_refs, run_trials

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=55, help="trials per scrambled kind")
    parser.add_argument("--controls", type=int, default=20, help="true-solution trials")
    parser.add_argument("--every", type=int, default=4, help="use every n-th night frame")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    real = real_data_dir()
    start = time.perf_counter()
    paths = sorted((real / "microobs-hatp32-night").glob("*.fits"))
    frames = [read_frame(p) for p in paths[:: args.every]]
    single = real / "microobs-hatp32"
    refs = read_refs(single / "gaia_dr3_g10_hatp32_r1.5deg.csv")
    target = frames[0].hint[:2]  # the header pointing: the target, centre of the catalogue
    truth = WCS(fits.Header.fromtextfile(single / "HATP-32171220013343.derived_wcs.hdr"))
    truth_frame = read_frame(single / "HATP-32171220013343.fits")
    result = run_trials(
        frames,
        refs,
        target,
        other_sky_patches(real, refs, target),
        truth_frame,
        truth,
        n_per_kind=args.per_kind,
        n_control=args.controls,
        seed=args.seed,
    )
    result["seconds"] = time.perf_counter() - start
    result["n_frames_used"] = len(frames)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
