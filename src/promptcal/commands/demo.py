"""The README demo: simulate one exposure, calibrate it end to end, compare with truth.

Run with ``scripts/demo`` (or ``python -m promptcal.commands.demo [--output DIR]``). It writes a
synthetic exposure (afw FITS) and a reference catalog built from its truth, runs
``promptcal refcat build`` and ``promptcal calibrate`` on them, and prints the
calibration against the known answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

from promptcal.commands.cli import main as cli_main
from promptcal.io.catalogs import read_catalog


def run_demo(output: Path, size: int, n_stars: int, seed: int) -> int:
    """Simulate, calibrate and report; returns the calibrate exit code."""
    from promptcal.simulate import (
        SkyConfig,
        refcat_table_from_truth,
        simulate_exposure,
        write_simulation,
    )

    config = SkyConfig(
        width=size,
        height=size,
        n_stars=n_stars,
        star_flux_min=2000.0,
        n_galaxies=n_stars // 20,
        n_cosmic_rays=20,
        psf_fwhm=3.5,
        pointing_error=20.0,
        rotation_error=0.5,
    )
    print(f"simulating a {size}x{size} exposure with {n_stars} stars (seed {seed}) ...")
    sim = simulate_exposure(config, seed=seed)
    files = write_simulation(sim, output / "input")
    refcat_source = output / "input" / "refcat_source.parquet"
    refcat_table_from_truth(sim.truth, config.band).write(refcat_source, overwrite=True)
    band = config.band
    steps = [
        ["refcat", "build", str(refcat_source), "--output", str(output / "refcat"),
         "--ra", "ra", "--dec", "dec", "--band", f"{band}={band}_flux:nJy",
         "--band-err", f"{band}={band}_fluxErr"],
        ["calibrate", str(files["exposure"]), "--refcat", str(output / "refcat"),
         "--output", str(output / "products")],
    ]  # fmt: skip
    for argv in steps:
        print("$ promptcal " + " ".join(argv))
        code = cli_main(argv)
        if code != 0:
            return code
    report(sim, output / "products", config.calibration)
    return 0


def report(sim, products: Path, true_calibration: float) -> None:
    """Print the products' calibration against the simulation's truth."""
    summary = json.loads((products / "summary.json").read_text())
    stats = summary["summary"]
    stars = read_catalog(products / "stars.parquet")
    real = ~np.asarray(stars["sky_source"], bool)
    fitted = SkyCoord(stars["coord_ra"][real], stars["coord_dec"][real])
    truth = SkyCoord(sim.truth["ra"], sim.truth["dec"], unit="deg")
    _, separation, _ = fitted.match_to_catalog_sky(truth)
    mas = separation.to_value("mas")
    true_zp = 2.5 * np.log10(3631e9 / true_calibration)
    fwhm_true = float(sim.psf_fwhm_at(*sim.exposure.center))
    print("\nresult vs truth")
    print(f"  zero point     {stats['zeroPoint']:.4f} mag   (truth {true_zp:.4f})")
    print(f"  PSF FWHM       {2.3548 * stats['psfSigma']:.3f} px    (truth {fwhm_true:.3f})")
    print(f"  stars          {int(real.sum())} (+{int((~real).sum())} sky sources)")
    print(f"  astrometry     median {np.median(mas):.1f} mas from truth positions")
    print(f"  products       {products}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="directory for inputs and products")
    parser.add_argument("--size", type=int, default=2048, help="image width = height [px]")
    parser.add_argument("--stars", type=int, default=1500, help="number of stars")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        return run_demo(args.output, args.size, args.stars, args.seed)
    with tempfile.TemporaryDirectory(prefix="promptcal-demo-") as tmp:
        return run_demo(Path(tmp), args.size, args.stars, args.seed)


if __name__ == "__main__":
    sys.exit(main())
