"""False-alarm trials of the blind solver on scrambled inputs (issue 12, acceptance b).

Every trial gives :func:`promptcal.pipeline.astrometry.blind.blind_solve` an input that has *no*
true solution, so any accepted solution is a wrong one:

- ``random_sources``: uniform random positions and fluxes on the chip against the real
  Gaia references around the real header pointing;
- ``other_sky``: a real source list against real stars of another sky area, carried
  onto the hint at a random position angle and parity (:func:`other_sky_patches`): the
  night's Gaia catalogue beyond :data:`EXCLUDE_DEG` of the target (which no frame can
  reach), and, magnified to the night's reference density, the Gaia DR2 stars of the
  DECam field and the GLIMPSE stars of the Spitzer field;
- ``shuffled_sources``: a real source list whose x and y are permuted independently
  (same marginals and brightness order, no pattern) against the real references;
- ``shuffled_refs``: a real source list against the real references with RA and Dec
  permuted independently.

``control`` trials (not scrambled) solve the real frame from a pointing hint moved at
random by up to half the diagonal with the scale off by up to 4 %, and check the answer
against the solved WCS of PROVENANCE.md: they show the test still accepts true solutions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import sep
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from promptcal.pipeline.astrometry.blind import BlindSolveConfig, BlindSolveFailed, blind_solve
from promptcal.pipeline.astrometry.tan_sip import gnomonic, inverse_gnomonic

#: Catalogue stars closer than this to the target could be on a frame of the night [deg]
#: (header error <= 25', half diagonal 35').
EXCLUDE_DEG = 1.05
KINDS = ("random_sources", "other_sky", "shuffled_sources", "shuffled_refs")


@dataclass
class Frame:
    """Sources of one real frame and its header hint."""

    name: str
    src: np.ndarray  # (n, 2) relative to the chip centre [px]
    flux: np.ndarray  # [count]
    hint: tuple[float, float, float]  # RA, Dec [deg], scale [arcsec/px]
    width: int
    height: int


def read_frame(path) -> Frame:
    """sep sources (5σ, saturated stars included) and the header hint of a frame."""
    with fits.open(path) as hdul:
        image, header = hdul[0].data.astype(np.float64), hdul[0].header
    bkg = sep.Background(image)
    obj = sep.extract(image - bkg.back(), 5.0, err=bkg.globalrms)
    ny, nx = image.shape
    src = np.column_stack([obj["x"] - 0.5 * (nx - 1), obj["y"] - 0.5 * (ny - 1)])
    hint = (float(header["RA"]), float(header["DEC"]), float(header["IM_SCALE"]))
    return Frame(path.name, src, np.asarray(obj["flux"], float), hint, nx, ny)


def read_refs(csv_path):
    """Gaia RA, Dec [deg] and G-band flux [arbitrary] of the reference CSV."""
    cat = Table.read(csv_path)
    flux = 10 ** (-0.4 * np.asarray(cat["phot_g_mean_mag"], float))
    return np.asarray(cat["ra"], float), np.asarray(cat["dec"], float), flux


def plane(ra, dec, hint) -> np.ndarray:
    """References on the tangent plane at the hint, in hint pixels [px]."""
    xi, eta = gnomonic(np.radians(ra), np.radians(dec), *np.radians(hint[:2]))
    ref = np.column_stack([xi, eta]) / math.radians(hint[2] / 3600.0)
    ref[~(np.hypot(xi, eta) < 1.0)] = np.nan
    return ref


def move_patch(ra, dec, centre, target, angle_deg, mirror, zoom=1.0):
    """Carry the sky around ``centre`` onto ``target`` [deg], magnified by ``zoom``, turned
    by ``angle_deg`` and optionally mirrored (through tangent-plane coordinates)."""
    xi, eta = gnomonic(np.radians(ra), np.radians(dec), *np.radians(centre))
    xi, eta = zoom * xi, zoom * eta
    if mirror:
        xi = -xi
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    xi, eta = c * xi - s * eta, s * xi + c * eta
    ra2, dec2 = inverse_gnomonic(xi, eta, *np.radians(target))
    return np.degrees(ra2), np.degrees(dec2)


def offset_point(ra, dec, distance_deg, angle_deg):
    """The point ``distance_deg`` from (ra, dec) [deg] towards position angle ``angle_deg``."""
    t = math.radians(distance_deg)
    a = math.radians(angle_deg)
    ra2, dec2 = inverse_gnomonic(
        np.array([math.tan(t) * math.sin(a)]),
        np.array([math.tan(t) * math.cos(a)]),
        math.radians(ra),
        math.radians(dec),
    )
    return float(np.degrees(ra2[0])), float(np.degrees(dec2[0]))


def scrambled_input(kind: str, rng, frame: Frame, refs, target, patches):
    """(sources, fluxes, reference plane, ref fluxes) of one scrambled trial."""
    ra, dec, rflux = refs
    src, flux = frame.src, frame.flux
    if kind == "random_sources":
        n = int(rng.integers(50, 400))
        src = rng.uniform(-0.5, 0.5, (n, 2)) * [frame.width, frame.height]
        flux = 10 ** rng.uniform(2, 6, n)
    elif kind == "shuffled_sources":
        src = np.column_stack([rng.permutation(src[:, 0]), rng.permutation(src[:, 1])])
    elif kind == "shuffled_refs":
        near = np.hypot(*plane(ra, dec, frame.hint).T) < 2 * math.hypot(frame.width, frame.height)
        ra, dec = ra.copy(), dec.copy()
        ra[near], dec[near] = rng.permutation(ra[near]), rng.permutation(dec[near])
    elif kind == "other_sky":
        patch = patches[int(rng.integers(len(patches)))]
        centre = patch["centre"] or offset_point(
            *target, rng.uniform(1.15, 1.35), rng.uniform(0, 360)
        )
        turn, mirror = rng.uniform(0, 360), rng.random() < 0.5
        ra, dec = move_patch(
            patch["ra"], patch["dec"], centre, frame.hint[:2], turn, mirror, patch["zoom"]
        )
        rflux = patch["flux"]
    else:
        raise ValueError(f"unknown trial kind {kind!r}")
    return src, flux, plane(ra, dec, frame.hint), rflux


def other_sky_patches(real, refs, target, n_brightest: int = 130) -> list[dict]:
    """Real star lists of other sky areas (see the module docstring).

    ``real`` is the shared real-data directory, ``refs`` the night's catalogue
    (:func:`read_refs`) centred on ``target`` [deg]. The DECam and Spitzer lists cover
    ~0.3°; magnified 10× and 8× and cut to their ``n_brightest`` stars they cover the
    searched area with about the density of the night's G<10 stars (~20 deg⁻²).
    """
    ra, dec, flux = refs
    far = _distance_deg(ra, dec, *target) > EXCLUDE_DEG
    patch = {"name": "hatp32_beyond", "ra": ra[far], "dec": dec[far], "flux": flux[far]}
    patches = [{**patch, "centre": None, "zoom": 1.0}]
    decam, spitzer = real / "decam-legacypipe-n6", real / "spitzer-glimpse-irac2"
    gaia = [Table.read(decam / f"gaia-dr2-chunk-{c}.fits") for c in ("05483", "05611")]
    spitzer = Table.read(spitzer / "spitzer_example_catalog_icrs.derived.csv")
    for name, cats, mag, zoom in (
        ("decam_gaia_dr2", gaia, "phot_g_mean_mag", 10.0),
        ("spitzer_glimpse", [spitzer], "mag4_5", 8.0),
    ):
        r = np.concatenate([np.asarray(c["ra"], float) for c in cats])
        d = np.concatenate([np.asarray(c["dec"], float) for c in cats])
        m = np.concatenate([np.asarray(c[mag], float) for c in cats])
        keep = np.isfinite(r) & np.isfinite(d) & np.isfinite(m)
        keep = np.flatnonzero(keep)[np.argsort(m[keep])[:n_brightest]]
        centre = (float(np.median(r[keep])), float(np.median(d[keep])))
        patch = {"name": name, "ra": r[keep], "dec": d[keep], "flux": 10 ** (-0.4 * m[keep])}
        patches.append({**patch, "centre": centre, "zoom": zoom})
    return patches


def _distance_deg(ra, dec, ra0, dec0):
    r, d, r0, d0 = np.radians(ra), np.radians(dec), math.radians(ra0), math.radians(dec0)
    cos_c = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(r - r0)
    return np.degrees(np.arccos(np.clip(cos_c, -1, 1)))


def solve(src, flux, ref, rflux, frame: Frame, config: BlindSolveConfig) -> dict:
    """One blind solve: accepted or not, its false-alarm figure and time."""
    start = time.perf_counter()
    try:
        result = blind_solve(src, flux, ref, rflux, frame.width, frame.height, config)
    except BlindSolveFailed as exc:
        return {
            "accepted": False,
            "log10_false_alarm": exc.best_log10_false_alarm,
            "reason": str(exc),
            "s": time.perf_counter() - start,
        }
    return {
        "accepted": True,
        "similarity": result.similarity,
        "n_matches": result.n_matches,
        "log10_false_alarm": result.log10_false_alarm,
        "s": time.perf_counter() - start,
    }


def control_trial(rng, frame: Frame, refs, truth: WCS, config: BlindSolveConfig) -> dict:
    """Solve ``frame`` from a hint moved by up to half the diagonal; compare with truth."""
    half_diag = 0.5 * math.hypot(frame.width, frame.height)
    r = half_diag * math.sqrt(rng.uniform(0, 1))
    a = rng.uniform(0, 2 * math.pi)
    cx, cy = 0.5 * (frame.width - 1), 0.5 * (frame.height - 1)
    ra0, dec0 = truth.all_pix2world([[cx + r * math.cos(a), cy + r * math.sin(a)]], 0)[0]
    scale_true = math.sqrt(abs(np.linalg.det(truth.pixel_scale_matrix))) * 3600
    scale = scale_true * (1 + rng.uniform(-0.04, 0.04))
    hinted = Frame(frame.name, frame.src, frame.flux, (ra0, dec0, scale), frame.width, frame.height)
    out = solve(frame.src, frame.flux, plane(*refs[:2], hinted.hint), refs[2], hinted, config)
    if out.pop("accepted"):
        sim = out.pop("similarity")
        xi, eta = sim.b.real, sim.b.imag  # image of the chip centre [hint px]
        s = math.radians(scale / 3600.0)
        ra, dec = inverse_gnomonic(
            np.array([xi * s]), np.array([eta * s]), *np.radians((ra0, dec0))
        )
        ra_t, dec_t = truth.all_pix2world([[cx, cy]], 0)[0]
        out["centre_error_arcmin"] = (
            float(_distance_deg(np.degrees(ra), np.degrees(dec), ra_t, dec_t)[0]) * 60
        )
        out["scale_error"] = abs(abs(sim.a) * scale / scale_true - 1)
        out["correct"] = out["centre_error_arcmin"] <= 1.0 and out["scale_error"] <= 0.02
        out["accepted"] = True
    else:
        out["accepted"] = False
    return out


def run_trials(
    frames,
    refs,
    target,
    patches,
    truth_frame,
    truth,
    *,
    n_per_kind: int,
    n_control: int,
    seed: int = 0,
    config: BlindSolveConfig | None = None,
) -> dict:
    """Run ``n_per_kind`` scrambled trials of each kind (frames taken in turn) and
    ``n_control`` control trials; returns counts, false-alarm figures and times.

    ``target`` is the (RA, Dec) [deg] the catalogue is centred on; ``truth`` the solved
    WCS of ``truth_frame``. A scrambled trial that is accepted is a wrong solution.
    """
    config = config or BlindSolveConfig()
    rng = np.random.default_rng(seed)
    out: dict = {"kinds": {}, "n_scrambled": 0, "n_wrong_accepted": 0}
    for kind in KINDS:
        rows = []
        for i in range(n_per_kind):
            frame = frames[i % len(frames)]
            trial = scrambled_input(kind, rng, frame, refs, target, patches)
            rows.append(solve(*trial, frame, config))
        accepted = [r for r in rows if r["accepted"]]
        tested = [r["log10_false_alarm"] for r in rows if r["log10_false_alarm"] is not None]
        out["kinds"][kind] = {
            "trials": len(rows),
            "accepted": len(accepted),
            # Closest call: the smallest false-alarm figure of any trial (-6 accepts).
            "min_log10_false_alarm": min(tested, default=None),
            "trials_without_testable_candidate": len(rows) - len(tested),
            "median_s": float(np.median([r["s"] for r in rows])),
            "max_s": float(np.max([r["s"] for r in rows])),
        }
        out["n_scrambled"] += len(rows)
        out["n_wrong_accepted"] += len(accepted)
    controls = [control_trial(rng, truth_frame, refs, truth, config) for _ in range(n_control)]
    out["control"] = {
        "trials": len(controls),
        "accepted": sum(c["accepted"] for c in controls),
        "correct": sum(c.get("correct", False) for c in controls),
        "worst_centre_error_arcmin": max(
            (c["centre_error_arcmin"] for c in controls if c["accepted"]), default=None
        ),
        "worst_log10_false_alarm": max(
            (c["log10_false_alarm"] for c in controls if c["accepted"]), default=None
        ),
    }
    return out
