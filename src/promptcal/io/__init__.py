"""Exposure FITS I/O (layouts documented in ``docs/fits-layout.md``)."""

from promptcal.io.fits_read import read_exposure, read_extra_hdus
from promptcal.io.fits_write import build_hdulist, write_exposure

__all__ = ["build_hdulist", "read_exposure", "read_extra_hdus", "write_exposure"]
