"""Warm up the Numba kernels before a worker reports ready.

Every kernel is compiled with ``cache=True``: the first call in a process either
loads machine code from the on-disk cache (``NUMBA_CACHE_DIR``, or ``__pycache__``
next to the sources) or compiles it (seconds per kernel, a minute or more for all).
Paying that on the first real exposure would blow its latency budget, so the worker
calibrates a tiny synthetic exposure first, with the *same* configuration it will use
(same code paths, same argument types), and writes its products to a temporary
directory (warming the FITS and Parquet writers too). Only then is it ready.

The synthetic exposure is 512×512 px in two snaps, with stars (some saturated),
galaxies and cosmic rays, and a reference catalog built from its truth, so detection,
deblending, PSF fitting, aperture corrections, astrometric matching and photometry
all run. :func:`compiled_kernels` lists what is compiled, for tests and logs.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from promptcal.core.errors import AlgorithmError
from promptcal.core.kernel_cache import (
    kernel_dispatchers,
    start_kernel_preload,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmupReport:
    """What the warm-up did.

    Attributes
    ----------
    duration : float
        Wall time of the whole warm-up [s].
    calibration_time : float
        Wall time of the calibration alone [s] (mostly loading or compiling kernels).
    status : str
        ``"success"`` or ``"failed"`` (an algorithm failure under this configuration;
        the kernels it reached are still warm).
    n_compiled : int
        Kernels with at least one compiled signature afterwards.
    cache_dir : str or None
        ``NUMBA_CACHE_DIR`` as seen by this process (``None``: next to the sources).
    """

    duration: float
    calibration_time: float
    status: str
    n_compiled: int
    cache_dir: str | None


def compiled_kernels() -> dict[str, int]:
    """``module.function -> number of compiled signatures`` of every promptcal kernel.

    A kernel only called from other kernels may show 0 after loading from the cache:
    its code is linked into the callers.
    """
    return {name: len(d.signatures) for name, d in kernel_dispatchers().items()}


def _warmup_sky(seed: int):
    from promptcal.simulate import SkyConfig, simulate_exposure

    config = SkyConfig(
        width=512,
        height=512,
        n_stars=80,
        star_flux_min=3000.0,
        star_flux_max=3.0e5,
        saturation=6.0e4,
        n_galaxies=5,
        n_cosmic_rays=5,
        n_snaps=2,
        sip_order=0,
        background=500.0,
        band="r",
    )
    return simulate_exposure(config, seed=seed)


def _build_refcat(sim, directory: Path, bands: list[str]) -> Path:
    from promptcal.refcat import build_refcat
    from promptcal.simulate import refcat_table_from_truth

    table = refcat_table_from_truth(sim.truth, bands[0])
    for band in bands[1:]:  # the same fluxes under every band the config may ask for
        table[f"{band}_flux"] = table[f"{bands[0]}_flux"]
        table[f"{band}_fluxErr"] = table[f"{bands[0]}_fluxErr"]
    source = directory / "warmup_refcat.parquet"
    table.write(source, format="parquet")
    build_refcat(
        source,
        directory / "refcat",
        ra_col="ra",
        dec_col="dec",
        bands={b: (f"{b}_flux", "nJy") for b in bands},
        band_errors={b: f"{b}_fluxErr" for b in bands},
    )
    return directory / "refcat"


def warm_up(config=None, *, seed: int = 0) -> WarmupReport:
    """Calibrate a tiny synthetic visit with ``config`` and write its products.

    Parameters
    ----------
    config : CalibrateImageConfig, optional
        The configuration the worker will use (defaults when omitted).
    seed : int
        Seed of the synthetic sky.

    Returns
    -------
    WarmupReport
    """
    from promptcal.core.ids import IdGenerator
    from promptcal.core.task import Struct
    from promptcal.io import read_exposure, write_exposure
    from promptcal.io.products import write_products
    from promptcal.pipeline import DEFERRED_IMPORTS
    from promptcal.pipeline.config import CalibrateImageConfig
    from promptcal.pipeline.photometry import resolve_ref_band
    from promptcal.pipeline.task import CalibrateImageTask
    from promptcal.refcat import RefcatLoader

    start = time.perf_counter()
    # Cached kernels and deferred modules load while the synthetic sky is drawn.
    preload = start_kernel_preload(imports=DEFERRED_IMPORTS)
    config = config if config is not None else CalibrateImageConfig()
    sim = _warmup_sky(seed)
    bands = [resolve_ref_band("r", config.photometry)]
    if config.astrometry.ref_band and config.astrometry.ref_band not in bands:
        bands.append(config.astrometry.ref_band)
    status = "success"
    with tempfile.TemporaryDirectory(prefix="promptcal-warmup-") as tmp:
        refcat = RefcatLoader(_build_refcat(sim, Path(tmp), bands))
        task = CalibrateImageTask(config, refcat=refcat)
        result = Struct()
        # Go through the FITS path too: the first read of a process otherwise pays
        # ~0.3–0.6 s of one-time astropy set-up on the first real exposure.
        snaps = []
        for k, snap in enumerate(sim.snaps):
            path = Path(tmp) / f"warmup_snap{k}.fits"
            write_exposure(snap, path)
            snaps.append(read_exposure(path, band=snap.band))
        t0 = time.perf_counter()
        try:
            task.run(exposures=snaps, id_generator=IdGenerator(0, 0), result=result)
        except AlgorithmError as exc:
            status = "failed"
            logger.warning(
                "warm-up calibration failed under this config (%s): %s", type(exc).__name__, exc
            )
        calibration_time = time.perf_counter() - t0
        write_products(result, Path(tmp) / "products", task=task, status=status)
    preload.join()  # every kernel is loaded by now; no thread outlives the warm-up
    kernels = compiled_kernels()
    report = WarmupReport(
        duration=time.perf_counter() - start,
        calibration_time=calibration_time,
        status=status,
        n_compiled=sum(1 for n in kernels.values() if n),
        cache_dir=os.environ.get("NUMBA_CACHE_DIR"),
    )
    logger.info(
        "warm-up %s in %.2f s (calibration %.2f s, %d/%d kernels compiled, cache %s)",
        status,
        report.duration,
        calibration_time,
        report.n_compiled,
        len(kernels),
        report.cache_dir or "next to the sources",
    )
    return report
