"""promptcal: real-time single-exposure calibration for survey telescopes."""

__version__ = "0.1.0"
