"""Source detection (spec A4): thresholded footprints and peaks, the adaptive PSF-phase
threshold, deblending and sky sources."""
