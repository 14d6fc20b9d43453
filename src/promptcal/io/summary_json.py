"""``summary.json``: the document that closes a product set (``docs/products.md``).

Written last by :func:`promptcal.io.products.write_products`, so its presence marks a
complete set: status, error, summary statistics, calibration, timings, provenance.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptcal import __version__
from promptcal.core.exposure import Exposure
from promptcal.io.catalogs import json_safe
from promptcal.io.files import atomic_write

#: Version of the ``summary.json`` layout.
SCHEMA_VERSION = 1


def _photo_calib_json(photo_calib) -> dict[str, float] | None:
    if photo_calib is None:
        return None
    return {"mean": float(photo_calib.mean), "error": float(photo_calib.error)}


def _error_dict(error: Any) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        return {
            "type": type(error).__name__,
            "message": str(error),
            "metadata": dict(getattr(error, "metadata", {}) or {}),
        }
    return {
        "type": error.get("type"),
        "message": error.get("message"),
        "metadata": dict(error.get("metadata") or {}),
    }


def build_summary_document(
    result,
    *,
    task=None,
    status: str = "success",
    error: Any = None,
    timings: Mapping[str, float] | None = None,
    inputs: Sequence[str] = (),
    products: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """The content of ``summary.json`` (see ``docs/products.md``)."""
    exposure: Exposure | None = getattr(result, "output_exposure", None)
    summary = getattr(result, "summary", None)
    if summary is None and exposure is not None:
        summary = exposure.summary
    durations = dict(task.stage_durations()) if task is not None else {}
    durations.update(timings or {})
    stars = getattr(result, "stars", None)
    psf_stars = getattr(result, "psf_stars", None)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "error": _error_dict(error),
        "visit": None,
        "detector": None,
        "band": None,
        "summary": dict(summary or {}),
        "applied_calibration": _photo_calib_json(getattr(result, "applied_photo_calib", None)),
        "exposure_calibration": None,
        "n_stars": None if stars is None else len(stars),
        "n_psf_stars": None if psf_stars is None else len(psf_stars),
        "n_psf_stars_used": None,
        "timings": durations,
        "config_hash": task.config.config_hash() if task is not None else None,
        "software_version": __version__,
        "inputs": [os.path.basename(os.fspath(p)) for p in inputs],
        "products": {k: Path(p).name for k, p in sorted((products or {}).items())},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if psf_stars is not None and "calib_psf_used" in psf_stars.colnames:
        doc["n_psf_stars_used"] = int(np.sum(psf_stars["calib_psf_used"]))
    if exposure is not None:
        doc["visit"] = int(exposure.visit_info.exposure_id)
        doc["detector"] = None if exposure.detector is None else int(exposure.detector.id)
        doc["band"] = exposure.band
        doc["exposure_calibration"] = _photo_calib_json(exposure.photo_calib)
    return json_safe(doc)


def write_summary_json(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` as strict JSON (no NaN literals), atomically."""
    text = json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(text)

    return atomic_write(path, write)
