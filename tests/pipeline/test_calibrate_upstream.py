"""The full ``CalibrateImageTask.run`` on LSST's own test fixture (spec §D ``_check_run``;
issue 4 acceptance a).

The fixture (``promptcal.simulate.upstream``) is a 201×181 px exposure at 0.2″/px
centred on (245°, −45°) with six Gaussian point sources (σ = 2 px), one extended
source, noise σ = 10 and a +500 background, calibrated at 12.3 nJy/count. The refcat
is the truth itself. Each variant runs the pipeline once (module-scoped fixtures).
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from promptcal.core.errors import InvalidInputError, NoPsfStarsToStarsMatchError
from promptcal.core.ids import COUNTER_BITS, IdGenerator
from promptcal.core.task import Struct
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.pipeline.task import CalibrateImageTask
from promptcal.refcat import RefcatLoader
from promptcal.refcat.loader import RefcatCoverageError
from promptcal.simulate.upstream import (
    CALIBRATION,
    PSF_SIGMA,
    SKY_CENTER,
    make_upstream_dataset,
    make_upstream_snaps,
)

#: Overrides of upstream's test: 2 sky sources, 3-point astrometric patterns, loose
#: magnitude-outlier rejection (the fixture's seven sources are all there is).
OVERRIDES = {
    "sky_sources.n_sources": 2,
    "astrometry.num_points_for_shape": 3,
    "astrometry.magnitude_outlier_rejection_nsigma": 9.0,
}
#: 7 refs within the bbox half-diagonal r = 0.0075135° of the centre [deg⁻²].
REF_CAT_SOURCE_DENSITY = 39470.0430204
#: psf_stars ↔ stars and astrometry ↔ photometry matches share centroids to this [px].
CENTROID_ATOL = 3e-4
#: Every non-sky star lies within this of its truth position [mas].
ASTROMETRY_TOLERANCE_MAS = 35.0


def make_id_generator() -> IdGenerator:
    """The observation packer of the upstream test: 10000 visits, 99 detectors, release 2/8."""
    return IdGenerator(
        visit=1234, detector=12, n_visits=10000, n_detectors=99, release=2, n_releases=8
    )


def calibrate(refcat_dir, exposures, **overrides):
    """Run the task once; returns ``Struct(task, result)``."""
    config = CalibrateImageConfig().with_overrides({**OVERRIDES, **overrides})
    task = CalibrateImageTask(config, refcat=RefcatLoader(refcat_dir))
    result = task.run(exposures=exposures, id_generator=make_id_generator())
    return Struct(task=task, result=result)


@pytest.fixture(scope="module")
def data():
    """The fixture's truth (the exposure given to each run is a fresh copy)."""
    return make_upstream_dataset()


@pytest.fixture(scope="module")
def refcat_dir(data, truth_refcat):
    return truth_refcat(data.truth, "truth")


@pytest.fixture(scope="module")
def runs(data, refcat_dir):
    """Variant name -> Struct(task, result), each run once on first use."""
    factories = {
        "single": lambda: calibrate(refcat_dir, make_upstream_dataset().exposure),
        "two_snaps": lambda: calibrate(refcat_dir, make_upstream_snaps()),
        "no_refit": lambda: calibrate(
            refcat_dir, make_upstream_dataset().exposure, **{"astrometry.do_refit": False}
        ),
        "no_calibrate_pixels": lambda: calibrate(
            refcat_dir, make_upstream_dataset().exposure, do_calibrate_pixels=False
        ),
        "no_optionals": lambda: calibrate(
            refcat_dir, make_upstream_dataset().exposure, optional_outputs=()
        ),
    }
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = factories[name]()
        return cache[name]

    return get


def non_sky(stars):
    return stars[~np.asarray(stars["sky_source"], bool)]


# --- the _check_run helpers (spec §D) ------------------------------------------------


def check_counts(result):
    assert len(result.background) == 4
    assert int(np.sum(result.psf_stars["calib_psf_used"])) == 3
    assert len(result.stars) == 6
    assert int(np.sum(result.stars["calib_psf_used"])) == 3
    assert int(np.sum(result.stars["sky_source"])) == 2


