"""Shared settings and helpers of the synthetic-sky tests (tests/simulate)."""

from __future__ import annotations

import numpy as np

from promptcal.simulate.core import background_model

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: A small, quick sky with a non-zero origin.
SMALL = dict(width=240, height=170, x0=13, y0=-7, n_stars=40, background=500.0, read_noise=4.0)


def sources_only(sim):
    """The noiseless image without its background [count]."""
    return sim.noiseless.astype(np.float64) - background_model(sim.config)


def pixel_grid(sim):
    """Parent x, y of every pixel of the simulated image [px]."""
    h, w = sim.noiseless.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return xx + sim.config.x0, yy + sim.config.y0


def clean_stars(sim, margin_fwhm=5.0):
    """Isolated stars whose aperture lies inside the image, no bad column nearby."""
    t = sim.truth
    c = sim.config
    m = margin_fwhm * np.asarray(t["fwhm"])
    ok = np.asarray(t["isolated"]) & ~np.asarray(t["is_galaxy"])
    ok &= (t["x"] - m >= c.x0) & (t["x"] + m <= c.x0 + c.width - 1)
    ok &= (t["y"] - m >= c.y0) & (t["y"] + m <= c.y0 + c.height - 1)
    return t[ok]
