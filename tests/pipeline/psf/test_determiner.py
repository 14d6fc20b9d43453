"""The PSF determiner: objectSize candidate selection and the pixel-basis fit.

Candidate selection runs on hand-built catalogs (a stellar locus, galaxies, faint and
flagged stars, cosmic-ray-sized sources); the fit runs on images of Gaussian stars
whose PSF is known, given their true positions and fluxes, and must give that PSF back.
"""

from __future__ import annotations

import numpy as np
import oracles
import oracles_more as om
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.core.catalog import SourceCatalog
from promptcal.core.errors import NoPsfStarsError
from promptcal.core.exposure import Exposure, Mask
from promptcal.core.footprints import Footprints
from promptcal.core.psf_model import GaussianPsf
from promptcal.pipeline.measurement import MeasurementConfig, SourceSeeds, measure_sources
from promptcal.pipeline.psf.determiner import (
    SELECTOR_BAD_FLAGS,
    PsfDeterminerConfig,
    PsfStarSelectorConfig,
    fit_psf,
    select_psf_candidates,
)

# ------------------------------------------------------------------ candidate selection


def _size_catalog(width, snr, flagged=None):
    """Round sources of √((Ixx+Iyy)/2) = ``width`` [px] and PsfFlux S/N ``snr``."""
    n = len(width)
    cat = SourceCatalog()
    cat["ext_shapeHSM_HsmSourceMoments_xx"] = np.asarray(width, float) ** 2
    cat["ext_shapeHSM_HsmSourceMoments_yy"] = np.asarray(width, float) ** 2
    cat["base_PsfFlux_instFlux"] = np.full(n, 1e4)
    cat["base_PsfFlux_instFluxErr"] = 1e4 / np.asarray(snr, float)
    for flag in SELECTOR_BAD_FLAGS:
        cat[flag] = np.asarray(flagged) == flag if flagged is not None else np.zeros(n, bool)
    return cat


def _population(seed=0):
    """Widths, S/N and flags of: 40 stars, 15 galaxies, 5 faint stars, flagged stars,
    2 cosmic rays and a source without a shape; returns them and the truth (40 stars)."""
    rng = np.random.default_rng(seed)
    stars = 1.5 + rng.normal(0, 0.01, 40)
    flags = list(SELECTOR_BAD_FLAGS)
    width = np.concatenate([stars, rng.uniform(2.5, 4.0, 15), np.full(5, 1.5),
                            np.full(len(flags), 1.5), [0.3, 0.35], [np.nan]])  # fmt: skip
    snr = np.concatenate([rng.uniform(100, 1000, 40), rng.uniform(100, 1000, 15),
                          np.full(5, 20.0), np.full(len(flags) + 3, 500.0)])  # fmt: skip
    flagged = [None] * 60 + flags + [None] * 3
    truth = np.zeros(width.size, bool)
    truth[:40] = True
    return width, snr, flagged, truth


def test_candidates_are_the_clean_bright_stellar_locus():
    width, snr, flagged, truth = _population()
    chosen = select_psf_candidates(_size_catalog(width, snr, flagged), PsfStarSelectorConfig())
    assert_array_equal(chosen, truth)


def test_candidates_are_capped_to_the_brightest():
    width, snr, flagged, truth = _population(1)
    chosen = select_psf_candidates(
        _size_catalog(width, snr, flagged), PsfStarSelectorConfig(max_candidates=10)
    )
    brightest = np.flatnonzero(truth)[np.argsort(-snr[truth])[:10]]
    assert_array_equal(np.flatnonzero(chosen), np.sort(brightest))


def test_no_candidates_without_a_usable_source():
    cat = _size_catalog([0.2, 20.0, 1.5], [500.0, 500.0, 10.0])  # too small, too big, faint
    assert not select_psf_candidates(cat, PsfStarSelectorConfig()).any()


# ------------------------------------------------------------------ fit


def _star_field(psf_moments, n_side=7, size=256, seed=0, impostor=False):
    """Stars on a jittered grid with per-star PSF moments ``psf_moments(x, y)`` [px²].

    Returns the exposure, footprints (8-px disks), seeds and a catalog holding the true
    centroids and fluxes; ``impostor`` widens star 0 to twice the PSF's size.
    """
    rng = np.random.default_rng(seed)
    grid = np.linspace(20, size - 21, n_side)
    x = np.repeat(grid, n_side) + rng.uniform(-0.5, 0.5, n_side**2)
    y = np.tile(grid, n_side) + rng.uniform(-0.5, 0.5, n_side**2)
    flux = rng.uniform(2e4, 1e5, x.size)
    image = rng.normal(0.0, 5.0, (size, size))
    for i in range(x.size):
        ixx, iyy, ixy = psf_moments(x[i], y[i])
        scale = 4.0 if impostor and i == 0 else 1.0
        image += oracles.gaussian(image.shape, x[i], y[i], flux[i], ixx * scale, iyy * scale,
                                  ixy * scale)  # fmt: skip
    shape = (size, size)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(x.size):
        labels[(xx - x[i]) ** 2 + (yy - y[i]) ** 2 <= 64] = i + 1
    peak_x, peak_y = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    footprints = Footprints(
        labels=labels, bbox=om.label_bboxes(labels, x.size), peak_footprint=np.arange(x.size),
        peak_x=peak_x, peak_y=peak_y, peak_significance=np.full(x.size, 100.0),
        peak_value=flux,
    )  # fmt: skip
    exposure = Exposure(
        image.astype(np.float32), np.full(shape, 25.0, np.float32), Mask(np.zeros(shape, np.int32))
    )
    cat = SourceCatalog()
    cat["base_SdssCentroid_x"], cat["base_SdssCentroid_y"] = x, y
    cat["base_CircularApertureFlux_12_0_instFlux"] = flux
    seeds = SourceSeeds(np.arange(x.size), peak_x.astype(float), peak_y.astype(float))
    return exposure, footprints, seeds, cat


