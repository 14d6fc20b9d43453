#!/usr/bin/env python
"""Benchmark the background backends (numba vs sep) on a synthetic LSST-sized image.

Prints JSON: wall times per backend (estimation and full-resolution evaluation, best
of ``--repeat``), accuracy of the evaluated model against the true smooth background
(RMS and max error in units of the noise σ), and the numba/sep time ratio.

Usage: ``python scripts/bench_background.py [--height 4096 --width 4072 --repeat 5]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from promptcal.core.exposure import DEFAULT_MASK_PLANES
from promptcal.pipeline.background import BackgroundConfig, estimate_background


def make_scene(height: int, width: int, n_stars: int, sigma: float, seed: int):
    """Flat 1000 + gradient + gentle curvature + noise + Gaussian stars, DETECTED masked.

    Returns (image float32, mask int32, true background float64, detected bit).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    u, v = xx / width - 0.5, yy / height - 0.5
    truth = 1000.0 + 40.0 * u - 25.0 * v + 30.0 * u * u + 20.0 * u * v - 15.0 * v * v
    stars = np.zeros((height, width), np.float64)
    psf_sigma = 2.0
    half = 12
    g = np.arange(-half, half + 1)
    flux = 10 ** rng.uniform(3.0, 6.0, n_stars)
    xs = rng.uniform(half, width - half - 1, n_stars)
    ys = rng.uniform(half, height - half - 1, n_stars)
    for f, x, y in zip(flux, xs, ys, strict=True):
        ix, iy = int(x), int(y)
        gx = np.exp(-0.5 * ((g + ix - x) / psf_sigma) ** 2)
        gy = np.exp(-0.5 * ((g + iy - y) / psf_sigma) ** 2)
        stamp = np.outer(gy, gx)
        stars[iy - half : iy + half + 1, ix - half : ix + half + 1] += f * stamp / stamp.sum()
    image = (truth + stars + rng.normal(0.0, sigma, (height, width))).astype(np.float32)
    detected = 1 << DEFAULT_MASK_PLANES["DETECTED"]
    # "Detection" by a threshold on the noiseless stars: faint wings stay unmasked,
    # as they would in a real detection pass.
    mask = np.where(stars > 0.5 * sigma, detected, 0).astype(np.int32)
    return image, mask, truth, detected


def run_backend(implementation, image, mask, bits, truth, sigma, repeat):
    config = BackgroundConfig(implementation=implementation)
    estimate_background(image[:300, :300], mask[:300, :300], bits, config)  # warm-up / JIT
    est_times, eval_times, into_times = [], [], []
    buffer = np.empty(image.shape, np.float32)
    for _ in range(repeat):
        t0 = time.perf_counter()
        model = estimate_background(image, mask, bits, config)
        t1 = time.perf_counter()
        evaluated = model.evaluate()
        t2 = time.perf_counter()
        model.evaluate(out=buffer)
        t3 = time.perf_counter()
        est_times.append(t1 - t0)
        eval_times.append(t2 - t1)
        into_times.append(t3 - t2)
    resid = (evaluated - truth) / sigma
    return {
        "estimate_s": round(min(est_times), 4),
        "evaluate_s": round(min(eval_times), 4),
        "evaluate_into_buffer_s": round(min(into_times), 4),
        "total_s": round(min(est_times) + min(eval_times), 4),
        "rms_error_sigma": float(np.sqrt(np.mean(resid**2))),
        "max_error_sigma": float(np.max(np.abs(resid))),
        "bins": list(model.values.shape),
        "orders": [model.order_x, model.order_y],
    }


def sep_native(image, mask, bits, truth, sigma):
    """sep's own bicubic-spline background (for reference; not a promptcal backend)."""
    import sep

    t0 = time.perf_counter()
    bkg = sep.Background(image, mask=(mask & bits) != 0, bw=128, bh=128, fw=3, fh=3)
    back = bkg.back()
    elapsed = time.perf_counter() - t0
    resid = (back - truth) / sigma
    return {
        "total_s": round(elapsed, 4),
        "rms_error_sigma": float(np.sqrt(np.mean(resid**2))),
        "max_error_sigma": float(np.max(np.abs(resid))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=4096)
    parser.add_argument("--width", type=int, default=4072)
    parser.add_argument("--stars", type=int, default=3000)
    parser.add_argument("--sigma", type=float, default=30.0, help="noise σ [counts]")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    image, mask, truth, bits = make_scene(
        args.height, args.width, args.stars, args.sigma, args.seed
    )
    result = {
        "shape": [args.height, args.width],
        "noise_sigma": args.sigma,
        "n_stars": args.stars,
        "masked_fraction": float(np.mean(mask != 0)),
    }
    for impl in ("numba", "sep"):
        result[impl] = run_backend(impl, image, mask, bits, truth, args.sigma, args.repeat)
    result["sep_native_spline"] = sep_native(image, mask, bits, truth, args.sigma)
    result["ratio_numba_over_sep_total"] = round(
        result["numba"]["total_s"] / result["sep"]["total_s"], 3
    )
    result["ratio_numba_over_sep_estimate"] = round(
        result["numba"]["estimate_s"] / result["sep"]["estimate_s"], 3
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
