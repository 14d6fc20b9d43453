"""Photometric calibration (spec A10, A11): match stars to the photometric refcat, fit
one zero point, calibrate the catalog fluxes and, optionally, the pixels.

Units: instrumental fluxes are in counts, reference and calibrated fluxes in nJy, the
zero point is the AB magnitude of one count, and the calibration is nJy per count.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import Column, Table
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.errors import InvalidInputError, MatcherFailure, PhotometryError
from promptcal.core.exposure import Exposure, PhotoCalib
from promptcal.core.task import Struct

#: AB zero-magnitude flux density [nJy].
AB_ZERO_NJY = 3631e9
#: d(mag) / d(ln flux) [mag].
MAG_PER_LN = 2.5 / np.log(10.0)
#: 1σ of a Gaussian in units of its interquartile range.
IQR_TO_SIGMA = 0.741
#: Fewest matches whose zero points are sigma-clipped [1].
MIN_CLIP_POINTS = 3


class PhotometryConfig(Config):
    """Photometric matching and zero-point fit (LSST PhotoCalTask defaults)."""

    match_radius: float = Field(0.25, gt=0, description="Closest-match radius [arcsec].")
    flux_field: str = Field(
        "slot_CalibFlux", description="Flux (prefix of `_instFlux`) calibrated against refs."
    )
    min_snr: float = Field(10.0, ge=0, description="Stars need S/N(flux_field) > this [1].")
    n_histogram_bins: int = Field(
        20, ge=1, description="Bins of the histogram whose mode starts the clip [1]."
    )
    max_iterations: int = Field(20, ge=1, description="Clipping iterations at most [1].")
    clip_nsigma: float = Field(3.0, gt=0, description="Clip at this many σ [1].")
    max_clip_sigma: float = Field(
        0.25, gt=0, description="Upper bound of the σ used for clipping [mag]."
    )
    min_n_stars: int = Field(1, ge=1, description="Fewer surviving stars is an error [1].")
    band_map: dict[str, str] = Field(
        default_factory=dict,
        description="Exposure band -> refcat band (flux column `<band>_flux`, nJy).",
    )
    default_ref_band: str | None = Field(
        None, description="Refcat band for exposure bands not in band_map (None: same name)."
    )


def resolve_ref_band(band: str | None, config: PhotometryConfig) -> str:
    """The refcat band that calibrates exposure ``band``."""
    if band is not None and band in config.band_map:
        return config.band_map[band]
    if config.default_ref_band is not None:
        return config.default_ref_band
    if band is None:
        raise InvalidInputError("the exposure has no band and no default_ref_band is configured")
    return band


def _values(column, unit=None) -> np.ndarray:
    """float64 values of a column, converted to ``unit`` when the column carries one."""
    col_unit = getattr(column, "unit", None)
    if unit is not None and col_unit is not None:
        return np.asarray(u.Quantity(column, col_unit).to_value(unit), np.float64)
    return np.asarray(getattr(column, "value", column), np.float64)


def _unit_vectors(ra_rad: np.ndarray, dec_rad: np.ndarray) -> np.ndarray:
    cos_dec = np.cos(dec_rad)
    return np.column_stack([cos_dec * np.cos(ra_rad), cos_dec * np.sin(ra_rad), np.sin(dec_rad)])


def select_photometric_stars(stars, config: PhotometryConfig) -> np.ndarray:
    """Boolean mask of stars usable for the fit: S/N > min_snr, not sky, finite coords."""
    flux = _values(stars[f"{config.flux_field}_instFlux"])
    err = _values(stars[f"{config.flux_field}_instFluxErr"])
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / err
    good = np.isfinite(flux) & (flux > 0) & np.isfinite(err) & (err > 0) & (snr > config.min_snr)
    if "sky_source" in stars.colnames:
        good &= ~np.asarray(stars["sky_source"], bool)
    good &= np.isfinite(_values(stars["coord_ra"], u.rad))
    good &= np.isfinite(_values(stars["coord_dec"], u.rad))
    return good


def _slot_columns(stars) -> dict[str, str]:
    """``slot_<...>`` alias -> real column, for every real column behind a slot."""
    aliases: dict[str, str] = {}
    slots = getattr(stars, "meta", {}).get("slots", {})
    for slot, target in slots.items():
        for name in stars.colnames:
            if name == target or name.startswith(target + "_"):
                alias = slot + name[len(target) :]
                if alias not in stars.colnames:
                    aliases[alias] = name
    return aliases


def match_photometric(stars, ref_table: Table, ref_band: str, config: PhotometryConfig) -> Table:
    """Match selected stars to the closest reference star within ``match_radius``.

    Parameters
    ----------
    stars : SourceCatalog
        Stars with ``coord_ra``/``coord_dec`` [rad] and the ``flux_field`` columns.
    ref_table : astropy.table.Table
        Refcat rows: ``id``, ``ra``, ``dec`` [deg], ``<ref_band>_flux`` [nJy].
    ref_band : str
        Refcat band (see :func:`resolve_ref_band`).
    config : PhotometryConfig
        Match radius and star selection.

    Returns
    -------
    astropy.table.Table
        One row per matched star (the closest reference per star): ``ref_id``,
        ``ref_coord_ra``/``ref_coord_dec`` [rad], ``ref_<band>_flux`` [nJy] (and
        ``_fluxErr`` when present), ``src_<column>`` for every star column and every
        resolved ``slot_*`` alias, and ``distance`` [arcsec].

    Raises
    ------
    MatcherFailure
        No selected star has a reference within the radius.
    """
    flux_col = f"{ref_band}_flux"
    if flux_col not in ref_table.colnames:
        raise InvalidInputError(
            f"reference catalog has no column {flux_col!r}; columns: {ref_table.colnames}"
        )
    selected = np.flatnonzero(select_photometric_stars(stars, config))
    ref_ra = np.deg2rad(_values(ref_table["ra"], u.deg))
    ref_dec = np.deg2rad(_values(ref_table["dec"], u.deg))
    ref_ok = np.flatnonzero(np.isfinite(ref_ra) & np.isfinite(ref_dec))
    metadata = {"n_stars": len(stars), "n_selected": int(selected.size), "n_refs": len(ref_table)}
    if selected.size == 0 or ref_ok.size == 0:
        raise MatcherFailure(
            f"No photometric matches: {selected.size} usable stars, {ref_ok.size} references.",
            **metadata,
        )
    src_ra = _values(stars["coord_ra"], u.rad)[selected]
    src_dec = _values(stars["coord_dec"], u.rad)[selected]
    from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

    tree = cKDTree(_unit_vectors(ref_ra[ref_ok], ref_dec[ref_ok]))
    radius = np.deg2rad(config.match_radius / 3600.0)
    chord, nearest = tree.query(
        _unit_vectors(src_ra, src_dec), k=1, distance_upper_bound=2.0 * np.sin(radius / 2.0)
    )
    hit = np.isfinite(chord)
    if not hit.any():
        raise MatcherFailure(
            f"No photometric matches within {config.match_radius} arcsec: "
            f"{selected.size} usable stars, {ref_ok.size} references.",
            match_radius=config.match_radius,
            **metadata,
        )
    src_rows = selected[hit]
    ref_rows = ref_ok[nearest[hit]]
    out = Table()
    out["ref_id"] = np.asarray(ref_table["id"])[ref_rows]
    out["ref_coord_ra"] = u.Quantity(ref_ra[ref_rows], u.rad)
    out["ref_coord_dec"] = u.Quantity(ref_dec[ref_rows], u.rad)
    for name in (flux_col, f"{ref_band}_fluxErr"):
        if name in ref_table.colnames:
            out[f"ref_{name}"] = u.Quantity(_values(ref_table[name], u.nJy)[ref_rows], u.nJy)
    for name in stars.colnames:
        out[f"src_{name}"] = stars[name][src_rows]
    for alias, real in _slot_columns(stars).items():
        out[f"src_{alias}"] = stars[real][src_rows]
    angle = 2.0 * np.arcsin(np.clip(chord[hit] / 2.0, 0.0, 1.0))
    out["distance"] = u.Quantity(np.rad2deg(angle) * 3600.0, u.arcsec)
    out.meta["ref_band"] = ref_band
    out.meta["flux_field"] = config.flux_field
    return out


@dataclass
class ZeroPointResult:
    """The fitted photometric zero point.

    Attributes
    ----------
    zero_point, zero_point_err : float
        AB magnitude of one count and its 1σ error [mag].
    calibration, calibration_err : float
        nJy per count and its 1σ error [nJy / count].
    n_used : int
        Matches surviving the clipping [1].
    used : numpy.ndarray
        bool, per match row: used in the final mean.
    n_iterations : int
        Clipping iterations run [1].
    """

    zero_point: float
    zero_point_err: float
    calibration: float
    calibration_err: float
    n_used: int
    used: np.ndarray
    n_iterations: int

    @property
    def photo_calib(self) -> PhotoCalib:
        return PhotoCalib(self.calibration, self.calibration_err)


def _histogram_mode(d: np.ndarray, n_bins: int) -> float:
    """Centre of the modal bin(s); the median when the maxima are not contiguous."""
    hist, edges = np.histogram(d, n_bins)
    peaks = np.flatnonzero(hist == hist.max())
    if peaks[-1] - peaks[0] + 1 != peaks.size:
        return float(np.median(d))
    return float(0.5 * (edges[peaks[0]] + edges[peaks[-1] + 1]))


def _iqr_sigma(d: np.ndarray) -> float:
    q25, q75 = np.quantile(d, [0.25, 0.75])
    return float(IQR_TO_SIGMA * (q75 - q25))


def fit_zero_point(matches: Table, config: PhotometryConfig) -> ZeroPointResult:
    """Clipped, inverse-variance-weighted zero point (spec A10).

    ``d = ref_mag − (−2.5 log10 instFlux)``. The first clip is centred on the mode of an
    ``n_histogram_bins`` histogram of d; each later clip on the median of the previous
    survivors. A clip keeps ``|d − centre| ≤ clip_nsigma · min(0.741 IQR, max_clip_sigma)``
    with the IQR of the points the centre came from (all points for the mode); it
    stops when the surviving set no longer changes. ``≤`` (not ``<``) lets a set of
    identical values, whose IQR is 0, survive. Fewer than :data:`MIN_CLIP_POINTS`
    matches are not clipped.

    Raises
    ------
    PhotometryError
        Fewer than ``min_n_stars`` usable matches, before or after clipping.
    """
    band = matches.meta.get("ref_band")
    field = matches.meta.get("flux_field", config.flux_field)
    if band is None:
        raise InvalidInputError("matches table lacks meta['ref_band'] (use match_photometric)")
    ref_flux = _values(matches[f"ref_{band}_flux"], u.nJy)
    inst = _values(matches[f"src_{field}_instFlux"])
    inst_err = _values(matches[f"src_{field}_instFluxErr"])
    with np.errstate(divide="ignore", invalid="ignore"):
        d = -2.5 * np.log10(ref_flux / AB_ZERO_NJY) + 2.5 * np.log10(inst)
        d_err = MAG_PER_LN * inst_err / inst
    usable = np.isfinite(d) & np.isfinite(d_err) & (d_err > 0)
    n_usable = int(usable.sum())
    if n_usable < config.min_n_stars:
        raise PhotometryError(
            f"Only {n_usable} usable photometric matches out of {len(matches)}; "
            f"need {config.min_n_stars}.",
            n_matches=len(matches),
            n_usable=n_usable,
        )
    dv = d[usable]
    centre = _histogram_mode(dv, config.n_histogram_bins)
    sigma = _iqr_sigma(dv)
    keep = np.ones(dv.size, bool)
    iterations = 0
    # An IQR of fewer than MIN_CLIP_POINTS values is no scatter estimate (one value has
    # IQR 0 and a histogram mode off its own value, so it would clip itself): use them all.
    n_clip_iterations = config.max_iterations if dv.size >= MIN_CLIP_POINTS else 0
    for iterations in range(1, n_clip_iterations + 1):
        new_keep = np.abs(dv - centre) <= config.clip_nsigma * min(sigma, config.max_clip_sigma)
        if new_keep.sum() < config.min_n_stars:
            raise PhotometryError(
                f"Zero-point clipping left {int(new_keep.sum())} of {dv.size} matches.",
                n_matches=len(matches),
                n_usable=n_usable,
                n_kept=int(new_keep.sum()),
            )
        changed = not np.array_equal(new_keep, keep)
        keep = new_keep
        if not changed and iterations > 1:
            break
        centre = float(np.median(dv[keep]))
        sigma = _iqr_sigma(dv[keep])
    weights = 1.0 / d_err[usable][keep] ** 2
    zp = float(np.sum(weights * dv[keep]) / np.sum(weights))
    zp_err = float(np.sqrt(1.0 / np.sum(weights)))
    calibration = AB_ZERO_NJY / 10.0 ** (0.4 * zp)
    used = np.zeros(len(matches), bool)
    used[np.flatnonzero(usable)[keep]] = True
    return ZeroPointResult(
        zero_point=zp,
        zero_point_err=zp_err,
        calibration=float(calibration),
        calibration_err=float(calibration * 0.4 * np.log(10.0) * zp_err),
        n_used=int(keep.sum()),
        used=used,
        n_iterations=iterations,
    )


def flag_photometry_used(stars, matches: Table, used: np.ndarray) -> None:
    """Set ``calib_photometry_used`` on ``stars`` for the matches used in the fit.

    Matches are mapped back to stars through ``src_id`` (ids are unique per catalog).
    """
    ids = np.asarray(stars["id"])
    order = np.argsort(ids, kind="stable")
    src_ids = np.asarray(matches["src_id"])[np.asarray(used, bool)]
    pos = np.searchsorted(ids, src_ids, sorter=order)
    if np.any(pos >= ids.size) or np.any(ids[order[np.minimum(pos, ids.size - 1)]] != src_ids):
        raise InvalidInputError("photometry matches refer to ids absent from the star catalog")
    flag = np.zeros(len(stars), bool)
    flag[order[pos]] = True
    stars["calib_photometry_used"] = flag


def calibrate_catalog(cat, photo_calib: PhotoCalib) -> None:
    """Add calibrated columns for every ``*_instFlux`` column, in place.

    For each ``<name>_instFlux``: ``<name>_flux`` [nJy], ``<name>_fluxErr`` [nJy]
    (instrumental error and calibration error in quadrature), ``<name>_mag`` [AB mag]
    and ``<name>_magErr`` [mag]. Non-positive fluxes get NaN magnitudes.
    """
    cal, cal_err = float(photo_calib.mean), float(photo_calib.error)
    for name in [c for c in cat.colnames if c.endswith("_instFlux")]:
        base = name[: -len("_instFlux")]
        inst = _values(cat[name])
        err_name = f"{base}_instFluxErr"
        inst_err = (
            _values(cat[err_name]) if err_name in cat.colnames else np.full_like(inst, np.nan)
        )
        flux = inst * cal
        flux_err = np.hypot(inst_err * cal, inst * cal_err)
        positive = flux > 0
        safe = np.where(positive, flux, AB_ZERO_NJY)
        mag = np.where(positive, -2.5 * np.log10(safe / AB_ZERO_NJY), np.nan)
        mag_err = np.where(positive, MAG_PER_LN * flux_err / safe, np.nan)
        cat[f"{base}_flux"] = Column(flux, unit=u.nJy)
        cat[f"{base}_fluxErr"] = Column(flux_err, unit=u.nJy)
        cat[f"{base}_mag"] = Column(mag, unit=u.ABmag)
        cat[f"{base}_magErr"] = Column(mag_err, unit=u.mag)


def calibrate_pixels(exposure: Exposure, background_list, photo_calib: PhotoCalib):
    """Convert the exposure's pixels to nJy, in place (spec A11).

    The image is multiplied by the calibration and the variance by its square. The
    exposure then carries ``PhotoCalib(1.0, error / calibration)``: the *relative*
    calibration error, which is the only dimensionally consistent error of an identity
    calibration (LSST stores the absolute nJy/count error there). ``BUNIT`` becomes
    ``'nJy'``.

    Returns
    -------
    exposure : Exposure
        The same object, calibrated.
    background : BackgroundList or None
        ``background_list`` scaled by the calibration, so that image + background is
        the original (image + background) × calibration.
    """
    if str(exposure.metadata.get("BUNIT", "")).strip() == "nJy":
        raise InvalidInputError("exposure pixels are already calibrated (BUNIT='nJy')")
    cal = float(photo_calib.mean)
    if not np.isfinite(cal) or cal <= 0:
        raise InvalidInputError(f"calibration must be finite and > 0 nJy/count, got {cal}")
    exposure.image *= np.float32(cal)
    exposure.variance *= np.float32(cal * cal)
    exposure.photo_calib = PhotoCalib(1.0, float(photo_calib.error) / cal)
    exposure.metadata["BUNIT"] = "nJy"
    scaled = background_list.scaled(cal) if background_list is not None else None
    return exposure, scaled


def run_photometry(stars, ref_table: Table, band: str | None, config: PhotometryConfig) -> Struct:
    """Match, fit, flag ``calib_photometry_used`` and calibrate the star catalog.

    Returns
    -------
    Struct
        ``photo_calib`` (PhotoCalib), ``matches`` (denormalized Table), ``fit``
        (:class:`ZeroPointResult`).
    """
    ref_band = resolve_ref_band(band, config)
    matches = match_photometric(stars, ref_table, ref_band, config)
    fit = fit_zero_point(matches, config)
    flag_photometry_used(stars, matches, fit.used)
    matches["src_calib_photometry_used"] = fit.used
    calibrate_catalog(stars, fit.photo_calib)
    return Struct(photo_calib=fit.photo_calib, matches=matches, fit=fit)
