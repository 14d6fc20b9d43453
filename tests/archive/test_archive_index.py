"""``promptcal archive index``: header mapping, visits, manifest, and the files it skips.

- acceptance d: a directory with good frames, a truncated file, a non-FITS file and a
  FITS table indexes the good frames, lists each bad file with a one-line reason and
  exits 0; with only bad files it exits 2 and writes nothing;
- MicroObservatory: the UT of each frame (``UT-OBS``, or the local ``DATE-OBS`` with
  its ``-0700`` offset) agrees with the UT in the file name, and the pointing hint,
  scale, camera and partition key are those of the header and the mapping;
- DECam: the CCD, exposure number, WCS centre and the weight/mask companions;
- Spitzer: undatable with the standard cards, indexed with its mapping; the centre of
  the Galactic CAR mosaic in ICRS;
- synthetic headers: detectors of one exposure form one visit, and duplicates,
  calibration frames, other instruments and files without time or pointing are skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from realdata import REAL, requires_real_data

from promptcal.archive import index_archive, load_mapping
from promptcal.commands.cli import main
from promptcal.core.camera import load_camera
from promptcal.core.errors import InvalidInputError
from promptcal.night.manifest import read_manifest
from promptcal.replay.jobs import build_jobs, next_visit_message

NIGHT = REAL / "microobs-hatp32-night"


def _bad_files(directory):
    """A truncated frame, a text file named .fits, and a FITS table."""
    good = (NIGHT / "HATP-32171220063312.fits").read_bytes()
    (directory / "truncated.fits").write_bytes(good[: len(good) // 2])
    (directory / "notes.fits").write_text("observing log: clouds after 3 am\n")
    table = fits.BinTableHDU.from_columns([fits.Column("ra", "D", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(directory / "catalog.fits")


@requires_real_data
def test_bad_files_are_listed_and_the_good_ones_indexed(tmp_path, capsys):
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("HATP-32171220013343.fits", "HATP-32171220053312.fits"):
        shutil.copy(NIGHT / name, archive / name)
    _bad_files(archive)
    out = tmp_path / "night" / "manifest.json"
    code = main(["archive", "index", str(archive), "--output", str(out), "--config",
                 "microobservatory"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    manifest, _ = read_manifest(out)
    assert sorted(e.uri.rsplit("/", 1)[-1] for e in manifest.exposures) == [
        "HATP-32171220013343.fits",
        "HATP-32171220053312.fits",
    ]
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in manifest.skipped}
    assert set(reasons) == {"truncated.fits", "notes.fits", "catalog.fits"}
    assert reasons["truncated.fits"].startswith("truncated: HDU 0 data need bytes")
    assert reasons["notes.fits"].startswith("not a FITS file")
    assert reasons["catalog.fits"].startswith("no 2-D image HDU")
    assert "BINTABLE table, 3 rows" in reasons["catalog.fits"]
    for name, reason in reasons.items():  # one line each, also on stdout
        assert "\n" not in reason
        assert f"{archive / name}: {reason}" in printed
    assert "2 indexed in 2 visits, 3 skipped" in printed


def test_nothing_usable_exits_2_and_writes_nothing(tmp_path, capsys):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "readme.txt").write_text("no frames here")
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(archive / "undated.fits")
    out = tmp_path / "night" / "manifest.json"
    assert main(["archive", "index", str(archive), "--output", str(out)]) == 2
    printed = capsys.readouterr().out
    assert "readme.txt: not a FITS file" in printed
    assert "undated.fits: no exposure time > 0 s" in printed
    assert not out.exists()


@requires_real_data
def test_microobservatory_night_times_and_hints(tmp_path):
    result = index_archive(
        NIGHT, tmp_path / "manifest.json", mapping=load_mapping("microobservatory"),
        pattern="*.fits", refcat=tmp_path / "refcat",
    )  # fmt: skip
    assert len(result.frames) == 104 and not result.skipped
    manifest, base = read_manifest(result.manifest_path)
    assert manifest.instrument == "MicroObservatory"
    assert manifest.partition_key == "visit-detector"  # one detector: spread over partitions
    assert len(manifest.visits) == 104 and len({v.visit for v in manifest.visits}) == 104
    default = index_archive(NIGHT, tmp_path / "d" / "manifest.json", pattern="*.fits")
    local_time = {f.path.name: f.mid_time for f in default.frames}  # DATE-OBS, -0700
    for exposure, frame in zip(manifest.exposures, result.frames, strict=True):
        name = exposure.uri.rsplit("/", 1)[-1]
        # The file name carries the UT of the shutter opening (YYMMDDHHMMSS).
        stamp = re.search(r"(\d{12})\.fits$", name).group(1)
        opened = dt.datetime.strptime(stamp, "%y%m%d%H%M%S").replace(tzinfo=dt.UTC)
        start = exposure.mid_exposure_time - dt.timedelta(seconds=30.0)
        assert abs((start - opened).total_seconds()) < 1.0, name
        assert local_time[name] == exposure.mid_exposure_time
        assert str(exposure.visit).startswith("20171219")  # the evening's day_obs
        assert (exposure.boresight_ra, exposure.boresight_dec) == (31.312099, 46.769087)
        assert exposure.pixel_scale == 5.21 and frame.pointing_source == "RA/DEC"
        assert exposure.ready_time == exposure.mid_exposure_time + dt.timedelta(seconds=30)
    starts = [v.start_time for v in manifest.visits]
    assert starts == sorted(starts) and manifest.visits[0].exposure_time == 60.0
    camera = load_camera(base / manifest.camera)
    (det,) = camera.detectors
    assert (det.width, det.height, det.saturation) == (650, 500, 4095.0)
    job = build_jobs(manifest)[5]
    message = next_visit_message(manifest.instrument, job, 0.0)
    assert message.pixel_scale == 5.21 and message.boresight_dec == 46.769087


@requires_real_data
def test_decam_ccd_with_weight_and_mask_companions(tmp_path):
    d = REAL / "decam-legacypipe-n6"
    result = index_archive(d, tmp_path / "manifest.json")
    (frame,) = result.frames
    assert frame.path.name == "c4d_171113_060340_ooi_r_ls9.N6.fits"
    assert (frame.instrument, frame.detector, frame.visit, frame.band) == ("DECam", 37, 695765, "r")
    manifest, _ = read_manifest(result.manifest_path)
    (exposure,) = manifest.exposures
    assert exposure.weight_uri.endswith("_oow_r_ls9.N6.fits")
    assert exposure.mask_uri.endswith("_ood_r_ls9.N6.fits")
    assert manifest.visits[0].start_time == dt.datetime(2017, 11, 13, 6, 3, 40, 37227, dt.UTC)
    wcs = WCS(fits.getheader(d / frame.path.name, 1))
    ra, dec = wcs.all_pix2world([(280 - 1) / 2], [(375 - 1) / 2], 0)
    assert frame.pointing_source == "WCS"
    assert (
        SkyCoord(ra[0], dec[0], unit="deg")
        .separation(SkyCoord(frame.ra, frame.dec, unit="deg"))
        .arcsec
        < 0.01
    )
    assert frame.pixel_scale == pytest.approx(0.263, abs=0.002)
    skipped = sorted(p.name for p, _ in result.skipped)
    assert skipped == ["PROVENANCE.md", "gaia-dr2-chunk-05483.fits", "gaia-dr2-chunk-05611.fits"]


@requires_real_data
def test_spitzer_mosaic_needs_its_mapping(tmp_path):
    d = REAL / "spitzer-glimpse-irac2"
    plain = index_archive(d, tmp_path / "a" / "manifest.json", pattern="*.fits")
    assert plain.manifest_path is None
    assert plain.skipped[0][1].startswith("cannot date: no parseable time in DATE-AVG")
    result = index_archive(
        d, tmp_path / "b" / "manifest.json", mapping=load_mapping("spitzer-irac"), pattern="*.fits"
    )
    (frame,) = result.frames
    assert frame.band == "irac2" and frame.instrument == "IRAC"
    wcs = WCS(fits.getheader(d / "spitzer_example_image.fits"))
    lon, lat = wcs.all_pix2world([512.0], [256.0], 0)
    centre = SkyCoord(lon[0], lat[0], unit="deg", frame="galactic").icrs
    assert centre.separation(SkyCoord(frame.ra, frame.dec, unit="deg")).arcsec < 0.01
    assert frame.pixel_scale == pytest.approx(1.2, abs=1e-3)
    # +y of a Galactic north-up map, seen in ICRS: position angle of Galactic north.
    up = SkyCoord(*wcs.all_pix2world([512.0], [257.0], 0), unit="deg", frame="galactic").icrs
    assert frame.rotation == pytest.approx(centre.position_angle(up).deg[0] - 360.0, abs=0.01)


def _frame(path, **cards):
    header = fits.Header()
    for key, value in cards.items():
        header[key.replace("_", "-")] = value
    fits.PrimaryHDU(np.zeros((20, 30), np.int16), header=header).writeto(path)


def test_grouping_and_skips_on_synthetic_headers(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    base = {"INSTRUME": "Cam", "EXPTIME": 10.0, "FILTER": "r", "RA": 10.0, "DEC": -5.0,
            "PIXSCALE": 0.5}  # fmt: skip
    t0, t1 = "2024-03-01T03:00:00.000", "2024-03-01T03:01:00.000"
    _frame(a / "e1_c1.fits", DATE_OBS=t0, CCDNUM=1, **base)
    # Another detector 0.4 s later is the same exposure; a second copy of it is not.
    _frame(a / "e1_c2.fits", DATE_OBS="2024-03-01T03:00:00.400", CCDNUM=2, **base)
    _frame(a / "e1_c2_copy.fits", DATE_OBS="2024-03-01T03:00:00.400", CCDNUM=2, **base)
    _frame(a / "e2_c1.fits", DATE_OBS=t1, CCDNUM=1, **base)
    _frame(a / "flat.fits", DATE_OBS=t1, CCDNUM=3, OBSTYPE="flat", **base)
    _frame(a / "other.fits", DATE_OBS=t1, CCDNUM=4, **{**base, "INSTRUME": "Guider"})
    _frame(a / "nodate.fits", CCDNUM=5, **base)
    _frame(a / "nopointing.fits", DATE_OBS=t1, CCDNUM=6, EXPTIME=5.0, FILTER="r")
    _frame(a / "numbered.fits", DATE_OBS=t1, CCDNUM=1, EXPNUM=4242, **base)
    result = index_archive(a, tmp_path / "n" / "manifest.json")
    reasons = {p.name: r for p, r in result.skipped}
    assert set(reasons) == {"e1_c2_copy.fits", "flat.fits", "other.fits", "nodate.fits",
                            "nopointing.fits"}  # fmt: skip
    assert reasons["flat.fits"] == "OBSTYPE='flat' is not a science exposure"
    assert reasons["other.fits"].startswith("instrument Guider, the night's is Cam")
    assert reasons["nodate.fits"].startswith("cannot date")
    assert reasons["nopointing.fits"].startswith("no pointing: no celestial WCS")
    assert reasons["e1_c2_copy.fits"] == "same visit 2024022954000 and detector 2 as e1_c2.fits"
    manifest, _ = read_manifest(result.manifest_path)
    visits = {v.visit: v for v in manifest.visits}
    # 03:00 UTC on 1 March is day_obs 29 February, 15 h = 54000 s after its noon.
    assert sorted(visits) == [4242, 2024022954000, 2024022954060]
    members = {v: sorted(e.detector for e in manifest.exposures if e.visit == v) for v in visits}
    assert members == {2024022954000: [1, 2], 2024022954060: [1], 4242: [1]}
    assert manifest.partition_key == "detector"
    assert json.loads(result.manifest_path.read_text())["config"]["archive"]["files"] == 9


def test_mapping_files_validate():
    for name in ("microobservatory", "decam-cp", "spitzer-irac", "default"):
        assert load_mapping(name).name == name
    with pytest.raises(InvalidInputError, match="neither a file nor one of"):
        load_mapping("no-such-telescope")
