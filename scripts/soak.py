#!/usr/bin/env python
"""Soak test: stream many exposures through two ``promptcal serve`` workers (issue 15).

Simulates a few fields of ``--detectors`` detectors of ``--size``² px and a reference
catalog of their truth, starts the bundled broker and ``--workers`` workers (single
threaded, unpinned, default warm-up), then publishes ``--exposures`` exposures (each a
new visit id over the simulated files: the message is authoritative for identity),
``next-visit`` first, keeping at most ``--backlog`` exposures unanswered, and
consumes the ``calibrated`` results. Each result's products are checked (summary.json
present) and removed, as a downstream consumer would, so the disk stays bounded
(``--keep`` keeps them). Every second the workers' resident memory (``VmRSS``) is
sampled.

Reported (one JSON object on stdout): throughput (all, and after warm-up), latency
percentiles (``image-ready`` ``produced_at`` → ``calibrated`` ``produced_at``), RSS
over time per worker and its growth after warm-up (median of the last fifth of the
run over the median of the fifth after warm-up), exposures lost and duplicates.

Usage: ``python scripts/soak.py [--exposures 500 --size 1024 --workers 2]``; the CI
variant (``tests/scripts/test_soak_smoke.py``) runs ``--exposures 60 --size 512``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

SINGLE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
INSTRUMENT = "SoakCam"
PARTITIONS = 4


def balanced_detectors(n: int) -> list[int]:
    """``n`` detector ids, half hashing to partitions {0, 1} (first worker, range
    assignor) and half to {2, 3}."""
    from promptcal.stream.topics import partition_for_key

    low, high = [], []
    for det in range(1000):
        (low if partition_for_key(str(det).encode(), PARTITIONS) < 2 else high).append(det)
    return sorted(low[: (n + 1) // 2] + high[: n // 2])


def simulate(root: Path, detectors: list[int], size: int, fields: int) -> dict:
    """Snap files per (field, detector), the camera file and the refcat directory."""
    from astropy.table import vstack

    from promptcal.core.camera import Camera, DetectorGeometry, predict_detector_wcs, write_camera
    from promptcal.io import write_exposure
    from promptcal.refcat import build_refcat
    from promptcal.simulate import SkyConfig, refcat_table_from_truth, simulate_exposure

    pitch = size * 0.01 + 0.5  # [mm] 10 µm pixels, 0.5 mm gaps
    camera = Camera(
        name="soak", pixel_scale_arcsec=0.2,
        detectors=tuple(DetectorGeometry(id=d, name=f"D{d}", width=size, height=size,
                                         center_x_mm=i * pitch, center_y_mm=0.0)
                        for i, d in enumerate(detectors)),
    )  # fmt: skip
    (root / "raw").mkdir(parents=True)
    write_camera(camera, root / "camera.json")
    files, truths = {}, []
    for field in range(fields):
        ra, dec = 150.0 + 2.0 * field, 2.0
        for det in detectors:
            wcs = predict_detector_wcs(camera, det, ra, dec, 0.0)
            c_ra, c_dec = wcs.pixel_to_world_values((size - 1) / 2, (size - 1) / 2)
            config = SkyConfig(
                width=size, height=size, ra=float(c_ra) % 360, dec=float(c_dec),
                pixel_scale=0.2, n_stars=max(60, size * size // 8000), star_flux_min=3000.0,
                sip_order=0, background=500.0, band="r", calibration=20.0, exposure_id=field,
                detector_id=det, n_snaps=1,
            )  # fmt: skip
            sim = simulate_exposure(config, seed=100 * field + det)
            truth = sim.truth.copy()
            truth["id"] = truth["id"] + 1_000_000 * (100 * field + det + 1)
            truths.append(truth)
            path = root / "raw" / f"f{field}_d{det}.fits"
            write_exposure(sim.snaps[0], path)
            files[(field, det)] = (path, ra, dec)
    table = refcat_table_from_truth(vstack(truths), "r")
    table.write(root / "refcat.parquet", format="parquet")
    build_refcat(root / "refcat.parquet", root / "refcat", ra_col="ra", dec_col="dec",
                 bands={"r": ("r_flux", "nJy")}, band_errors={"r": "r_fluxErr"})  # fmt: skip
    return files


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_ready(port: int, process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"worker exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("worker not ready in time")


def start_workers(args, work: Path, bootstrap: str, prefix: str) -> list:
    """``--workers`` ``promptcal serve`` processes, ready: (process, port, log file)."""
    from promptcal.stream.broker import free_port

    workers = []
    for i in range(args.workers):
        port = free_port()
        command = [
            sys.executable, "-m", "promptcal", "serve", "--bootstrap", bootstrap,
            "--group", "soak", "--refcat", str(work / "refcat"),
            "--output", str(work / "out"), "--input-root", str(work / "raw"),
            "--prefix", prefix, "--camera", str(work / "camera.json"),
            "--http-port", str(port), "--statistics-interval-ms", "0",
            "--consumer-option", "session.timeout.ms=6000",
            "--consumer-option", "heartbeat.interval.ms=500",
        ]  # fmt: skip
        log = open(work / f"worker{i}.log", "wb")  # closed after the worker exits
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **SINGLE_THREAD})  # fmt: skip
        workers.append((process, port, log))
    for process, port, _ in workers:
        wait_ready(port, process, 120)
    return workers


class RssSampler(threading.Thread):
    """Samples each worker's VmRSS every second: ``samples`` of (t, worker, bytes)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.samples, self.halt = pids, [], threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            for i, pid in enumerate(self.pids):
                rss = rss_bytes(pid)
                if rss is not None:
                    self.samples.append((time.monotonic(), i, rss))


