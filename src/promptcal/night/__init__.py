"""Observing nights: the manifest ``promptcal replay`` reads, and synthetic nights
(planned and rendered)."""
