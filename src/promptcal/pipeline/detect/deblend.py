"""A light deblender: split footprints whose peaks are separated by a real saddle.

Each footprint keeps its brightest peak; a further peak becomes a separate child
only if the smoothed image dips between it and every brighter kept peak by more
than ``min_saddle_significance`` σ. Children then own the pixels where their
Gaussian template dominates, and other children are noise-replaced while
measuring, as LSST does with heavy footprints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from promptcal.core.config import Config
from promptcal.core.footprints import Footprints
from promptcal.kernels.components import relabel
from promptcal.kernels.deblend import assign_children, separate_peaks


class DeblendConfig(Config):
    """Peak-splitting deblender."""

    do_deblend: bool = Field(True, description="Split blended footprints.")
    min_saddle_significance: float = Field(
        5.0, gt=0, description="Depth of the dip between two peaks needed to split [σ]."
    )
    max_children: int = Field(
        500, ge=1, description="At most this many children per footprint (crowded fields) [1]."
    )
    template_sigma_factor: float = Field(
        2.0, gt=0, description="Template width for pixel assignment [PSF σ]."
    )


@dataclass
class DeblendResult:
    """Sources to measure and their own labels.

    Attributes
    ----------
    labels : numpy.ndarray
        int32 (H, W) label image where each source owns label ``i + 1``.
    parent : numpy.ndarray
        int64 per source: index of the parent footprint.
    x, y : numpy.ndarray
        float64 peak array positions.
    n_child : numpy.ndarray
        int64 per source: number of children of its parent (0 when unblended).
    """

    labels: np.ndarray
    parent: np.ndarray
    x: np.ndarray
    y: np.ndarray
    n_child: np.ndarray


def deblend(footprints: Footprints, smoothed, smoothed_var, psf_sigma, config) -> DeblendResult:
    """Split ``footprints`` (see module docstring)."""
    labels = footprints.labels.copy()
    first = footprints.first_peak_index()
    counts = footprints.n_peaks()
    has_peak = first >= 0
    multi = has_peak & (counts > 1) if config.do_deblend else np.zeros(footprints.n, bool)
    # Unblended footprints (the vast majority) keep their label and brightest peak.
    single = np.flatnonzero(has_peak & ~multi)
    fp_of = [single]
    rank = [np.zeros(single.size, np.int64)]
    label_of = [single + 1]
    xs = [footprints.peak_x[first[single]].astype(np.float64)]
    ys = [footprints.peak_y[first[single]].astype(np.float64)]
    n_child = [np.zeros(single.size, np.int64)]
    next_label = footprints.n + 1
    starts = np.where(multi, first, -1).astype(np.int64)
    keep = separate_peaks(
        smoothed,
        smoothed_var,
        footprints.peak_x,
        footprints.peak_y,
        footprints.peak_value,
        starts,
        counts.astype(np.int64),
        config.min_saddle_significance,
        config.max_children,
    )
    for fp in np.flatnonzero(multi):
        kept = first[fp] + np.flatnonzero(keep[first[fp] : first[fp] + counts[fp]])
        if len(kept) == 1:
            children = [fp + 1]
        else:
            cut = assign_children(
                footprints.labels,
                fp + 1,
                footprints.bbox[fp],
                footprints.peak_x[kept],
                footprints.peak_y[kept],
                footprints.peak_value[kept],
                config.template_sigma_factor * psf_sigma,
                next_label,
            )
            x_min, y_min, x_max, y_max = footprints.bbox[fp]
            view = labels[y_min : y_max + 1, x_min : x_max + 1]
            inside = cut > 0
            view[inside] = cut[inside]
            children = list(range(next_label, next_label + len(kept)))
            next_label += len(kept)
        fp_of.append(np.full(len(kept), fp))
        rank.append(np.arange(len(kept)))
        label_of.append(np.array(children, np.int64))
        xs.append(footprints.peak_x[kept].astype(np.float64))
        ys.append(footprints.peak_y[kept].astype(np.float64))
        n_child.append(np.full(len(kept), len(kept) if len(kept) > 1 else 0))
    fp_all = np.concatenate(fp_of)
    order = np.lexsort((np.concatenate(rank), fp_all))
    source_labels = np.concatenate(label_of)[order]
    # Relabel so that source i owns label i + 1.
    mapping = np.zeros(next_label, np.int32)
    mapping[source_labels] = np.arange(1, source_labels.size + 1, dtype=np.int32)
    relabel(labels, mapping)
    return DeblendResult(
        labels=labels,
        parent=fp_all[order].astype(np.int64),
        x=np.concatenate(xs)[order],
        y=np.concatenate(ys)[order],
        n_child=np.concatenate(n_child)[order],
    )
