"""Exposure FITS I/O (layouts documented in ``docs/fits-layout.md``).

The names below are imported on first use, so that importing one light module of the
package (``promptcal.io.fits_scan``, which reads headers only) does not import
astropy: ``promptcal calibrate`` sizes its heap reservation from the header before
the heavy imports it overlaps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptcal.io.fits_read import read_exposure, read_extra_hdus
    from promptcal.io.fits_write import build_hdulist, write_exposure

__all__ = ["build_hdulist", "read_exposure", "read_extra_hdus", "write_exposure"]

_HOMES = {
    "build_hdulist": "promptcal.io.fits_write",
    "read_exposure": "promptcal.io.fits_read",
    "read_extra_hdus": "promptcal.io.fits_read",
    "write_exposure": "promptcal.io.fits_write",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
