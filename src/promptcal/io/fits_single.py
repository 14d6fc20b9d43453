"""The single-HDU layout (b) of :mod:`promptcal.io.fits_read`: one image HDU, with
optional inverse-variance weight and mask/DQ files (``docs/fits-layout.md``)."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from astropy.io import fits

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Exposure, Mask
from promptcal.io.fits_hdus import (
    finalize_planes,
    first_image_hdu,
    hdu_data,
    hdu_extname,
    is_image,
    open_fits,
    override_detector,
    to_float32,
)
from promptcal.io.frames import wcs_from_header
from promptcal.io.header import (
    Cards,
    clean_metadata,
    parse_band,
    parse_detector,
    parse_photo_calib,
    parse_visit_info,
)

log = logging.getLogger(__name__)


def companion(path: str | os.PathLike[str], extname: str, shape: tuple[int, ...], what: str):
    """2-D data of a weight/mask file: the HDU with the image's EXTNAME, else the first one."""
    name = os.fspath(path)
    with open_fits(name) as hdul:
        match = [h for h in hdul if extname and hdu_extname(h) == extname and is_image(h)]
        hdu = match[0] if match else first_image_hdu(hdul, name)
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


def read_single(
    hdul: fits.HDUList,
    image_hdu: Any,
    name: str,
    weight_path: Any,
    mask_path: Any,
    gain: float | None,
    read_noise: float | None,
    saturation: float | None,
) -> Exposure:
    """The exposure of the single-HDU file ``name`` from ``image_hdu``.

    Arguments as for :func:`promptcal.io.fits_read.read_exposure`.

    The variance comes from the weight file when given, else from the gain and read
    noise (arguments, then header cards), else from the measured sky noise.
    """
    raw = hdu_data(image_hdu, name, f"HDU {hdu_extname(image_hdu) or 'image'}")
    image = to_float32(raw)
    # Extension cards override the primary ones (INHERIT convention, e.g. DECam CCD HDUs).
    is_primary = image_hdu is hdul[0]
    headers = [image_hdu.header] if is_primary else [hdul[0].header, image_hdu.header]
    cards = Cards.from_headers(*headers)
    visit_info = parse_visit_info(cards)
    detector, found = parse_detector(cards)
    override_detector(detector, gain, read_noise, saturation)
    mask = Mask(np.zeros(image.shape, np.int32))
    with np.errstate(invalid="ignore"):
        mask.array[image >= detector.saturation] |= mask.bit("SAT")
    extname = hdu_extname(image_hdu)
    if weight_path is not None:
        weight = companion(weight_path, extname, image.shape, "weight").astype(np.float64)
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
        dq = companion(mask_path, extname, image.shape, "mask")
        mask.array[dq != 0] |= mask.bit("BAD")
    finalize_planes(image, variance, mask, name)
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
