"""Astrometric calibration (spec A6): match sources to a reference catalog and fit a
TAN-SIP WCS, with a recovery mode for poor or missing initial WCSs (design.md §5).

Method (details and decisions in ``docs/astrometry.md``):

1. Default mode: sources are mapped through the initial WCS, references through a
   gnomonic projection, onto the tangent plane at the bbox centre (unit: initial pixels).
   The brightest sources and references vote for a rotation (<= 1°) and shift
   (<= 250 px); the peak must be statistically significant.
2. Recovery mode: triangle invariants (scale, rotation and parity free) of the brightest
   objects around a pointing hint give candidate similarity transforms, accepted only
   when a false-alarm test says their matches are very unlikely by chance
   (``astrometry_blind.py``); the winner becomes a TAN initial WCS for the default mode.
3. Nearest-neighbour matching with magnitude-outlier rejection, affine fits iterated with
   a shrinking tolerance, then a polynomial correction when matches allow, and a TAN-SIP
   approximation of the final mapping with CRPIX at the bbox centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.errors import AstrometryError, BadAstrometryFit
from promptcal.pipeline.astrometry.blind import BlindSolveConfig
from promptcal.pipeline.astrometry.solver import NoSolution, Solver, local_scale, recover
from promptcal.pipeline.astrometry.tan_sip import (
    ARCSEC_PER_RAD,
    angular_separation,
    wcs_pixel_to_icrs,
)


class AstrometryConfig(Config):
    """Astrometric source selection, matching and WCS fitting, and the acceptance of
    the fit (every astrometry knob of CalibrateImageTask)."""

    source_min_snr: float = Field(
        40.0, ge=0, description="Astrometric (PSF-star) sources need S/N(PsfFlux) above this [1]."
    )
    ref_band: str | None = Field(
        None, description="Refcat band whose fluxes rank references (None: photometric band)."
    )
    do_refit: bool = Field(
        True,
        description="Refit the WCS on all clean star-phase sources and keep it when it "
        "matches at least as many references as the PSF-star fit.",
    )
    refit_min_snr: float = Field(
        10.0, ge=0, description="Refit sources need S/N(PsfFlux) above this [1]."
    )
    saturated_fallback_matches: int = Field(
        10,
        ge=0,
        description="If the refit on unsaturated sources matches fewer references than "
        "this, saturated stars are admitted (bright-only refcats) [1].",
    )
    max_mean_offset_px: float = Field(
        2.5,
        gt=0,
        description="The mean-offset limit is at least this many pixels (LSST's 0.5 arcsec "
        "is 2.5 px at 0.2 arcsec/px), so coarse pixel scales are not failed [px].",
    )
    max_mean_offset_arcsec: float = Field(
        0.5, gt=0, description="A larger mean match offset fails the fit [arcsec]."
    )

    max_src_objects: int = Field(150, ge=3, description="Brightest sources used to vote [1].")
    max_ref_objects: int = Field(150, ge=3, description="Brightest references used to vote [1].")
    max_offset_px: float = Field(250.0, gt=0, description="Largest shift searched [px].")
    max_rotation_deg: float = Field(1.0, ge=0, description="Largest rotation searched [deg].")
    vote_bin_px: float = Field(4.0, gt=0, description="Bin of the offset vote [px].")
    vote_min_significance: float = Field(
        5.0, gt=0, description="Peak must exceed the random expectation by this many √ [σ]."
    )
    num_points_for_shape: int = Field(
        6, ge=3, description="Least number of agreeing pairs in the vote peak [1]."
    )
    min_match_fraction: float = Field(
        0.3, ge=0, le=1, description="Also need this fraction of min(N_src, N_ref) to agree [1]."
    )
    min_match_cap: int = Field(30, ge=3, description="Cap of the fraction-based requirement [1].")
    match_tolerance_floor_px: float = Field(
        1.0, gt=0, description="Smallest matching radius of the iterations [px]."
    )
    match_tolerance_nsigma: float = Field(
        4.0,
        gt=0,
        description="Radius also >= this × the Rayleigh σ (median/1.1774) of residuals [1].",
    )
    max_iterations: int = Field(3, ge=1, description="Affine match/fit iterations [1].")
    do_magnitude_outlier_rejection: bool = Field(True, description="Reject mag outliers.")
    magnitude_outlier_rejection_nsigma: float = Field(
        3.0, gt=0, description="Reject |Δmag − zp| > this × max(1e-3, nMAD) [1]."
    )
    magnitude_outlier_min_matches: int = Field(
        10, ge=3, description="Skip the magnitude cut with fewer matched colours [1]."
    )
    sip_order: int = Field(3, ge=1, le=7, description="SIP order of the output WCS [1].")
    sip_min_matches_per_term: float = Field(
        5.0, gt=0, description="Matches per polynomial term to fit a correction of that order [1]."
    )
    sip_grid_points: int = Field(25, ge=5, description="Grid per axis of the TAN-SIP fit [1].")
    min_matches: int = Field(3, ge=3, description="Fewest final matches accepted [1].")
    trusted_wcs_tolerance_px: float | None = Field(
        None,
        gt=0,
        description="When set, the initial WCS is trusted to this radius: the pattern vote "
        "is skipped and matching starts directly (used to refit an already fitted WCS) [px].",
    )
    do_recovery: bool = Field(True, description="Try recovery mode when default mode fails.")
    force_recovery: bool = Field(False, description="Skip default mode, recover from the hint.")
    recovery_match_radius_px: float = Field(
        3.0, gt=0, description="First matching radius after a blind solve [px]."
    )
    blind: BlindSolveConfig = Field(
        default_factory=BlindSolveConfig,
        description="Blind solve of recovery mode (any rotation and parity, hint error up "
        "to half the diagonal, false-alarm test).",
    )


@dataclass
class PointingHint:
    """Approximate pointing for recovery mode.

    Attributes
    ----------
    ra_deg, dec_deg : float
        Approximate sky position of the bbox centre [deg, ICRS].
    pixel_scale_arcsec : float
        Nominal pixel scale [arcsec/px].
    rotation_deg : float or None
        Approximate rotation [deg]; informational only: recovery searches every rotation
        and both parities, so a wrong value cannot mislead it.
    """

    ra_deg: float
    dec_deg: float
    pixel_scale_arcsec: float
    rotation_deg: float | None = None


@dataclass
class AstrometryResult:
    """Fitted WCS and the matches it was fitted to.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
        ICRS TAN-SIP (TAN when ``sip_order`` is 1), parent 0-based pixels, CRPIX at the
        bbox centre.
    matches : astropy.table.Table
        ``ref_index``, ``src_index`` (into the caller's arrays), ``ref_ra``, ``ref_dec``
        [deg], ``src_x``, ``src_y`` [px], ``distance`` [arcsec] under ``wcs``.
    offset_mean, offset_std, offset_median : float
        Statistics of ``matches["distance"]`` [arcsec] (``SFM_ASTROM_OFFSET_*``).
    n_iterations : int
        Match/fit rounds run.
    used_recovery : bool
        Whether recovery mode produced the starting WCS.
    metadata : dict
        Counts, tolerances, vote and recovery diagnostics, ``SFM_ASTROM_OFFSET_*``.
    """

    wcs: WCS
    matches: Table
    offset_mean: float
    offset_std: float
    offset_median: float
    n_iterations: int
    used_recovery: bool
    metadata: dict = field(default_factory=dict)


# Long: the documented sequence of docs/astrometry.md (default mode, recovery, fit,
# TAN-SIP) with its numpydoc docstring, a third of the length; one place to follow it.
def fit_astrometry(
    src_x,
    src_y,
    src_flux,
    src_x_err,
    src_y_err,
    ref_ra,
    ref_dec,
    ref_flux,
    *,
    initial_wcs: WCS | None,
    bbox,
    config: AstrometryConfig | None = None,
    pointing_hint: PointingHint | None = None,
    n_saturated: int = 0,
) -> AstrometryResult:
    """Match sources to references and fit a TAN-SIP WCS.

    Parameters
    ----------
    src_x, src_y : array_like
        Source centroids, parent 0-based [px].
    src_flux : array_like
        Source instrumental fluxes [count] (orders the brightest; magnitude outliers).
    src_x_err, src_y_err : array_like
        Centroid errors [px] (recorded; the fit is unweighted, see docs/astrometry.md).
    ref_ra, ref_dec : array_like
        Reference positions [deg, ICRS]; non-finite rows are ignored.
    ref_flux : array_like
        Reference fluxes [nJy]; NaN allowed.
    initial_wcs : astropy.wcs.WCS or None
        Initial WCS in parent 0-based pixels (any celestial frame and projection).
    bbox : tuple of int
        (x_min, y_min, x_max, y_max) inclusive parent pixel box.
    config : AstrometryConfig, optional
    pointing_hint : PointingHint, optional
        Used by recovery mode; defaults to the initial WCS's centre and scale.
    n_saturated : int
        Bright sources left out of the source list because they are saturated; as
        many of the brightest references on the detector sit out the pattern vote, so
        that both lists start at the same brightness [1].

    Returns
    -------
    AstrometryResult

    Raises
    ------
    AstrometryError
        When neither mode finds a solution; the message lists what was tried.
    """
    c = config or AstrometryConfig()
    src_x, src_y = np.asarray(src_x, float), np.asarray(src_y, float)
    src_flux = np.asarray(src_flux, float)
    ref_ra_all, ref_dec_all = np.asarray(ref_ra, float), np.asarray(ref_dec, float)
    ref_flux_all = np.asarray(ref_flux, float)
    finite_src = np.nonzero(np.isfinite(src_x) & np.isfinite(src_y))[0]
    finite_ref = np.nonzero(np.isfinite(ref_ra_all) & np.isfinite(ref_dec_all))[0]
    sx, sy, sf = src_x[finite_src], src_y[finite_src], src_flux[finite_src]
    rra = np.deg2rad(ref_ra_all[finite_ref])
    rdec = np.deg2rad(ref_dec_all[finite_ref])
    rf = ref_flux_all[finite_ref]
    bbox = tuple(float(v) for v in bbox)
    base_meta = {"n_sources": len(src_x), "n_refs": len(ref_ra_all)}
    if len(sx) == 0:
        raise AstrometryError("no astrometric sources to match", **base_meta, n_matches=0)
    attempts = []
    solution = None
    used_recovery = False
    if initial_wcs is not None and not c.force_recovery:
        try:
            solver = Solver((sx, sy, sf), rra, rdec, rf, bbox, c, n_saturated)
            solution = solver.solve(initial_wcs, vote_free_tolerance=c.trusted_wcs_tolerance_px)
        except NoSolution as exc:
            attempts.append(f"default mode: {exc}")
    rec_info: dict = {}
    if solution is None and (c.do_recovery or c.force_recovery):
        hint = pointing_hint
        if hint is None and initial_wcs is not None:
            cx, cy = 0.5 * (bbox[0] + bbox[2]), 0.5 * (bbox[1] + bbox[3])
            ra_c, dec_c = wcs_pixel_to_icrs(initial_wcs, np.array([cx]), np.array([cy]))
            scale = local_scale(initial_wcs, cx, cy) * ARCSEC_PER_RAD
            hint = PointingHint(math.degrees(ra_c[0]), math.degrees(dec_c[0]), scale)
        if hint is None:
            attempts.append("recovery mode: no pointing hint and no initial WCS")
        else:
            try:
                wcs0, rec_info = recover(sx, sy, sf, rra, rdec, rf, bbox, hint, c)
                solver = Solver((sx, sy, sf), rra, rdec, rf, bbox, c)
                solution = solver.solve(wcs0, vote_free_tolerance=c.recovery_match_radius_px)
                used_recovery = True
            except NoSolution as exc:
                attempts.append(f"recovery mode: {exc}")
    if solution is None:
        raise AstrometryError(
            "no astrometric solution: " + "; ".join(attempts), **base_meta, n_matches=0
        )
    wcs, si, ri, n_iter, meta = solution
    src_idx, ref_idx = finite_src[si], finite_ref[ri]
    ra_s, dec_s = wcs_pixel_to_icrs(wcs, src_x[src_idx], src_y[src_idx])
    dist = angular_separation(ra_s, dec_s, rra[ri], rdec[ri]) * ARCSEC_PER_RAD
    matches = Table(
        {
            "ref_index": ref_idx,
            "src_index": src_idx,
            "ref_ra": ref_ra_all[ref_idx],
            "ref_dec": ref_dec_all[ref_idx],
            "src_x": src_x[src_idx],
            "src_y": src_y[src_idx],
            "distance": dist,
        }
    )
    for name, unit in (
        ("ref_ra", "deg"),
        ("ref_dec", "deg"),
        ("src_x", "pix"),
        ("src_y", "pix"),
        ("distance", "arcsec"),
    ):
        matches[name].unit = unit
    mean, std, median = float(dist.mean()), float(dist.std()), float(np.median(dist))
    meta.update(base_meta)
    meta.update(rec_info)
    meta.update(
        n_matches=len(dist),
        used_recovery=used_recovery,
        attempts=attempts,
        SFM_ASTROM_OFFSET_MEAN=mean,
        SFM_ASTROM_OFFSET_STD=std,
        SFM_ASTROM_OFFSET_MEDIAN=median,
    )
    return AstrometryResult(wcs, matches, mean, std, median, n_iter, used_recovery, meta)


def check_astrometry(result: AstrometryResult, max_mean_offset_arcsec: float = 0.5) -> None:
    """Raise :class:`BadAstrometryFit` when the mean match offset is too large."""
    if not result.offset_mean <= max_mean_offset_arcsec:
        raise BadAstrometryFit(
            f"mean offset {result.offset_mean:.2f} arcsec exceeds "
            f"{max_mean_offset_arcsec:g} arcsec",
            offset_mean=result.offset_mean,
            max_mean_offset=max_mean_offset_arcsec,
            n_matches=len(result.matches),
        )


def sky_coordinates(wcs: WCS, x, y, x_err=None, y_err=None):
    """Sky coordinates and their errors from the local Jacobian of the WCS.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Celestial WCS in parent 0-based pixels.
    x, y : array_like
        Pixel positions [px].
    x_err, y_err : array_like, optional
        Centroid errors [px]; without them the errors are NaN.

    Returns
    -------
    ra, dec, ra_err, dec_err : numpy.ndarray
        ICRS coordinates [rad] and errors [rad]. ``ra_err`` is the error of the RA
        coordinate itself (not multiplied by cos dec), as LSST's ``coord_raErr``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ra, dec = wcs_pixel_to_icrs(wcs, x, y)
    if x_err is None or y_err is None:
        nan = np.full(x.shape, np.nan)
        return ra, dec, nan, nan.copy()
    h = 0.5
    ra_px, dec_px = wcs_pixel_to_icrs(wcs, x + h, y)
    ra_mx, dec_mx = wcs_pixel_to_icrs(wcs, x - h, y)
    ra_py, dec_py = wcs_pixel_to_icrs(wcs, x, y + h)
    ra_my, dec_my = wcs_pixel_to_icrs(wcs, x, y - h)
    wrap = lambda a: np.angle(np.exp(1j * a))  # noqa: E731
    dra_dx, dra_dy = wrap(ra_px - ra_mx) / (2 * h), wrap(ra_py - ra_my) / (2 * h)
    ddec_dx, ddec_dy = (dec_px - dec_mx) / (2 * h), (dec_py - dec_my) / (2 * h)
    sx2, sy2 = np.asarray(x_err, float) ** 2, np.asarray(y_err, float) ** 2
    ra_err = np.sqrt(dra_dx**2 * sx2 + dra_dy**2 * sy2)
    dec_err = np.sqrt(ddec_dx**2 * sx2 + ddec_dy**2 * sy2)
    return ra, dec, ra_err, dec_err
