"""Loading reference catalogs: regions against brute force, proper motion, the LRU
cache, coverage errors and the source density.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time
from astropy_healpix import HEALPix
from matplotlib.path import Path as MplPath
from realdata import requires_real_data
from refcat_data import (
    SPITZER_CSV,
    box_corners,
    tan_wcs,
)

from promptcal.core.errors import InvalidInputError
from promptcal.refcat import (
    RefcatCoverageError,
    RefcatLoader,
    build_refcat,
    propagate_proper_motion,
    ref_cat_source_density,
)

# ------------------------------------------------------------- region loading


def _oracle_padded_polygon(ra, dec, ra_v, dec_v, margin):
    """Independent selection: astropy TAN + matplotlib for 'inside', sampled arcs for margin.

    Returns (selected, ambiguous): points whose sampled edge distance is within 1e-5 deg
    of the margin are ambiguous (sampling error) and excluded from the comparison.
    """
    mean = SkyCoord(ra_v * u.deg, dec_v * u.deg).cartesian.xyz.value.mean(axis=1)
    centre = SkyCoord(x=mean[0], y=mean[1], z=mean[2], representation_type="cartesian")
    ra0, dec0 = centre.spherical.lon.deg, centre.spherical.lat.deg
    near = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg
    idx = np.flatnonzero(near < 30.0)  # the polygons used here are a few degrees wide
    wcs = tan_wcs(ra0, dec0)
    px, py = wcs.world_to_pixel_values(ra[idx], dec[idx])
    vx, vy = wcs.world_to_pixel_values(ra_v, dec_v)
    inside = MplPath(np.c_[vx, vy]).contains_points(np.c_[px, py])
    # Great-circle arcs sampled by slerp, 4000 points per edge.
    verts = SkyCoord(ra_v * u.deg, dec_v * u.deg).cartesian.xyz.value.T
    t = np.linspace(0, 1, 4000)[:, None]
    samples = []
    for a, b in zip(verts, np.roll(verts, -1, axis=0), strict=True):
        omega = np.arccos(np.clip(a @ b, -1, 1))
        samples.append((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega))
    samples = np.concatenate(samples)
    pts = SkyCoord(ra[idx] * u.deg, dec[idx] * u.deg).cartesian.xyz.value.T
    dist = np.degrees(np.arccos(np.clip((pts @ samples.T).max(axis=1), -1, 1)))
    selected = np.zeros(ra.size, bool)
    ambiguous = np.zeros(ra.size, bool)
    selected[idx] = inside | (dist <= margin)
    ambiguous[idx] = ~inside & (np.abs(dist - margin) < 1e-5)
    return selected, ambiguous


@pytest.fixture(scope="module")
def synthetic_refcat(tmp_path_factory):
    """All-sky random catalog, denser around the test fields (RA=0 wrap, pole, south)."""
    rng = np.random.default_rng(42)
    ra = [rng.uniform(0, 360, 60_000)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, 60_000)))]
    for ra0, dec0 in [(0.2, 10.0), (123.0, 89.3), (45.0, -60.0)]:
        xyz = (
            rng.normal(size=(6000, 3)) * 0.04
            + SkyCoord(ra0 * u.deg, dec0 * u.deg).cartesian.xyz.value
        )
        sph = SkyCoord(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], representation_type="cartesian")
        ra.append(sph.spherical.lon.deg)
        dec.append(sph.spherical.lat.deg)
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    src = tmp_path_factory.mktemp("synth") / "cat.parquet"
    pq.write_table(pa.table({"ra": ra, "dec": dec, "flux": np.full(ra.size, 1e4)}), src)
    out = src.parent / "rc"
    build_refcat(src, out, ra_col="ra", dec_col="dec", bands={"x": ("flux", "nJy")}, nside=16)
    return out, ra, dec


@pytest.mark.parametrize(
    ("ra0", "dec0", "half", "angle", "margin"),
    [(0.2, 10.0, 1.2, 0.0, 0.3), (123.0, 89.3, 1.0, 30.0, 0.2), (45.0, -60.0, 1.5, 63.0, 0.0)],
    ids=["ra-wrap", "pole", "rotated-south"],
)
def test_region_matches_brute_force(synthetic_refcat, ra0, dec0, half, angle, margin):
    out, ra, dec = synthetic_refcat
    ra_v, dec_v = box_corners(ra0, dec0, half, angle)
    loader = RefcatLoader(out)
    refs = loader.load_region(ra_v, dec_v, margin_deg=margin, band="x")
    selected, ambiguous = _oracle_padded_polygon(ra, dec, ra_v, dec_v, margin)
    got = np.zeros(ra.size, bool)
    got[refs["id"]] = True
    assert selected.sum() > 300  # enough stars to make the comparison meaningful
    assert np.array_equal(got[~ambiguous], selected[~ambiguous])
    np.testing.assert_array_equal(refs["ra"].value, ra[refs["id"]] % 360.0)
    # Shard selection is a superset of the shards that hold the rows.
    hp = HEALPix(nside=16, order="nested")
    needed = set(hp.lonlat_to_healpix(ra[got] * u.deg, dec[got] * u.deg).tolist())
    assert needed <= set(loader.shards_for_region(ra_v, dec_v, margin))


def test_proper_motion_matches_astropy_within_1_mas_over_10_years():
    ra = np.array([10.0, 359.999, 200.0, 45.0, 120.0, 300.0])
    dec = np.array([20.0, -30.0, 85.0, -89.5, 0.0, 89.99])
    pmra = np.array([500.0, -1000.0, 3000.0, 800.0, -50.0, 10_000.0])
    pmdec = np.array([-300.0, 2000.0, -1000.0, 400.0, 10.0, 5_000.0])
    start = SkyCoord(
        ra=ra * u.deg,
        dec=dec * u.deg,
        distance=10 * u.pc,
        radial_velocity=0 * u.km / u.s,
        pm_ra_cosdec=pmra * u.mas / u.yr,
        pm_dec=pmdec * u.mas / u.yr,
        obstime=Time(2016.0, format="jyear"),
    )
    moved = start.apply_space_motion(new_obstime=Time(2026.0, format="jyear"))
    ra2, dec2 = propagate_proper_motion(ra, dec, pmra, pmdec, 10.0)
    sep = SkyCoord(ra2 * u.deg, dec2 * u.deg).separation(SkyCoord(moved.ra, moved.dec))
    assert sep.to_value(u.mas).max() < 1.0
    assert start.separation(moved).to_value(u.mas).min() > 500  # the stars did move


def test_lru_cache_eviction_and_counters(synthetic_refcat):
    out, _, _ = synthetic_refcat
    probe = RefcatLoader(out)
    pixels = list(probe.manifest.pixels[:4])
    sizes = [probe.load_shard(p).nbytes for p in pixels]
    loader = RefcatLoader(out, cache_bytes=sizes[0] + sizes[1] + sizes[2] // 2)
    assert loader.preload(pixels[:2]) == 2
    assert loader.cache_info() == {
        "hits": 0,
        "misses": 2,
        "bytes": sizes[0] + sizes[1],
        "n_shards": 2,
        "max_bytes": loader.cache_bytes,
    }
    loader.load_shard(pixels[0])  # hit; pixels[1] becomes least recently used
    assert loader.preload(pixels[2:3]) == 1  # evicts pixels[1]
    info = loader.cache_info()
    assert (info["hits"], info["misses"], info["n_shards"]) == (1, 3, 2)
    assert info["bytes"] == sizes[0] + sizes[2] <= loader.cache_bytes
    loader.load_shard(pixels[0])
    loader.load_shard(pixels[1])  # was evicted: a miss
    assert (loader.cache_info()["hits"], loader.cache_info()["misses"]) == (2, 4)
    tiny = RefcatLoader(out, cache_bytes=1)  # nothing fits: served, not cached
    assert tiny.load_shard(pixels[0]).num_rows > 0 and tiny.cache_info()["n_shards"] == 0


@requires_real_data
def test_field_not_covered_and_missing_band(tmp_path):
    build_refcat(
        SPITZER_CSV,
        tmp_path / "rc",
        ra_col="ra",
        dec_col="dec",
        bands={"irac2": ("mag4_5", "mag"), "irac1": ("mag3_6", "mag")},
    )
    loader = RefcatLoader(tmp_path / "rc")
    ra_v, dec_v = box_corners(10.0, 10.0, 0.1)
    assert not loader.covers(ra_v, dec_v)
    with pytest.raises(RefcatCoverageError, match=r"does not cover the field centred at RA 10\.0"):
        loader.load_region(ra_v, dec_v, margin_deg=0.05)
    empty = loader.load_region(ra_v, dec_v, margin_deg=0.05, require_coverage=False)
    assert len(empty) == 0 and "irac1_flux" in empty.colnames
    here_ra, here_dec = box_corners(275.9, -12.8, 0.05)
    assert loader.covers(here_ra, here_dec)
    with pytest.raises(InvalidInputError, match=r"available bands: \['irac1', 'irac2'\]"):
        loader.load_region(here_ra, here_dec, margin_deg=0.0, band="r")
    assert len(loader.load_region(here_ra, here_dec, margin_deg=0.0, band="irac1")) > 0


def test_ref_cat_source_density_lsst_fixture_numbers():
    r = 0.0075135
    rng = np.random.default_rng(0)
    pa_ = rng.uniform(0, 2 * np.pi, 10)
    rho = np.r_[rng.uniform(0, 0.98 * r, 7), rng.uniform(1.02 * r, 3 * r, 3)]
    ra = 150.0 + rho * np.sin(pa_) / np.cos(np.radians(2.0))
    dec = 2.0 + rho * np.cos(pa_)
    density = ref_cat_source_density(np.r_[ra, np.nan], np.r_[dec, np.nan], 150.0, 2.0, r)
    assert density == pytest.approx(7 / (np.pi * r**2), rel=1e-12)
    assert density == pytest.approx(39470.0430204, rel=1e-3)  # spec A2 fixture value
