"""Physical and statistical constants shared by the stages, the metrics and the report."""

import math

#: FWHM of a Gaussian per unit σ: 2 √(2 ln 2) [1].
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
