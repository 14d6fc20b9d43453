"""Building reference catalogs: flux conversions, the real catalogs (CSV, VOTable,
FITS, Parquet), the manifest and the output-directory rules.
"""

from __future__ import annotations

import hashlib
import json
import math

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
from realdata import requires_real_data
from refcat_data import (
    GAIA_FITS,
    MICROOBS_CSV,
    MICROOBS_WCS,
    SPITZER_CSV,
    SPITZER_XML,
    box_corners,
    csv_columns,
    read_all_shards,
)

from promptcal.core.errors import InvalidInputError
from promptcal.refcat import (
    RefcatLoader,
    build_refcat,
    mag_err_to_njy,
    mag_to_njy,
)

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
    truth = csv_columns(SPITZER_CSV)
    table = read_all_shards(tmp_path / "rc").to_pydict()
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
    truth = csv_columns(SPITZER_CSV)  # same 224 rows in the same order, with l, b copied
    table = read_all_shards(tmp_path / "rc").sort_by("id").to_pydict()
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
    truth = csv_columns(MICROOBS_CSV)
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
    ra_v, dec_v = box_corners(121.0262, 5.1135, 0.05)
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
    table = read_all_shards(tmp_path / "rc").to_pydict()
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
