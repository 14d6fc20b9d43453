"""Synthetic skies with known truth, and LSST's upstream test fixture.

- :func:`simulate_exposure` draws a visit (one or two snaps) from a :class:`SkyConfig`
  and a seed, with its truth catalog, true WCS and noiseless model.
- :func:`refcat_table_from_truth` turns a truth table into a reference catalog.
- :func:`write_simulation` writes the exposure(s), truth, refcat and true WCS.
- :mod:`promptcal.simulate.upstream` rebuilds meas_base's ``TestDataset`` fixture used
  by pipe_tasks' ``test_calibrateImage.py``.

See ``docs/simulation.md`` for the conventions.
"""

from promptcal.simulate.config import SkyConfig
from promptcal.simulate.core import SimulatedExposure, simulate_exposure
from promptcal.simulate.truth import refcat_table_from_truth
from promptcal.simulate.write import write_simulation

__all__ = [
    "SimulatedExposure",
    "SkyConfig",
    "refcat_table_from_truth",
    "simulate_exposure",
    "write_simulation",
]
