"""Write a :class:`SimulatedExposure` to a directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from promptcal.simulate.core import SimulatedExposure
from promptcal.simulate.truth import refcat_table_from_truth


def simulation_prefix(sim: SimulatedExposure) -> str:
    """File-name stem ``sim_v<exposure id>_d<detector id>``."""
    return f"sim_v{sim.config.exposure_id}_d{sim.config.detector_id}"


def write_simulation(
    sim: SimulatedExposure, outdir: str | os.PathLike[str], *, compress: bool = False
) -> dict[str, Path]:
    """Write the exposure(s), truth, refcat, true WCS and config under ``outdir``.

    Files (``<p>`` = :func:`simulation_prefix`):

    - ``<p>.fits``, or ``<p>_snap0.fits`` and ``<p>_snap1.fits`` for two snaps
      (afw multi-extension layout, counts);
    - ``<p>_truth.parquet`` (truth table), ``<p>_refcat.parquet`` (reference catalog
      built from the truth in the simulated band, no scatter);
    - ``<p>_cosmic_rays.parquet`` and ``<p>_cosmic_ray_pixels.parquet`` when there are CRs;
    - ``<p>_truth_wcs.txt`` (true WCS as FITS header text, one card per line, CRPIX
      in parent pixels + 1) and ``<p>_config.json`` (the SkyConfig and seed).

    Returns
    -------
    dict[str, pathlib.Path]
        Kind (``"exposure"`` / ``"snap0"`` / ``"snap1"``, ``"truth"``, ``"refcat"``,
        ``"truth_wcs"``, ``"config"``, ...) -> path.
    """
    from promptcal.io.fits_write import write_exposure  # lazy: the FITS layer is optional here

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = simulation_prefix(sim)
    paths: dict[str, Path] = {}
    if len(sim.snaps) > 1:
        for i, snap in enumerate(sim.snaps):
            paths[f"snap{i}"] = out / f"{prefix}_snap{i}.fits"
            write_exposure(snap, paths[f"snap{i}"], compress=compress)
    else:
        paths["exposure"] = out / f"{prefix}.fits"
        write_exposure(sim.exposure, paths["exposure"], compress=compress)

    paths["truth"] = out / f"{prefix}_truth.parquet"
    sim.truth.write(paths["truth"], format="parquet", overwrite=True)
    paths["refcat"] = out / f"{prefix}_refcat.parquet"
    refcat = refcat_table_from_truth(sim.truth, sim.config.band)
    refcat.write(paths["refcat"], format="parquet", overwrite=True)
    if len(sim.cosmic_rays):
        paths["cosmic_rays"] = out / f"{prefix}_cosmic_rays.parquet"
        sim.cosmic_rays.write(paths["cosmic_rays"], format="parquet", overwrite=True)
        paths["cosmic_ray_pixels"] = out / f"{prefix}_cosmic_ray_pixels.parquet"
        sim.cosmic_ray_pixels.write(paths["cosmic_ray_pixels"], format="parquet", overwrite=True)

    paths["truth_wcs"] = out / f"{prefix}_truth_wcs.txt"
    header = sim.truth_wcs.to_header(relax=True)
    paths["truth_wcs"].write_text(header.tostring(sep="\n") + "\n")
    paths["config"] = out / f"{prefix}_config.json"
    payload = {"seed": sim.seed, "config": sim.config.model_dump(mode="json")}
    paths["config"].write_text(json.dumps(payload, indent=2) + "\n")
    return paths
