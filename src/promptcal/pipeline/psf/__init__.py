"""The PSF phase (spec A3–A5): PSF-candidate selection, the PSF determiner, and the
iterated detect → measure → fit loop that yields ``psf_stars``."""
