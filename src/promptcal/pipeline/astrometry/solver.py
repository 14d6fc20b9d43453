"""Astrometric solving internals: the default-mode solver (vote, iterated matching and
fitting, TAN-SIP output) and recovery mode (a verified blind solve around a pointing hint,
``astrometry_blind.py``).

The public entry point is :func:`promptcal.pipeline.astrometry.fitter.fit_astrometry`;
``config`` here is an :class:`~promptcal.pipeline.astrometry.fitter.AstrometryConfig` and
``hint`` a ``PointingHint``.
"""

from __future__ import annotations

import math

import numpy as np

from promptcal.pipeline.astrometry.blind import BlindSolveFailed, blind_solve
from promptcal.pipeline.astrometry.matchers import nn_match, vote_match
from promptcal.pipeline.astrometry.tan_sip import (
    apply_affine,
    clipped_mean_std,
    design_matrix,
    fit_affine,
    gnomonic,
    inverse_gnomonic,
    poly_terms,
    tan_sip_from_mapping,
    wcs_pixel_to_icrs,
)


class NoSolution(Exception):
    """Internal: one mode failed; the message says why."""


def brightest(flux, n):
    """Indices of the n largest finite fluxes (non-finite last, input order kept for ties)."""
    key = np.where(np.isfinite(flux), -np.asarray(flux, float), np.inf)
    return np.argsort(key, kind="stable")[:n]


def local_scale(wcs, cx, cy):
    """Pixel scale [rad/px] at (cx, cy): √|det J| of the pixel→tangent-plane Jacobian."""
    ra, dec = wcs_pixel_to_icrs(wcs, np.array([cx, cx + 1.0, cx]), np.array([cy, cy, cy + 1.0]))
    xi, eta = gnomonic(ra, dec, ra[0], dec[0])
    det = (xi[1] - xi[0]) * (eta[2] - eta[0]) - (xi[2] - xi[0]) * (eta[1] - eta[0])
    return math.sqrt(abs(det))


