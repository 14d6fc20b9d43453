"""Spherical geometry for reference-catalog regions and proper motions.

All angles are in degrees at the interface; unit vectors are (N, 3) arrays.
The padded-polygon test is exact on the sphere (no small-angle approximation):
a point is selected when it lies inside the spherical polygon whose edges are
great-circle arcs, or within ``margin`` of one of those edges.
"""

from __future__ import annotations

import numpy as np

from promptcal.core.errors import InvalidInputError

#: Largest polygon "radius" (centre to farthest vertex) accepted [deg]: the inside
#: test projects gnomonically, which needs the polygon well inside one hemisphere.
MAX_POLYGON_RADIUS_DEG = 60.0
#: Milliarcseconds per radian.
MAS_PER_RAD = np.degrees(1.0) * 3.6e6


def radec_to_xyz(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) of positions [deg]."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def xyz_to_radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA in [0, 360) and Dec [deg] of (not necessarily unit) vectors (N, 3)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between unit vectors [rad], accurate at all separations (atan2 form)."""
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return np.arctan2(cross, np.sum(a * b, axis=-1))


def angular_distance_deg(
    ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray
) -> np.ndarray:
    """Great-circle distance [deg] between positions [deg] (broadcasting)."""
    return np.degrees(angle_between(radec_to_xyz(ra1, dec1), radec_to_xyz(ra2, dec2)))


def _polygon_vertices(ra_deg, dec_deg) -> np.ndarray:
    """Validated vertex unit vectors (M, 3) of a polygon given by vertices [deg]."""
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=np.float64))
    if ra.shape != dec.shape or ra.ndim != 1 or ra.size < 3:
        raise InvalidInputError(
            f"a region polygon needs >= 3 (ra, dec) vertices of equal length, got "
            f"{ra.shape} and {dec.shape}"
        )
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise InvalidInputError("region polygon vertices must be finite")
    if np.any(np.abs(dec) > 90.0):
        raise InvalidInputError(f"region polygon Dec outside [-90, 90]: {dec.tolist()}")
    return radec_to_xyz(ra, dec)


def polygon_cap(ra_deg, dec_deg) -> tuple[float, float, float]:
    """Centre (RA, Dec) [deg] and radius [deg] of a cap containing the polygon.

    The centre is the normalised mean of the vertex unit vectors; the radius is the
    largest centre-vertex distance. A cap smaller than a hemisphere is convex, so it
    contains every great-circle edge and hence the whole polygon.
    """
    vertices = _polygon_vertices(ra_deg, dec_deg)
    mean = vertices.mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-12:
        raise InvalidInputError("region polygon vertices have no well-defined centre")
    centre = mean / norm
    radius = float(np.degrees(angle_between(vertices, centre[None, :]).max()))
    if radius > MAX_POLYGON_RADIUS_DEG:
        raise InvalidInputError(
            f"region polygon too large: a vertex lies {radius:.1f} deg from its centre "
            f"(limit {MAX_POLYGON_RADIUS_DEG} deg)"
        )
    ra_c, dec_c = xyz_to_radec(centre)
    return float(ra_c), float(dec_c), radius


def _tangent_basis(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East and north unit vectors of the tangent plane at ``centre``."""
    east = np.cross([0.0, 0.0, 1.0], centre)
    if np.linalg.norm(east) < 1e-12:  # centre on a pole: any orientation will do
        east = np.array([0.0, 1.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(centre, east)
    return east, north


def _inside_polygon(points: np.ndarray, vertices: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Even-odd test on the gnomonic projection at ``centre``.

    Great circles project to straight lines in the gnomonic projection, so the test is
    exact for points in the front hemisphere; points behind it are outside (the polygon
    lies within MAX_POLYGON_RADIUS_DEG of the centre).
    """
    east, north = _tangent_basis(centre)
    depth = points @ centre
    front = depth > 0
    safe = np.where(front, depth, 1.0)
    x, y = (points @ east) / safe, (points @ north) / safe
    vx, vy = (vertices @ east) / (vertices @ centre), (vertices @ north) / (vertices @ centre)
    inside = np.zeros(points.shape[0], dtype=bool)
    for i in range(len(vx)):
        x1, y1, x2, y2 = vx[i], vy[i], vx[i - 1], vy[i - 1]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at_y = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at_y)
    return inside & front


