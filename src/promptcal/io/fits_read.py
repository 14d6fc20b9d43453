"""Read an exposure from FITS (design §3, layout in ``docs/fits-layout.md``).

Two layouts are detected automatically:

(a) LSST-afw multi-extension: primary header + ``IMAGE``, ``MASK``, ``VARIANCE``;
(b) one image HDU, with optional inverse-variance weight and mask/DQ files.

Every failure to read is an :class:`~promptcal.core.errors.InvalidInputError` with a one-line
message, so the streaming layer can dead-letter the message that pointed at the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from astropy.io import fits

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Exposure, Mask
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
#: Warnings astropy gives (instead of raising) for truncated or damaged files.
_DAMAGE_HINTS = ("truncated", "Error validating header", "corrupt", "Unexpected bytes")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def open_fits(path: str | os.PathLike[str]) -> Iterator[fits.HDUList]:
    """Open a FITS file fully in memory; damage and non-FITS input raise InvalidInputError."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise InvalidInputError(f"{name}: no such file")
    try:
        stream = open(name, "rb")
    except OSError as exc:
        raise InvalidInputError(f"{name}: not a readable FITS file ({_one_line(exc)})") from exc
    # Our own file object: astropy leaks the one it opens when the header is damaged.
    with stream:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                hdul = fits.open(stream, memmap=False, lazy_load_hdus=False)
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ... here
            raise InvalidInputError(f"{name}: not a readable FITS file ({_one_line(exc)})") from exc
        with hdul:
            _raise_on_damage(name, caught)
            yield hdul


@contextlib.contextmanager
def _damage_as_error(name: str) -> Iterator[None]:
    """Turn astropy's 'file may be truncated'-style warnings into InvalidInputError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    _raise_on_damage(name, caught)


def _raise_on_damage(name: str, caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        text = _one_line(warning.message)
        if any(hint.lower() in text.lower() for hint in _DAMAGE_HINTS):
            raise InvalidInputError(f"{name}: damaged or truncated FITS file ({text})")
        if not issubclass(warning.category, ResourceWarning):
            log.debug("%s: %s", name, text)


def hdu_data(hdu: Any, name: str, what: str) -> np.ndarray:
    """The HDU's 2-D data (decompressed/unscaled); InvalidInputError when missing or damaged."""
    try:
        with _damage_as_error(name):
            data = hdu.data
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"{name}: cannot read {what} data ({_one_line(exc)})") from exc
    if data is None or getattr(data, "ndim", 0) != 2:
        shape = None if data is None else getattr(data, "shape", None)
        raise InvalidInputError(f"{name}: {what} has no 2-D image data (shape {shape})")
    return np.asarray(data)


def _extname(hdu: Any) -> str:
    return str(hdu.header.get("EXTNAME", "")).strip().upper()


def _is_image(hdu: Any) -> bool:
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def _first_image_hdu(hdul: fits.HDUList, name: str) -> Any:
    for hdu in hdul:
        header = hdu.header
        if _is_image(hdu) and header.get("NAXIS", 0) == 2 and header.get("NAXIS1", 0) > 0:
            return hdu
    raise InvalidInputError(f"{name}: no HDU with 2-D image data")


def _select_hdu(hdul: fits.HDUList, name: str, key: int | str) -> Any:
    try:
        hdu = hdul[key]
    except (KeyError, IndexError) as exc:
        raise InvalidInputError(f"{name}: no HDU {key!r} ({len(hdul)} HDUs)") from exc
    if not _is_image(hdu):
        raise InvalidInputError(f"{name}: HDU {key!r} is a {type(hdu).__name__}, not an image")
    return hdu


def _to_float32(data: np.ndarray) -> np.ndarray:
    """Native-endian, C-contiguous float32 copy (FITS data are big-endian on disk)."""
    return np.ascontiguousarray(data, dtype=np.float32)


