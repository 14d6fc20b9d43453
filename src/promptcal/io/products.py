"""Writers and readers of the calibration products (design §3, ``docs/products.md``).

:func:`write_products` turns the Struct of :meth:`CalibrateImageTask.run` (complete, or
partial after an :class:`~promptcal.core.errors.AlgorithmError`) into files:

- ``calexp.fits``: the output exposure plus ``PSF``, ``APCORR``, ``BKGD<i>`` and
  ``SUMMARY`` HDUs, so the file alone reproduces the calibration (:func:`read_calexp`);
- ``stars.parquet``, ``psf_stars.parquet``, ``astrometry_matches.parquet``,
  ``photometry_matches.parquet``: catalogs with units (:func:`read_catalog`);
- ``stars_footprints.parquet``, ``psf_stars_footprints.parquet``: span tables
  ``id, y, x0, x1`` in parent pixels;
- ``background.fits``: the subtracted BackgroundList;
- ``summary.json``: status, error, summary statistics, calibration, timings, provenance.

Every file is written to a temporary name in the output directory and renamed into
place, so a reader never sees a partial file and a replay overwrites. The pixel and
catalog products are byte-identical for the same input and configuration; the only
wall-clock value is ``created`` in ``summary.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from promptcal.core.apcorr_map import ApCorrMap
from promptcal.core.background_model import BackgroundList
from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Exposure
from promptcal.core.psf_model import psf_from_hdu
from promptcal.io import read_exposure, read_extra_hdus, write_exposure
from promptcal.io.catalogs import (
    footprint_spans,
    write_catalog,
)
from promptcal.io.files import atomic_write, sync_paths
from promptcal.io.summary_json import build_summary_document, write_summary_json

#: Catalog outputs of the result Struct -> file name.
CATALOG_PRODUCTS = {
    "stars": "stars.parquet",
    "psf_stars": "psf_stars.parquet",
    "astrometry_matches": "astrometry_matches.parquet",
    "photometry_matches": "photometry_matches.parquet",
}
#: Footprint outputs -> (catalog whose ids label them, file name).
FOOTPRINT_PRODUCTS = {
    "stars_footprints": ("stars", "stars_footprints.parquet"),
    "psf_stars_footprints": ("psf_stars", "psf_stars_footprints.parquet"),
}


# ----------------------------------------------------------------------------- FITS


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    """1-D object array of arrays (numpy would stack equal-length arrays into 2-D)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def summary_to_hdu(summary: Mapping[str, Any]) -> fits.BinTableHDU:
    """``SUMMARY`` BinTable: one row per statistic (``name``, ``kind``, ``value`` array).

    ``kind`` is ``float``, ``int``, ``bool`` or ``list``; scalars are one-element arrays
    and NaN stays NaN, so non-Python FITS readers can use it too.
    """
    names, kinds, values = [], [], []
    for key in sorted(summary):
        value = summary[key]
        if isinstance(value, (bool, np.bool_)):
            kind, array = "bool", [float(value)]
        elif isinstance(value, (int, np.integer)):
            kind, array = "int", [float(value)]
        elif isinstance(value, (list, tuple, np.ndarray)):
            kind, array = "list", [float(v) for v in value]
        elif value is None:
            kind, array = "float", [np.nan]
        else:
            kind, array = "float", [float(value)]
        names.append(key)
        kinds.append(kind)
        values.append(np.asarray(array, np.float64))
    width = max([len(n) for n in names] + [1])
    cols = [
        fits.Column("name", f"{width}A", array=names),
        fits.Column("kind", "5A", array=kinds),
        fits.Column("value", "PD()", array=_object_array(values)),
    ]
    return fits.BinTableHDU.from_columns(cols, name="SUMMARY")


def summary_from_hdu(hdu) -> dict[str, Any]:
    """Inverse of :func:`summary_to_hdu`."""
    out: dict[str, Any] = {}
    for row in hdu.data:
        kind = str(row["kind"]).strip()
        value = np.asarray(row["value"], np.float64)
        if kind == "list":
            out[str(row["name"]).strip()] = [float(v) for v in value]
        elif kind == "int":
            out[str(row["name"]).strip()] = int(value[0])
        elif kind == "bool":
            out[str(row["name"]).strip()] = bool(value[0])
        else:
            out[str(row["name"]).strip()] = float(value[0])
    return out


