"""Truth catalog of a simulation and reference catalogs built from it.

Isolation rule (columns ``blend_fraction`` and ``isolated``): around each source, a
circular aperture of radius ``isolation_radius × FWHM`` (plus ``isolation_radius ×
hlr`` for a galaxy) is laid on the noiseless image of all sources. ``blend_fraction``
is the light of the *other* sources in it divided by the source's own light in it;
``isolated`` is ``blend_fraction < isolation_max_blend``. Only truth sources count
(not cosmic rays, bad columns or bleed trails).
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from promptcal.core.errors import InvalidInputError
from promptcal.simulate.config import SkyConfig


def flux_to_ab_mag(flux_njy):
    """AB magnitude of a flux [nJy] (NaN for non-positive flux)."""
    f = np.asarray(flux_njy, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 31.4 - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def build_truth(
    config: SkyConfig,
    src: dict[str, np.ndarray],
    truth_wcs: WCS,
    *,
    fwhm: np.ndarray,
    rendered: np.ndarray,
    snr: np.ndarray,
    peak: np.ndarray,
    blend: np.ndarray,
) -> Table:
    """The truth table of :func:`promptcal.simulate.simulate_exposure` (one row per source)."""
    n = len(src["x"])
    ra, dec = truth_wcs.all_pix2world(src["x"], src["y"], 0)
    flux_njy = src["flux"] * config.calibration
    sat = np.inf if config.saturation is None else config.saturation
    table = Table()
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    table["x"] = np.asarray(src["x"], dtype=np.float64) * u.pix
    table["y"] = np.asarray(src["y"], dtype=np.float64) * u.pix
    table["ra"] = np.asarray(ra, dtype=np.float64) * u.deg
    table["dec"] = np.asarray(dec, dtype=np.float64) * u.deg
    table["inst_flux"] = np.asarray(src["flux"], dtype=np.float64) * u.count
    table["rendered_flux"] = np.asarray(rendered, dtype=np.float64) * u.count
    table["flux_nJy"] = flux_njy * u.nJy
    table["mag"] = flux_to_ab_mag(flux_njy) * u.mag
    table["fwhm"] = np.asarray(fwhm, dtype=np.float64) * u.pix
    table["is_galaxy"] = np.asarray(src["is_galaxy"], dtype=bool)
    table["hlr"] = np.asarray(src["hlr"], dtype=np.float64) * u.pix
    table["axis_ratio"] = np.asarray(src["axis_ratio"], dtype=np.float64)
    table["pa"] = np.asarray(src["pa"], dtype=np.float64) * u.deg
    # Saturated in a readout: peak of (source + sky) per snap above the level.
    table["is_saturated"] = np.asarray(peak, dtype=np.float64) / config.n_snaps > sat
    table["blend_fraction"] = np.asarray(blend, dtype=np.float64)
    table["isolated"] = table["blend_fraction"] < config.isolation_max_blend
    table["snr_expected"] = np.asarray(snr, dtype=np.float64)
    table.meta["band"] = config.band
    table.meta["calibration_nJy_per_count"] = config.calibration
    return table


def _flux_column(truth: Table) -> str:
    for name in ("flux_nJy", "truth_flux"):
        if name in truth.colnames:
            return name
    raise InvalidInputError(
        f"truth table needs a 'flux_nJy' or 'truth_flux' column [nJy]; has {truth.colnames}"
    )


def refcat_table_from_truth(
    truth: Table,
    band: str,
    *,
    mag_scatter: float = 0.0,
    flux_err_frac: float = 1e-3,
    missing_fraction: float = 0.0,
    extra_fraction: float = 0.0,
    include_galaxies: bool = True,
    seed: int = 0,
    area: tuple[float, float, float, float] | None = None,
) -> Table:
    """A reference catalog (``id, ra, dec, <band>_flux, <band>_fluxErr``) from a truth table.

    Parameters
    ----------
    truth : astropy.table.Table
        Truth with ``ra, dec`` [deg] and ``flux_nJy`` or ``truth_flux`` [nJy].
    band : str
        Reference band name used in the column names.
    mag_scatter : float
        Gaussian scatter added to the magnitudes [mag]; also sets ``fluxErr``.
    flux_err_frac : float
        Floor of the relative flux error reported in ``<band>_fluxErr`` [-].
    missing_fraction : float
        Fraction of truth rows dropped at random [-].
    extra_fraction : float
        Extra spurious entries (× number of truth rows), uniform within ``area`` or the
        truth's ra/dec range, with fluxes drawn from the truth fluxes [-].
    include_galaxies : bool
        Keep rows with ``is_galaxy`` / ``is_extended`` set.
    seed : int
        Seed of the numpy Generator for scatter, drops and extras.
    area : tuple, optional
        ``(ra_min, ra_max, dec_min, dec_max)`` for extras [deg].

    Returns
    -------
    astropy.table.Table
        Reference catalog; ``id`` equals the truth id for true entries and is
        negative for extras.
    """
    rng = np.random.default_rng(seed)
    flux_col = _flux_column(truth)
    keep = np.ones(len(truth), dtype=bool)
    if not include_galaxies:
        for flag in ("is_galaxy", "is_extended"):
            if flag in truth.colnames:
                keep &= ~np.asarray(truth[flag], dtype=bool)
    keep &= rng.random(len(truth)) >= missing_fraction
    rows = truth[keep]
    flux = np.asarray(rows[flux_col], dtype=np.float64)
    if mag_scatter > 0:
        flux = flux * 10.0 ** (-0.4 * rng.normal(0.0, mag_scatter, len(flux)))
    rel_err = max(flux_err_frac, 0.4 * np.log(10.0) * mag_scatter)
    ids = np.asarray(rows["id"], dtype=np.int64)
    ra = np.asarray(rows["ra"], dtype=np.float64)
    dec = np.asarray(rows["dec"], dtype=np.float64)
    n_extra = round(extra_fraction * len(truth))
    if n_extra:
        if area is None:
            area = (ra.min(), ra.max(), dec.min(), dec.max())
        ra = np.concatenate([ra, rng.uniform(area[0], area[1], n_extra)])
        dec = np.concatenate([dec, rng.uniform(area[2], area[3], n_extra)])
        pool = np.asarray(truth[flux_col], dtype=np.float64)
        flux = np.concatenate([flux, rng.choice(pool, n_extra)])
        ids = np.concatenate([ids, -np.arange(1, n_extra + 1, dtype=np.int64)])
    out = Table()
    out["id"] = ids
    out["ra"] = ra * u.deg
    out["dec"] = dec * u.deg
    out[f"{band}_flux"] = flux * u.nJy
    out[f"{band}_fluxErr"] = np.abs(flux) * rel_err * u.nJy
    return out