def check_summary_and_metadata(task, result):
    assert task.metadata["REF_CAT_SOURCE_DENSITY"] == pytest.approx(
        REF_CAT_SOURCE_DENSITY, rel=1e-3
    )
    summary = result.summary
    assert summary["refCatSourceDensity"] == pytest.approx(REF_CAT_SOURCE_DENSITY, rel=1e-3)
    assert summary["psfSigma"] == pytest.approx(PSF_SIGMA, rel=1e-2)
    assert summary["ra"] == pytest.approx(SKY_CENTER[0], rel=1e-7)
    assert summary["dec"] == pytest.approx(SKY_CENTER[1], rel=1e-7)
    offset_mean = task.metadata["SFM_ASTROM_OFFSET_MEAN"]
    assert 0 <= offset_mean < ASTROMETRY_TOLERANCE_MAS / 1000.0  # [arcsec]
    assert np.isfinite(task.metadata["SFM_ASTROM_OFFSET_STD"])
    assert np.isfinite(task.metadata["SFM_ASTROM_OFFSET_MEDIAN"])
    assert summary["astromOffsetMean"] == pytest.approx(offset_mean)
    assert result.output_exposure.metadata["LSST CALIB ILLUMCORR APPLIED"] is False


def check_coordinates(result, truth):
    stars = result.stars
    for name in ("coord_ra", "coord_dec"):
        assert np.all(np.isfinite(np.asarray(stars[name], float))), name  # sky sources too
    stars = non_sky(stars)
    measured = SkyCoord(
        np.asarray(stars["coord_ra"], float) * u.rad, np.asarray(stars["coord_dec"], float) * u.rad
    )
    _, separation, _ = measured.match_to_catalog_sky(SkyCoord(truth["ra"], truth["dec"]))
    assert np.all(separation.to_value(u.mas) < ASTROMETRY_TOLERANCE_MAS), separation.to(u.mas)


def check_photo_calib(result):
    assert result.output_exposure.photo_calib.mean == 1.0
    assert result.applied_photo_calib.mean == pytest.approx(CALIBRATION, rel=1e-2)
    assert result.output_exposure.metadata["BUNIT"] == "nJy"


def check_fluxes(result, truth):
    stars = result.stars
    assert stars["slot_PsfFlux_flux"].unit == u.nJy
    assert stars["slot_PsfFlux_mag"].unit == u.ABmag
    stars = non_sky(stars)
    point = truth[~np.asarray(truth["is_extended"], bool)]
    xy = np.column_stack(
        [np.asarray(stars["slot_Centroid_x"], float), np.asarray(stars["slot_Centroid_y"], float)]
    )
    d = np.hypot(xy[:, None, 0] - point["x"][None, :], xy[:, None, 1] - point["y"][None, :])
    nearest = np.argmin(d, axis=1)
    assert np.all(d[np.arange(len(xy)), nearest] < 1.0)
    np.testing.assert_allclose(
        np.asarray(stars["slot_PsfFlux_flux"], float), point["truth_flux"][nearest], rtol=0.1
    )
    np.testing.assert_allclose(
        np.asarray(stars["slot_PsfFlux_mag"], float), point["truth_mag"][nearest], rtol=0.01
    )


def check_pixels(result, data):
    """(calibrated image + calibrated background) / 12.3 reproduces the input pixels."""
    exposure = result.output_exposure
    restored = (exposure.image + result.background.image()) / CALIBRATION
    np.testing.assert_allclose(restored, data.original_image, rtol=1e-2)


def by_id(catalog, ids, id_column="id"):
    """Rows of ``catalog`` with the given ``ids`` (every id must be present)."""
    catalog_ids = np.asarray(catalog[id_column], np.int64)
    order = np.argsort(catalog_ids)
    index = order[np.searchsorted(catalog_ids, ids, sorter=order)]
    np.testing.assert_array_equal(catalog_ids[index], ids)
    return catalog[index]


def check_psf_star_match(result):
    stars = result.stars
    matched = stars[np.asarray(stars["psf_id"], np.int64) != 0]
    assert len(matched) == 3
    psf = by_id(result.psf_stars, np.asarray(matched["psf_id"], np.int64))
    np.testing.assert_allclose(
        np.asarray(matched["slot_Centroid_x"], float),
        np.asarray(psf["slot_Centroid_x"], float),
        atol=CENTROID_ATOL,
        rtol=0,
    )
    assert np.all(np.asarray(psf["calib_psf_used"], bool) == np.asarray(matched["calib_psf_used"]))


