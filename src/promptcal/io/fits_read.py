"""Read an exposure from FITS (design §3, layout in ``docs/fits-layout.md``).

Two layouts are detected automatically:

(a) LSST-afw multi-extension: primary header + ``IMAGE``, ``MASK``, ``VARIANCE`` (here);
(b) one image HDU, with optional inverse-variance weight and mask/DQ files
    (:mod:`promptcal.io.fits_single`).

Every failure to read is an :class:`~promptcal.core.errors.InvalidInputError` with a one-line
message, so the streaming layer can dead-letter the message that pointed at the file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from astropy.io import fits

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Exposure, Mask
from promptcal.io.fits_hdus import (
    damage_as_error,
    finalize_planes,
    first_image_hdu,
    hdu_data,
    hdu_extname,
    one_line,
    open_fits,
    override_detector,
    select_hdu,
    to_float32,
    to_native,
)
from promptcal.io.fits_single import read_single
from promptcal.io.frames import origin_from_header, wcs_from_header
from promptcal.io.header import (
    Cards,
    clean_metadata,
    parse_band,
    parse_detector,
    parse_photo_calib,
    parse_visit_info,
)

log = logging.getLogger(__name__)

PLANE_NAMES = ("IMAGE", "MASK", "VARIANCE")


def read_exposure(
    path: str | os.PathLike[str],
    *,
    weight_path: str | os.PathLike[str] | None = None,
    mask_path: str | os.PathLike[str] | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
    saturation: float | None = None,
    band: str | None = None,
    hdu: int | str | None = None,
) -> Exposure:
    """Read an exposure, detecting the layout (see ``docs/fits-layout.md``).

    Parameters
    ----------
    path : str or os.PathLike
        FITS file: afw layout (``IMAGE``/``MASK``/``VARIANCE`` HDUs) or one image HDU.
    weight_path : str or os.PathLike, optional
        Single-HDU layout only: inverse-variance map [count⁻²]; weight <= 0 -> NO_DATA.
    mask_path : str or os.PathLike, optional
        Single-HDU layout only: mask/DQ map; non-zero -> BAD.
    gain : float, optional
        Gain [e⁻/count]; overrides the header. Default 1.0 (with a logged warning) when the
        variance has to be computed and no gain is known.
    read_noise : float, optional
        Read noise [e⁻]; overrides the header. Default 0.
    saturation : float, optional
        Saturation level [count]; overrides ``SATURATE``. Single-HDU pixels >= it get SAT.
    band : str, optional
        Band; overrides ``BAND``/``FILTER``.
    hdu : int or str, optional
        Force the single-HDU layout on this HDU (index or EXTNAME).

    Returns
    -------
    Exposure
        With ``wcs`` in parent 0-based pixels, or ``None`` when the file has no celestial WCS.

    Raises
    ------
    InvalidInputError
        Missing, non-FITS, damaged or truncated files; no 2-D data; a missing
        ``VARIANCE``; an image with no finite pixel; inconsistent shapes or options.
    """
    name = os.fspath(path)
    if gain is not None and not gain > 0:
        raise InvalidInputError(f"gain must be > 0 e-/count, got {gain}")
    if read_noise is not None and not read_noise >= 0:
        raise InvalidInputError(f"read_noise must be >= 0 e-, got {read_noise}")
    with open_fits(name) as hdul:
        names = {hdu_extname(h) for h in hdul}
        if hdu is None and names & set(PLANE_NAMES):
            if weight_path is not None or mask_path is not None:
                raise InvalidInputError(
                    f"{name}: weight_path/mask_path apply to single-image files only, "
                    "this file has IMAGE/MASK/VARIANCE planes"
                )
            exposure = _read_afw(hdul, name, names)
            if exposure.detector is not None:
                override_detector(exposure.detector, gain, read_noise, saturation)
        else:
            image_hdu = first_image_hdu(hdul, name) if hdu is None else select_hdu(hdul, name, hdu)
            exposure = read_single(
                hdul, image_hdu, name, weight_path, mask_path, gain, read_noise, saturation
            )
    if band is not None:
        exposure.band = band
    return exposure


def _read_afw(hdul: fits.HDUList, name: str, names: set[str]) -> Exposure:
    missing = [p for p in ("IMAGE", "VARIANCE") if p not in names]
    if missing:
        raise InvalidInputError(
            f"{name}: afw-layout file lacks the {' and '.join(missing)} HDU "
            f"(found {sorted(n for n in names if n)})"
        )
    image_hdu = hdul["IMAGE"]
    image = to_float32(hdu_data(image_hdu, name, "IMAGE"))
    variance = to_float32(hdu_data(hdul["VARIANCE"], name, "VARIANCE"))
    if variance.shape != image.shape:
        raise InvalidInputError(
            f"{name}: VARIANCE shape {variance.shape} differs from IMAGE shape {image.shape}"
        )
    if "MASK" in names:
        mask_hdu = hdul["MASK"]
        mask_data = hdu_data(mask_hdu, name, "MASK")
        if mask_data.shape != image.shape:
            raise InvalidInputError(
                f"{name}: MASK shape {mask_data.shape} differs from IMAGE shape {image.shape}"
            )
        mask = Mask(to_native(mask_data, np.int32), _mask_planes(mask_hdu.header))
    else:
        # Documented choice: a missing MASK is an empty mask (all planes clear).
        log.warning("%s: no MASK HDU; using an all-zero mask", name)
        mask = Mask(np.zeros(image.shape, np.int32))
    finalize_planes(image, variance, mask, name)
    xy0 = origin_from_header(image_hdu.header) or origin_from_header(hdul[0].header) or (0, 0)
    cards = Cards.from_headers(hdul[0].header)
    visit_info = parse_visit_info(cards)
    has_detector = any(k in cards.values for k in ("DETECTOR", "CCDNUM", "DETNAME", "GAIN"))
    detector, _ = parse_detector(cards)
    file_band = parse_band(cards)
    photo_calib = parse_photo_calib(cards)
    metadata = clean_metadata(cards.leftover())
    if "BUNIT" in image_hdu.header:
        metadata["BUNIT"] = str(image_hdu.header["BUNIT"])
    return Exposure(
        image,
        variance,
        mask,
        xy0=xy0,
        wcs=wcs_from_header(image_hdu.header, xy0),
        photo_calib=photo_calib,
        visit_info=visit_info,
        detector=detector if has_detector else None,
        band=file_band,
        metadata=metadata,
    )


def _mask_planes(header: fits.Header) -> dict[str, int]:
    """``MP_<NAME> = bit`` cards -> plane dictionary (unknown planes kept)."""
    planes: dict[str, int] = {}
    for card in header.cards:
        key = card.keyword.upper()
        if (
            key.startswith("MP_")
            and isinstance(card.value, int)
            and not isinstance(card.value, bool)
        ):
            if not 0 <= card.value < 32:
                raise InvalidInputError(f"mask plane {key} has bit {card.value}, outside 0..31")
            planes[key[3:]] = int(card.value)
    return planes


def read_extra_hdus(path: str | os.PathLike[str]) -> dict[str, Any]:
    """HDUs after the primary that are not ``IMAGE``/``MASK``/``VARIANCE``, by EXTNAME.

    Data are loaded into memory, so the HDUs stay usable after the file is closed. An HDU
    without EXTNAME is keyed ``HDU<index>``; a repeated EXTNAME keeps the first one.
    """
    name = os.fspath(path)
    extras: dict[str, Any] = {}
    with open_fits(name) as hdul:
        for index, hdu in enumerate(hdul):
            key = hdu_extname(hdu) or f"HDU{index}"
            if index == 0 or key in PLANE_NAMES or key in extras:
                continue
            try:
                with damage_as_error(name):
                    _ = hdu.data  # force the read while the file is open
            except InvalidInputError:
                raise
            except Exception as exc:
                raise InvalidInputError(f"{name}: cannot read HDU {key} ({one_line(exc)})") from exc
            extras[key] = hdu
    return extras