ELLIPTICAL = (2.6, 1.9, 0.35)


def _gaussian_kernel(size, ixx, iyy, ixy):
    image = oracles.gaussian((size, size), size // 2, size // 2, 1.0, ixx, iyy, ixy)
    return image / image.sum()


def test_fit_recovers_a_constant_elliptical_psf_and_rejects_an_impostor():
    exposure, footprints, seeds, cat = _star_field(lambda x, y: ELLIPTICAL, impostor=True)
    candidates = np.ones(len(cat), bool)
    result = fit_psf(exposure, footprints, seeds, cat, candidates, PsfDeterminerConfig(), 1.5, 1)
    assert result.order == 2
    assert not result.used[0]  # the double-size source is rejected by its χ²
    # Clipping at 3 nMAD of χ² also drops some real stars; most are kept.
    assert result.used[1:].sum() >= 0.75 * 48
    for x, y in ((128, 128), (25, 25), (230, 40), (40, 230)):
        assert_allclose(result.psf.shape(x, y), ELLIPTICAL, rtol=0.02, atol=0.02)
        kernel = result.psf.kernel_image(x, y)
        truth = _gaussian_kernel(kernel.shape[0], *ELLIPTICAL)
        assert np.max(np.abs(kernel - truth)) < 0.02 * truth.max()


def test_fit_follows_a_psf_that_widens_across_the_field():
    def moments(x, y):
        sigma = 1.3 + 0.6 * x / 255.0  # σ from 1.3 px (left) to 1.9 px (right)
        return sigma**2, sigma**2, 0.0

    exposure, footprints, seeds, cat = _star_field(moments, n_side=8, seed=2)
    result = fit_psf(exposure, footprints, seeds, cat, np.ones(len(cat), bool),
                     PsfDeterminerConfig(), 1.5, 1)  # fmt: skip
    assert result.order == 2 and result.used.sum() >= 0.75 * 64
    for x in (30.0, 128.0, 225.0):
        expected = 1.3 + 0.6 * x / 255.0
        assert result.psf.determinant_radius(x, 128.0) == pytest.approx(expected, rel=0.02)


def test_fit_lowers_the_order_when_stars_are_few():
    exposure, footprints, seeds, cat = _star_field(lambda x, y: ELLIPTICAL, n_side=2)
    result = fit_psf(exposure, footprints, seeds, cat, np.ones(4, bool), PsfDeterminerConfig(),
                     1.5, 1)  # fmt: skip
    # Order 2 has 6 terms and order 1 has 3: 4 stars support only order 0 (2 per term).
    assert result.order == 0 and result.used.all()
    assert_allclose(result.psf.shape(128, 128), ELLIPTICAL, rtol=0.03, atol=0.03)


def test_fit_without_usable_stars_raises():
    exposure, footprints, seeds, cat = _star_field(lambda x, y: ELLIPTICAL, n_side=2)
    cat["base_CircularApertureFlux_12_0_instFlux"] = np.zeros(4)  # no flux to normalise by
    with pytest.raises(NoPsfStarsError, match="only 0 usable PSF stars") as info:
        fit_psf(exposure, footprints, seeds, cat, np.ones(4, bool), PsfDeterminerConfig(), 1.5, 1)
    assert info.value.metadata["n_candidates"] == 4


def test_the_fitting_passes_catalog_is_the_full_one_without_the_unread_fluxes():
    exposure, footprints, seeds, _ = _star_field(lambda x, y: ELLIPTICAL)
    psf, config, ids = GaussianPsf(1.5), MeasurementConfig(), np.arange(seeds.x.size)
    full = measure_sources(exposure, footprints, seeds, psf, config, ids=ids, seed=3)
    part = measure_sources(
        exposure, footprints, seeds, psf, config, ids=ids, seed=3, for_psf_fit=True
    )
    assert set(part.colnames) < set(full.colnames)
    assert not any("Gaussian" in name or "Tophat" in name for name in part.colnames)
    for name in part.colnames:
        assert_array_equal(part[name], full[name])
    candidates = select_psf_candidates(part, PsfStarSelectorConfig())
    assert candidates.sum() > 10
    assert_array_equal(candidates, select_psf_candidates(full, PsfStarSelectorConfig()))
