"""Astrometric fitting helpers: gnomonic projection, affine and polynomial least squares,
and the conversion of any pixel→sky mapping into a FITS TAN-SIP WCS.

All tangent-plane coordinates are standard coordinates (ξ east, η north) in radians unless
a name says otherwise; pixel coordinates are parent 0-based.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, SkyCoord
from astropy.wcs import WCS, Sip
from astropy.wcs.utils import wcs_to_celestial_frame

ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0


def gnomonic(ra, dec, ra0, dec0):
    """Project sky positions onto the tangent plane at (ra0, dec0).

    Parameters
    ----------
    ra, dec : array_like
        Positions [rad].
    ra0, dec0 : float
        Tangent point [rad].

    Returns
    -------
    xi, eta : numpy.ndarray
        Standard coordinates [rad]; ξ grows to the east, η to the north.
    """
    ra = np.asarray(ra, float)
    dec = np.asarray(dec, float)
    cos_d, sin_d = np.cos(dec), np.sin(dec)
    cos_da, sin_da = np.cos(ra - ra0), np.sin(ra - ra0)
    cos_c = np.sin(dec0) * sin_d + np.cos(dec0) * cos_d * cos_da
    xi = cos_d * sin_da / cos_c
    eta = (np.cos(dec0) * sin_d - np.sin(dec0) * cos_d * cos_da) / cos_c
    return xi, eta


def inverse_gnomonic(xi, eta, ra0, dec0):
    """Inverse of :func:`gnomonic`: standard coordinates [rad] -> (ra, dec) [rad]."""
    xi = np.asarray(xi, float)
    eta = np.asarray(eta, float)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.mod(ra, 2.0 * np.pi), dec


def angular_separation(ra1, dec1, ra2, dec2):
    """Great-circle distance [rad] (Vincenty form, exact at all separations)."""
    dra = ra2 - ra1
    num = np.hypot(
        np.cos(dec2) * np.sin(dra),
        np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra),
    )
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.arctan2(num, den)


def wcs_pixel_to_icrs(wcs: WCS, x, y):
    """Pixel (parent 0-based) -> ICRS (ra, dec) [rad] through any celestial astropy WCS.

    Non-ICRS frames (e.g. Galactic ``GLON/GLAT`` headers) are converted with astropy.
    """
    lon, lat = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    frame = wcs_to_celestial_frame(wcs)
    if not isinstance(frame, ICRS):
        sky = SkyCoord(lon * u.deg, lat * u.deg, frame=frame).icrs
        lon, lat = sky.ra.deg, sky.dec.deg
    return np.deg2rad(lon), np.deg2rad(lat)


def poly_terms(order: int, min_degree: int = 0) -> list[tuple[int, int]]:
    """Exponents (p, q) of the monomials u^p v^q with ``min_degree <= p + q <= order``."""
    return [(p, d - p) for d in range(min_degree, order + 1) for p in range(d, -1, -1)]


def design_matrix(u_, v_, terms) -> np.ndarray:
    """Columns u^p v^q for each (p, q) in ``terms``."""
    return np.stack([u_**p * v_**q for p, q in terms], axis=1)


def fit_affine(src, ref, weights=None) -> np.ndarray:
    """Least-squares affine map ``ref ≈ M @ src + t``.

    Parameters
    ----------
    src, ref : numpy.ndarray
        (n, 2) positions; n >= 3.
    weights : numpy.ndarray, optional
        (n,) weights of the squared residuals.

    Returns
    -------
    numpy.ndarray
        (2, 3) matrix [M | t].
    """
    design = np.column_stack([src, np.ones(len(src))])
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    sw = np.sqrt(w)[:, None]
    solution, *_ = np.linalg.lstsq(design * sw, ref * sw, rcond=None)
    return solution.T


def apply_affine(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine map to (n, 2) positions."""
    return pts @ affine[:, :2].T + affine[:, 2]


def fit_similarity(src, ref):
    """Least-squares similarity (scale, rotation, shift) ``ref ≈ a·src + b`` in complex form.

    Returns
    -------
    a, b : complex
        ``a = s·exp(iθ)`` and the shift.
    """
    zs = src[:, 0] + 1j * src[:, 1]
    zr = ref[:, 0] + 1j * ref[:, 1]
    ms, mr = zs.mean(), zr.mean()
    a = np.sum((zr - mr) * np.conj(zs - ms)) / max(np.sum(np.abs(zs - ms) ** 2), 1e-300)
    return a, mr - a * ms


def _sip_matrix(coeffs_by_term, terms, order):
    mat = np.zeros((order + 1, order + 1))
    for (p, q), c in zip(terms, coeffs_by_term, strict=True):
        mat[p, q] = c
    return mat


