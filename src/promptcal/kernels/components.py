"""Connected-component labelling (8-connectivity) with bounding boxes, in one kernel."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


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
def label_components(mask):
    """Label the 8-connected components of ``mask``.

    Labels are numbered 1..n in raster order of each component's first pixel (the
    same numbering as ``scipy.ndimage.label``).

    Returns
    -------
    labels : numpy.ndarray
        int32 (H, W), 0 outside components.
    n : int
        Number of components.
    bbox : numpy.ndarray
        int64 (n, 4) inclusive boxes ``x_min, y_min, x_max, y_max``.
    """
    height, width = mask.shape
    labels = np.zeros((height, width), np.int32)
    parent = np.empty(1024, np.int64)
    n_provisional = 0
    # Column extent of labelled pixels per row, so the second pass skips empty sky.
    row_first = np.full(height, width, np.int64)
    row_last = np.full(height, -1, np.int64)
    for y in range(height):
        for x in range(width):
            if not mask[y, x]:
                continue
            if x < row_first[y]:
                row_first[y] = x
            row_last[y] = x
            current = 0
            for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
                yy = y + dy
                xx = x + dx
                if yy < 0 or xx < 0 or xx >= width:
                    continue
                other = labels[yy, xx]
                if other == 0:
                    continue
                if current == 0:
                    current = _find(parent, other)
                else:
                    current = _union(parent, current, other)
            if current == 0:
                n_provisional += 1
                if n_provisional >= parent.size:
                    grown = np.empty(parent.size * 2, np.int64)
                    grown[: parent.size] = parent
                    parent = grown
                parent[n_provisional] = n_provisional
                current = n_provisional
            labels[y, x] = current
    # Final numbering in order of first appearance.
    final = np.zeros(n_provisional + 1, np.int32)
    n = 0
    for i in range(1, n_provisional + 1):
        root = _find(parent, i)
        if root == i:
            n += 1
            final[i] = n
    for i in range(1, n_provisional + 1):
        final[i] = final[_find(parent, i)]
    bbox = np.empty((n, 4), np.int64)
    bbox[:, 0] = width
    bbox[:, 1] = height
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    for y in range(height):
        for x in range(row_first[y], row_last[y] + 1):
            lab = labels[y, x]
            if lab == 0:
                continue
            f = final[lab]
            labels[y, x] = f
            _extend_box(bbox, f - 1, x, y)
    return labels, n, bbox


@kernel
def label_bboxes(labels, n):
    """Inclusive boxes ``x_min, y_min, x_max, y_max`` of labels 1..n (int64 (n, 4)).

    A label that never occurs gets the empty box ``(W, H, -1, -1)``.
    """
    height, width = labels.shape
    bbox = np.empty((n, 4), np.int64)
    bbox[:, 0] = width
    bbox[:, 1] = height
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    for y in range(height):
        for x in range(width):
            lab = labels[y, x]
            if lab == 0 or lab > n:
                continue
            _extend_box(bbox, lab - 1, x, y)
    return bbox


@kernel
def relabel(labels, mapping):
    """``labels = mapping[labels]`` in place (int32), without a temporary array."""
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            lab = labels[y, x]
            if lab != 0:
                labels[y, x] = mapping[lab]
