"""Real archived frames through ``archive index`` and ``replay`` (issue 12, acceptance a).

- 21 frames spread over the MicroObservatory night (every 5th of 104) are indexed and
  replayed ``--to local`` (2 processes) and ``--to kafka`` (bundled broker, two
  ``promptcal serve`` workers, speed max). Every frame gets a result: calibrated, or
  failed with its reason, and never for want of a pointing hint (it travels in the
  ``next-visit`` message, which at full speed may arrive after the pixels). The Kafka
  products equal the local ones byte for byte (``summary.json`` without its timestamps
  and timings). The night report's solved frames sit where the sky is: the first frame
  within 10″ of its independently solved WCS, every solved centre within 30′ of the
  header pointing, the scale 5.16–5.19″/px (PROVENANCE.md);
- the DECam CCD replays with its weight and mask companions: the calexp's variance
  follows the inverse-variance map.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from realdata import REAL, requires_real_data

from promptcal.commands.calibrate import build_config
from promptcal.commands.cli import main
from promptcal.io.products import read_calexp
from promptcal.replay.jobs import read_results
from promptcal.replay.kafka import replay_kafka
from promptcal.replay.local import replay_local
from promptcal.replay.workers import ServeFleet
from promptcal.report.html import write_report
from promptcal.stream.topics import create_topics

pytest_plugins = ["kafka_fixtures"]
pytestmark = requires_real_data

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NIGHT = REAL / "microobs-hatp32-night"
#: Frames of the subset solved today; issue 12's astrometry work raises it to >= 20 of 21.
MIN_SOLVED = 20


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """21 frames spread over the night, indexed; returns the manifest."""
    tmp = tmp_path_factory.mktemp("subset")
    frames = tmp / "frames"
    frames.mkdir()
    for path in sorted(NIGHT.glob("*.fits"))[::5]:
        (frames / path.name).symlink_to(path)
    refcat = tmp / "refcat"
    gaia = REAL / "microobs-hatp32" / "gaia_dr3_g10_hatp32_r1.5deg.csv"
    assert main(["refcat", "build", str(gaia), "--ra", "ra", "--dec", "dec", "--band",
                 "G=phot_g_mean_mag:mag", "--output", str(refcat)]) == 0  # fmt: skip
    manifest = tmp / "night" / "manifest.json"
    assert main(["archive", "index", str(frames), "--output", str(manifest), "--config",
                 str(CONFIGS / "archive" / "microobservatory.json"),
                 "--refcat", str(refcat)]) == 0  # fmt: skip
    return manifest


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.glob("*/*/*/*")):
        data = path.read_bytes()
        if path.name == "summary.json":
            doc = json.loads(data)
            del doc["created"], doc["timings"]
            data = json.dumps(doc, sort_keys=True).encode()
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.slow
@pytest.mark.kafka
def test_subset_through_kafka_equals_local_and_every_frame_is_answered(
    subset, kafka_broker, tmp_path
):
    config = CONFIGS / "microobservatory.json"
    local, kafka = tmp_path / "local", tmp_path / "kafka"
    via_local = replay_local(
        subset, local, workers=2, config=build_config(str(config), []), progress=False
    )
    prefix = f"a{uuid.uuid4().hex[:8]}."
    create_topics(kafka_broker.bootstrap, partitions=4, prefix=prefix)
    fleet = ServeFleet(
        2, bootstrap=kafka_broker.bootstrap, group=f"{prefix}g", prefix=prefix,
        refcat=subset.parent.parent / "refcat", output=kafka, camera=subset.parent / "camera.json",
        logs=tmp_path / "logs", config=config,
    )  # fmt: skip
    with fleet:
        fleet.wait_ready()
        via_kafka = replay_kafka(
            subset, kafka_broker.bootstrap, prefix=prefix, output=kafka, timeout=90.0,
            progress=False,
        )  # fmt: skip
        assert fleet.stop() == [0, 0]
    for summary in (via_local, via_kafka):
        assert summary.total == 21 and summary.processed == 21 and not summary.missing
        assert summary.dead_letters == 0
    calibrated = [r["message"] for r in read_results(kafka) if r["kind"] == "calibrated"]
    assert len(calibrated) == 21
    for message in calibrated:
        if message["status"] == "failed":
            assert message["error_type"] and message["error_message"]
            assert "pointing hint" not in message["error_message"]  # the hint arrived
    assert _hashes(kafka) == _hashes(local)
    assert len(_hashes(kafka)) >= 21 * 3

    _, numbers = write_report(kafka)
    pointing = numbers["pointing"]
    assert len(pointing["not_solved"]) == 21 - pointing["n_solved"]
    assert all(m["file"] and m["reason"] for m in pointing["not_solved"])
    assert pointing["n_solved"] >= MIN_SOLVED
    solved = [r for r in pointing["rows"] if r["solved"]]
    for row in solved:
        assert row["offset"] < 30.0  # arcmin: the drift is up to ~25'
        assert 5.16 <= row["pixel_scale"] <= 5.19
    first = next(r for r in pointing["rows"] if r["file"] == "HATP-32171220013343.fits")
    assert first["solved"]
    solved_by_hand = REAL / "microobs-hatp32" / "HATP-32171220013343.derived_wcs.hdr"
    truth = WCS(fits.Header.fromtextfile(solved_by_hand))
    ra, dec = truth.all_pix2world([324.5], [249.5], 0)
    centre = SkyCoord(first["ra"], first["dec"], unit="deg")
    assert centre.separation(SkyCoord(ra[0], dec[0], unit="deg")).arcsec < 10.0
    assert (kafka / "report" / "drift.png").is_file()


@pytest.mark.slow
def test_decam_ccd_replays_with_its_weight_and_mask(tmp_path):
    d = REAL / "decam-legacypipe-n6"
    refcat = tmp_path / "refcat"
    assert main(["refcat", "build", str(d / "gaia-dr2-chunk-05483.fits"), "--ra", "ra", "--dec",
                 "dec", "--band", "G=phot_g_mean_mag:mag", "--pm-ra", "pmra", "--pm-dec", "pmdec",
                 "--epoch", "2015.5", "--output", str(refcat)]) == 0  # fmt: skip
    manifest = tmp_path / "night" / "manifest.json"
    assert main(["archive", "index", str(d), "--output", str(manifest), "--config", "decam-cp",
                 "--refcat", str(refcat)]) == 0  # fmt: skip
    config = build_config(str(CONFIGS / "decam-cutout.json"), [])
    summary = replay_local(manifest, tmp_path / "out", config=config, progress=False)
    assert summary.succeeded == 1
    product = tmp_path / "out" / "DECam" / "695765" / "37"
    assert json.loads((product / "summary.json").read_text())["status"] == "success"
    exposure, _ = read_calexp(product / "calexp.fits")
    weight = fits.getdata(d / "c4d_171113_060340_oow_r_ls9.N6.fits", 1)
    good = weight > 0
    # variance [nJy^2] = calibration^2 / weight: proportional to the weight map's inverse.
    ratio = np.asarray(exposure.variance, float)[good] * weight[good]
    assert np.std(ratio) / np.mean(ratio) < 1e-3
    assert np.std(weight[good]) / np.mean(weight[good]) > 0.01  # the map is not flat
