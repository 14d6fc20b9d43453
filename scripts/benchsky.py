"""The benchmark skies of ``bench_core.py`` and ``bench_stream.py``: choose, write, score.

A sky is chosen by name (``--sky legacy|moffat|gaussian|crowded``, see
:mod:`promptcal.simulate.presets`); :func:`write_bench_sky` writes one exposure, its
reference catalog (the source table, which the DIY peer reads, and the sharded
directory ``run()`` reads) and what is needed to score a calibration against the
truth (:func:`score_wcs`, :func:`score_calibration`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SKY_CHOICES = ("moffat", "gaussian", "crowded", "legacy")


def add_sky_arguments(parser: argparse.ArgumentParser, *, many: bool) -> None:
    """``--sky`` plus the overrides ``--width --height --stars --flux-min --fwhm --seed``."""
    if many:
        parser.add_argument(
            "--sky", nargs="+", choices=SKY_CHOICES, default=list(SKY_CHOICES),
            help="benchmark skies, each reported separately",
        )  # fmt: skip
    else:
        parser.add_argument("--sky", choices=SKY_CHOICES, default="moffat", help="benchmark sky")
    parser.add_argument("--width", type=int, help="image width [px] (default: the sky's)")
    parser.add_argument("--height", type=int, help="image height [px] (default: the sky's)")
    parser.add_argument("--stars", type=int, help="number of stars (default: the sky's)")
    parser.add_argument("--flux-min", type=float, help="faintest star [count] (default: the sky's)")
    parser.add_argument("--fwhm", type=float, help="PSF FWHM [px] (legacy sky only)")
    parser.add_argument("--seed", type=int, default=3)


def bench_sky(args, name: str | None = None, **overrides):
    """The :class:`~promptcal.simulate.presets.BenchSky` ``name`` (default ``args.sky``)
    with the command-line overrides and ``overrides`` applied."""
    from promptcal.simulate.presets import benchmark_sky

    given = {
        "width": args.width,
        "height": args.height,
        "n_stars": args.stars,
        "star_flux_min": args.flux_min,
        "psf_fwhm": args.fwhm,
    }
    given = {k: v for k, v in given.items() if v is not None}
    return benchmark_sky(name or args.sky, **given, **overrides)


def sky_info(sky) -> dict:
    """The headline numbers of a sky for the report."""
    c = sky.config
    return {
        "sky": sky.name,
        "width": c.width,
        "height": c.height,
        "n_stars": c.n_stars,
        "n_galaxies": c.n_galaxies,
        "star_flux_range": [c.star_flux_min, c.star_flux_max],
        "psf": [c.psf_model, c.psf_fwhm, c.psf_fwhm_max or c.psf_fwhm],
        "pointing_error_arcsec": c.pointing_error,
        "rotation_error_deg": c.rotation_error,
    }


def write_bench_sky(sky, directory: Path, seed: int) -> dict:
    """Simulate ``sky`` and write everything a benchmark child needs under ``directory``.

    Returns
    -------
    dict
        ``exposure`` (FITS path), ``refcat`` (sharded directory), ``refcat_table``
        (FITS table of the same rows), ``truth`` (JSON for the scores) and ``info``
        (:func:`sky_info` plus truth counts).
    """
    import numpy as np

    from promptcal.io import write_exposure
    from promptcal.refcat import build_refcat
    from promptcal.simulate import refcat_table_from_truth, simulate_exposure

    directory.mkdir(parents=True, exist_ok=True)
    sim = simulate_exposure(sky.config, seed=seed)
    path = directory / "bench_exposure.fits"
    write_exposure(sim.exposure, path)
    band = sky.config.band
    table = directory / "refcat_source.fits"
    refcat_table_from_truth(sim.truth, band, **sky.refcat_options).write(table, overwrite=True)
    refcat = directory / "refcat"
    build_refcat(
        table,
        refcat,
        ra_col="ra",
        dec_col="dec",
        bands={band: (f"{band}_flux", "nJy")},
        overwrite=True,
    )
    truth = directory / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "wcs_header": sim.truth_wcs.to_header(relax=True).tostring(),
                "calibration": sky.config.calibration,
                "band": band,
                "saturation": sky.config.saturation,
                "gain": sky.config.gain,
            }
        )
    )
    info = sky_info(sky)
    stars = ~np.asarray(sim.truth["is_galaxy"])
    info["n_saturated_stars"] = int(np.asarray(sim.truth["is_saturated"])[stars].sum())
    info["n_sat_pixels"] = int(
        np.count_nonzero(sim.exposure.mask.array & sim.exposure.mask.bit("SAT"))
    )
    info["n_cosmic_rays"] = len(sim.cosmic_rays)
    return {
        "exposure": str(path),
        "refcat": str(refcat),
        "refcat_table": str(table),
        "truth": str(truth),
        "info": info,
    }


def load_truth(path: str) -> dict:
    """The truth JSON of :func:`write_bench_sky`, with ``wcs`` as an astropy WCS."""
    from astropy.io import fits
    from astropy.wcs import WCS

    truth = json.loads(Path(path).read_text())
    truth["wcs"] = WCS(fits.Header.fromstring(truth.pop("wcs_header")))
    return truth


def score_wcs(wcs, truth_wcs, width: int, height: int, x0: int = 0, y0: int = 0) -> dict:
    """Distance between ``wcs`` and the true WCS on a 21×21 pixel grid [mas].

    Returns ``{"median_mas", "max_mas"}``, or ``None`` values when ``wcs`` is missing.
    """
    import numpy as np

    if wcs is None:
        return {"median_mas": None, "max_mas": None}
    gx, gy = np.meshgrid(np.linspace(x0, x0 + width - 1, 21), np.linspace(y0, y0 + height - 1, 21))
    fitted = wcs.pixel_to_world(gx.ravel(), gy.ravel())
    true = truth_wcs.pixel_to_world(gx.ravel(), gy.ravel())
    distance = fitted.separation(true).to_value("mas")
    return {"median_mas": float(np.median(distance)), "max_mas": float(distance.max())}


def score_calibration(calibration: float | None, truth: dict) -> float | None:
    """Zero-point error of a calibration [nJy/count] against the truth [mmag]."""
    import numpy as np

    if calibration is None or not np.isfinite(calibration) or calibration <= 0:
        return None
    return float(2500.0 * np.log10(calibration / truth["calibration"]))
