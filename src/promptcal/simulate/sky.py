"""Draw the random content of a simulated exposure: sources, cosmic rays, bad columns.

Each kind of content uses its own child generator of ``SeedSequence(seed)`` (see
:func:`child_rngs`), so e.g. adding cosmic rays does not move the stars.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from promptcal.simulate.config import SkyConfig

#: Names of the independent random streams, in spawn order (append only).
STREAMS = ("stars", "galaxies", "wcs", "cosmic_rays", "bad_columns", "noise0", "noise1")


def child_rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent numpy Generator per stream name."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(ss) for name, ss in zip(STREAMS, children, strict=True)}


def power_law(rng: np.random.Generator, n: int, lo: float, hi: float, power: float):
    """``n`` samples of dN/dF ∝ F^-power on [lo, hi] (inverse CDF)."""
    u = rng.random(n)
    if abs(power - 1.0) < 1e-12:
        return lo * (hi / lo) ** u
    k = 1.0 - power
    return (lo**k + u * (hi**k - lo**k)) ** (1.0 / k)


def ab_mag_to_counts(mag, calibration: float):
    """Counts of an AB magnitude for a calibration [nJy/count]."""
    return 10.0 ** ((31.4 - np.asarray(mag, dtype=float)) / 2.5) / calibration


def _positions(rng: np.random.Generator, config: SkyConfig, n: int):
    # Uniform over the pixel area of the bbox (pixel centres are integers).
    x = config.x0 - 0.5 + config.width * rng.random(n)
    y = config.y0 - 0.5 + config.height * rng.random(n)
    return x, y


def draw_sources(config: SkyConfig, rngs: dict[str, np.random.Generator]) -> dict[str, np.ndarray]:
    """Stars then galaxies: ``x, y, flux [count], is_galaxy, hlr [px], axis_ratio, pa [deg]``."""
    rs = rngs["stars"]
    lo, hi = config.star_flux_min, config.star_flux_max
    if config.star_mag_range is not None:
        hi, lo = ab_mag_to_counts(config.star_mag_range, config.calibration)
    sx, sy = _positions(rs, config, config.n_stars)
    s_flux = power_law(rs, config.n_stars, lo, hi, config.star_flux_power)

    rg = rngs["galaxies"]
    ng = config.n_galaxies
    gx, gy = _positions(rg, config, ng)
    g_flux = power_law(rg, ng, config.galaxy_flux_min, config.galaxy_flux_max, 2.0)
    hlr = rg.uniform(config.galaxy_hlr_min, config.galaxy_hlr_max, ng)
    q = rg.uniform(config.galaxy_axis_ratio_min, 1.0, ng)
    pa = rg.uniform(0.0, 180.0, ng)

    ns = config.n_stars
    return {
        "x": np.concatenate([sx, gx]),
        "y": np.concatenate([sy, gy]),
        "flux": np.concatenate([s_flux, g_flux]),
        "is_galaxy": np.concatenate([np.zeros(ns, bool), np.ones(ng, bool)]),
        "hlr": np.concatenate([np.zeros(ns), hlr]),
        "axis_ratio": np.concatenate([np.ones(ns), q]),
        "pa": np.concatenate([np.zeros(ns), pa]),
    }


def draw_cosmic_rays(config: SkyConfig, rng: np.random.Generator) -> tuple[Table, Table]:
    """Straight, one-pixel-wide tracks.

    Returns
    -------
    tracks : astropy.table.Table
        ``id, snap, x, y`` (centre, parent [px]), ``length`` [px], ``angle`` [deg],
        ``n_pixels``, ``counts`` (total deposit [count]).
    pixels : astropy.table.Table
        ``cr_id, snap, x, y`` (parent pixel), ``counts`` [count], one row per pixel
        (within the image).
    """
    n = config.n_cosmic_rays
    cx, cy = _positions(rng, config, n)
    length = rng.uniform(config.cr_length_min, config.cr_length_max, n)
    angle = rng.uniform(0.0, 180.0, n)
    snap = rng.integers(0, config.n_snaps, n)
    rows = {k: [] for k in ("cr_id", "snap", "x", "y", "counts")}
    n_pix = np.zeros(n, dtype=np.int64)
    total = np.zeros(n)
    x_max, y_max = config.x0 + config.width - 1, config.y0 + config.height - 1
    for i in range(n):
        t = np.linspace(-0.5 * length[i], 0.5 * length[i], max(int(length[i] * 4) + 1, 1))
        px = np.rint(cx[i] + t * np.cos(np.deg2rad(angle[i]))).astype(np.int64)
        py = np.rint(cy[i] + t * np.sin(np.deg2rad(angle[i]))).astype(np.int64)
        pix = np.unique(np.stack([px, py], axis=1), axis=0)
        inside = (pix[:, 0] >= config.x0) & (pix[:, 0] <= x_max)
        inside &= (pix[:, 1] >= config.y0) & (pix[:, 1] <= y_max)
        pix = pix[inside]
        counts = rng.uniform(config.cr_amplitude_min, config.cr_amplitude_max, len(pix))
        n_pix[i] = len(pix)
        total[i] = counts.sum()
        rows["cr_id"].extend([i] * len(pix))
        rows["snap"].extend([int(snap[i])] * len(pix))
        rows["x"].extend(pix[:, 0].tolist())
        rows["y"].extend(pix[:, 1].tolist())
        rows["counts"].extend(counts.tolist())
    tracks = Table(
        {
            "id": np.arange(n, dtype=np.int64),
            "snap": snap.astype(np.int64),
            "x": cx,
            "y": cy,
            "length": length,
            "angle": angle,
            "n_pixels": n_pix,
            "counts": total,
        }
    )
    pixels = Table(
        {
            "cr_id": np.asarray(rows["cr_id"], dtype=np.int64),
            "snap": np.asarray(rows["snap"], dtype=np.int64),
            "x": np.asarray(rows["x"], dtype=np.int64),
            "y": np.asarray(rows["y"], dtype=np.int64),
            "counts": np.asarray(rows["counts"], dtype=np.float64),
        }
    )
    for col, unit in (("x", "pix"), ("y", "pix"), ("length", "pix"), ("angle", "deg")):
        tracks[col].unit = unit
    tracks["counts"].unit = "count"
    pixels["counts"].unit = "count"
    return tracks, pixels


def draw_bad_columns(config: SkyConfig, rng: np.random.Generator) -> np.ndarray:
    """Parent x of the bad columns (distinct, sorted) [px]."""
    n = min(config.n_bad_columns, config.width)
    cols = rng.choice(config.width, size=n, replace=False) + config.x0
    return np.sort(cols).astype(np.int64)
