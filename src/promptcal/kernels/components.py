"""Connected-component labelling (8-connectivity) on row spans, with bounding boxes.

Masks of detected pixels cover a few per cent of an image, so the labelling works on
run-length *spans* (maximal runs of set pixels in one row) rather than on pixels. A
span set is three int64 arrays: ``row_start`` (H + 1,), where the spans of row ``y`` are
``row_start[y]:row_start[y + 1]``, and ``x0``, ``x1``, the inclusive columns of each
span, in raster order. Full images are only read through 8-byte words, so that empty
sky is skipped eight flags (or two labels) at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from promptcal.kernels._jit import kernel


@kernel
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@kernel
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    if rb < ra:
        parent[ra] = rb
    return rb


@kernel
def _extend_box(bbox, k, x, y):
    if x < bbox[k, 0]:
        bbox[k, 0] = x
    if x > bbox[k, 2]:
        bbox[k, 2] = x
    if y < bbox[k, 1]:
        bbox[k, 1] = y
    if y > bbox[k, 3]:
        bbox[k, 3] = y


@kernel
def reserve(values, n, extra):
    """``values`` (int64 or float64, 1-D), reallocated if it cannot hold ``n + extra``.

    Growable outputs are reserved once per row, never inside a scan: reassigning an
    array within a loop makes Numba count references on every iteration.
    """
    if n + extra <= values.size:
        return values
    out = np.empty(max(2 * values.size, n + extra), values.dtype)
    out[:n] = values[:n]
    return out


@kernel
def row_flags(width):
    """Zeroed uint8 row buffer and its uint64 view, for :func:`append_runs`.

    The buffer is padded with at least one zero past ``width`` and to whole words.
    """
    flags = np.zeros((width // 8 + 2) * 8, np.uint8)
    return flags, flags.view(np.uint64)


@kernel
def append_runs(flags, words, width, x0, x1, n):
    """Write the runs of non-zero ``flags[:width]`` to ``x0``/``x1`` from index ``n``.

    ``flags`` and ``words`` come from :func:`row_flags`; ``x0`` and ``x1`` must have
    room for ``(width + 1) // 2`` more runs. Returns the new count.
    """
    x = 0
    while x < width:
        if (x & 7) == 0 and words[x >> 3] == 0:
            x += 8
            continue
        if flags[x] == 0:
            x += 1
            continue
        start = x
        while flags[x] != 0:  # the zero padding ends a run at the right edge
            x += 1
        x0[n] = start
        x1[n] = x - 1
        n += 1
    return n


@kernel
def span_components(row_start, x0, x1):
    """8-connected components of a span set (spans must be maximal runs).

    Returns
    -------
    component : numpy.ndarray
        int64 per span: label 1..n, numbered in raster order of each component's
        first pixel (the numbering of ``scipy.ndimage.label``).
    n : int
        Number of components.
    """
    n_spans = x0.size
    parent = np.arange(n_spans)
    for y in range(1, row_start.size - 1):
        i, i_end = row_start[y - 1], row_start[y]
        j, j_end = row_start[y], row_start[y + 1]
        # Two sorted runs of disjoint spans: a span can only touch the spans of the
        # other row that start before it ends, so advance the one ending first.
        while i < i_end and j < j_end:
            if x0[i] <= x1[j] + 1 and x0[j] <= x1[i] + 1:
                _union(parent, i, j)
            if x1[i] < x1[j]:
                i += 1
            else:
                j += 1
    # Roots are each component's first span, hence its first pixel in raster order.
    component = np.empty(n_spans, np.int64)
    n = 0
    for s in range(n_spans):
        root = _find(parent, s)
        if root == s:
            n += 1
            component[s] = n
        else:
            component[s] = component[root]
    return component, n


@kernel
def paint_labels(row_start, x0, x1, component, width):
    """int32 (H, W) image of span labels ``component``, 0 elsewhere."""
    height = row_start.size - 1
    labels = np.empty((height, width), np.int32)
    for y in range(height):
        # Zeroing row by row paints each row while it is still in cache.
        labels[y, :] = 0
        for s in range(row_start[y], row_start[y + 1]):
            lab = np.int32(component[s])
            for x in range(x0[s], x1[s] + 1):
                labels[y, x] = lab
    return labels


class Spans(NamedTuple):
    """A span set (see the module docstring).

    Attributes
    ----------
    row_start : numpy.ndarray
        int64 (H + 1,): the spans of row ``y`` are ``row_start[y]:row_start[y + 1]``.
    x0, x1 : numpy.ndarray
        int64 inclusive first and last column of each span, in raster order.
    """

    row_start: np.ndarray
    x0: np.ndarray
    x1: np.ndarray


def select_spans(row_start, x0, x1, keep) -> Spans:
    """The spans whose bool ``keep`` flag is set, as a span set."""
    return Spans(*_select_spans(row_start, x0, x1, keep))


@kernel
def _select_spans(row_start, x0, x1, keep):
    """The kernel of :func:`select_spans` (a plain tuple)."""
    height = row_start.size - 1
    out_start = np.empty(height + 1, np.int64)
    n_out = 0
    for s in range(keep.size):
        n_out += keep[s]
    out_x0 = np.empty(n_out, np.int64)
    out_x1 = np.empty(n_out, np.int64)
    n = 0
    for y in range(height):
        out_start[y] = n
        for s in range(row_start[y], row_start[y + 1]):
            if keep[s]:
                out_x0[n] = x0[s]
                out_x1[n] = x1[s]
                n += 1
    out_start[height] = n
    return out_start, out_x0, out_x1


@kernel
def span_bboxes(row_start, x0, x1, component, n, width):
    """Inclusive boxes ``x_min, y_min, x_max, y_max`` (int64 (n, 4)) of labelled spans.

    A label without spans gets the empty box ``(W, H, -1, -1)``.
    """
    bbox = np.empty((n, 4), np.int64)
    bbox[:, 0] = width
    bbox[:, 1] = row_start.size - 1
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    for y in range(row_start.size - 1):
        for s in range(row_start[y], row_start[y + 1]):
            k = component[s] - 1
            _extend_box(bbox, k, x0[s], y)
            _extend_box(bbox, k, x1[s], y)
    return bbox


@kernel
def label_bboxes(labels, n):
    """Inclusive boxes ``x_min, y_min, x_max, y_max`` of labels 1..n (int64 (n, 4)).

    A label that never occurs gets the empty box ``(W, H, -1, -1)``. Rows of
    ``labels`` must be contiguous.
    """
    height, width = labels.shape
    bbox = np.empty((n, 4), np.int64)
    bbox[:, 0] = width
    bbox[:, 1] = height
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    for y in range(height):
        row = labels[y]
        # Pairs of labels read as one word: empty sky is skipped two pixels at a time.
        words = row[: width & ~1].view(np.uint64)
        for i in range(words.size):
            if words[i] == 0:
                continue
            for x in range(2 * i, 2 * i + 2):
                lab = row[x]
                if lab != 0 and lab <= n:
                    _extend_box(bbox, lab - 1, x, y)
        if width & 1:
            lab = row[width - 1]
            if lab != 0 and lab <= n:
                _extend_box(bbox, lab - 1, width - 1, y)
    return bbox


@kernel
def relabel(labels, mapping):
    """``labels = mapping[labels]`` in place (int32), without a temporary array.

    Rows of ``labels`` must be contiguous.
    """
    height, width = labels.shape
    for y in range(height):
        row = labels[y]
        words = row[: width & ~1].view(np.uint64)
        for i in range(words.size):
            if words[i] == 0:
                continue
            for x in range(2 * i, 2 * i + 2):
                lab = row[x]
                if lab != 0:
                    row[x] = mapping[lab]
        if width & 1:
            lab = row[width - 1]
            if lab != 0:
                row[width - 1] = mapping[lab]