def _finalize(image: np.ndarray, variance: np.ndarray, mask: Mask, name: str) -> None:
    """NaN/inf image or variance -> NO_DATA with image 0 and variance +inf (in place)."""
    finite_image = np.isfinite(image)
    if not finite_image.any():
        raise InvalidInputError(f"{name}: image has no finite pixels")
    bad = ~finite_image | ~np.isfinite(variance)
    if bad.any():
        mask.array[bad] |= mask.bit("NO_DATA")
        image[bad] = 0.0
        variance[bad] = np.inf


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
        names = {_extname(h) for h in hdul}
        if hdu is None and names & set(PLANE_NAMES):
            if weight_path is not None or mask_path is not None:
                raise InvalidInputError(
                    f"{name}: weight_path/mask_path apply to single-image files only, "
                    "this file has IMAGE/MASK/VARIANCE planes"
                )
            exposure = _read_afw(hdul, name, names)
            if exposure.detector is not None:
                _override(exposure.detector, gain, read_noise, saturation)
        else:
            image_hdu = (
                _first_image_hdu(hdul, name) if hdu is None else _select_hdu(hdul, name, hdu)
            )
            exposure = _read_single(
                hdul, image_hdu, name, weight_path, mask_path, gain, read_noise, saturation
            )
    if band is not None:
        exposure.band = band
    return exposure


def _override(detector: Any, gain: Any, read_noise: Any, saturation: Any) -> None:
    """Arguments win over header cards."""
    if gain is not None:
        detector.gain = float(gain)
    if read_noise is not None:
        detector.read_noise = float(read_noise)
    if saturation is not None:
        detector.saturation = float(saturation)


def _read_afw(hdul: fits.HDUList, name: str, names: set[str]) -> Exposure:
    missing = [p for p in ("IMAGE", "VARIANCE") if p not in names]
    if missing:
        raise InvalidInputError(
            f"{name}: afw-layout file lacks the {' and '.join(missing)} HDU "
            f"(found {sorted(n for n in names if n)})"
        )
    image_hdu = hdul["IMAGE"]
    image = _to_float32(hdu_data(image_hdu, name, "IMAGE"))
    variance = _to_float32(hdu_data(hdul["VARIANCE"], name, "VARIANCE"))
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
        mask = Mask(np.ascontiguousarray(mask_data, dtype=np.int32), _mask_planes(mask_hdu.header))
    else:
        # Documented choice: a missing MASK is an empty mask (all planes clear).
        log.warning("%s: no MASK HDU; using an all-zero mask", name)
        mask = Mask(np.zeros(image.shape, np.int32))
    _finalize(image, variance, mask, name)
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


def _companion(path: str | os.PathLike[str], extname: str, shape: tuple[int, ...], what: str):
    """2-D data of a weight/mask file: the HDU with the image's EXTNAME, else the first one."""
    name = os.fspath(path)
    with open_fits(name) as hdul:
        match = [h for h in hdul if extname and _extname(h) == extname and _is_image(h)]
        hdu = match[0] if match else _first_image_hdu(hdul, name)
        data = hdu_data(hdu, name, what)
    if data.shape != shape:
        raise InvalidInputError(f"{name}: {what} shape {data.shape} differs from image {shape}")
    return data


def empirical_noise_sigma(image: np.ndarray) -> float:
    """Per-pixel noise σ from the MAD of horizontal pixel differences [image unit].

    Differencing neighbours cancels smooth background and most of the sources' light,
    and the MAD ignores the rest; ``σ = 1.4826 MAD / √2``.
    """
    diffs = np.diff(image[:, ::2], axis=1).ravel() if image.shape[1] > 2 else image.ravel()
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        raise InvalidInputError("image has no finite pixels")
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    sigma = 1.4826 * mad / np.sqrt(2.0)
    return sigma if sigma > 0 else 1.0