def distance_to_edges(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Smallest angular distance [rad] from each point to the polygon's great-circle edges."""
    best = np.full(points.shape[0], np.inf)
    for i in range(len(vertices)):
        a, b = vertices[i - 1], vertices[i]
        normal = np.cross(a, b)
        normal /= np.linalg.norm(normal)
        # The foot of the perpendicular onto the great circle lies on the (minor) arc
        # when it is on the b-side of a and on the a-side of b.
        foot = points - np.outer(points @ normal, normal)
        on_arc = (np.cross(a, foot) @ normal >= 0) & (np.cross(foot, b) @ normal >= 0)
        to_circle = np.arcsin(np.clip(np.abs(points @ normal), 0.0, 1.0))
        to_ends = np.minimum(angle_between(points, a[None, :]), angle_between(points, b[None, :]))
        best = np.minimum(best, np.where(on_arc, to_circle, to_ends))
    return best


def in_padded_polygon(
    ra_deg: np.ndarray, dec_deg: np.ndarray, ra_vertices, dec_vertices, margin_deg: float
) -> np.ndarray:
    """Mask of positions inside the polygon or within ``margin_deg`` of its boundary.

    Parameters
    ----------
    ra_deg, dec_deg : array
        Positions to test [deg].
    ra_vertices, dec_vertices : array
        Polygon vertices in order (either sense) [deg]; edges are great-circle arcs.
    margin_deg : float
        Padding [deg] (>= 0), i.e. the polygon grown by a disk of this radius.
    """
    if not np.isfinite(margin_deg) or margin_deg < 0:
        raise InvalidInputError(f"margin must be a finite angle >= 0 deg, got {margin_deg}")
    vertices = _polygon_vertices(ra_vertices, dec_vertices)
    ra_c, dec_c, radius = polygon_cap(ra_vertices, dec_vertices)
    centre = radec_to_xyz(ra_c, dec_c)
    points = radec_to_xyz(ra_deg, dec_deg).reshape(-1, 3)
    # Cheap pre-selection: only points within the padded bounding cap can be selected
    # (the 1e-9 rad slack keeps rounding from rejecting a point on the cap's edge).
    reach = min(np.radians(radius + margin_deg) + 1e-9, np.pi)
    near = np.flatnonzero(points @ centre >= np.cos(reach))
    candidates = points[near]
    selected = _inside_polygon(candidates, vertices, centre)
    if margin_deg > 0:
        selected |= distance_to_edges(candidates, vertices) <= np.radians(margin_deg)
    inside = np.zeros(points.shape[0], dtype=bool)
    inside[near[selected]] = True
    return inside


def propagate_proper_motion(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    pm_ra: np.ndarray,
    pm_dec: np.ndarray,
    dt_years: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Move positions by their proper motions over ``dt_years``.

    Parameters
    ----------
    ra_deg, dec_deg : array
        Positions at the catalog epoch [deg].
    pm_ra, pm_dec : array
        Proper motion [mas/yr]; ``pm_ra`` is mu_alpha* = mu_alpha cos(dec), as in Gaia.
        A star with a non-finite component keeps its position unchanged.
    dt_years : float
        Target epoch minus catalog epoch [Julian years].

    Returns
    -------
    ra, dec : array
        Positions at the target epoch [deg], RA in [0, 360).

    Notes
    -----
    The tangential velocity is built in 3D (east and north unit vectors) and the
    displaced vector is renormalised: the first-order result is the textbook
    ``dec += mu_dec dt``, ``ra += mu_alpha* dt / cos(dec)``, but without the 1/cos(dec)
    blow-up near the poles or a wrap problem at RA = 0/360. With no parallax and radial
    velocity this is the same straight-line motion that ``SkyCoord.apply_space_motion``
    uses (differences are second order, < 1 µas for 1"/yr over 10 yr).
    """
    ra_in = np.asarray(ra_deg, dtype=np.float64)
    dec_in = np.asarray(dec_deg, dtype=np.float64)
    ra, dec = np.radians(ra_in), np.radians(dec_in)
    mu_a = np.asarray(pm_ra, dtype=np.float64)
    mu_d = np.asarray(pm_dec, dtype=np.float64)
    still = ~(np.isfinite(mu_a) & np.isfinite(mu_d))
    mu_a, mu_d = np.where(still, 0.0, mu_a), np.where(still, 0.0, mu_d)
    position = radec_to_xyz(np.degrees(ra), np.degrees(dec))
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    step = dt_years / MAS_PER_RAD
    moved = position + step * (mu_a[..., None] * east + mu_d[..., None] * north)
    ra_out, dec_out = xyz_to_radec(moved)
    # Keep stars without a proper motion bit-identical (no round trip through vectors).
    return np.where(still, ra_in % 360.0, ra_out), np.where(still, dec_in, dec_out)
