"""Render analytic sources into an image, one circular stamp per source.

A *source* is a list of elliptical *components* sharing one centre. Component ``c``
has the value ``amp[c] * f(Q)`` at offset ``d = (dx, dy)`` from the centre, with
``Q = qa dx² + 2 qb dx dy + qc dy²`` and ``f(Q) = exp(-Q/2)`` (``kind 0``,
Gaussian) or ``(1 + Q)^-beta`` (``kind 1``, Moffat). Values are taken at pixel
centres; within ``ss_radius`` of the centre they are the mean of
``supersample × supersample`` sub-pixel samples.
"""

from __future__ import annotations

import numpy as np

from promptcal.kernels._jit import kernel


@kernel
def _component_sum(dx, dy, c0, c1, amp, qa, qb, qc, kind, beta):
    val = 0.0
    for c in range(c0, c1):
        q = qa[c] * dx * dx + 2.0 * qb[c] * dx * dy + qc[c] * dy * dy
        if kind[c] == 0:
            val += amp[c] * np.exp(-0.5 * q)
        else:
            val += amp[c] * np.exp(-beta[c] * np.log1p(q))
    return val


# Over 80 lines through its 17 arguments and their documentation: the body, one pass
# per source, is ~60 lines.
@kernel
def render_sources(
    image,
    x0,
    y0,
    src_start,
    xc,
    yc,
    radius,
    ss_radius,
    supersample,
    amp,
    qa,
    qb,
    qc,
    kind,
    beta,
    variance,
    mode,
):
    """Add sources to ``image`` (mode 0), or measure their S/N² (1) or apertures (2).

    Parameters
    ----------
    image : numpy.ndarray
        2-D float32/float64 array, modified in place in mode 0 [count].
    x0, y0 : int
        Parent position of ``image[0, 0]`` [px].
    src_start : numpy.ndarray
        int64, length n_sources + 1; source ``s`` owns components
        ``src_start[s]:src_start[s + 1]``.
    xc, yc : numpy.ndarray
        Parent centre of each source [px].
    radius : numpy.ndarray
        Stamp radius of each source (pixels whose centre is farther are skipped) [px].
    ss_radius : numpy.ndarray
        Radius within which pixels are supersampled [px].
    supersample : int
        Sub-pixel samples per axis (1: pixel centres only).
    amp, qa, qb, qc, kind, beta : numpy.ndarray
        Per component: peak value [count/px], inverse-shape coefficients [px⁻²],
        profile kind (0 Gaussian, 1 Moffat), Moffat beta.
    variance : numpy.ndarray
        Expected variance, same shape as ``image`` (read in mode 1 only) [count²].
    mode : int
        0: add to ``image``; 1: accumulate ``value² / variance``; 2: accumulate the
        ``image`` pixels over the stamp (an aperture sum; ``image`` is read only).

    Returns
    -------
    total : numpy.ndarray
        Per source, the sum of its own values over the stamp pixels within the image
        [count] (all modes).
    other : numpy.ndarray
        Per source: mode 1 ``Σ value² / variance``; mode 2 ``Σ image``; mode 0 zeros.
    """
    n_src = src_start.shape[0] - 1
    height, width = image.shape
    total = np.zeros(n_src)
    snr2 = np.zeros(n_src)
    ns = supersample
    step = 1.0 / ns
    first = -0.5 + 0.5 * step
    for s in range(n_src):
        c0 = src_start[s]
        c1 = src_start[s + 1]
        if c1 <= c0:
            continue
        cx = xc[s]
        cy = yc[s]
        r = radius[s]
        r2 = r * r
        ss2 = ss_radius[s] * ss_radius[s]
        ix_lo = max(int(np.floor(cx - r)) - x0, 0)
        ix_hi = min(int(np.ceil(cx + r)) - x0, width - 1)
        iy_lo = max(int(np.floor(cy - r)) - y0, 0)
        iy_hi = min(int(np.ceil(cy + r)) - y0, height - 1)
        acc = 0.0
        acc2 = 0.0
        for iy in range(iy_lo, iy_hi + 1):
            dy = iy + y0 - cy
            for ix in range(ix_lo, ix_hi + 1):
                dx = ix + x0 - cx
                d2 = dx * dx + dy * dy
                if d2 > r2:
                    continue
                if ns > 1 and d2 <= ss2:
                    val = 0.0
                    for sy in range(ns):
                        for sx in range(ns):
                            val += _component_sum(
                                dx + first + sx * step,
                                dy + first + sy * step,
                                c0,
                                c1,
                                amp,
                                qa,
                                qb,
                                qc,
                                kind,
                                beta,
                            )
                    val /= ns * ns
                else:
                    val = _component_sum(dx, dy, c0, c1, amp, qa, qb, qc, kind, beta)
                acc += val
                if mode == 0:
                    image[iy, ix] += val
                elif mode == 1:
                    acc2 += val * val / variance[iy, ix]
                else:
                    acc2 += image[iy, ix]
        total[s] = acc
        snr2[s] = acc2
    return total, snr2