def _mag_outliers(src_flux, ref_flux, nsigma, min_n):
    """Boolean mask of matched pairs to keep after the magnitude-outlier cut.

    With fewer than ``min_n`` finite magnitude differences nothing is rejected: the
    normalised MAD of a handful of colours is too noisy to reject on.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        dmag = -2.5 * np.log10(ref_flux) + 2.5 * np.log10(src_flux)
    ok = np.isfinite(dmag)
    if ok.sum() < max(3, min_n):
        return np.ones(len(dmag), bool)
    zp = np.median(dmag[ok])
    nmad = 1.4826 * np.median(np.abs(dmag[ok] - zp))
    return ~ok | (np.abs(dmag - zp) <= nsigma * max(1e-3, nmad))


class Solver:
    """Default-mode solve from one initial WCS."""

    def __init__(self, src, ref_ra, ref_dec, ref_flux, bbox, config, n_saturated: int = 0):
        self.src_x, self.src_y, self.src_flux = src
        self.n_saturated = n_saturated
        self.ref_ra, self.ref_dec, self.ref_flux = ref_ra, ref_dec, ref_flux
        self.bbox = bbox
        self.config = config
        x0, y0, x1, y1 = bbox
        self.cx, self.cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        self.norm = max(0.5 * (x1 - x0), 0.5 * (y1 - y0), 1.0)

    def _required(self, n_src, n_ref):
        c = self.config
        frac = min(c.min_match_cap, math.ceil(c.min_match_fraction * min(n_src, n_ref)))
        return max(c.num_points_for_shape, frac)

    def _match(self, model, tree, tol, meta):
        si, ri, d = nn_match(model, self.ref_plane, tol, tree)
        if self.config.do_magnitude_outlier_rejection and len(si):
            keep = _mag_outliers(
                self.src_flux[si],
                self.ref_flux[ri],
                self.config.magnitude_outlier_rejection_nsigma,
                self.config.magnitude_outlier_min_matches,
            )
            meta["n_magnitude_rejected"] = int((~keep).sum())
            si, ri, d = si[keep], ri[keep], d[keep]
        return si, ri, d

    def _next_tolerance(self, resid):
        mean, std = clipped_mean_std(resid)
        rayleigh = np.median(resid) / 1.1774 if len(resid) else 0.0
        c = self.config
        return max(c.match_tolerance_floor_px, mean + 2 * std, c.match_tolerance_nsigma * rayleigh)

    def _without_saturated(self, ref_in, foot, meta):
        """``ref_in`` without the references as bright as the saturated sources.

        Saturated stars are not astrometric sources, so the brightest sources that vote
        are the brightest *unsaturated* ones. On a deep field the brightest references
        are all saturated stars: voting with them, the two lists would hardly overlap.
        The ``n_saturated`` brightest references on the chip, and every reference at
        least as bright, are left out (at least 3 references always stay). ``foot``: the
        detector outline in the tangent plane.
        """
        if self.n_saturated == 0:
            return ref_in
        plane = self.ref_plane[ref_in]
        on_chip = np.all((plane >= foot.min(axis=0)) & (plane <= foot.max(axis=0)), axis=1)
        flux = self.ref_flux[ref_in[on_chip]]
        flux = np.sort(flux[np.isfinite(flux)])[::-1]
        k = min(self.n_saturated, flux.size)
        if k == 0:
            return ref_in
        limit = flux[k - 1]
        keep = ref_in[~(self.ref_flux[ref_in] >= limit)]
        if len(keep) < 3:
            return ref_in
        meta["n_refs_left_out_as_saturated"] = int(len(ref_in) - len(keep))
        return keep

    def _vote(self, src_plane, ref_in, meta):
        """Rotation × shift vote of the brightest objects; returns the affine start."""
        c = self.config
        bs = brightest(self.src_flux, c.max_src_objects)
        br = ref_in[brightest(self.ref_flux[ref_in], c.max_ref_objects)]
        r_max = float(np.max(np.hypot(*src_plane[bs].T)))
        vote = vote_match(
            src_plane[bs],
            self.ref_plane[br],
            max_offset=c.max_offset_px,
            max_rotation=math.radians(c.max_rotation_deg),
            bin_size=c.vote_bin_px,
            r_max=r_max,
        )
        required = self._required(len(bs), len(br))
        threshold = vote.expected + c.vote_min_significance * math.sqrt(vote.expected)
        meta.update(
            vote_peak=vote.peak,
            vote_expected=vote.expected,
            vote_rotation_deg=math.degrees(vote.rotation),
            vote_offset_px=[float(v) for v in vote.offset],
        )
        if vote.peak < required or vote.peak < threshold:
            raise NoSolution(
                f"pattern vote peak of {vote.peak} agreeing pairs among {len(bs)} sources and "
                f"{len(br)} refs (needed >= {required} and > {threshold:.1f}; shifts <= "
                f"{c.max_offset_px} px, rotations <= {c.max_rotation_deg} deg)"
            )
        cos_t, sin_t = math.cos(vote.rotation), math.sin(vote.rotation)
        return np.array([[cos_t, -sin_t, vote.offset[0]], [sin_t, cos_t, vote.offset[1]]])

    # Long: the match/fit iterations of docs/astrometry.md in order, with the footprint
    # test and the metadata each step records.
    def solve(self, wcs0, vote_free_tolerance=None):
        """Match and fit starting from ``wcs0``.

        ``vote_free_tolerance`` [px] skips the vote (the start is already within it, as
        after recovery mode) and starts matching with that radius.
        """
        c = self.config
        meta: dict = {}
        ra0, dec0 = wcs_pixel_to_icrs(wcs0, np.array([self.cx]), np.array([self.cy]))
        ra0, dec0 = float(ra0[0]), float(dec0[0])
        scale0 = local_scale(wcs0, self.cx, self.cy)

        def to_plane(x, y):
            xi, eta = gnomonic(*wcs_pixel_to_icrs(wcs0, x, y), ra0, dec0)
            return np.column_stack([xi, eta]) / scale0

        src_plane = to_plane(self.src_x, self.src_y)
        rxi, reta = gnomonic(self.ref_ra, self.ref_dec, ra0, dec0)
        self.ref_plane = np.column_stack([rxi, reta]) / scale0
        # References on the detector footprint grown by the largest shift.
        x0, y0, x1, y1 = self.bbox
        edge = np.linspace(0.0, 1.0, 9)
        ex = np.concatenate(
            [x0 + edge * (x1 - x0), np.full(9, x1), x0 + edge * (x1 - x0), np.full(9, x0)]
        )
        ey = np.concatenate(
            [np.full(9, y0), y0 + edge * (y1 - y0), np.full(9, y1), y0 + edge * (y1 - y0)]
        )
        foot = to_plane(ex, ey)
        pad = c.max_offset_px + 2 * c.vote_bin_px
        inside = np.all(
            (self.ref_plane >= foot.min(axis=0) - pad) & (self.ref_plane <= foot.max(axis=0) + pad),
            axis=1,
        )
        inside &= np.isfinite(self.ref_plane).all(axis=1) & (np.hypot(rxi, reta) < 1.0)
        ref_in = np.nonzero(inside)[0]
        meta["n_refs_in_footprint"] = len(ref_in)
        if len(ref_in) < 3 or len(self.src_x) < 3:
            raise NoSolution(f"{len(self.src_x)} sources and {len(ref_in)} refs on the detector")
        if vote_free_tolerance is None:
            ref_vote = self._without_saturated(ref_in, foot, meta)
            affine = self._vote(src_plane, ref_vote, meta)
            tol = 2.0 * c.vote_bin_px
        else:
            affine = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            tol = vote_free_tolerance
        from scipy.spatial import cKDTree  # deferred: see pipeline.DEFERRED_IMPORTS

        tree = cKDTree(self.ref_plane[ref_in])
        self.ref_plane, self.ref_flux = self.ref_plane[ref_in], self.ref_flux[ref_in]
        tolerances = []
        for _ in range(c.max_iterations):
            tolerances.append(tol)
            si, ri, _ = self._match(apply_affine(affine, src_plane), tree, tol, meta)
            if len(si) < max(3, c.min_matches):
                raise NoSolution(f"only {len(si)} matches within {tol:.2f} px after the vote")
            affine = fit_affine(src_plane[si], self.ref_plane[ri])
            resid = np.hypot(*(apply_affine(affine, src_plane[si]) - self.ref_plane[ri]).T)
            tol = self._next_tolerance(resid)
        # Polynomial correction of the highest order the matches support.
        du, dv = (self.src_x - self.cx) / self.norm, (self.src_y - self.cy) / self.norm
        coef, terms = None, []
        for _ in range(2):
            tolerances.append(tol)
            base = apply_affine(affine, src_plane)
            model = base if coef is None else base + design_matrix(du, dv, terms) @ coef
            si, ri, _ = self._match(model, tree, tol, meta)
            if len(si) < max(3, c.min_matches):
                raise NoSolution(f"only {len(si)} matches within {tol:.2f} px in the final fit")
            order = 0
            for k in range(2, c.sip_order + 1):
                if len(si) >= c.sip_min_matches_per_term * len(poly_terms(k)):
                    order = k
            if order >= 2:
                terms = poly_terms(order)
                design = design_matrix(du[si], dv[si], terms)
                coef, *_ = np.linalg.lstsq(design, self.ref_plane[ri] - base[si], rcond=None)
                model = base + design_matrix(du, dv, terms) @ coef
            else:
                affine = fit_affine(src_plane[si], self.ref_plane[ri])
                model = apply_affine(affine, src_plane)
                coef, terms = None, []
            resid = np.hypot(*(model[si] - self.ref_plane[ri]).T)
            tol = self._next_tolerance(resid)
        meta["correction_order"] = order if order >= 2 else 1
        meta["match_tolerances_px"] = [float(t) for t in tolerances]

        def sky_fn(x, y):
            pts = apply_affine(affine, to_plane(x, y))
            if coef is not None:
                uu, vv = (x - self.cx) / self.norm, (y - self.cy) / self.norm
                pts = pts + design_matrix(uu, vv, terms) @ coef
            return inverse_gnomonic(pts[:, 0] * scale0, pts[:, 1] * scale0, ra0, dec0)

        wcs, approx_err = tan_sip_from_mapping(sky_fn, self.bbox, c.sip_order, c.sip_grid_points)
        meta["sip_approximation_max_error_arcsec"] = approx_err
        return wcs, si, ref_in[ri], c.max_iterations + 2, meta


def recover(src_x, src_y, src_flux, ref_ra, ref_dec, ref_flux, bbox, hint, config):
    """Recovery mode: a TAN WCS from a verified blind solve around the pointing hint."""
    x0, y0, x1, y1 = bbox
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    scale = math.radians(hint.pixel_scale_arcsec / 3600.0)
    ra0, dec0 = math.radians(hint.ra_deg), math.radians(hint.dec_deg)
    xi, eta = gnomonic(ref_ra, ref_dec, ra0, dec0)
    ref = np.column_stack([xi, eta]) / scale
    # Refs beyond 90° of the hint project to nonsense; drop them.
    ref[~(np.hypot(xi, eta) < 1.0)] = np.nan
    src = np.column_stack([src_x - cx, src_y - cy])
    try:
        solved = blind_solve(src, src_flux, ref, ref_flux, x1 - x0 + 1, y1 - y0 + 1, config.blind)
    except BlindSolveFailed as exc:
        raise NoSolution(f"recovery: {exc}") from exc
    best = solved.similarity

    def sky_fn(x, y):
        pts = best.apply(np.column_stack([x - cx, y - cy])) * scale
        return inverse_gnomonic(pts[:, 0], pts[:, 1], ra0, dec0)

    wcs, _ = tan_sip_from_mapping(sky_fn, bbox, 1, 5)
    info = {
        "recovery_n_matches": solved.n_matches,
        "recovery_log10_false_alarm": solved.log10_false_alarm,
        "recovery_n_candidates": solved.n_candidates,
        "recovery_parity": best.parity,
        "recovery_rotation_deg": math.degrees(math.atan2(best.a.imag, best.a.real)),
        "recovery_scale_ratio": abs(best.a),
        "recovery_offset_px": [best.b.real, best.b.imag],
    }
    return wcs, info
