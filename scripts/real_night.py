#!/usr/bin/env python
"""The real archived night end to end: index, replay through Kafka, report, figures.

1. build the reference catalog (Gaia DR3 G<10 of ``microobs-hatp32``) if missing;
2. ``promptcal archive index`` the night's directory (``microobs-hatp32-night``, 104
   frames) with the MicroObservatory header mapping (``--every N``: every N-th frame
   only, linked into ``OUTPUT/frames``);
3. start the bundled broker (topics with ``--partitions``), ``--workers`` ``promptcal
   serve`` processes (one per CPU, ``configs/microobservatory.json``) and wait until
   they are ready;
4. ``promptcal replay --to kafka --speed max`` and wait for every result;
5. stop the workers and write the night report (``OUTPUT/products/report``);
6. with ``--compare-local``: replay the same manifest ``--to local`` (2 processes) into
   ``OUTPUT/local`` and compare every product byte for byte (``summary.json`` without
   its timestamps and timings); not part of the wall time.

Prints one JSON object: the index rate, frames solved by the issue's definition (≥ 8
astrometric matches, median match residual ≤ 1 px, pixel scale within 1 % of the
night's median), the largest distance between consecutive solved centres, every frame
not solved with the reason, and the wall time of steps 1–5 (issue 12 asks ≤ 120 s for
the full night on the 2-core machine, including the report).

Usage: ``python scripts/real_night.py [--output DIR] [--every 1] [--compare-local]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
import uuid
from pathlib import Path

from shared_data import real_data_dir  # scripts/ is on sys.path as a script

ROOT = Path(__file__).resolve().parents[1]


def build_refcat(out: Path) -> Path:
    """The Gaia G<10 catalog of the field as a promptcal refcat (built once)."""
    from promptcal.refcat import build_refcat as build

    refcat = out / "refcat"
    if not (refcat / "manifest.json").is_file():
        build(
            real_data_dir() / "microobs-hatp32" / "gaia_dr3_g10_hatp32_r1.5deg.csv",
            refcat,
            ra_col="ra",
            dec_col="dec",
            id_col="source_id",
            bands={"G": ("phot_g_mean_mag", "mag")},
            overwrite=True,
        )
    return refcat


def select_frames(night: Path, out: Path, every: int) -> Path:
    """The night's directory, or every ``every``-th frame linked into ``out/frames``."""
    if every <= 1:
        return night
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for path in sorted(night.glob("*.fits"))[::every]:
        link = frames / path.name
        if not link.exists():
            link.symlink_to(path)
    return frames


def replay_through_kafka(manifest: Path, refcat: Path, products: Path, args) -> dict:
    """Broker, workers, replay; the replay summary and the worker start-up time."""
    from promptcal.replay.kafka import replay_kafka
    from promptcal.replay.workers import ServeFleet
    from promptcal.stream.broker import LocalBroker
    from promptcal.stream.topics import create_topics

    prefix = f"night{uuid.uuid4().hex[:6]}."
    with LocalBroker() as broker:
        create_topics(broker.bootstrap, partitions=args.partitions, prefix=prefix)
        fleet = ServeFleet(
            args.workers, bootstrap=broker.bootstrap, group=f"{prefix}workers", prefix=prefix,
            refcat=refcat, output=products, camera=manifest.parent / "camera.json",
            logs=args.output / "logs", config=ROOT / "configs" / "microobservatory.json",
        )  # fmt: skip
        with fleet:
            ready = fleet.wait_ready()
            summary = replay_kafka(
                manifest, broker.bootstrap, prefix=prefix, output=products, timeout=120.0,
                progress=False,
            )  # fmt: skip
            codes = fleet.stop()
    return {"workers_ready_s": round(ready, 2), "summary": summary, "worker_exit_codes": codes}


def product_hashes(root: Path) -> dict[str, str]:
    """sha256 of every product file (``summary.json`` without timestamps and timings)."""
    out = {}
    for path in sorted(root.glob("*/*/*/*")):
        if path.name == "summary.json":
            doc = json.loads(path.read_text())
            for key in ("created", "timings"):
                doc.pop(key, None)
            data = json.dumps(doc, sort_keys=True).encode()
        else:
            data = path.read_bytes()
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def compare_local(manifest: Path, products: Path, out: Path) -> dict:
    """Replay ``--to local`` (2 processes) and compare its products with Kafka's."""
    from promptcal.commands.calibrate import build_config
    from promptcal.replay.local import replay_local

    local = out / "local"
    t0 = time.monotonic()
    config = build_config(str(ROOT / "configs" / "microobservatory.json"), [])
    replay_local(manifest, local, workers=2, config=config, progress=False)
    kafka_hashes, local_hashes = product_hashes(products), product_hashes(local)
    differ = sorted(k for k in kafka_hashes.keys() | local_hashes.keys()
                    if kafka_hashes.get(k) != local_hashes.get(k))  # fmt: skip
    return {
        "local_wall_time_s": round(time.monotonic() - t0, 1),
        "files_compared": len(kafka_hashes),
        "files_differing": differ,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--night", type=Path, help="frames (default: the shared microobs-hatp32-night)"
    )
    parser.add_argument("--output", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th frame only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--compare-local", action="store_true")
    args = parser.parse_args(argv)
    args.output = (args.output or Path(tempfile.mkdtemp(prefix="real-night-"))).resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    from promptcal.archive import index_archive, load_mapping
    from promptcal.report.html import write_report

    t0 = time.monotonic()
    refcat = build_refcat(args.output)
    night = args.night or real_data_dir() / "microobs-hatp32-night"
    frames = select_frames(night, args.output, args.every)
    indexed = index_archive(
        frames, args.output / "night" / "manifest.json",
        mapping=load_mapping(ROOT / "configs" / "archive" / "microobservatory.json"),
        pattern="*.fits", refcat=refcat,
    )  # fmt: skip
    manifest, products = indexed.manifest_path, args.output / "products"
    run = replay_through_kafka(manifest, refcat, products, args)
    _index, numbers = write_report(products)
    wall = time.monotonic() - t0
    pointing, summary = numbers["pointing"], run["summary"]
    result = {
        "frames": len(indexed.frames),
        "skipped_by_index": [[p.name, r] for p, r in indexed.skipped],
        "index_files_per_s": round(indexed.files_per_second),
        "calibrated": summary.succeeded,
        "failed": summary.failed,
        "unreadable": summary.dead_letters,
        "without_result": len(summary.missing),
        "solved": pointing["n_solved"],
        "median_pixel_scale": pointing["median_pixel_scale"],
        "max_consecutive_distance_arcmin": pointing["max_consecutive_distance_arcmin"],
        "gaps": pointing["gaps"],
        "max_header_offset_arcmin": pointing["max_header_offset_arcmin"],
        "not_solved": [[m["file"], m["reason"]] for m in pointing["not_solved"]],
        "workers": args.workers,
        "workers_ready_s": run["workers_ready_s"],
        "worker_exit_codes": run["worker_exit_codes"],
        "replay_wall_time_s": round(summary.wall_time, 1),
        "wall_time_s": round(wall, 1),
        "report": str(products / "report" / "index.html"),
    }
    if args.compare_local:
        result["kafka_vs_local"] = compare_local(manifest, products, args.output)
    print(json.dumps(result, indent=1, default=lambda v: None if math.isnan(v) else v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
