"""Summary statistics of the calibrated exposure (spec A12), including the PSF
robustness statistics."""
