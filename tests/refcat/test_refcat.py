"""Reference catalogs: building from real and synthetic catalogs, region loading, cache, CLI."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS
from astropy_healpix import HEALPix
from matplotlib.path import Path as MplPath
from realdata import REAL, requires_real_data

import promptcal.commands.cli
from promptcal.core.errors import InvalidInputError
from promptcal.refcat import (
    RefcatCoverageError,
    RefcatLoader,
    build_refcat,
    mag_err_to_njy,
    mag_to_njy,
    propagate_proper_motion,
    ref_cat_source_density,
)

SPITZER_CSV = REAL / "spitzer-glimpse-irac2" / "spitzer_example_catalog_icrs.derived.csv"
SPITZER_XML = REAL / "spitzer-glimpse-irac2" / "spitzer_example_catalog.xml"
MICROOBS_CSV = REAL / "microobs-hatp32" / "gaia_dr3_g10_hatp32_r1.5deg.csv"
MICROOBS_WCS = REAL / "microobs-hatp32" / "HATP-32171220013343.derived_wcs.hdr"
GAIA_FITS = REAL / "decam-legacypipe-n6" / "gaia-dr2-chunk-05483.fits"


def _csv(path: Path) -> dict[str, np.ndarray]:
    table = pacsv.read_csv(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _read_all_shards(directory: Path) -> pa.Table:
    manifest = json.loads((directory / "manifest.json").read_text())
    return pa.concat_tables([pq.read_table(directory / s["file"]) for s in manifest["shards"]])


def _box(ra0: float, dec0: float, half: float, angle_deg: float = 0.0):
    """Corners of a square of half-size ``half`` [deg] on the tangent plane, rotated."""
    wcs = _tan_wcs(ra0, dec0)
    t = np.radians(angle_deg)
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    rot = local @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    world = wcs.pixel_to_world_values(rot[:, 0], rot[:, 1])
    return np.asarray(world[0]), np.asarray(world[1])


def _tan_wcs(ra0: float, dec0: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.crpix = [1.0, 1.0]  # FITS is 1-based: pixel (0, 0) is the tangent point
    wcs.wcs.cdelt = [-1.0, 1.0]  # 1 "pixel" = 1 deg on the tangent plane
    return wcs


# ------------------------------------------------------------------ conversions


def test_magnitude_conversion_is_ab_in_njy():
    # 31.4 AB = 1 nJy; 23.9 AB = 1 µJy; 8.9 AB = 1 Jy = 1e9 nJy.
    np.testing.assert_allclose(mag_to_njy([31.4, 23.9, 8.9]), [1.0, 1e3, 1e9], rtol=1e-12)
    # Error propagation against a numerical derivative of the flux.
    mag, dmag = 20.0, 1e-6
    slope = (mag_to_njy(mag - dmag) - mag_to_njy(mag + dmag)) / (2 * dmag)
    np.testing.assert_allclose(mag_err_to_njy(mag_to_njy(mag), 0.05), slope * 0.05, rtol=1e-6)


# ------------------------------------------------------------- real catalogs


@requires_real_data
def test_build_from_spitzer_csv(tmp_path):
    manifest = build_refcat(
        SPITZER_CSV, tmp_path / "rc", ra_col="ra", dec_col="dec", bands={"irac2": ("mag4_5", "mag")}
    )
    truth = _csv(SPITZER_CSV)
    table = _read_all_shards(tmp_path / "rc").to_pydict()
    order = np.argsort(table["id"])
    assert manifest.total_rows == 224 == len(order)
    np.testing.assert_array_equal(np.array(table["id"])[order], np.arange(224))
    np.testing.assert_array_equal(np.array(table["ra"])[order], truth["ra"])
    np.testing.assert_array_equal(np.array(table["dec"])[order], truth["dec"])
    expected = 10 ** (-0.4 * (truth["mag4_5"] - 31.4))
    np.testing.assert_allclose(np.array(table["irac2_flux"])[order], expected, rtol=1e-12)
    assert np.all(np.isnan(table["irac2_fluxErr"]))  # no error column given
    assert manifest.epoch is None and not manifest.has_proper_motion


@requires_real_data
def test_votable_reader_with_galactic_columns_as_radec(tmp_path):
    # Reader test only: l, b are stored in the ra/dec columns.
    manifest = build_refcat(
        SPITZER_XML, tmp_path / "rc", ra_col="l", dec_col="b", bands={"irac2": ("mag4_5", "mag")}
    )
    truth = _csv(SPITZER_CSV)  # same 224 rows in the same order, with l, b copied
    table = _read_all_shards(tmp_path / "rc").sort_by("id").to_pydict()
    assert manifest.total_rows == 224
    np.testing.assert_allclose(table["ra"], truth["l"], atol=1e-9)
    np.testing.assert_allclose(table["dec"], truth["b"], atol=1e-9)
    np.testing.assert_allclose(table["irac2_flux"], mag_to_njy(truth["mag4_5"]), rtol=1e-12)


@requires_real_data
def test_microobs_csv_region_matches_wcs_footprint(tmp_path):
    build_refcat(
        MICROOBS_CSV,
        tmp_path / "rc",
        ra_col="ra",
        dec_col="dec",
        bands={"G": ("phot_g_mean_mag", "mag"), "BP": ("phot_bp_mean_mag", "mag")},
        id_col="source_id",
    )
    truth = _csv(MICROOBS_CSV)
    wcs = WCS(fits.Header.fromtextfile(MICROOBS_WCS))
    nx, ny = 650, 500
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5]])
    ra_v, dec_v = wcs.pixel_to_world_values(corners[:, 0], corners[:, 1])
    loader = RefcatLoader(tmp_path / "rc")
    refs = loader.load_region(ra_v, dec_v, margin_deg=0.0, band="G")
    # Oracle: the image edges are straight lines of a pure TAN WCS, i.e. great circles.
    x, y = wcs.world_to_pixel_values(truth["ra"], truth["dec"])
    inside = (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    assert refs.colnames == ["id", "ra", "dec", "G_flux", "G_fluxErr"]
    assert refs["ra"].unit == u.deg and refs["G_flux"].unit == u.nJy
    assert sorted(refs["id"].tolist()) == sorted(truth["source_id"][inside].tolist())
    assert len(refs) == 21  # PROVENANCE.md: 21 catalog stars in the field of view
    assert refs["id"].dtype == np.int64 and int(refs["id"][0]) > 2**55  # Gaia ids intact
    by_id = dict(zip(truth["source_id"].tolist(), truth["phot_g_mean_mag"], strict=True))
    g = np.array([by_id[i] for i in refs["id"].tolist()])
    np.testing.assert_allclose(refs["G_flux"].value, mag_to_njy(g), rtol=1e-12)


@requires_real_data
def test_gaia_fits_with_proper_motion(tmp_path):
    gaia = Table.read(GAIA_FITS)
    (epoch,) = set(np.asarray(gaia["ref_epoch"]).tolist())
    manifest = build_refcat(
        GAIA_FITS,
        tmp_path / "rc",
        ra_col="ra",
        dec_col="dec",
        bands={"G": ("phot_g_mean_mag", "mag")},
        pm_ra_col="pmra",
        pm_dec_col="pmdec",
        epoch=epoch,
        id_col="source_id",
    )
    assert epoch == 2015.5 and manifest.epoch == 2015.5 and manifest.has_proper_motion
    assert manifest.total_rows == len(gaia) == 884
    assert manifest.columns["pm_ra"] == "mas / yr"
    loader = RefcatLoader(tmp_path / "rc")
    obs = Time("2017-11-13T06:03:40", scale="utc")
    ra_v, dec_v = _box(121.0262, 5.1135, 0.05)
    refs = loader.load_region(ra_v, dec_v, margin_deg=0.01, epoch=obs)
    assert 20 < len(refs) < len(gaia)
    assert refs.meta["epoch"] == pytest.approx(obs.jyear)
    as_float = loader.load_region(ra_v, dec_v, margin_deg=0.01, epoch=float(obs.jyear))
    np.testing.assert_array_equal(as_float["ra"], refs["ra"])
    rows = {int(i): k for k, i in enumerate(gaia["source_id"])}
    sel = np.array([rows[int(i)] for i in refs["id"]])
    pm_ok = np.isfinite(gaia["pmra"][sel])
    start = SkyCoord(
        ra=gaia["ra"][sel][pm_ok] * u.deg,
        dec=gaia["dec"][sel][pm_ok] * u.deg,
        distance=10 * u.pc,  # any distance: no parallax or radial velocity is applied
        radial_velocity=0 * u.km / u.s,
        pm_ra_cosdec=np.asarray(gaia["pmra"][sel][pm_ok]) * u.mas / u.yr,
        pm_dec=np.asarray(gaia["pmdec"][sel][pm_ok]) * u.mas / u.yr,
        obstime=Time(2015.5, format="jyear"),
    )
    moved = start.apply_space_motion(new_obstime=obs)
    got = SkyCoord(ra=refs["ra"][pm_ok], dec=refs["dec"][pm_ok])
    assert got.separation(SkyCoord(ra=moved.ra, dec=moved.dec)).to_value(u.mas).max() < 0.01
    # Stars without proper motion stay at the catalog position.
    np.testing.assert_array_equal(refs["ra"][~pm_ok].value, gaia["ra"][sel][~pm_ok])


def test_parquet_input_in_njy_with_errors_and_content_detection(tmp_path):
    rng = np.random.default_rng(3)
    n = 500
    ra, dec = rng.uniform(10, 12, n), rng.uniform(-1, 1, n)
    ra[[5, 77]] = np.nan  # dropped and counted
    flux, err = rng.uniform(1e3, 1e5, n), rng.uniform(10, 100, n)
    ids = rng.permutation(10**6)[:n].astype(np.int64)
    source = tmp_path / "input.bin"  # no telling extension: detected from the PAR1 magic
    pq.write_table(pa.table({"objid": ids, "RA": ra, "DE": dec, "f": flux, "df": err}), source)
    manifest = build_refcat(
        source,
        tmp_path / "rc",
        ra_col="ra",  # case-insensitive fallback
        dec_col="DE",
        bands={"r": ("f", "nJy")},
        band_errors={"r": "df"},
        id_col="objid",
        nside=64,
    )
    assert manifest.n_dropped_nonfinite == 2 and manifest.total_rows == n - 2
    table = _read_all_shards(tmp_path / "rc").to_pydict()
    good = np.isfinite(ra)
    lookup = {int(i): k for k, i in enumerate(ids)}
    rows = np.array([lookup[i] for i in table["id"]])
    assert set(rows) == set(np.flatnonzero(good))
    np.testing.assert_array_equal(table["r_flux"], flux[rows])
    np.testing.assert_array_equal(table["r_fluxErr"], err[rows])


# ------------------------------------------------------------------- manifest


def test_manifest_contents_and_checksums(tmp_path):
    rng = np.random.default_rng(1)
    n = 3000
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    mag, magerr = rng.uniform(15, 22, n), rng.uniform(0.01, 0.1, n)
    src = tmp_path / "cat.csv"
    pacsv.write_csv(pa.table({"ra": ra, "dec": dec, "m": mag, "e": magerr}), src)
    out = tmp_path / "rc"
    build_refcat(
        src,
        out,
        ra_col="ra",
        dec_col="dec",
        bands={"g": ("m", "mag")},
        band_errors={"g": "e"},
        nside=4,
    )
    data = json.loads((out / "manifest.json").read_text())
    assert data["format_version"] == 1 and data["nside"] == 4 and data["ordering"] == "nested"
    assert data["source"] == "cat.csv" and data["total_rows"] == n and data["epoch"] is None
    assert data["columns"] == {
        "id": "",
        "ra": "deg",
        "dec": "deg",
        "g_flux": "nJy",
        "g_fluxErr": "nJy",
    }
    assert data["bands"]["g"]["source_unit"] == "mag"
    assert sum(s["rows"] for s in data["shards"]) == n
    hp = HEALPix(nside=4, order="nested")
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["manifest.json"] + [s["file"] for s in data["shards"]])
    for shard in data["shards"]:
        path = out / shard["file"]
        assert shard["file"] == f"shard_4_{shard['pixel']}.parquet"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        table = pq.read_table(path)
        assert table.num_rows == shard["rows"]
        assert table.schema.field("id").type == pa.int64()
        pix = hp.lonlat_to_healpix(table["ra"].to_numpy() * u.deg, table["dec"].to_numpy() * u.deg)
        assert np.all(pix == shard["pixel"])
        k = table["id"].to_numpy()
        np.testing.assert_allclose(
            table["g_fluxErr"].to_numpy(), 0.4 * math.log(10) * mag_to_njy(mag[k]) * magerr[k]
        )

    # Tampered shard: detected by checksum on load.
    victim = out / data["shards"][0]["file"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    loader = RefcatLoader(out)
    with pytest.raises(InvalidInputError, match="corrupt"):
        loader.load_shard(data["shards"][0]["pixel"])
    # Broken or missing manifests.
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="JSON"):
        RefcatLoader(out)
    (out / "manifest.json").write_text(json.dumps({**data, "total_rows": n + 1}))
    with pytest.raises(InvalidInputError, match="total_rows"):
        RefcatLoader(out)
    with pytest.raises(InvalidInputError, match=r"no manifest\.json"):
        RefcatLoader(tmp_path)


@requires_real_data
def test_output_directory_rules(tmp_path):
    kwargs = dict(ra_col="ra", dec_col="dec", bands={"G": ("phot_g_mean_mag", "mag")})
    out = tmp_path / "rc"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="not empty"):
        build_refcat(MICROOBS_CSV, out, **kwargs)
    with pytest.raises(InvalidInputError, match="not a reference catalog"):
        build_refcat(MICROOBS_CSV, out, overwrite=True, **kwargs)
    (out / "keep.txt").unlink()
    build_refcat(MICROOBS_CSV, out, **kwargs)
    first = RefcatLoader(out).manifest
    manifest = build_refcat(MICROOBS_CSV, out, overwrite=True, nside=8, **kwargs)
    assert first.nside == 32 and RefcatLoader(out).manifest == manifest and manifest.nside == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rc"]  # no temporary leftovers


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
    wcs = _tan_wcs(ra0, dec0)
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
    ra_v, dec_v = _box(ra0, dec0, half, angle)
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
    ra_v, dec_v = _box(10.0, 10.0, 0.1)
    assert not loader.covers(ra_v, dec_v)
    with pytest.raises(RefcatCoverageError, match=r"does not cover the field centred at RA 10\.0"):
        loader.load_region(ra_v, dec_v, margin_deg=0.05)
    empty = loader.load_region(ra_v, dec_v, margin_deg=0.05, require_coverage=False)
    assert len(empty) == 0 and "irac1_flux" in empty.colnames
    here_ra, here_dec = _box(275.9, -12.8, 0.05)
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


# ------------------------------------------------------------------------ CLI


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setitem(promptcal.commands.cli.COMMAND_MODULES, "refcat", "refcat")
    return promptcal.commands.cli.main


@requires_real_data
def test_cli_build_and_info(cli, tmp_path, capsys):
    out = tmp_path / "rc"
    code = cli(
        [
            "refcat",
            "build",
            str(MICROOBS_CSV),
            "--output",
            str(out),
            "--ra",
            "ra",
            "--dec",
            "dec",
            "--band",
            "G=phot_g_mean_mag:mag",
            "--band",
            "BP=phot_bp_mean_mag",
            "--id",
            "source_id",
            "--nside",
            "16",
        ]
    )
    assert code == 0
    assert "123 rows" in capsys.readouterr().out
    manifest = RefcatLoader(out).manifest
    assert manifest.nside == 16 and sorted(manifest.bands) == ["BP", "G"]
    assert manifest.bands["BP"].source_unit == "mag"
    assert cli(["refcat", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["total_rows"] == 123


def _binary_file(directory: Path) -> Path:
    (directory / "x.dat").write_bytes(b"\x00\x01\x02")
    return directory / "x.dat"


def _header_only_csv(directory: Path) -> Path:
    (directory / "e.csv").write_text("ra,dec,phot_g_mean_mag\n")
    return directory / "e.csv"


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (lambda d: MICROOBS_CSV, ["--band", "G=nope"], "has no column 'nope'"),
        (_binary_file, [], "cannot tell the format"),
        (_header_only_csv, [], "has no rows"),
        (lambda d: MICROOBS_CSV, ["--pm-ra", "ra", "--pm-dec", "dec"], "epoch"),
    ],
    ids=["missing-column", "unknown-format", "empty", "pm-without-epoch"],
)
def test_cli_failures_exit_2_with_one_line(cli, tmp_path, capsys, make_input, extra, message):
    args = ["refcat", "build", str(make_input(tmp_path)), "-o", str(tmp_path / "rc")]
    args += ["--ra", "ra", "--dec", "dec", *extra]
    if "--band" not in extra:
        args += ["--band", "G=phot_g_mean_mag"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptcal: invalid input:") and message in err
    assert not (tmp_path / "rc").exists()
