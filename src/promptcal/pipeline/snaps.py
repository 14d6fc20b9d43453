"""Combine the snaps of one visit-detector into a single exposure (like LSST SnapCombine).

Two snaps are summed pixel by pixel: images and variances add, masks OR (so a pixel that
is NO_DATA in either snap stays NO_DATA), exposure times add and the mid-exposure date is
the mean of the two. Identity, WCS, detector, band, PSF, calibration and metadata come
from the first snap.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from promptcal.core.errors import InvalidInputError
from promptcal.core.exposure import Exposure, Mask, VisitInfo


def _merge_planes(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    """Union of two plane dictionaries; a name or a bit must mean the same in both."""
    merged = dict(first)
    owner = {bit: name for name, bit in first.items()}
    for name, bit in second.items():
        if name in merged and merged[name] != bit:
            raise InvalidInputError(
                f"mask plane {name} is bit {merged[name]} in snap 0 but bit {bit} in snap 1"
            )
        if name not in merged:
            if bit in owner:
                raise InvalidInputError(
                    f"mask bit {bit} is plane {owner[bit]} in snap 0 but {name} in snap 1"
                )
            merged[name] = bit
            owner[bit] = name
    return merged


def combine_snaps(exposures: Sequence[Exposure]) -> Exposure:
    """Combine one or two snaps.

    Parameters
    ----------
    exposures : sequence of Exposure
        One exposure (returned unchanged, same object) or two snaps with the same shape
        and ``xy0``.

    Returns
    -------
    Exposure
        The sum of the two snaps (new arrays), with summed exposure time [s] and the mean
        of the two mid-exposure dates (the one known date when only one is set).

    Raises
    ------
    InvalidInputError
        Zero or more than two exposures, different shapes or origins, or mask planes
        whose names/bits disagree.
    """
    snaps = list(exposures)
    if len(snaps) == 1:
        return snaps[0]
    if len(snaps) != 2:
        raise InvalidInputError(f"expected 1 or 2 snaps, got {len(snaps)}")
    first, second = snaps
    if first.image.shape != second.image.shape:
        raise InvalidInputError(
            f"snap shapes differ: {first.image.shape} and {second.image.shape} (rows, cols)"
        )
    if first.xy0 != second.xy0:
        raise InvalidInputError(f"snap origins differ: xy0 {first.xy0} and {second.xy0}")
    if first.band and second.band and first.band != second.band:
        raise InvalidInputError(f"snap bands differ: {first.band!r} and {second.band!r}")

    planes = _merge_planes(first.mask.planes, second.mask.planes)
    mask = Mask(np.bitwise_or(first.mask.array, second.mask.array), planes)
    # float32 sums: the inputs are float32 and inf (NO_DATA) variances stay inf.
    image = np.add(first.image, second.image, dtype=np.float32)
    variance = np.add(first.variance, second.variance, dtype=np.float32)

    info0, info1 = first.visit_info, second.visit_info
    if info0.date is not None and info1.date is not None:
        date = info0.date + (info1.date - info0.date) * 0.5
    else:
        date = info0.date if info0.date is not None else info1.date
    visit_info = VisitInfo(
        exposure_id=info0.exposure_id,
        exposure_time=float(info0.exposure_time) + float(info1.exposure_time),
        date=date,
        observatory=info0.observatory,
        boresight_ra_dec=info0.boresight_ra_dec,
        rotation_angle=info0.rotation_angle,
    )
    return Exposure(
        image,
        variance,
        mask,
        xy0=first.xy0,
        wcs=None if first.wcs is None else first.wcs.deepcopy(),
        psf=first.psf,
        photo_calib=copy.deepcopy(first.photo_calib),
        visit_info=visit_info,
        detector=copy.deepcopy(first.detector),
        band=first.band,
        metadata=copy.deepcopy(first.metadata),
        ap_corr_map=first.ap_corr_map,
        summary=None,
    )
