"""Dashboards and rules against a real Prometheus scraping a real worker (issue 14).

One short stream for the whole module: the bundled broker, ``promptcal serve`` started
with the arguments of deploy/k8s/deployment.yaml (broker, paths and port swapped for
the test's, plus fast test settings), Prometheus from Debian's package started with
deploy/prometheus/prometheus.yml (targets swapped for the worker) and rules.yml. The
stream: 4 visits × 3 detectors announced by ``next-visit``, a field with too few stars
(failed), a malformed message (dead letter) and one exposure of a detector the camera
does not have. Then every dashboard query and recording rule must return data, every
alert must be quiet on this healthy stream, the metric names and labels must follow the
conventions, and the service dashboard is rendered to ``out/dashboards/*.png``.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from deploy_helpers import K8S, k8s_object, option, pod_spec
from prometheus_client.parser import text_string_to_metric_families
from prometheus_helpers import (
    DASHBOARDS,
    PrometheusServer,
    require_binary,
    rule_exprs,
    scrape_config,
    vector_selectors,
)
from worker_helpers import (
    Visit,
    http_get,
    image_ready,
    next_visit,
    poll_until,
    produce,
    simulate_stream,
)

from promptcal.report.dashboards import (
    PrometheusClient,
    load_dashboard,
    panel_queries,
    render_dashboard,
)
from promptcal.service.messages import encode
from promptcal.stream.broker import free_port
from promptcal.stream.metrics import MESSAGE_KINDS, OUTCOMES, failure_reasons
from promptcal.stream.topics import TopicNames, create_topics, producer_config

pytest_plugins = ["kafka_fixtures"]

pytestmark = pytest.mark.kafka

VISITS = [Visit(v, 150.0 + 0.2 * (v - 1), 2.0) for v in (1, 2, 3, 4)]
FEW_STARS = Visit(6, 151.2, 2.0, n_stars=2, detectors=(0,))
UNKNOWN_DETECTOR = 7  # not in the test camera (detectors 0, 1, 2)
PARTITIONS = 3
N_EXPOSURES = 3 * len(VISITS) + 1 + 1 + 1  # successes, failed, unknown detector, dead letter
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "out" / "dashboards"


@dataclass
class Live:
    prometheus: PrometheusClient
    worker_port: int
    names: TopicNames
    camera_ids: frozenset[int]
    start: float


def _worker_args(stream, bootstrap: str, names: TopicNames, output: Path, port: int) -> list:
    """deploy/k8s/deployment.yaml's worker arguments, with the test's broker and paths."""
    (container,) = pod_spec(k8s_object("Deployment", "promptcal"))["containers"]
    swap = {
        "--bootstrap": bootstrap,
        "--group": f"g-{uuid.uuid4().hex[:8]}",
        "--prefix": names.prefix,
        "--camera": str(stream.camera_path),
        "--refcat": str(stream.refcat),
        "--output": str(output),
        "--config": str(K8S / option(container["args"], "--config").rsplit("/", 1)[1]),
        "--http-port": str(port),
    }
    args = []
    for arg in container["args"]:
        name = arg.split("=", 1)[0]
        args.append(f"{name}={swap[name]}" if name in swap else arg)
    assert set(swap) <= {a.split("=", 1)[0] for a in args}, "deployment lost an option"
    return [
        *args,
        "--statistics-interval-ms=300",
        "--snap-wait=2",
        "--consumer-option=session.timeout.ms=6000",
        "--consumer-option=heartbeat.interval.ms=500",
    ]


def _publish(stream, bootstrap: str, names: TopicNames) -> None:
    producer = Producer(producer_config(bootstrap))
    for v in [*VISITS, FEW_STARS]:
        for det in v.detectors:
            produce(producer, names.next_visit, encode(next_visit(v, det)), str(det).encode())
    for v in [*VISITS, FEW_STARS]:
        for det in v.detectors:
            message = image_ready(v, det, 0, stream.snaps[(v.visit, det)][0])
            produce(producer, names.image_ready, encode(message), str(det).encode())
    stranger = image_ready(Visit(40, 150.0, 2.0), UNKNOWN_DETECTOR, 0, stream.snaps[(1, 0)][0])
    produce(producer, names.image_ready, encode(stranger), str(UNKNOWN_DETECTOR).encode())
    produce(producer, names.image_ready, b"{not json", b"0")


def _handled(port: int) -> float:
    status, text = http_get(port, "/metrics")
    if status != 200:
        return 0.0
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "promptcal_exposures_total"
    )


@pytest.fixture(scope="module")
def live(kafka_broker, tmp_path_factory):
    require_binary("prometheus")
    root = tmp_path_factory.mktemp("live")
    stream = simulate_stream(root / "stream", [*VISITS, FEW_STARS])
    names = TopicNames(f"lsstcam{uuid.uuid4().hex[:6]}.")
    create_topics(kafka_broker.bootstrap, partitions=PARTITIONS, prefix=names.prefix)
    port = free_port()
    args = _worker_args(stream, kafka_broker.bootstrap, names, root / "products", port)
    log = open(root / "worker.log", "wb")  # closed at teardown
    worker = subprocess.Popen(
        [sys.executable, "-m", "promptcal.commands.cli", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        # Through promptcal.stream.clients to the consumer and the producer, as the
        # Deployment's security settings are (librdkafka rejects a name it lacks).
        env={**os.environ, "PROMPTCAL_KAFKA_CLIENT_ID": "promptcal-live-test"},
    )
    try:
        # The warm-up compiles the kernels first if the Numba cache is cold (~25-75 s).
        poll_until(lambda: http_get(port, "/readyz")[0] == 200, 240, "worker ready", step=0.2)
        with PrometheusServer(scrape_config([f"127.0.0.1:{port}"]), root / "prom") as prom:
            client = prom.client
            poll_until(lambda: client.query('up{job="promptcal"} == 1'), 20, "first scrape")
            start = time.time()
            _publish(stream, kafka_broker.bootstrap, names)
            poll_until(lambda: _handled(port) >= N_EXPOSURES, 120, "the stream handled")
            # Prometheus has scraped the end of the stream, the lag gauge is there and
            # drained, and the rules have been evaluated on it.
            poll_until(
                lambda: (
                    client.query(f"sum(promptcal_exposures_total) >= {N_EXPOSURES}")
                    and client.query("sum(promptcal_failures_total) >= 2")
                    and client.query("promptcal:end_to_end_latency_seconds:p99_5m")
                    and client.query("promptcal:image_ready_lag_messages:sum == 0")
                ),
                30,
                "Prometheus caught up",
            )
            yield Live(client, port, names, frozenset((0, 1, 2)), start)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        log.close()
        assert code == 0, (root / "worker.log").read_text()[-3000:]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_returns_data(live, path):
    queries = panel_queries(load_dashboard(path))
    assert queries
    empty = []
    for q in queries:
        result = live.prometheus.query(q.expr)
        values = [float(r["value"][1]) for r in result]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{q.panel} [{q.ref_id}]: {q.expr} -> {values}")
    assert not empty, "queries without a finite value:\n" + "\n".join(empty)


def test_recording_rules_have_data_and_alerts_are_quiet_on_a_healthy_stream(live):
    records, alerts = rule_exprs()
    groups = live.prometheus.get("/api/v1/rules")["groups"]
    rules = {r.get("name"): r for g in groups for r in g["rules"]}
    assert set(records) | set(alerts) <= set(rules), "rules.yml not loaded"
    for name in records:
        assert rules[name]["health"] == "ok", rules[name]
        assert live.prometheus.query(name), f"recording rule {name} has no data"
    for name, expr in alerts.items():
        assert rules[name]["health"] == "ok", rules[name]
        # A burst may make an alert pending for a moment (that is what "for" is for);
        # once the stream is done, no condition holds and nothing fires.
        assert rules[name]["state"] != "firing", rules[name]
        assert live.prometheus.query(expr) == [], f"{name} condition holds on a healthy stream"
        # An alert's condition is empty when all is well: each series it reads has data.
        for selector in vector_selectors(expr):
            assert live.prometheus.query(selector), f"{name}: {selector} has no data"


def test_metric_names_and_labels_follow_the_conventions(live):
    """Acceptance c, on a real scrape: ``_total`` counters, ``_seconds`` histograms, base
    units only, every metric documented, and bounded labels."""
    status, text = http_get(live.worker_port, "/metrics")
    assert status == 200
    families = [
        f
        for f in text_string_to_metric_families(text)
        # prometheus_client's creation-time series of each counter and histogram
        if f.name.startswith("promptcal_") and not f.name.endswith("_created")
    ]
    documented = set(
        re.findall(r"^\| `(promptcal_\w+)`", (REPO / "docs" / "streaming.md").read_text(), re.M)
    )
    seen: dict[str, set[str]] = {}
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in documented, f"{name} missing from docs/streaming.md"
        assert not re.search(
            r"milli|micro|_ms\b|_ms_|minutes|hours|kilo|mega|giga|percent", name
        ), f"{name}: not a base unit"
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
            for key, value in sample.labels.items():
                seen.setdefault(key, set()).add(value)
    assert {int(d) for d in seen["detector"]} == live.camera_ids  # 7 got no series
    assert seen["outcome"] <= set(OUTCOMES)
    assert seen["reason"] <= failure_reasons()
    assert seen["kind"] == set(MESSAGE_KINDS)
    assert seen["topic"] <= set(live.names.all())
    assert {int(p) for p in seen["partition"]} <= set(range(PARTITIONS))
    assert all(re.fullmatch(r"[a-z_]+", s) for s in seen["stage"]), seen["stage"]
    samples = [s for f in families for s in f.samples]
    (unknown,) = [s for s in samples if s.name == "promptcal_unknown_detector_exposures_total"]
    assert unknown.value == 1  # detector 7 was calibrated, counted, and got no series
    failures = {
        (s.labels["outcome"], s.labels["reason"]): s.value
        for s in samples
        if s.name == "promptcal_failures_total" and s.value > 0
    }
    (failed,) = [reason for outcome, reason in failures if outcome == "failed"]
    assert failures == {("dead_letter", "InvalidInputError"): 1, ("failed", failed): 1}
    assert failed != "other"  # the too-few-stars field fails with a promptcal.core.errors class


def test_the_dashboards_render_to_png_snapshots(live):
    """Acceptance b: every panel of every dashboard drawn from the real Prometheus."""
    OUT.mkdir(parents=True, exist_ok=True)
    end = time.time()
    for path in DASHBOARDS:
        target = OUT / path.with_suffix(".png").name
        drawn = render_dashboard(
            load_dashboard(path),
            lambda expr: live.prometheus.query_range(expr, live.start - 5, end, 1.0),
            target,
        )
        assert all(n > 0 for n in drawn.values()), drawn
        assert target.stat().st_size > 20_000
        print(f"dashboard snapshot: {target}", file=sys.stderr)
    assert os.path.exists(OUT / "promptcal-service.png")
