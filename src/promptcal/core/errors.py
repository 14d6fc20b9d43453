"""The error taxonomy shared by every layer.

- :class:`AlgorithmError`: the calibration could not succeed on this exposure. It is a
  *result* (reported with partial outputs), never a crash of the service.
- :class:`InvalidInputError`: a file or message that cannot be read or decoded. In the
  streaming layer it goes to the dead-letter topic.
- :class:`TransientError`: infrastructure trouble (broker, storage) worth retrying.
"""

from __future__ import annotations

from typing import Any


class PromptcalError(Exception):
    """Base class of all errors raised on purpose by promptcal."""


class InvalidInputError(PromptcalError):
    """An input (FITS file, catalog, message, option) cannot be used as given."""


class TransientError(PromptcalError):
    """A failure of infrastructure that may succeed when retried."""


class AlgorithmError(PromptcalError):
    """The algorithm failed on this exposure; carries metadata describing why.

    Subclasses name what failed. ``metadata`` holds small JSON-serialisable values
    (counts, thresholds) that are published with the failure.
    """

    def __init__(self, message: str, **metadata: Any) -> None:
        super().__init__(message)
        self._metadata = dict(metadata)

    @property
    def metadata(self) -> dict[str, Any]:
        """Values describing the failure (JSON-serialisable)."""
        return dict(self._metadata)


class AllCentroidsFlaggedError(AlgorithmError):
    """Every source of the PSF phase has ``slot_Centroid_flag`` set."""

    def __init__(self, n_sources: int, **metadata: Any) -> None:
        super().__init__(
            f"All source centroids (out of {n_sources}) flagged during PSF fitting; "
            "the original image PSF is probably unusable.",
            n_sources=n_sources,
            **metadata,
        )


class NonfinitePsfShapeError(AlgorithmError):
    """The fitted PSF model has a non-finite size."""


class NoPsfStarsError(AlgorithmError):
    """Too few usable stars were found to model the PSF."""


class MeasureApCorrError(AlgorithmError):
    """The aperture correction could not be measured."""


class NormalizedCalibrationFluxError(AlgorithmError):
    """The calibration-flux normalisation could not be measured."""


class NoPsfStarsToStarsMatchError(AlgorithmError):
    """No PSF star could be matched to the deeper star catalog."""

    def __init__(self, n_psf_stars: int, n_stars: int) -> None:
        super().__init__(
            f"No psf stars out of {n_psf_stars} matched {n_stars} calib stars.",
            n_psf_stars=n_psf_stars,
            n_stars=n_stars,
        )


class AstrometryError(AlgorithmError):
    """The astrometric solution could not be found or is not good enough."""


class BadAstrometryFit(AstrometryError):
    """The astrometric fit converged but its mean offset is too large."""


class PhotometryError(AlgorithmError):
    """The photometric zero point could not be fitted."""


class MatcherFailure(PhotometryError):
    """No photometric reference matched a star."""
