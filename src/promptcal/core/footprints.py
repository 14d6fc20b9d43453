"""Footprints: labelled pixel regions with their peaks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from promptcal.kernels.components import relabel
from promptcal.kernels.detect import label_spans


@dataclass
class Footprints:
    """Detected footprints of one polarity.

    Attributes
    ----------
    labels : numpy.ndarray
        int32 (H, W): 0 outside footprints, ``i + 1`` inside footprint ``i``.
    bbox : numpy.ndarray
        int64 (n, 4) inclusive array-coordinate boxes ``x_min, y_min, x_max, y_max``.
    peak_footprint, peak_x, peak_y : numpy.ndarray
        int64 per peak: owning footprint index and array position, sorted by
        footprint then by decreasing smoothed value.
    peak_significance, peak_value : numpy.ndarray
        float64 per peak: smoothed significance [σ] and smoothed value [image unit].
    xy0 : tuple of int
        Parent-frame origin of the array, for conversions.
    """

    labels: np.ndarray
    bbox: np.ndarray
    peak_footprint: np.ndarray
    peak_x: np.ndarray
    peak_y: np.ndarray
    peak_significance: np.ndarray
    peak_value: np.ndarray
    xy0: tuple[int, int] = (0, 0)

    @property
    def n(self) -> int:
        """Number of footprints."""
        return int(self.bbox.shape[0])

    def first_peak_index(self) -> np.ndarray:
        """Index (into the peak arrays) of the brightest peak of each footprint."""
        first = np.full(self.n, -1, np.int64)
        order = np.arange(self.peak_footprint.size)[::-1]
        first[self.peak_footprint[order]] = order
        return first

    def n_peaks(self) -> np.ndarray:
        """Number of peaks in each footprint."""
        return np.bincount(self.peak_footprint, minlength=self.n)

    def area(self) -> np.ndarray:
        """Pixel count of each footprint."""
        counts = np.bincount(self.labels.ravel(), minlength=self.n + 1)
        return counts[1:]

    def spans_table(self, footprint_ids: np.ndarray) -> Table:
        """Span table ``id, y, x0, x1`` in parent coordinates (x0..x1 inclusive).

        Parameters
        ----------
        footprint_ids : numpy.ndarray
            Source id to report for each footprint index.
        """
        spans = label_spans(self.labels)
        lab = spans.label
        ids = np.asarray(footprint_ids, np.int64)[lab - 1] if lab.size else lab
        return Table(
            {
                "id": ids,
                "y": spans.y + self.xy0[1],
                "x0": spans.x0 + self.xy0[0],
                "x1": spans.x1 + self.xy0[0],
            }
        )

    def subset(self, keep: np.ndarray) -> Footprints:
        """Footprints ``keep`` (bool or index array), relabelled consecutively."""
        keep_idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        mapping = np.zeros(self.n + 1, np.int32)
        mapping[keep_idx + 1] = np.arange(1, keep_idx.size + 1, dtype=np.int32)
        new_index = mapping[1:] - 1
        peak_keep = new_index[self.peak_footprint] >= 0
        labels = self.labels.copy()
        relabel(labels, mapping)
        return Footprints(
            labels=labels,
            bbox=self.bbox[keep_idx],
            peak_footprint=new_index[self.peak_footprint[peak_keep]].astype(np.int64),
            peak_x=self.peak_x[peak_keep],
            peak_y=self.peak_y[peak_keep],
            peak_significance=self.peak_significance[peak_keep],
            peak_value=self.peak_value[peak_keep],
            xy0=self.xy0,
        )