def check_match_outputs(result):
    """astrometry_matches ↔ photometry_matches on the shared source key, when on.

    LSST's astrometry matches come from psf_stars (``src_id`` is a PSF-star id, the
    photometry matches' ``src_psf_id``); the star-phase refit's come from the star
    phase and carry ``src_psf_id`` themselves.
    """
    astrometry = result.astrometry_matches
    photometry = result.photometry_matches
    assert len(photometry) == 4  # every non-sky star has its truth reference
    key = "src_psf_id" if "src_psf_id" in astrometry.colnames else "src_id"
    a_ids = np.asarray(astrometry[key], np.int64)
    p_ids = np.asarray(photometry["src_psf_id"], np.int64)
    common = np.intersect1d(a_ids[a_ids != 0], p_ids[p_ids != 0])
    assert common.size == 3  # the three PSF stars
    a = by_id(astrometry, common, key)
    p = by_id(photometry, common, "src_psf_id")
    np.testing.assert_allclose(
        np.asarray(a["src_slot_Centroid_x"], float),
        np.asarray(p["src_slot_Centroid_x"], float),
        atol=CENTROID_ATOL,
        rtol=0,
    )
    np.testing.assert_array_equal(np.asarray(a["ref_id"]), np.asarray(p["ref_id"]))


def check_run(run, data):
    """Everything upstream's ``_check_run`` asserts (bar the shapelet values)."""
    task, result = run.task, run.result
    check_counts(result)
    check_summary_and_metadata(task, result)
    check_coordinates(result, data.truth)
    check_photo_calib(result)
    check_fluxes(result, data.truth)
    check_pixels(result, data)
    check_psf_star_match(result)
    check_match_outputs(result)


# --- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["single", "two_snaps", "no_refit"])
def test_run(runs, data, variant):
    check_run(runs(variant), data)


def test_ids_from_generator(runs):
    result = runs("single").result
    packed = make_id_generator().packed
    for catalog in (result.psf_stars, result.stars):
        ids = np.asarray(catalog["id"], np.int64)
        assert np.all(ids > 1e9)
        assert np.all(ids >> COUNTER_BITS == packed)  # the (visit, detector, release) packing
        assert np.unique(ids).size == ids.size


def test_refit_carries_psf_ids(runs):
    """The refit's astrometry matches are star-phase sources; no refit: PSF stars."""
    refit = runs("single").result.astrometry_matches
    lsst = runs("no_refit").result
    assert "src_psf_id" in refit.colnames
    assert "src_psf_id" not in lsst.astrometry_matches.colnames
    assert set(np.asarray(lsst.astrometry_matches["src_id"])) <= set(
        np.asarray(lsst.psf_stars["id"])
    )


def test_no_calibrate_pixels(runs, data):
    result = runs("no_calibrate_pixels").result
    assert result.applied_photo_calib is None
    assert result.output_exposure.photo_calib.mean == pytest.approx(CALIBRATION, rel=1e-2)
    assert result.output_exposure.metadata.get("BUNIT") != "nJy"
    # Pixels stay in counts: image + background is the input exactly (no 12.3 factor).
    restored = result.output_exposure.image + result.background.image()
    np.testing.assert_allclose(restored, data.original_image, rtol=1e-2)
    assert np.median(result.background.image()) == pytest.approx(500.0, rel=1e-2)
    check_counts(result)


def test_no_optional_outputs(runs):
    result = runs("no_optionals").result
    for name in ("astrometry_matches", "photometry_matches", "mask"):
        assert not hasattr(result, name), name
    check_counts(result)
    assert result.applied_photo_calib.mean == pytest.approx(CALIBRATION, rel=1e-2)


def test_match_psf_stars_no_matches(runs):
    """Two PSF stars against five stars 500 px away: upstream's "no match" error."""
    run = runs("single")
    psf_stars = run.result.psf_stars[:2].copy()
    stars = run.result.stars[:5].copy()
    stars["slot_Centroid_x"] = np.asarray(stars["slot_Centroid_x"], float) + 500.0
    assert np.asarray(stars["base_SdssCentroid_x"], float).min() > 500  # the slot target moved
    with pytest.raises(NoPsfStarsToStarsMatchError) as info:
        run.task.match_psf_stars(psf_stars, stars, run.result.output_exposure)
    assert "No psf stars out of 2 matched 5 calib stars" in str(info.value)
    assert info.value.metadata == {"n_psf_stars": 2, "n_stars": 5}


def test_refcat_not_covering_field(data, truth_refcat):
    """A refcat 30° away from the field is an input error, raised before any work."""
    far = truth_refcat(data.truth, "truth", dec_offset=30.0)
    config = CalibrateImageConfig().with_overrides(OVERRIDES)
    task = CalibrateImageTask(config, refcat=RefcatLoader(far))
    with pytest.raises(RefcatCoverageError) as info:
        task.run(exposures=make_upstream_dataset().exposure, id_generator=make_id_generator())
    assert isinstance(info.value, InvalidInputError)
