"""What counts as a solved frame (issue 12): the criteria shared by the astrometry QA
(:mod:`promptcal.qa.astrometry_check`) and the night report
(:mod:`promptcal.report.pointing`)."""

#: Fewest astrometric matches [1].
MIN_MATCHES = 8
#: Largest median match residual [px].
MAX_MEDIAN_RESIDUAL_PX = 1.0
#: Largest relative difference of the pixel scale from the night's median [1].
SCALE_TOLERANCE = 0.01
