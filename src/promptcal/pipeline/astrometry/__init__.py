"""Astrometry (spec A6): matching to the reference catalog, recovery from a poor
initial WCS, and the TAN-SIP fit (``docs/astrometry.md``)."""
