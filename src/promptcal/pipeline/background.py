"""Sky background: binned statistics and a smooth Chebyshev model (spec A4.2).

The image is cut into ``ceil(size / bin_size)`` near-equal bins per axis (afw's
layout), each bin gets a 3σ-clipped mean of its unmasked pixels, bins with too few
valid pixels are filled from their neighbours, and the full-resolution background is
a least-squares 2-D Chebyshev polynomial through the bin centres (LSST's
``useApprox``; the order is reduced to ``n_bins - 1`` per axis when there are few
bins, afw's ``REDUCE_INTERP_ORDER``). See ``docs/background.md``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from promptcal.core.background_model import BackgroundModel
from promptcal.core.config import Config
from promptcal.core.errors import AlgorithmError, InvalidInputError
from promptcal.core.exposure import Exposure
from promptcal.kernels.background import binned_clipped_mean_strided


class BackgroundConfig(Config):
    """How the background is estimated and modelled."""

    bin_size: int = Field(
        128, ge=8, description="Nominal bin size [px]; bins per axis = ceil(size / bin_size)."
    )
    ignored_mask_planes: tuple[str, ...] = Field(
        ("BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA"),
        description="Mask planes whose pixels are excluded from the bin statistics [plane names].",
    )
    n_sigma_clip: float = Field(
        3.0, gt=0, description="Clipping half-width of the per-bin MEANCLIP [σ]."
    )
    n_iter_clip: int = Field(
        3, ge=0, description="Clipping iterations of the per-bin MEANCLIP [count]."
    )
    min_valid_fraction: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Minimum fraction of a bin's pixels that must be valid; emptier bins are "
        "filled from their neighbours [fraction]. The sep backend applies its own 0.5 rule.",
    )
    sample_stride: int = Field(
        2,
        ge=1,
        description="Use every n-th pixel along each axis for the bin statistics [px]; "
        "1 uses all pixels (LSST). 2 keeps ≥4000 pixels per 128-px bin at a quarter of "
        "the cost.",
    )
    approx_order_x: int = Field(6, ge=0, description="Chebyshev order along x [order].")
    approx_order_y: int = Field(
        -1, ge=-1, description="Chebyshev order along y; -1 means approx_order_x [order]."
    )
    implementation: Literal["numba", "sep"] = Field(
        "numba", description="Bin-statistics backend (see docs/background.md for the benchmark)."
    )
    sep_filter_size: int = Field(
        3, ge=1, description="Median filter applied by sep to its bin grid (sep backend) [bins]."
    )


# ------------------------------------------------------------------- estimation


def bin_edges(length: int, bin_size: int) -> np.ndarray:
    """afw's bin edges along one axis: ceil(length / bin_size) near-equal bins [px]."""
    n = max(1, -(-length // bin_size))
    ends = np.minimum((np.arange(1, n + 1) * length + n // 2) // n, length)
    return np.concatenate([[0], ends]).astype(np.int64)


def fill_invalid_bins(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid bins from their neighbours, ring by ring from the valid ones.

    A bin next to a valid one gets the plane fitted to the valid bins of its 5x5
    neighbourhood, evaluated at the bin (exact for a linear background, and a
    one-bin extrapolation at most); with fewer than three non-collinear neighbours
    it gets the mean of its valid 8-neighbours.
    """
    values = values.copy()
    valid = valid.copy()
    if not valid.any():
        raise AlgorithmError(
            f"no background bin has enough valid pixels (0 of {valid.size} bins usable)",
            n_bins=int(valid.size),
        )
    while not valid.all():
        fills = {}
        for j, i in zip(*np.nonzero(~valid), strict=True):
            near = valid[max(0, j - 1) : j + 2, max(0, i - 1) : i + 2]
            if not near.any():
                continue
            jj, ii = np.nonzero(valid[max(0, j - 2) : j + 3, max(0, i - 2) : i + 3])
            jj, ii = jj + max(0, j - 2), ii + max(0, i - 2)
            design = np.column_stack([np.ones(jj.size), jj - j, ii - i]).astype(np.float64)
            if jj.size >= 3 and np.linalg.matrix_rank(design) == 3:
                coeffs, *_ = np.linalg.lstsq(design, values[jj, ii], rcond=None)
                fills[j, i] = coeffs[0]
            else:
                ring = np.s_[max(0, j - 1) : j + 2, max(0, i - 1) : i + 2]
                fills[j, i] = values[ring][near].mean()
        for (j, i), value in fills.items():
            values[j, i] = value
            valid[j, i] = True
    return values


def _orders(config: BackgroundConfig, nx: int, ny: int) -> tuple[int, int]:
    order_y = config.approx_order_y if config.approx_order_y >= 0 else config.approx_order_x
    return min(config.approx_order_x, nx - 1), min(order_y, ny - 1)


def _numba_bins(image, mask, mask_bits, config):
    y_edges = bin_edges(image.shape[0], config.bin_size)
    x_edges = bin_edges(image.shape[1], config.bin_size)
    stride = config.sample_stride
    # Every stride-th pixel of each axis (read in place by the kernel): the bin
    # statistics are still built from thousands of pixels, at a fraction of the cost.
    y_sub = -(-y_edges // stride)
    x_sub = -(-x_edges // stride)
    stats = binned_clipped_mean_strided(
        image, mask, int(mask_bits), y_sub, x_sub, stride, config.n_sigma_clip, config.n_iter_clip
    )
    area = np.diff(y_sub)[:, None] * np.diff(x_sub)[None, :]
    valid = stats.n_valid >= np.maximum(1, config.min_valid_fraction * area)
    valid &= np.isfinite(stats.values)
    values = fill_invalid_bins(stats.values, valid)
    return (
        values,
        0.5 * (x_edges[:-1] + x_edges[1:]) - 0.5,
        0.5 * (y_edges[:-1] + y_edges[1:]) - 0.5,
    )


def _sep_bins(image, mask, mask_bits, config):
    """sep's mesh values, sampled from ``back()`` at the pixels nearest its mesh nodes.

    sep keeps its mesh private; its bicubic spline passes through the (filtered) mesh
    values at x = (i + 0.5)·bw - 0.5, y = (j + 0.5)·bh. We read ``back()`` at the
    nearest pixel (within 0.5 px of a node, clipped to the image) and record those
    pixels as the bin centres, so the model is consistent with what was sampled.
    """
    import sep

    ignored = (mask & int(mask_bits)) != 0
    finite = np.isfinite(image)
    if not finite.all():
        ignored |= ~finite
        image = np.where(finite, image, np.float32(0.0))
    if ignored.all():
        raise AlgorithmError(
            "no background bin has enough valid pixels (every pixel is masked)", n_bins=0
        )
    data = np.ascontiguousarray(image, dtype=np.float32)
    height, width = image.shape
    # Same bin count as the numba grid, with the sep mesh size chosen to tile the image
    # nearly evenly (sep would otherwise leave a thin partial mesh at the far edges).
    nx, ny = max(1, -(-width // config.bin_size)), max(1, -(-height // config.bin_size))
    bw, bh = -(-width // nx), -(-height // ny)
    nx, ny = (width - 1) // bw + 1, (height - 1) // bh + 1  # sep's own mesh count
    fsize = config.sep_filter_size
    bkg = sep.Background(data, mask=ignored, bw=bw, bh=bh, fw=fsize, fh=fsize)
    back = bkg.back()
    xs = np.clip(np.floor((np.arange(nx) + 0.5) * bw), 0, width - 1).astype(np.int64)
    ys = np.clip(np.floor((np.arange(ny) + 0.5) * bh), 0, height - 1).astype(np.int64)
    values = back[np.ix_(ys, xs)].astype(np.float64)
    # sep replaces meshes with < 50 % valid pixels by the mean of the nearest valid
    # meshes; mark them invalid so they get the same plane fill as the numba grid.
    y_edges = np.minimum(np.arange(ny) * bh, height)
    x_edges = np.minimum(np.arange(nx) * bw, width)
    good_rows = np.add.reduceat(~ignored, y_edges, axis=0, dtype=np.int64)
    n_good = np.add.reduceat(good_rows, x_edges, axis=1)
    area = np.diff(np.append(y_edges, height))[:, None] * np.diff(np.append(x_edges, width))
    values[n_good < 0.5 * area] = np.nan
    return values, xs.astype(np.float64), ys.astype(np.float64)


def estimate_background(
    image: np.ndarray, mask: np.ndarray, mask_bits: int, config: BackgroundConfig | None = None
) -> BackgroundModel:
    """Estimate the smooth background of ``image``.

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W) pixels [image unit].
    mask : numpy.ndarray
        int32 (H, W) bit mask.
    mask_bits : int
        Pixels with any of these bits set are ignored.
    config : BackgroundConfig, optional
        Settings; defaults when omitted.

    Returns
    -------
    BackgroundModel
        Binned values and the Chebyshev model [image unit].

    Raises
    ------
    AlgorithmError
        When no bin has enough unmasked pixels.
    """
    config = config or BackgroundConfig()
    image = np.ascontiguousarray(image, dtype=np.float32)
    mask = np.ascontiguousarray(mask, dtype=np.int32)
    if image.ndim != 2 or image.shape != mask.shape:
        raise InvalidInputError(
            f"image {image.shape} and mask {mask.shape} must be 2-D with the same shape"
        )
    backend = _numba_bins if config.implementation == "numba" else _sep_bins
    values, x_centers, y_centers = backend(image, mask, mask_bits, config)
    order_x, order_y = _orders(config, values.shape[1], values.shape[0])
    valid = np.isfinite(values)
    if not valid.all():
        values = fill_invalid_bins(values, valid)
    return BackgroundModel(
        config.bin_size, values, x_centers, y_centers, image.shape, order_x, order_y
    )


def subtract_background(
    exposure: Exposure,
    config: BackgroundConfig | None = None,
    mask_planes: tuple[str, ...] | list[str] | None = None,
) -> BackgroundModel:
    """Estimate the background of ``exposure``, subtract it in place and return it.

    Parameters
    ----------
    exposure : Exposure
        Modified in place: ``image -= model``.
    config : BackgroundConfig, optional
        Settings; defaults when omitted.
    mask_planes : sequence of str, optional
        Planes to ignore; ``config.ignored_mask_planes`` when omitted.
    """
    config = config or BackgroundConfig()
    names = tuple(mask_planes) if mask_planes is not None else config.ignored_mask_planes
    bits = exposure.mask.bit(*names)
    model = estimate_background(exposure.image, exposure.mask.array, bits, config)
    model.subtract_from(exposure.image)
    return model