def _read_single(
    hdul: fits.HDUList,
    image_hdu: Any,
    name: str,
    weight_path: Any,
    mask_path: Any,
    gain: float | None,
    read_noise: float | None,
    saturation: float | None,
) -> Exposure:
    raw = hdu_data(image_hdu, name, f"HDU {_extname(image_hdu) or 'image'}")
    image = _to_float32(raw)
    # Extension cards override the primary ones (INHERIT convention, e.g. DECam CCD HDUs).
    is_primary = image_hdu is hdul[0]
    headers = [image_hdu.header] if is_primary else [hdul[0].header, image_hdu.header]
    cards = Cards.from_headers(*headers)
    visit_info = parse_visit_info(cards)
    detector, found = parse_detector(cards)
    _override(detector, gain, read_noise, saturation)
    mask = Mask(np.zeros(image.shape, np.int32))
    with np.errstate(invalid="ignore"):
        mask.array[image >= detector.saturation] |= mask.bit("SAT")
    extname = _extname(image_hdu)
    if weight_path is not None:
        weight = _companion(weight_path, extname, image.shape, "weight").astype(np.float64)
        usable = np.isfinite(weight) & (weight > 0)
        with np.errstate(divide="ignore"):
            variance = np.where(usable, 1.0 / np.where(usable, weight, 1.0), np.inf)
        mask.array[~usable] |= mask.bit("NO_DATA")
        variance = variance.astype(np.float32)
    elif gain is None and not found["gain"]:
        # Without a noise model the measured sky noise is a better variance than a
        # guessed gain (e.g. resampled mosaics in MJy/sr).
        sigma = empirical_noise_sigma(image)
        log.warning(
            "%s: no weight, gain given or GAIN card; variance set to the measured "
            "sky noise (σ = %.4g per pixel)",
            name,
            sigma,
        )
        variance = np.full(image.shape, sigma * sigma, np.float32)
    else:
        if read_noise is None and not found["read_noise"]:
            log.warning("%s: no read noise given or in the header; assuming 0 e-", name)
        g, rn = detector.gain, detector.read_noise
        pixels = np.maximum(image.astype(np.float64), 0.0)
        variance = (pixels / g + (rn / g) ** 2).astype(np.float32)
    if mask_path is not None:
        dq = _companion(mask_path, extname, image.shape, "mask")
        mask.array[dq != 0] |= mask.bit("BAD")
    _finalize(image, variance, mask, name)
    file_band = parse_band(cards)
    photo_calib = parse_photo_calib(cards)
    metadata = clean_metadata(cards.leftover())
    # Single-image files keep xy0 = (0, 0): their LTV cards describe detector trimming,
    # and the WCS is already relative to the array.
    return Exposure(
        image,
        variance,
        mask,
        xy0=(0, 0),
        wcs=wcs_from_header(image_hdu.header, (0, 0)),
        photo_calib=photo_calib,
        visit_info=visit_info,
        detector=detector,
        band=file_band,
        metadata=metadata,
    )


def read_extra_hdus(path: str | os.PathLike[str]) -> dict[str, Any]:
    """HDUs after the primary that are not ``IMAGE``/``MASK``/``VARIANCE``, by EXTNAME.

    Data are loaded into memory, so the HDUs stay usable after the file is closed. An HDU
    without EXTNAME is keyed ``HDU<index>``; a repeated EXTNAME keeps the first one.
    """
    name = os.fspath(path)
    extras: dict[str, Any] = {}
    with open_fits(name) as hdul:
        for index, hdu in enumerate(hdul):
            key = _extname(hdu) or f"HDU{index}"
            if index == 0 or key in PLANE_NAMES or key in extras:
                continue
            try:
                with _damage_as_error(name):
                    _ = hdu.data  # force the read while the file is open
            except InvalidInputError:
                raise
            except Exception as exc:
                raise InvalidInputError(
                    f"{name}: cannot read HDU {key} ({_one_line(exc)})"
                ) from exc
            extras[key] = hdu
    return extras
