"""``promptcal calibrate``: calibrate one exposure (or two snaps) and write the products.

``promptcal calibrate EXPOSURE.fits [SNAP2.fits] --refcat DIR --output DIR [options]``
reads the exposure(s), runs :class:`~promptcal.pipeline.task.CalibrateImageTask` and writes
the products described in ``docs/products.md``. Exit codes: 0 success; 2 invalid input
(unreadable file, refcat not covering the field, bad option); 3 algorithm failure, with
the partial products and ``summary.json`` (``status: failed``) written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from promptcal.core.errors import AlgorithmError, InvalidInputError

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``calibrate`` sub-command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate one exposure (or two snaps) and write the products",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "exposures", nargs="+", metavar="EXPOSURE.fits", help="exposure, or the two snaps"
    )
    parser.add_argument("--refcat", required=True, help="reference-catalog directory")
    parser.add_argument("--output", "-o", required=True, help="directory of the products")
    parser.add_argument("--band", help="band of the exposure (overrides the header)")
    parser.add_argument("--config", help="JSON file of config overrides (nested or dotted keys)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, value parsed as JSON when it parses (repeatable)",
    )
    parser.add_argument(
        "--pointing",
        nargs=2,
        type=float,
        metavar=("RA", "DEC"),
        help="approximate pointing of the detector centre [deg] (for a poor or missing WCS)",
    )
    parser.add_argument("--pixel-scale", type=float, help="nominal pixel scale [arcsec/px]")
    parser.add_argument("--rotation", type=float, help="approximate rotation [deg]")
    parser.add_argument("--gain", type=float, help="gain [e-/count] (overrides the header)")
    parser.add_argument("--read-noise", type=float, help="read noise [e-] (overrides the header)")
    parser.add_argument("--saturation", type=float, help="saturation level [count]")
    parser.add_argument(
        "--weight", metavar="FILE", help="inverse-variance map (single-image frames)"
    )
    parser.add_argument(
        "--mask", metavar="FILE", help="data-quality map, non-zero = bad (single-image frames)"
    )
    parser.add_argument("--visit", type=int, help="visit number (source ids, summary)")
    parser.add_argument("--detector", type=int, help="detector number (source ids, summary)")
    parser.add_argument("--plots", action="store_true", help="also write QA figures (PNG)")
    parser.set_defaults(handler=run)
    return parser


def _flatten(config, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> dotted keys, descending only into sub-configs (dict fields stay)."""
    from promptcal.core.config import Config

    out: dict[str, Any] = {}
    for key, value in data.items():
        sub = getattr(config, key, None) if config is not None and "." not in key else None
        if isinstance(sub, Config) and isinstance(value, dict):
            out.update(_flatten(sub, value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def build_config(config_file: str | None, overrides: list[str]):
    """Default config, then the JSON file, then the ``--set`` pairs (later wins)."""
    from promptcal.core.config import parse_set_option
    from promptcal.pipeline.config import CalibrateImageConfig

    config = CalibrateImageConfig()
    if config_file is not None:
        try:
            data = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"--config {config_file}: cannot read JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InvalidInputError(f"--config {config_file}: expected a JSON object")
        config = config.with_overrides(_flatten(config, data))
    pairs = dict(parse_set_option(text) for text in overrides)
    return config.with_overrides(pairs) if pairs else config


#: Header cards that give a nominal pixel scale [arcsec/px] on small-telescope frames.
PIXEL_SCALE_CARDS = ("PIXSCALE", "IM_SCALE", "SECPIX", "PIXSCAL1", "SCALE")


def _header_hint(exposure):
    """A pointing hint from the header (boresight RA/Dec and a pixel-scale card) for
    frames without a WCS, so they solve without command-line options; else None."""
    from promptcal.pipeline.astrometry.fitter import PointingHint

    if exposure.wcs is not None or exposure.visit_info.boresight_ra_dec is None:
        return None
    for card in PIXEL_SCALE_CARDS:
        value = exposure.metadata.get(card)
        try:
            scale = float(value)
        except (TypeError, ValueError):
            continue
        if 0 < scale < 3600:
            ra, dec = exposure.visit_info.boresight_ra_dec
            log.info("no WCS: pointing hint from the header (%s, %s, %s=%s)", ra, dec, card, scale)
            return PointingHint(float(ra) % 360.0, float(dec), scale)
    return None


def _pointing_hint(args, exposure):
    from promptcal.pipeline.astrometry.fitter import PointingHint

    if args.pointing is None and args.pixel_scale is None:
        if args.rotation is not None:
            raise InvalidInputError("--rotation needs --pointing and --pixel-scale")
        return _header_hint(exposure)
    if args.pixel_scale is None or not args.pixel_scale > 0:
        raise InvalidInputError("--pointing needs --pixel-scale > 0 [arcsec/px]")
    if args.pointing is not None:
        ra, dec = args.pointing
    elif exposure.wcs is not None:
        sky = exposure.wcs.all_pix2world([exposure.center[0]], [exposure.center[1]], 0)
        ra, dec = float(sky[0][0]), float(sky[1][0])
    elif exposure.visit_info.boresight_ra_dec is not None:
        ra, dec = exposure.visit_info.boresight_ra_dec
    else:
        raise InvalidInputError("--pixel-scale without --pointing needs a WCS or boresight")
    if not -90.0 <= dec <= 90.0:
        raise InvalidInputError(f"--pointing Dec must be within [-90, 90] deg, got {dec}")
    return PointingHint(float(ra) % 360.0, float(dec), float(args.pixel_scale), args.rotation)


def _apply_ids(args, exposures) -> Any:
    """Apply --visit/--detector to every snap; the id generator they define (or None)."""
    from promptcal.core.exposure import Detector
    from promptcal.core.ids import IdGenerator

    for exposure in exposures:
        if args.visit is not None:
            exposure.visit_info.exposure_id = int(args.visit)
        if args.detector is not None:
            if exposure.detector is None:
                exposure.detector = Detector(id=int(args.detector))
            else:
                exposure.detector.id = int(args.detector)
    if args.visit is None and args.detector is None:
        return None
    first = exposures[0]
    detector = first.detector.id if first.detector is not None else 0
    return IdGenerator(visit=int(first.visit_info.exposure_id), detector=int(detector))


def _print_summary(result, output: Path, elapsed: float) -> None:
    summary = result.summary or {}

    def value(key: str) -> float:
        item = summary.get(key)
        return float("nan") if item is None else float(item)

    calib = result.applied_photo_calib or result.output_exposure.photo_calib
    sigma, scale = value("psfSigma"), value("pixelScale")
    fwhm = 2.0 * (2.0 * 0.6931471805599453) ** 0.5 * sigma
    stars = result.stars
    n_used = int(stars["calib_psf_used"].sum()) if "calib_psf_used" in stars.colnames else 0
    lines = [
        f"promptcal: calibrated {result.output_exposure.band or '?'}-band exposure -> {output}",
        f"  zero point   {value('zeroPoint'):.3f} AB mag/count"
        + (f" (calibration {calib.mean:.4g} ± {calib.error:.2g} nJy/count)" if calib else ""),
        f"  PSF FWHM     {fwhm:.2f} px = {fwhm * scale:.3f} arcsec",
        f"  stars        {len(stars)} ({n_used} used for the PSF)",
        f"  astrometry   offsets mean {1e3 * value('astromOffsetMean'):.1f} mas, "
        f"scatter {1e3 * value('astromOffsetStd'):.1f} mas",
        f"  wall time    {elapsed:.2f} s",
    ]
    print("\n".join(lines))


#: Heap one calibration reaches per pixel of its input, beyond what the imports use
#: (4k×4k: 0.93 GB peak RSS, ~0.2 GB of it code and libraries) [B/px]. A worker
#: reserves more (``HEAP_BYTES_PER_PIXEL``): it writes one exposure while it calibrates
#: the next.
CALIBRATE_HEAP_BYTES_PER_PIXEL = 44


def _reserve_heap(paths: list[str]):
    """Start faulting in the heap the calibration of ``paths`` will need, on another
    core while this one imports (:func:`~promptcal.core.allocator.reserve_heap_in_background`);
    returns its ``finish``. Sized from the largest image header; a file whose header
    cannot be read reserves nothing (reading it reports the error)."""
    from promptcal.core.allocator import reserve_heap_in_background
    from promptcal.io.fits_scan import scan_fits

    pixels = 0
    for path in paths:
        try:
            hdu = scan_fits(path).image_hdu()
        except (InvalidInputError, OSError):
            continue
        if hdu is not None:
            width, height = hdu.image_shape
            pixels = max(pixels, width * height)
    return reserve_heap_in_background(CALIBRATE_HEAP_BYTES_PER_PIXEL * pixels)


def run(args: argparse.Namespace) -> int:
    """Run ``promptcal calibrate``; returns the exit code (exceptions map in ``cli.main``)."""
    heap_reserved = _reserve_heap(args.exposures[:2])  # first: it overlaps the imports
    try:
        from promptcal.core.kernel_cache import start_kernel_preload
        from promptcal.core.task import Struct
        from promptcal.io import read_exposure
        from promptcal.io.products import write_products
        from promptcal.pipeline import DEFERRED_IMPORTS
        from promptcal.pipeline.task import CalibrateImageTask
        from promptcal.refcat import RefcatLoader

        start = time.perf_counter()
        if not 1 <= len(args.exposures) <= 2:
            raise InvalidInputError(f"expected 1 or 2 exposures (snaps), got {len(args.exposures)}")
        config = build_config(args.config, args.overrides)
        # Cached kernels and deferred modules load while the pixels are read.
        preload = start_kernel_preload(imports=DEFERRED_IMPORTS)
        refcat = RefcatLoader(args.refcat)
    finally:
        heap_reserved()
    exposures = [
        read_exposure(
            path,
            gain=args.gain,
            read_noise=args.read_noise,
            saturation=args.saturation,
            band=args.band,
            weight_path=args.weight,
            mask_path=args.mask,
        )
        for path in args.exposures
    ]
    read_time = time.perf_counter() - start
    hint = _pointing_hint(args, exposures[0])
    id_generator = _apply_ids(args, exposures)
    task = CalibrateImageTask(config, refcat=refcat)
    result = Struct()
    output = Path(args.output)
    write_kwargs = {"task": task, "plots": args.plots, "inputs": args.exposures}
    try:
        task.run(
            exposures=exposures[0] if len(exposures) == 1 else exposures,
            id_generator=id_generator,
            result=result,
            pointing_hint=hint,
        )
    except AlgorithmError:
        preload.join()
        _write(write_products, result, output, status="failed", read=read_time, **write_kwargs)
        print(
            f"promptcal: calibration failed; partial products and summary.json in {output}",
            file=sys.stderr,
        )
        raise
    preload.join()  # long done: no thread is left loading code when the process ends
    _write(write_products, result, output, status="success", read=read_time, **write_kwargs)
    _print_summary(result, output, time.perf_counter() - start)
    return 0


def _write(write_products, result, output: Path, *, read: float, plots: bool, **kwargs) -> None:
    try:
        extra = {}
        if plots:
            from promptcal.qa.plots import write_plots  # lazy: matplotlib is slow to import

            output.mkdir(parents=True, exist_ok=True)
            extra = write_plots(result, output, task=kwargs["task"])
        write_products(result, output, timings={"read": read}, extra_products=extra, **kwargs)
    except OSError as exc:
        raise InvalidInputError(f"--output {output}: cannot write the products ({exc})") from exc
