"""Quality-assurance figures of one calibrated exposure (PSF grid, astrometric and
photometric residuals)."""