def publish(producer, names, files, detectors, fields: int, index: int) -> None:
    """``next-visit`` then ``image-ready`` of exposure ``index`` (a new visit id)."""
    from promptcal.service.messages import ImageReady, NextVisit, encode

    det = detectors[index % len(detectors)]
    visit = 1000 + index // len(detectors)
    path, ra, dec = files[((index // len(detectors)) % fields, det)]
    nv = NextVisit(
        instrument=INSTRUMENT, visit=visit, detector=det, group_id=str(visit), band="r",
        boresight_ra=ra, boresight_dec=dec, rotation_angle=0.0,
        start_time="2026-12-01T00:00:00Z", exposure_duration=30.0, n_snaps=1,
        private_sndStamp=time.time(),
    )  # fmt: skip
    producer.produce(names.next_visit, encode(nv), nv.key())
    ir = ImageReady(
        instrument=INSTRUMENT, visit=visit, detector=det, snap=0, n_snaps=1, band="r",
        exposure_time=30.0, mid_exposure_time="2026-12-01T00:00:15Z", uri=path.as_uri(),
        produced_at=time.time(),
    )  # fmt: skip
    producer.produce(names.image_ready, encode(ir), ir.key())
    producer.flush(10)


def soak(args, work: Path) -> dict:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from promptcal.service.locations import uri_to_path
    from promptcal.service.messages import Calibrated, decode
    from promptcal.stream.broker import LocalBroker
    from promptcal.stream.topics import TopicNames, create_topics, producer_config

    detectors = balanced_detectors(args.detectors)
    t0 = time.monotonic()
    files = simulate(work, detectors, args.size, args.fields)
    print(f"simulated {len(files)} files in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    names = TopicNames("soak.")
    with LocalBroker() as broker:
        create_topics(broker.bootstrap, partitions=PARTITIONS, prefix=names.prefix)
        workers = start_workers(args, work, broker.bootstrap, names.prefix)
        sampler = RssSampler([process.pid for process, _, _ in workers])
        sampler.start()
        reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "soak-reader",
                           "enable.auto.commit": False})  # fmt: skip
        reader.assign([TopicPartition(names.calibrated, p, OFFSET_BEGINNING)
                       for p in range(PARTITIONS)])  # fmt: skip
        producer = Producer(producer_config(broker.bootstrap))
        results: dict[tuple[int, int], list] = {}
        done_at: list[float] = []
        published, start = 0, time.monotonic()
        while len(done_at) < args.exposures:
            assert time.monotonic() < start + args.timeout, f"timed out at {len(done_at)}"
            while published < args.exposures and published - len(done_at) < args.backlog:
                publish(producer, names, files, detectors, args.fields, published)
                published += 1
            message = reader.poll(0.05)
            if message is None or message.error() is not None:
                continue
            result = decode(message.value(), Calibrated)
            key = (result.visit, result.detector)
            if key not in results:
                done_at.append(time.monotonic())
            results.setdefault(key, []).append(result)
            summary = uri_to_path(result.products["summary"])
            assert summary.is_file(), summary
            if not args.keep:  # a downstream consumer took them: keep the disk bounded
                shutil.rmtree(summary.parent, ignore_errors=True)
        sampler.halt.set()
        sampler.join(5)
        codes = []
        for process, _, log in workers:
            process.send_signal(signal.SIGTERM)
            codes.append(process.wait(60))
            log.close()
        reader.close()
    return report(args, results, done_at, start, sampler.samples, codes)


def report(args, results, done_at, start, samples, codes) -> dict:
    firsts = [items[0] for items in results.values()]
    latencies = [r.end_to_end_latency for r in firsts if r.end_to_end_latency is not None]
    warm = max(1, len(done_at) // 10)  # the first tenth is warm-up
    out = {
        "exposures": args.exposures, "size": args.size, "workers": args.workers,
        "statuses": {s: sum(r.status == s for r in firsts) for s in ("success", "failed")},
        "lost": args.exposures - len(results),
        "duplicates": sum(len(v) - 1 for v in results.values()),
        "duplicates_identical": all(
            len({json.dumps(r.model_dump(mode="json", exclude={"produced_at", "timings",
                 "end_to_end_latency"}), sort_keys=True) for r in v}) == 1
            for v in results.values()),
        "seconds": round(done_at[-1] - start, 2),
        "throughput_per_s": round(len(done_at) / (done_at[-1] - start), 3),
        "throughput_after_warmup_per_s": round(
            (len(done_at) - warm) / (done_at[-1] - done_at[warm - 1]), 3),
        "latency_s": {f"p{q}": round(percentile(latencies, q), 3) for q in (50, 90, 99)}
        | {"max": round(max(latencies), 3), "mean": round(statistics.fmean(latencies), 3)},
        "worker_exit_codes": codes,
    }  # fmt: skip
    warm_t, end_t = done_at[warm - 1], done_at[-1]
    span = end_t - warm_t
    rss = {}
    for worker in range(args.workers):
        series = [(t, b) for t, w, b in samples if w == worker]
        early = [b for t, b in series if warm_t <= t <= warm_t + span / 5]
        late = [b for t, b in series if t >= end_t - span / 5]
        growth = statistics.median(late) / statistics.median(early) - 1 if early and late else None
        rss[f"w{worker}"] = {
            "mb_over_time": [[round(t - start, 1), round(b / 1e6, 1)] for t, b in series[:: max(
                1, len(series) // 40)]],
            "early_mb": round(statistics.median(early) / 1e6, 1) if early else None,
            "late_mb": round(statistics.median(late) / 1e6, 1) if late else None,
            "growth_after_warmup": None if growth is None else round(growth, 4),
        }  # fmt: skip
    out["rss"] = rss
    growths = [
        v["growth_after_warmup"] for v in rss.values() if v["growth_after_warmup"] is not None
    ]
    out["rss_growth_after_warmup_max"] = max(growths) if growths else None
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=500)
    parser.add_argument("--size", type=int, default=1024, help="detector side [px]")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--detectors", type=int, default=4)
    parser.add_argument("--fields", type=int, default=2, help="distinct simulated visits")
    parser.add_argument("--backlog", type=int, default=4, help="exposures unanswered at most")
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound on the stream [s]")
    parser.add_argument("--keep", action="store_true", help="keep the products")
    parser.add_argument("--workdir", type=Path, help="where to simulate (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="promptcal-soak-"))
    try:
        result = soak(args, work)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0 if result["lost"] == 0 and result["duplicates_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