def calexp_extra_hdus(
    exposure: Exposure, background: BackgroundList | None, background_hdus=None
) -> list[Any]:
    """The PSF, APCORR, BKGD<i> and SUMMARY HDUs of whatever models exist
    (``background_hdus``: ``background.to_hdus()`` when already built)."""
    hdus: list[Any] = []
    if exposure.psf is not None:
        hdu = exposure.psf.to_hdu()
        hdu.header["EXTNAME"] = "PSF"
        hdus.append(hdu)
    if exposure.ap_corr_map:
        hdus.append(exposure.ap_corr_map.to_hdu())
    if background:
        hdus.extend(background_hdus if background_hdus is not None else background.to_hdus())
    if exposure.summary is not None:
        hdus.append(summary_to_hdu(exposure.summary))
    return hdus


def write_calexp(
    exposure: Exposure,
    path: str | os.PathLike[str],
    background: BackgroundList | None = None,
    *,
    durable: bool = True,
    background_hdus=None,
) -> Path:
    """Write the calibrated exposure with its models (atomic; ``fsync`` ed if durable)."""
    extras = calexp_extra_hdus(exposure, background, background_hdus)
    write_exposure(exposure, path, extra_hdus=extras, durable=durable)
    return Path(path)


def read_calexp(path: str | os.PathLike[str]) -> tuple[Exposure, BackgroundList]:
    """Read ``calexp.fits``: the Exposure (psf, ap_corr_map, summary restored) and the
    BackgroundList (empty when the file has none)."""
    exposure = read_exposure(path)
    extras = read_extra_hdus(path)
    if "PSF" in extras:
        exposure.psf = psf_from_hdu(extras["PSF"])
    if "APCORR" in extras:
        exposure.ap_corr_map = ApCorrMap.from_hdu(extras["APCORR"])
    if "SUMMARY" in extras:
        exposure.summary = summary_from_hdu(extras["SUMMARY"])
    return exposure, BackgroundList.from_hdus(extras.values())


def write_background(
    background: BackgroundList, path: str | os.PathLike[str], background_hdus=None
) -> Path:
    """``background.fits``: an empty primary HDU plus one ``BKGD<i>`` HDU per element
    (``background_hdus``: ``background.to_hdus()`` when already built)."""
    hdus = background_hdus if background_hdus is not None else background.to_hdus()
    # Copies: write_products renders the same HDUs into the calexp on another thread.
    hdul = fits.HDUList([fits.PrimaryHDU(), *(hdu.copy() for hdu in hdus)])
    return atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True))


def read_background(path: str | os.PathLike[str]) -> BackgroundList:
    """Read ``background.fits`` (or any file with ``BKGD<i>`` HDUs)."""
    return BackgroundList.from_hdus(read_extra_hdus(path).values())


# ----------------------------------------------------------------------------- products


def write_products(
    result,
    output_dir: str | os.PathLike[str],
    *,
    task=None,
    status: str = "success",
    error: Any = None,
    timings: Mapping[str, float] | None = None,
    extra_products: Mapping[str, Path] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    durable: bool = True,
) -> dict[str, Path]:
    """Write every product that exists in ``result`` into ``output_dir``.

    Parameters
    ----------
    result : Struct
        Output of :meth:`CalibrateImageTask.run`, or the partial Struct it filled before
        raising (its ``failure`` is used when ``error`` is not given).
    output_dir : path
        Created when missing; existing products are overwritten atomically.
    task : CalibrateImageTask, optional
        Supplies the stage timings and the config hash.
    status : {"success", "failed"}
        Forced to ``"failed"`` when an error is given or recorded in ``result``.
    error : AlgorithmError or dict, optional
        The failure (``type``, ``message``, ``metadata``).
    timings : mapping, optional
        Extra durations [s] merged over ``task.stage_durations()``.
    extra_products : mapping, optional
        Files the caller already wrote into ``output_dir`` (e.g. the QA figures of
        :func:`promptcal.qa.plots.write_plots`) to list in ``summary.json`` as well.
    inputs : sequence of path
        Input files; their base names go into ``summary.json``.
    durable : bool
        ``fsync`` every product (and the directory) before ``summary.json`` is written,
        and that file after; the products' pages are then dropped from the page cache
        (see :func:`sync_paths`). With False the caller calls :func:`sync_paths` on the
        returned paths before it relies on durability (the worker: before committing
        its input offsets, after publishing the result).

    Returns
    -------
    dict[str, pathlib.Path]
        Product kind (``calexp``, ``stars``, ..., ``summary``) -> written path;
        ``summary.json`` is written last, so its presence marks a complete set.
    """
    return start_products(
        result,
        output_dir,
        task=task,
        status=status,
        error=error,
        timings=timings,
        extra_products=extra_products,
        inputs=inputs,
        durable=durable,
    ).finish()


