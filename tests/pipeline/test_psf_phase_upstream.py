"""PSF phase on LSST's own ``test_calibrateImage.py`` fixture (spec §D; issue 3 acceptance a).

The fixture (``promptcal.simulate.upstream``) has six Gaussian point sources of σ = 2 px
with ``instFlux = k · 10 · √(4π σ²)`` for k = 6 … 1000, one extended source, noise σ = 10
and a +500 background. Expected: the PSF pass detects k = 150, 400, 1000 and the extended
source; the three point sources are ``calib_psf_used``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from promptcal.core.errors import AllCentroidsFlaggedError
from promptcal.core.ids import IdGenerator
from promptcal.core.psf_model import GaussianPsf
from promptcal.pipeline.config import CalibrateImageConfig
from promptcal.pipeline.snaps import combine_snaps
from promptcal.pipeline.task import CalibrateImageTask
from promptcal.simulate.upstream import (
    K_VALUES,
    PSF_SIGMA,
    make_bad_centroid_variant,
    make_upstream_dataset,
    make_upstream_snaps,
)

#: k values of the point sources bright enough to be PSF stars (≥ 50σ peaks).
PSF_STAR_K = (150, 400, 1000)
#: k values of the point sources kept in the star catalog (S/N(CalibFlux) > 10).
STAR_K = (45, 150, 400, 1000)


def make_id_generator() -> IdGenerator:
    """The observation packer of the upstream test: 10000 visits, 99 detectors, release 2/8."""
    return IdGenerator(
        visit=1234, detector=12, n_visits=10000, n_detectors=99, release=2, n_releases=8
    )


def truth_rows(truth, ks):
    """Truth rows of the point sources with the given k (the extended source excluded)."""
    point = ~np.asarray(truth["is_extended"], bool)
    rows = truth[point]
    by_k = dict(zip(K_VALUES, range(len(K_VALUES)), strict=True))
    return rows[[by_k[k] for k in ks]]


def xy(cat):
    """(n, 2) slot centroids [px, parent frame]."""
    return np.column_stack(
        [np.asarray(cat["slot_Centroid_x"], float), np.asarray(cat["slot_Centroid_y"], float)]
    )


def nearest(from_xy, to_xy):
    """Index into ``to_xy`` of the nearest point, and the distance [px]."""
    d = np.hypot(from_xy[:, None, 0] - to_xy[None, :, 0], from_xy[:, None, 1] - to_xy[None, :, 1])
    idx = np.argmin(d, axis=1)
    return idx, d[np.arange(len(from_xy)), idx]


@pytest.fixture(scope="module")
def psf_run():
    """compute_psf on a fresh fixture; the exposure is modified in place by the phase."""
    data = make_upstream_dataset()
    task = CalibrateImageTask()
    assert data.exposure.psf is None
    result = task.compute_psf(data.exposure, make_id_generator())
    return data, task, result


def test_compute_psf_counts_and_ids(psf_run):
    _, _, result = psf_run
    psf_stars = result.psf_stars
    assert int(np.sum(psf_stars["calib_psf_used"])) == 3
    ids = np.asarray(psf_stars["id"])
    assert np.all(ids > 1e9)
    assert np.unique(ids).size == ids.size
    # Legacy path: initial background + one re-estimate per PSF pass (2 passes).
    assert len(result.background) == 3
    # Nothing in this fixture is ever reserved.
    assert not np.any(psf_stars["calib_psf_reserved"])


def test_compute_psf_sigma(psf_run):
    data, _, _ = psf_run
    exposure = data.exposure
    # The fitted model is installed, not the initial Gaussian guess.
    assert exposure.psf is not None and not isinstance(exposure.psf, GaussianPsf)
    sigma = exposure.psf.determinant_radius(*exposure.center)
    assert sigma == pytest.approx(PSF_SIGMA, rel=0.01)


def test_psf_stars_match_truth(psf_run):
    data, _, result = psf_run
    psf_stars = result.psf_stars
    used = np.asarray(psf_stars["calib_psf_used"], bool)
    truth = truth_rows(data.truth, PSF_STAR_K)
    truth_xy = np.column_stack([np.asarray(truth["x"], float), np.asarray(truth["y"], float)])
    idx, dist = nearest(xy(psf_stars[used]), truth_xy)
    # Each used star is a different one of the three bright point sources.
    assert sorted(idx.tolist()) == [0, 1, 2]
    assert np.all(dist < 0.05), dist
    flux = np.asarray(psf_stars["base_PsfFlux_instFlux"], float)[used]
    true_flux = np.asarray(truth["truth_instFlux"], float)[idx]
    np.testing.assert_allclose(flux, true_flux, rtol=0.02)
    # The extended source is detected (4 sources) but not used.
    assert len(psf_stars) == 4
    extended = data.truth[np.asarray(data.truth["is_extended"], bool)]
    ext_xy = np.array([[float(extended["x"][0]), float(extended["y"][0])]])
    _, d_ext = nearest(xy(psf_stars[~used]), ext_xy)
    assert np.all(d_ext < 1.0)


def test_compute_psf_bad_centroids():
    data = make_bad_centroid_variant()
    task = CalibrateImageTask()
    with pytest.raises(AllCentroidsFlaggedError, match=r"source centroids \(out of 4\) flagged"):
        task.compute_psf(data.exposure, make_id_generator())


def test_measure_aperture_correction():
    data = make_upstream_dataset()
    exposure = data.exposure
    task = CalibrateImageTask()
    result = task.compute_psf(exposure, make_id_generator())
    assert exposure.ap_corr_map is None
    ap_corr_map = task.measure_aperture_correction(exposure, result.psf_stars)
    assert exposure.ap_corr_map is ap_corr_map
    assert len(exposure.ap_corr_map) > 2
    # A 12-px aperture holds all of a σ = 2 px Gaussian, and PsfFlux with the right PSF
    # is unbiased, so the PsfFlux correction is 1 up to the aperture noise (~2 % per star).
    corr = exposure.ap_corr_map["base_PsfFlux_instFlux"].evaluate(*exposure.center)
    assert float(corr) == pytest.approx(1.0, abs=0.05)
    # slot_CalibFlux now points at the normalised compensated tophat (spec A5a).
    assert result.psf_stars.resolve("slot_CalibFlux_instFlux") == (
        "base_NormalizedCompensatedTophatFlux_instFlux"
    )


def test_two_snaps_give_the_same_psf(psf_run):
    data, _, result = psf_run
    single_used = xy(result.psf_stars[np.asarray(result.psf_stars["calib_psf_used"], bool)])
    single_sigma = data.exposure.psf.determinant_radius(*data.exposure.center)

    exposure = combine_snaps(make_upstream_snaps())
    snap_result = CalibrateImageTask().compute_psf(exposure, make_id_generator())
    used = np.asarray(snap_result.psf_stars["calib_psf_used"], bool)
    assert used.sum() == 3
    idx, dist = nearest(xy(snap_result.psf_stars[used]), single_used)
    assert sorted(idx.tolist()) == [0, 1, 2]
    # image/2 + image/2 is the single image again (exact in float32).
    assert np.all(dist < 1e-3), dist
    sigma = exposure.psf.determinant_radius(*exposure.center)
    assert sigma == pytest.approx(single_sigma, rel=1e-4)


@pytest.fixture(scope="module")
def star_run():
    """PSF phase, aperture corrections and star phase with 2 sky sources (as upstream)."""
    data = make_upstream_dataset()
    config = CalibrateImageConfig().with_overrides({"sky_sources.n_sources": 2})
    task = CalibrateImageTask(config)
    id_generator = make_id_generator()
    psf = task.compute_psf(data.exposure, id_generator)
    task.measure_aperture_correction(data.exposure, psf.psf_stars)
    stars = task.find_stars(data.exposure, psf.background, id_generator, len(psf.psf_stars))
    return data, task, psf, stars


def test_find_stars(star_run):
    data, _, psf, result = star_run
    stars = result.stars
    assert len(stars) == 6
    sky = np.asarray(stars["sky_source"], bool)
    assert sky.sum() == 2
    assert len(psf.background) == 4
    ids = np.asarray(stars["id"])
    assert np.all(ids > 1e9)
    assert np.unique(ids).size == ids.size
    assert not set(ids.tolist()) & set(np.asarray(psf.psf_stars["id"]).tolist())
    # The four real stars are the k = 45 … 1000 point sources.
    truth = truth_rows(data.truth, STAR_K)
    truth_xy = np.column_stack([np.asarray(truth["x"], float), np.asarray(truth["y"], float)])
    idx, dist = nearest(xy(stars[~sky]), truth_xy)
    assert sorted(idx.tolist()) == [0, 1, 2, 3]
    assert np.all(dist < 0.1), dist


def test_match_psf_stars(star_run):
    data, task, psf, result = star_run
    stars = result.stars.copy()
    task.match_psf_stars(psf.psf_stars, stars, data.exposure)
    assert int(np.sum(stars["calib_psf_used"])) == 3
    assert int(np.sum(stars["calib_psf_reserved"])) == 0
    # Sorted by PsfFlux: two sky sources and the k=45 star, then the three PSF stars.
    order = np.argsort(np.asarray(stars["base_PsfFlux_instFlux"], float))
    expected = [False, False, False, True, True, True]
    assert np.asarray(stars["calib_psf_used"], bool)[order].tolist() == expected
    assert np.asarray(stars["calib_psf_candidate"], bool)[order].tolist() == expected
    # psf_id ↔ id: the centroids of the same object agree (spec §D, atol 3e-4 px).
    matched = np.asarray(stars["psf_id"]) != 0
    assert matched.sum() == 3
    psf_ids = np.asarray(psf.psf_stars["id"])
    sorter = np.argsort(psf_ids)
    rows = sorter[np.searchsorted(psf_ids, np.asarray(stars["psf_id"])[matched], sorter=sorter)]
    np.testing.assert_allclose(
        np.asarray(stars["slot_Centroid_x"], float)[matched],
        np.asarray(psf.psf_stars["slot_Centroid_x"], float)[rows],
        atol=3e-4,
        rtol=0,
    )
    np.testing.assert_allclose(
        np.asarray(stars["slot_Centroid_y"], float)[matched],
        np.asarray(psf.psf_stars["slot_Centroid_y"], float)[rows],
        atol=3e-4,
        rtol=0,
    )


def test_bad_centroid_message_counts_sources():
    """The message names the number of sources, as upstream's regex expects."""
    err = AllCentroidsFlaggedError(7)
    assert re.search(r"source centroids \(out of 7\) flagged", str(err))
    assert err.metadata["n_sources"] == 7
