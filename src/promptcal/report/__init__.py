"""The night report: numbers collected from a product root
(:mod:`~promptcal.report.night_data`), figures (:mod:`~promptcal.report.plots`) and
the HTML page (:mod:`~promptcal.report.html`)."""
