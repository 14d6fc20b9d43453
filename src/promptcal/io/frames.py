"""Pixel frames: the parent-frame origin cards and the WCS shift between frames.

A FITS WCS is relative to the array (FITS pixel 1 is array ``[0, 0]``), while
``Exposure.wcs`` works in *parent* 0-based pixels: parent ``(x, y)`` is array
``[y - y0, x - x0]``. Reading adds ``xy0`` to ``CRPIX``; writing subtracts it.
Both SIP (polynomials in ``pixel - CRPIX``) and TPV (polynomials in intermediate
world coordinates) are invariant under that shift, so only ``CRPIX`` moves.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, Sip

from promptcal.io.header import set_card

log = logging.getLogger(__name__)


def shift_wcs(wcs: WCS, dx: float, dy: float) -> WCS:
    """Copy of ``wcs`` whose pixel frame is moved so that old ``p`` is new ``p + (dx, dy)``."""
    out = wcs.deepcopy()
    if dx == 0 and dy == 0:
        return out
    out.wcs.crpix = out.wcs.crpix + np.array([dx, dy], dtype=float)
    if out.sip is not None:
        # astropy's Sip keeps its own copy of CRPIX for the polynomial offsets.
        sip = out.sip
        out.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, out.wcs.crpix)
    if out.cpdis1 is not None or out.cpdis2 is not None or out.det2im1 is not None:
        log.warning("lookup-table distortions are not shifted to the parent pixel frame")
    out.wcs.set()
    return out


def wcs_from_header(header: fits.Header, xy0: tuple[int, int]) -> WCS | None:
    """Celestial WCS of an image header in parent pixels, or ``None`` when absent/unusable."""
    try:
        with warnings.catch_warnings():
            # Real headers trigger harmless "fixed a non-standard card" notices.
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2, relax=True)
    except Exception as exc:  # astropy raises many types for malformed WCS cards
        log.warning("ignoring an unusable WCS (%s)", str(exc).replace("\n", " "))
        return None
    if not wcs.has_celestial:
        return None
    return shift_wcs(wcs, xy0[0], xy0[1])


def wcs_to_header(wcs: WCS, xy0: tuple[int, int]) -> fits.Header:
    """FITS cards of a parent-frame WCS, written relative to the array (CRPIX - xy0)."""
    local = shift_wcs(wcs, -xy0[0], -xy0[1])
    return local.to_header(relax=True)


def origin_from_header(header: fits.Header) -> tuple[int, int] | None:
    """``xy0`` from ``CRVAL1A/2A`` (LINEAR alternate WCS) or ``-LTV1/2``; ``None`` if absent."""
    if "CRVAL1A" in header and "CRVAL2A" in header:
        # Pixel index 0 is FITS pixel 1: origin = CRVAL - (CRPIX - 1) (afw uses CRPIX=1).
        x0 = float(header["CRVAL1A"]) - (float(header.get("CRPIX1A", 1.0)) - 1.0)
        y0 = float(header["CRVAL2A"]) - (float(header.get("CRPIX2A", 1.0)) - 1.0)
        return round(x0), round(y0)
    if "LTV1" in header and "LTV2" in header:
        return round(-float(header["LTV1"])), round(-float(header["LTV2"]))
    return None


def origin_cards(header: fits.Header, xy0: tuple[int, int]) -> None:
    """Write the origin both as IRAF ``LTV`` and as afw's LINEAR alternate WCS ``A``."""
    x0, y0 = int(xy0[0]), int(xy0[1])
    set_card(header, "LTV1", -x0, "image = detector + LTV (parent origin, negated)")
    set_card(header, "LTV2", -y0, "image = detector + LTV (parent origin, negated)")
    for axis, value in ((1, x0), (2, y0)):
        set_card(header, f"CTYPE{axis}A", "LINEAR", "parent-frame pixel coordinate")
        set_card(header, f"CRPIX{axis}A", 1.0, "FITS pixel of the origin")
        set_card(header, f"CRVAL{axis}A", value, "parent coordinate of array index 0")
        set_card(header, f"CUNIT{axis}A", "PIXEL")
