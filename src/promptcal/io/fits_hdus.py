"""FITS access shared by the two layouts of :mod:`promptcal.io.fits_read`.

Opening files, reading an HDU's data, picking the image HDU, and the last clean-up of
the planes; every failure is an :class:`~promptcal.core.errors.InvalidInputError` with
a one-line message, so the streaming layer can dead-letter the message that pointed
at the file.
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
from promptcal.core.exposure import Mask

log = logging.getLogger(__name__)

#: Warnings astropy gives (instead of raising) for truncated or damaged files.
_DAMAGE_HINTS = ("truncated", "Error validating header", "corrupt", "Unexpected bytes")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name when empty)."""
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
        raise InvalidInputError(f"{name}: not a readable FITS file ({one_line(exc)})") from exc
    # Our own file object: astropy leaks the one it opens when the header is damaged.
    with stream:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                hdul = fits.open(stream, memmap=False, lazy_load_hdus=False)
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ... here
            raise InvalidInputError(f"{name}: not a readable FITS file ({one_line(exc)})") from exc
        with hdul:
            _raise_on_damage(name, caught)
            yield hdul


@contextlib.contextmanager
def damage_as_error(name: str) -> Iterator[None]:
    """Turn astropy's 'file may be truncated'-style warnings into InvalidInputError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    _raise_on_damage(name, caught)


def _raise_on_damage(name: str, caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        text = one_line(warning.message)
        if any(hint.lower() in text.lower() for hint in _DAMAGE_HINTS):
            raise InvalidInputError(f"{name}: damaged or truncated FITS file ({text})")
        if not issubclass(warning.category, ResourceWarning):
            log.debug("%s: %s", name, text)


def hdu_data(hdu: Any, name: str, what: str) -> np.ndarray:
    """The HDU's 2-D data (decompressed/unscaled); InvalidInputError when missing or damaged."""
    try:
        with damage_as_error(name):
            data = hdu.data
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"{name}: cannot read {what} data ({one_line(exc)})") from exc
    if data is None or getattr(data, "ndim", 0) != 2:
        shape = None if data is None else getattr(data, "shape", None)
        raise InvalidInputError(f"{name}: {what} has no 2-D image data (shape {shape})")
    return np.asarray(data)


def hdu_extname(hdu: Any) -> str:
    """The HDU's EXTNAME, upper case ("" without one)."""
    return str(hdu.header.get("EXTNAME", "")).strip().upper()


def is_image(hdu: Any) -> bool:
    """Whether the HDU holds an image (plain or tile-compressed)."""
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def first_image_hdu(hdul: fits.HDUList, name: str) -> Any:
    """The first HDU with non-empty 2-D image data; InvalidInputError when there is none."""
    for hdu in hdul:
        header = hdu.header
        if is_image(hdu) and header.get("NAXIS", 0) == 2 and header.get("NAXIS1", 0) > 0:
            return hdu
    raise InvalidInputError(f"{name}: no HDU with 2-D image data")


def select_hdu(hdul: fits.HDUList, name: str, key: int | str) -> Any:
    """HDU ``key`` (index or EXTNAME); InvalidInputError when missing or not an image."""
    try:
        hdu = hdul[key]
    except (KeyError, IndexError) as exc:
        raise InvalidInputError(f"{name}: no HDU {key!r} ({len(hdul)} HDUs)") from exc
    if not is_image(hdu):
        raise InvalidInputError(f"{name}: HDU {key!r} is a {type(hdu).__name__}, not an image")
    return hdu


def to_native(data: np.ndarray, dtype: type) -> np.ndarray:
    """``data`` as native-endian, C-contiguous ``dtype`` (FITS data are big-endian).

    Data already of ``dtype`` in big-endian order, writeable and contiguous (what astropy
    reads into memory) are byte-swapped in place and reinterpreted: no second copy of
    a 64 MB plane, whose fresh pages cost more than the swap itself.
    """
    native = np.dtype(dtype)
    swappable = data.dtype == native.newbyteorder(">") and data.dtype != native
    if swappable and data.flags.writeable and data.flags.c_contiguous:
        return data.byteswap(inplace=True).view(native)
    return np.ascontiguousarray(data, dtype=native)


def to_float32(data: np.ndarray) -> np.ndarray:
    """Native-endian, C-contiguous float32 (:func:`to_native`)."""
    return to_native(data, np.float32)


#: Rows per block when scanning planes for non-finite pixels: small temporaries that
#: stay in cache instead of four full-plane boolean arrays.
_FINITE_BLOCK_ROWS = 256


def finalize_planes(image: np.ndarray, variance: np.ndarray, mask: Mask, name: str) -> None:
    """NaN/inf image or variance -> NO_DATA with image 0 and variance +inf (in place)."""
    any_finite = False
    no_data = mask.bit("NO_DATA")
    for start in range(0, image.shape[0], _FINITE_BLOCK_ROWS):
        rows = slice(start, start + _FINITE_BLOCK_ROWS)
        bad = np.isfinite(image[rows])
        any_finite = any_finite or bool(bad.any())
        np.logical_not(bad, out=bad)
        bad |= ~np.isfinite(variance[rows])
        if bad.any():
            mask.array[rows][bad] |= no_data
            image[rows][bad] = 0.0
            variance[rows][bad] = np.inf
    if not any_finite:
        raise InvalidInputError(f"{name}: image has no finite pixels")


def override_detector(detector: Any, gain: Any, read_noise: Any, saturation: Any) -> None:
    """Arguments win over header cards."""
    if gain is not None:
        detector.gain = float(gain)
    if read_noise is not None:
        detector.read_noise = float(read_noise)
    if saturation is not None:
        detector.saturation = float(saturation)
