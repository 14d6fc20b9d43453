"""PSF-related summary statistics (spec C): PSF-star shape residuals and the robustness
of the PSF model and aperture correction across the detector.

Grid positions are *parent* pixel coordinates (LSST evaluates its grids at local array
indices, which disagrees with parent-frame PSF models and centroids when xy0 ≠ 0).
"""

from __future__ import annotations

import numpy as np

from promptcal.core.psf_model import GaussianPsf, PixelPsf

#: Normal-consistent scale of the median absolute deviation.
MAD_TO_SIGMA = 1.482602218505602

NAN = float("nan")


def _column(cat, name: str) -> np.ndarray | None:
    has = cat.has(name) if hasattr(cat, "has") else name in cat.colnames
    return np.asarray(cat[name], np.float64) if has else None


def _flag(cat, name: str) -> np.ndarray:
    has = cat.has(name) if hasattr(cat, "has") else name in cat.colnames
    return np.asarray(cat[name], bool) if has else np.zeros(len(cat), bool)


def _sigma_mad(values: np.ndarray) -> float:
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def select_psf_stats_stars(stars, config) -> np.ndarray:
    """``calib_psf_used`` stars with min < S/N(PsfFlux) < max and clean shape/flux flags."""
    n = len(stars)
    used = _flag(stars, config.star_selection)
    flux = _column(stars, "slot_PsfFlux_instFlux")
    err = _column(stars, "slot_PsfFlux_instFluxErr")
    if flux is None or err is None:
        return np.zeros(n, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / err
    good = used & (snr > config.psf_stats_min_snr) & (snr < config.psf_stats_max_snr)
    good &= ~_flag(stars, f"{config.star_shape}_flag") & ~_flag(stars, "slot_PsfFlux_flag")
    return good


def psf_star_stats(stars, config) -> tuple[dict, np.ndarray]:
    """nPsfStar and the star-vs-PSF-model e1/e2/size statistics.

    Returns
    -------
    stats : dict
        Summary fields (NaN when no star qualifies or a shape column is missing).
    selected : numpy.ndarray
        bool mask of the stars the statistics used (also the maxDistToNearestPsf stars).
    """
    names = (
        "psfStarDeltaE1Median",
        "psfStarDeltaE2Median",
        "psfStarDeltaE1Scatter",
        "psfStarDeltaE2Scatter",
        "psfStarDeltaSizeMedian",
        "psfStarDeltaSizeScatter",
        "psfStarScaledDeltaSizeScatter",
        "starEMedian",
        "starUnNormalizedEMedian",
    )
    stats: dict = dict.fromkeys(names, NAN)
    stats["nPsfStar"] = 0
    if stars is None or len(stars) == 0:
        return stats, np.zeros(0 if stars is None else len(stars), bool)
    stats["nPsfStar"] = int(_flag(stars, config.star_selection).sum())
    selected = select_psf_stats_stars(stars, config)
    moments = [
        _column(stars, f"{prefix}_{m}")
        for prefix in (config.star_shape, config.psf_shape)
        for m in ("xx", "yy", "xy")
    ]
    if not selected.any() or any(m is None for m in moments):
        return stats, selected
    sxx, syy, sxy, pxx, pyy, pxy = (m[selected] for m in moments)
    with np.errstate(divide="ignore", invalid="ignore"):
        _shape_stats(stats, sxx, syy, sxy, pxx, pyy, pxy)
    return stats, selected


def _shape_stats(stats: dict, sxx, syy, sxy, pxx, pyy, pxy) -> None:
    star_e1 = (sxx - syy) / (sxx + syy)
    star_e2 = 2.0 * sxy / (sxx + syy)
    star_size = np.sqrt(0.5 * (sxx + syy))
    psf_e1 = (pxx - pyy) / (pxx + pyy)
    psf_e2 = 2.0 * pxy / (pxx + pyy)
    psf_size = np.sqrt(0.5 * (pxx + pyy))
    d_size = star_size - psf_size
    stats["psfStarDeltaE1Median"] = float(np.median(star_e1 - psf_e1))
    stats["psfStarDeltaE2Median"] = float(np.median(star_e2 - psf_e2))
    stats["psfStarDeltaE1Scatter"] = _sigma_mad(star_e1 - psf_e1)
    stats["psfStarDeltaE2Scatter"] = _sigma_mad(star_e2 - psf_e2)
    stats["psfStarDeltaSizeMedian"] = float(np.median(d_size))
    stats["psfStarDeltaSizeScatter"] = _sigma_mad(d_size)
    stats["psfStarScaledDeltaSizeScatter"] = float(
        np.float64(stats["psfStarDeltaSizeScatter"]) / np.median(star_size)
    )
    stats["starEMedian"] = float(np.median(np.hypot(star_e1, star_e2)))
    stats["starUnNormalizedEMedian"] = float(np.median(np.hypot(sxx - syy, 2.0 * sxy)))


def grid_points(mask, bad_planes, sampling: int, xy0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unmasked points of a ``sampling``-px grid starting at pixel [0, 0].

    Returns
    -------
    x, y : numpy.ndarray
        float64 parent coordinates of the unmasked grid points [px].
    good : numpy.ndarray
        bool (ny, nx) grid of unmasked points.
    """
    sub = mask.array[::sampling, ::sampling]
    good = (sub & mask.bit(*bad_planes)) == 0
    iy, ix = np.nonzero(good)
    return (
        (ix * sampling + xy0[0]).astype(np.float64),
        (iy * sampling + xy0[1]).astype(np.float64),
        good,
    )


def max_distance_to_nearest_psf(
    good: np.ndarray, sampling: int, xy0, x_star, y_star, block: int = 8
) -> float:
    """Maximum over unmasked grid points of the distance to the nearest PSF star [px].

    Exact, by branch and bound: the distance to the nearest star is 1-Lipschitz, so a
    block of grid points whose centre is at distance d from the nearest star holds no
    point farther than d + (the block's half-diagonal). Blocks are searched from the
    largest such bound down until the bound falls below the best exact value, which
    evaluates a few blocks instead of all ~260 000 points of a 4k detector.

    Parameters
    ----------
    good : numpy.ndarray
        bool (ny, nx) unmasked grid points; point (j, i) is at parent
        (xy0[0] + i·sampling, xy0[1] + j·sampling).
    sampling : int
        Grid spacing [px].
    x_star, y_star : numpy.ndarray
        Parent positions of the PSF stars [px].
    block : int
        Block width [grid points].
    """
    if not good.any() or np.size(x_star) == 0:
        return NAN
    from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

    tree = cKDTree(np.column_stack([x_star, y_star]))
    ny, nx = good.shape
    by, bx = -(-ny // block), -(-nx // block)
    padded = np.zeros((by * block, bx * block), bool)
    padded[:ny, :nx] = good
    has_good = padded.reshape(by, block, bx, block).any(axis=(1, 3))
    jb, ib = np.nonzero(has_good)
    # Block centres and half-diagonals in parent pixels (last blocks may be partial).
    j0, i0 = jb * block, ib * block
    j1, i1 = np.minimum(j0 + block, ny) - 1, np.minimum(i0 + block, nx) - 1
    cy = xy0[1] + 0.5 * (j0 + j1) * sampling
    cx = xy0[0] + 0.5 * (i0 + i1) * sampling
    half_diag = 0.5 * sampling * np.hypot(j1 - j0, i1 - i0)
    d_centre, _ = tree.query(np.column_stack([cx, cy]), k=1)
    bound = d_centre + half_diag
    best = -np.inf
    for k in np.argsort(-bound):
        if bound[k] <= best:
            break
        sub = good[j0[k] : j1[k] + 1, i0[k] : i1[k] + 1]
        jj, ii = np.nonzero(sub)
        pts = np.column_stack(
            [xy0[0] + (ii + i0[k]) * sampling, xy0[1] + (jj + j0[k]) * sampling]
        ).astype(np.float64)
        dist, _ = tree.query(pts, k=1)
        best = max(best, float(dist.max()))
    return best


def _aperture_pixels(size: int, radius: float) -> np.ndarray:
    """bool (size, size): pixel centres within ``radius`` of the stamp centre."""
    offsets = np.arange(size) - size // 2
    return offsets[None, :] ** 2 + offsets[:, None] ** 2 <= radius * radius


def _coarse_subset(good: np.ndarray, per_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices (iy, ix) of a ≤ per_axis² subgrid including the grid's edges."""
    ny, nx = good.shape
    rows = np.unique(np.round(np.linspace(0, ny - 1, min(per_axis, ny))).astype(np.int64))
    cols = np.unique(np.round(np.linspace(0, nx - 1, min(per_axis, nx))).astype(np.int64))
    sub = np.zeros_like(good)
    sub[np.ix_(rows, cols)] = True
    iy, ix = np.nonzero(sub & good)
    if iy.size == 0:
        # Every subgrid point is masked: fall back to evenly spaced unmasked points.
        iy, ix = np.nonzero(good)
        pick = np.unique(np.round(np.linspace(0, iy.size - 1, per_axis * per_axis)))
        iy, ix = iy[pick.astype(np.int64)], ix[pick.astype(np.int64)]
    return iy, ix


def psf_image_deltas(psf, good: np.ndarray, sampling: int, xy0, ap_radius: float, per_axis: int):
    """max − min of the PSF trace radius and aperture flux over the unmasked grid.

    The aperture flux (pixel centres within ``ap_radius`` of the unit-sum kernel) is
    evaluated at every grid point for :class:`PixelPsf` (linear in its terms, so
    exact and cheap) and once for a spatially constant :class:`GaussianPsf`; other
    models, and the trace radius √((Ixx+Iyy)/2) of every model (adaptive moments cost
    ~30–100 µs each), use a ≤ ``per_axis``² subgrid that keeps the grid's edge rows
    and columns, where a polynomial PSF takes its extremes.

    Returns
    -------
    trace_radius_delta, ap_flux_delta : float
        [px] and [fraction of the total flux]; NaN without unmasked points, NaN
        aperture delta if any aperture flux is negative.
    """
    if not good.any():
        return NAN, NAN
    iy_all, ix_all = np.nonzero(good)
    iy, ix = _coarse_subset(good, per_axis)
    if isinstance(psf, GaussianPsf):
        iy, ix = iy[:1], ix[:1]
    x = ix * sampling + xy0[0]
    y = iy * sampling + xy0[1]
    traces = []
    for xp, yp in zip(x, y, strict=True):
        ixx, iyy, _ = psf.shape(float(xp), float(yp))
        traces.append(np.sqrt(0.5 * (ixx + iyy)))
    traces = np.asarray(traces, np.float64)
    aperture = _aperture_pixels(psf.size, ap_radius)
    if isinstance(psf, PixelPsf):
        coeffs = psf.coefficients
        terms = psf.term_values(ix_all * sampling + xy0[0], iy_all * sampling + xy0[1])
        inside = coeffs[:, aperture].sum(axis=1)
        total = coeffs.reshape(coeffs.shape[0], -1).sum(axis=1)
        ap_flux = (inside @ terms) / (total @ terms)
    else:
        ap_flux = np.array(
            [
                float(np.sum(psf.kernel_image(float(xp), float(yp))[aperture]))
                for xp, yp in zip(x, y, strict=True)
            ]
        )
    if not np.isfinite(traces).any() and not np.isfinite(ap_flux).any():
        return NAN, NAN
    trace_delta = float(np.nanmax(traces) - np.nanmin(traces))
    ap_delta = NAN if np.any(ap_flux < 0) else float(np.nanmax(ap_flux) - np.nanmin(ap_flux))
    return trace_delta, ap_delta


def ap_corr_sigma_scaled_delta(field, x, y, psf_sigma: float) -> float:
    """(max − min) of an aperture-correction field over grid points / psfSigma [1/px]."""
    if field is None or x.size == 0 or not np.isfinite(psf_sigma):
        return NAN
    values = np.asarray(field.evaluate(x, y), np.float64)
    if not np.isfinite(values).all():
        return NAN
    return float((values.max() - values.min()) / psf_sigma)