class PendingProducts:
    """Products being written: what :func:`start_products` returns.

    The catalogs, footprints and background are on disk (renamed into place);
    the calexp may still be on its way to the device on its own thread, and
    ``summary.json`` is not written yet. :meth:`finish` completes the set.
    """

    def __init__(self, out: Path, paths: dict[str, Path], calexp, pool, summary, durable):
        self.out = out
        self.paths = paths
        self._calexp = calexp
        self._pool = pool
        self._summary = summary  # build_summary_document arguments but ``products``
        self._durable = durable

    def finish(self) -> dict[str, Path]:
        """Wait for the calexp, write ``summary.json`` last; the products' paths.

        Raises
        ------
        OSError
            Writing the calexp or the summary failed (the set is incomplete: no
            ``summary.json``; writing them all again replaces the partial set).
        """
        paths = self.paths
        try:
            if self._calexp is not None:
                paths["calexp"] = self._calexp.result()
        finally:
            self._pool.shutdown(wait=True)
        document = build_summary_document(**self._summary, products=paths)
        if self._durable:
            sync_paths(paths.values(), drop_cache=True)
        paths["summary"] = write_summary_json(document, self.out / "summary.json")
        if self._durable:
            sync_paths([paths["summary"]])
        return paths


def start_products(
    result,
    output_dir: str | os.PathLike[str],
    *,
    task=None,
    status: str = "success",
    error: Any = None,
    timings: Mapping[str, float] | None = None,
    extra_products: Mapping[str, Path] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    durable: bool = True,
) -> PendingProducts:
    """Write the catalogs now and start the calexp on a thread; see :func:`write_products`
    (same parameters) for the products.

    The caller may do other work (the worker: calibrate its next exposure) while the
    calexp's 200 MB go to the device, then calls :meth:`PendingProducts.finish`. The
    ``result`` must not change until then.
    """
    if status not in ("success", "failed"):
        raise InvalidInputError(f"status must be 'success' or 'failed', got {status!r}")
    error = error if error is not None else getattr(result, "failure", None)
    if error is not None:
        status = "failed"
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    exposure = getattr(result, "output_exposure", None)
    background = getattr(result, "background", None)
    background_hdus = background.to_hdus() if background else None
    # The calexp (200 MB for 4k×4k) is mostly numpy conversion and file writing, which
    # release the GIL: it overlaps the catalogs written meanwhile.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptcal-calexp")
    calexp = None
    try:
        if exposure is not None:
            calexp = pool.submit(
                write_calexp,
                exposure,
                out / "calexp.fits",
                background,
                durable=False,
                background_hdus=background_hdus,
            )
        for key, filename in CATALOG_PRODUCTS.items():
            table = getattr(result, key, None)
            if table is not None:
                paths[key] = write_catalog(table, out / filename)
        for key, (owner, filename) in FOOTPRINT_PRODUCTS.items():
            footprints = getattr(result, key, None)
            catalog = getattr(result, owner, None)
            if footprints is not None and catalog is not None:
                paths[key] = write_catalog(footprint_spans(footprints, catalog), out / filename)
        if background:
            paths["background"] = write_background(
                background, out / "background.fits", background_hdus
            )
        paths.update(extra_products or {})
    except BaseException:
        pool.shutdown(wait=True)  # the calexp thread must not outlive a failed write
        raise
    summary = {
        "result": result,
        "task": task,
        "status": status,
        "error": error,
        "timings": timings,
        "inputs": [os.fspath(p) for p in inputs],
    }
    return PendingProducts(out, paths, calexp, pool, summary, durable)