def tan_sip_from_mapping(sky_fn, bbox, order: int, grid_n: int = 25):
    """Approximate a pixel→sky mapping by a TAN(-SIP) WCS with CRPIX at the bbox centre.

    Parameters
    ----------
    sky_fn : callable
        ``sky_fn(x, y) -> (ra, dec)`` [rad], ICRS, for parent 0-based pixels.
    bbox : tuple of float
        (x_min, y_min, x_max, y_max) inclusive [px].
    order : int
        SIP order; <= 1 gives a pure TAN WCS. The inverse (AP, BP) uses ``order + 1``.
    grid_n : int
        Grid points per axis used for the approximation.

    Returns
    -------
    wcs : astropy.wcs.WCS
        ICRS TAN or TAN-SIP in parent 0-based pixel coordinates.
    max_error_arcsec : float
        Largest difference between ``wcs`` and ``sky_fn`` on a finer check grid [arcsec].
    """
    x_min, y_min, x_max, y_max = bbox
    cx, cy = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
    ra0, dec0 = sky_fn(np.array([cx]), np.array([cy]))
    ra0, dec0 = float(ra0[0]), float(dec0[0])
    gx, gy = np.meshgrid(np.linspace(x_min, x_max, grid_n), np.linspace(y_min, y_max, grid_n))
    gx, gy = gx.ravel(), gy.ravel()
    xi, eta = gnomonic(*sky_fn(gx, gy), ra0, dec0)
    xi, eta = np.rad2deg(xi), np.rad2deg(eta)
    du, dv = gx - cx, gy - cy
    # Normalise the pixel offsets so that high powers stay well conditioned.
    norm = max(0.5 * (x_max - x_min), 0.5 * (y_max - y_min), 1.0)
    order = max(int(order), 1)
    terms = poly_terms(order, min_degree=1)
    design = design_matrix(du / norm, dv / norm, terms)
    scale = np.array([norm ** -(p + q) for p, q in terms])
    coef, *_ = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)
    coef = coef * scale[:, None]  # per raw pixel power
    cd = np.array([[coef[0, 0], coef[1, 0]], [coef[0, 1], coef[1, 1]]])
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [cx + 1.0, cy + 1.0]
    wcs.wcs.crval = [np.rad2deg(ra0) % 360.0, np.rad2deg(dec0)]
    wcs.wcs.cd = cd
    wcs.wcs.radesys = "ICRS"
    if order >= 2:
        cd_inv = np.linalg.inv(cd)
        high = coef[2:] @ cd_inv.T  # rows: terms of degree >= 2, cols: (A, B)
        hterms = terms[2:]
        a_mat = _sip_matrix(high[:, 0], hterms, order)
        b_mat = _sip_matrix(high[:, 1], hterms, order)
        # Inverse: pixel offset = U + AP(U, V), with (U, V) = CD⁻¹ (ξ, η).
        iu, iv = (np.column_stack([xi, eta]) @ cd_inv.T).T
        inv_order = order + 1
        iterms = poly_terms(inv_order, min_degree=1)
        idesign = design_matrix(iu / norm, iv / norm, iterms)
        iscale = np.array([norm ** -(p + q) for p, q in iterms])
        icoef, *_ = np.linalg.lstsq(idesign, np.column_stack([du - iu, dv - iv]), rcond=None)
        icoef = icoef * iscale[:, None]
        ap = _sip_matrix(icoef[:, 0], iterms, inv_order)
        bp = _sip_matrix(icoef[:, 1], iterms, inv_order)
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.sip = Sip(a_mat, b_mat, ap, bp, wcs.wcs.crpix)
    else:
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.set()
    # Check on a grid offset from the fitting grid.
    n_check = grid_n + 6
    kx, ky = np.meshgrid(np.linspace(x_min, x_max, n_check), np.linspace(y_min, y_max, n_check))
    kx, ky = kx.ravel(), ky.ravel()
    ra_t, dec_t = sky_fn(kx, ky)
    ra_w, dec_w = wcs_pixel_to_icrs(wcs, kx, ky)
    err = angular_separation(ra_t, dec_t, ra_w, dec_w) * ARCSEC_PER_RAD
    return wcs, float(np.max(err))


def clipped_mean_std(values, n_sigma: float = 3.0, n_iter: int = 3):
    """Mean and standard deviation after iterative n_sigma clipping."""
    v = np.asarray(values, float)
    keep = np.isfinite(v)
    for _ in range(n_iter):
        if keep.sum() < 3:
            break
        mean, std = v[keep].mean(), v[keep].std()
        new = keep & (np.abs(v - mean) <= n_sigma * std + 1e-12)
        if new.sum() == keep.sum():
            break
        keep = new
    if not keep.any():
        return float("nan"), float("nan")
    return float(v[keep].mean()), float(v[keep].std())
