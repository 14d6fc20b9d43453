"""Star selection, shape deviation and extendedness on hand-built catalogs of known truth.

Each row of the catalogs is built to pass or fail exactly one criterion of
``select_stars`` (docs/architecture.md, "Star selection"), so a test names the
criterion it exercises and its LSST fallback.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from promptcal.core.catalog import SourceCatalog
from promptcal.pipeline.star_phase import (
    StarSelectionConfig,
    extendedness,
    select_stars,
    shape_deviation,
)

#: The PSF's adaptive moments [px²]: round, σ = 1.5 px (T_PSF = 4.5).
PSF = (2.25, 2.25, 0.0)
FLAGS = (
    "base_PixelFlags_flag_edgeCenter",
    "base_PixelFlags_flag_nodata",
    "base_PixelFlags_flag_saturated",
    "base_PsfFlux_flag",
)


def _catalog(rows) -> SourceCatalog:
    """Catalog of sources given as dicts; unspecified values are a bright, round star.

    Keys: ``shape`` (Ixx, Iyy, Ixy) [px²], ``psf_shape``, ``calib_snr``, ``psf_snr``,
    ``flag`` (one of FLAGS, set), ``sky`` (a sky source). Fluxes are 1000 counts with
    the error that gives the S/N; extendedness is computed from the shapes.
    """
    cat = SourceCatalog()
    n = len(rows)
    shape = np.array([r.get("shape", PSF) for r in rows], float).reshape(n, 3)
    psf = np.array([r.get("psf_shape", PSF) for r in rows], float).reshape(n, 3)
    for k, suffix in enumerate(("xx", "yy", "xy")):
        cat[f"ext_shapeHSM_HsmSourceMoments_{suffix}"] = shape[:, k]
        cat[f"ext_shapeHSM_HsmPsfMoments_{suffix}"] = psf[:, k]
    for prefix, key in (
        ("base_CircularApertureFlux_12_0", "calib_snr"),
        ("base_PsfFlux", "psf_snr"),
    ):
        cat[f"{prefix}_instFlux"] = np.full(n, 1000.0)
        cat[f"{prefix}_instFluxErr"] = 1000.0 / np.array([r.get(key, 500.0) for r in rows])
    for flag in FLAGS:
        cat[flag] = np.array([r.get("flag") == flag for r in rows])
    cat["sky_source"] = np.array([r.get("sky", False) for r in rows])
    extendedness(cat)
    return cat


# ------------------------------------------------------------------ extendedness


def test_extendedness_is_the_chi2_of_the_size_excess():
    # T − T_PSF = k √T_PSF gives χ² = k², so extendedness 1 − exp(−k²/2).
    t_psf = 4.5
    ks = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    rows = [{"shape": (2.25 + 0.5 * k * np.sqrt(t_psf), 2.25 + 0.5 * k * np.sqrt(t_psf), 0.3)}
            for k in ks]  # fmt: skip
    cat = _catalog(rows)
    value = np.asarray(cat["base_ClassificationSizeExtendedness_value"])
    assert_allclose(value, 1.0 - np.exp(-0.5 * ks**2), rtol=1e-12, atol=1e-15)
    assert value[0] == 0.0 and value[-1] > 0.999
    assert not np.asarray(cat["base_ClassificationSizeExtendedness_flag"]).any()


def test_extendedness_is_symmetric_and_flags_non_finite_shapes():
    cat = _catalog([{"shape": (1.5, 1.5, 0.0)}, {"shape": (3.0, 3.0, 0.0)},
                    {"shape": (np.nan, 2.0, 0.0)}])  # fmt: skip
    value = np.asarray(cat["base_ClassificationSizeExtendedness_value"])
    # Smaller and larger than the PSF by the same trace give the same value.
    assert value[0] == pytest.approx(value[1], rel=1e-12) and value[0] > 0.1
    assert np.isnan(value[2])
    assert_array_equal(cat["base_ClassificationSizeExtendedness_flag"], [False, False, True])


# ------------------------------------------------------------------ shape deviation


def test_shape_deviation_is_the_distance_between_ellipticities():
    rows = [
        {"shape": (2.25, 2.25, 0.0)},  # the PSF itself
        {"shape": (4.5, 4.5, 0.0)},  # larger but round: same ellipticity
        {"shape": (4.0, 2.0, 0.0)},  # e = (1/3, 0)
        {"shape": (3.0, 3.0, 1.5)},  # e = (0, 1/2)
        {"shape": (4.0, 2.0, 0.0), "psf_shape": (2.0, 4.0, 0.0)},  # e and −e
    ]
    assert_allclose(shape_deviation(_catalog(rows)), [0, 0, 1 / 3, 1 / 2, 2 / 3], atol=1e-15)


# ------------------------------------------------------------------ selection


def _selected(rows, **overrides):
    return select_stars(_catalog(rows), StarSelectionConfig(**overrides)).tolist()


def test_bright_round_star_is_selected_and_a_galaxy_is_not():
    galaxy = {"shape": (9.0, 7.0, 1.0)}  # T = 16 vs 4.5: resolved at any S/N here
    assert _selected([{}, galaxy]) == [True, False]


@pytest.mark.parametrize("flag", FLAGS)
def test_each_bad_flag_rejects(flag):
    assert _selected([{"flag": flag}, {}]) == [False, True]


def test_snr_cut_passes_on_calib_or_psf_flux_and_is_strict():
    rows = [
        {"calib_snr": 10.5, "psf_snr": 12.0},  # CalibFlux alone passes
        {"calib_snr": 4.0, "psf_snr": 20.0},  # PsfFlux alone passes (widened cut)
        {"calib_snr": 10.0, "psf_snr": 15.0},  # both exactly at the cut: strict, rejected
        {"calib_snr": 4.0, "psf_snr": 12.0},  # neither
    ]
    assert _selected(rows) == [True, True, False, False]
    # LSST's CalibFlux-only cut.
    assert _selected(rows, min_psf_snr=None) == [True, False, False, False]


def test_size_within_its_noise_counts_as_unresolved():
    # T − T_PSF = 1.2 px² is extendedness 1 − exp(−0.16) = 0.15 > 0.1, but at
    # S/N(PsfFlux) = 20 the allowance is 6 × 4.5 / 20 = 1.35 px²; at 40 it is 0.675.
    rows = [
        {"shape": (2.85, 2.85, 0.0), "psf_snr": 20.0},
        {"shape": (2.85, 2.85, 0.0), "psf_snr": 40.0},
    ]
    cat = _catalog(rows)
    assert np.all(np.asarray(cat["base_ClassificationSizeExtendedness_value"]) > 0.1)
    assert _selected(rows) == [True, False]
    assert _selected(rows, size_snr_scale=None) == [False, False]


def test_elongated_unresolved_pair_is_rejected_by_its_ellipticity():
    # Same trace as the PSF (unresolved by size) but e = 0.2: a pair of stars.
    pair = {"shape": (2.7, 1.8, 0.0), "psf_snr": 500.0}
    # At S/N 50 the allowance is max(0.05, 7/50 = 0.14) and 0.2 still fails; at S/N 20
    # it is 0.35 and the same shape passes as noise.
    noisy = {"shape": (2.7, 1.8, 0.0), "psf_snr": 20.0}
    rows = [pair, {**pair, "psf_snr": 50.0}, noisy]
    assert shape_deviation(_catalog(rows)) == pytest.approx([0.2] * 3)
    assert _selected(rows) == [False, False, True]
    assert _selected(rows, max_shape_deviation=None) == [True, True, True]


def test_sky_sources_are_always_kept():
    garbage = {"sky": True, "calib_snr": 0.1, "psf_snr": -3.0, "shape": (50.0, 1.0, 5.0),
               "flag": "base_PsfFlux_flag"}  # fmt: skip
    assert _selected([garbage, {**garbage, "sky": False}]) == [True, False]


def test_extendedness_threshold_is_strict():
    # Extendedness exactly at the cut is resolved; the size and shape tests are off so
    # that only the extendedness decides.
    k = np.sqrt(-2.0 * np.log(1.0 - 0.1))  # χ giving extendedness 0.1
    grow = 0.5 * k * np.sqrt(4.5)
    rows = [
        {"shape": (2.25 + grow, 2.25 + grow, 0.0)},
        {"shape": (2.25 + 0.99 * grow,) * 2 + (0.0,)},
    ]
    cat = _catalog(rows)
    ext = np.asarray(cat["base_ClassificationSizeExtendedness_value"])
    assert ext[0] == pytest.approx(0.1, rel=1e-12) and ext[1] < 0.1
    off = {"size_snr_scale": None, "max_shape_deviation": None}
    config = StarSelectionConfig(**off, max_extendedness=float(ext[0]))
    assert select_stars(cat, config).tolist() == [False, True]
