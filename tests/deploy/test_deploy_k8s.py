"""deploy/k8s/: the manifests parse and agree with the code and with each other.

Options are parsed by the real ``promptcal`` argument parser, settings derived by
``WorkerSettings``, probe paths answered by a real ``HealthServer``, environment
variables mapped by ``promptcal.stream.clients`` and accepted by librdkafka, topic
names built by ``TopicNames``; nothing is compared with a hand-kept list.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import PurePosixPath

import pytest
from deploy_helpers import K8S, REPO, k8s_object, k8s_objects, kustomization, option, pod_spec
from prometheus_client import CollectorRegistry
from worker_helpers import http_get

from promptcal.commands.calibrate import build_config
from promptcal.commands.cli import build_parser
from promptcal.core.camera import load_camera
from promptcal.stream.clients import ENV_PREFIX, load_client_settings
from promptcal.stream.http import HealthServer
from promptcal.stream.settings import HEAP_BYTES_PER_PIXEL, WorkerSettings
from promptcal.stream.topics import TopicNames

#: Per-detector time the lag threshold is derived from (docs/worker.md: p50 0.95-1.06 s).
EXPOSURE_SECONDS = 1.0


def _worker():
    deployment = k8s_object("Deployment", "promptcal")
    (container,) = pod_spec(deployment)["containers"]
    return deployment, container


def _gib(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(Gi|Mi)", quantity).groups()
    return float(number) * (1.0 if unit == "Gi" else 1 / 1024)


def test_every_manifest_parses_and_kustomization_lists_them():
    names = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    listed = set(kustomization()["resources"])
    assert listed == names - {"secret.example.yaml"}
    for obj in k8s_objects():
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], obj
    for generated in kustomization()["configMapGenerator"]:
        for file in generated["files"]:
            assert (K8S / file).is_file()


def test_container_args_are_real_promptcal_options():
    parser = build_parser()
    for kind, name in (("Deployment", "promptcal"), ("Job", "promptcal-topics")):
        for container in pod_spec(k8s_object(kind, name))["containers"]:
            args = parser.parse_args(container["args"])  # SystemExit on an unknown option
            assert callable(args.handler)
    _, worker = _worker()
    config = option(worker["args"], "--config")
    mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == config)
    build_config(str(K8S / mount["subPath"]), [])  # the ConfigMap's content is a valid config


def test_probes_ports_and_service_match_the_worker():
    deployment, worker = _worker()
    args = build_parser().parse_args(worker["args"])
    (port,) = worker["ports"]
    assert port["containerPort"] == args.http_port
    server = HealthServer(CollectorRegistry(), host="127.0.0.1")
    server.set_ready()
    served = server.start(0)
    try:
        for probe in ("readinessProbe", "livenessProbe"):
            get = worker[probe]["httpGet"]
            assert get["port"] == port["name"]
            assert http_get(served, get["path"])[0] == 200, get
    finally:
        server.stop()
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = k8s_object("Service", "promptcal")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    monitor = k8s_object("ServiceMonitor", "promptcal")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"] and endpoint["path"] == "/metrics"
    pdb = k8s_object("PodDisruptionBudget", "promptcal")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_resources_and_termination_grace_cover_the_worst_exposure():
    deployment, worker = _worker()
    args = build_parser().parse_args(worker["args"])
    settings = WorkerSettings(
        bootstrap=args.bootstrap,
        group_id=args.group,
        output=args.output,
        grace_period=args.grace_period,
        max_exposure_seconds=args.max_exposure_seconds,
    )
    # The drain after the exposure in hand: the finisher's publish and the final flush.
    drain = 2 * settings.delivery_timeout
    assert settings.grace_period >= settings.max_exposure_seconds + drain
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > settings.grace_period
    res = worker["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == "1"
    assert 2 <= _gib(res["requests"]["memory"]) <= _gib(res["limits"]["memory"]) <= 8
    largest = max(d.width * d.height for d in load_camera(args.camera).detectors)
    heap = settings.heap_reserve_bytes(load_camera(args.camera))
    assert heap == HEAP_BYTES_PER_PIXEL * largest
    assert heap < _gib(res["requests"]["memory"]) * 2**30 / 1.5  # room for the exposure


def test_paths_are_mounted_and_secrets_exist():
    secret = next(o for o in k8s_objects() if o["kind"] == "Secret")
    keys = set(secret["stringData"])
    for kind, name in (("Deployment", "promptcal"), ("Job", "promptcal-topics")):
        spec = pod_spec(k8s_object(kind, name))
        volumes = {v["name"]: v for v in spec["volumes"]}
        (container,) = spec["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        paths = [a.split("=", 1)[1] for a in container["args"] if "=/" in a]
        paths += [e["value"] for e in container["env"] if str(e.get("value", "")).startswith("/")]
        for path in paths:
            mount = next((m for m in mounts if PurePosixPath(path).is_relative_to(m)), None)
            assert mount is not None, f"{name}: {path} is not on a mounted volume"
            volume = volumes[mounts[mount]["name"]]
            if "secret" in volume:
                rel = str(PurePosixPath(path).relative_to(mount))
                assert rel in {i["path"] for i in volume["secret"]["items"]}
                assert {i["key"] for i in volume["secret"]["items"]} <= keys
                assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        for env in container["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys


@pytest.mark.parametrize("kind,name", [("Deployment", "promptcal"), ("Job", "promptcal-topics")])
def test_environment_is_kafka_security_that_librdkafka_accepts(kind, name):
    from confluent_kafka import KafkaException, Producer

    (container,) = pod_spec(k8s_object(kind, name))["containers"]
    names = {e["name"] for e in container["env"]}
    assert names and all(n.startswith(ENV_PREFIX) for n in names)
    settings = load_client_settings(None, {n: "x" for n in names})
    assert {"security.protocol", "sasl.mechanism", "sasl.username", "sasl.password"} <= set(
        settings
    )
    values = {e["name"]: e.get("value", "secret") for e in container["env"]}
    for prop, value in load_client_settings(None, values).items():
        try:
            Producer({"bootstrap.servers": "127.0.0.1:9", prop: value})
        except KafkaException as exc:  # a bad value (no CA file here) is fine, a bad name not
            assert "No such configuration property" not in str(exc), prop
        except ValueError as exc:
            assert "No such configuration property" not in str(exc), prop


def test_keda_scales_the_worker_group_on_image_ready_lag():
    deployment, worker = _worker()
    args = build_parser().parse_args(worker["args"])
    scaled = k8s_object("ScaledObject", "promptcal")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == args.bootstrap
    assert meta["consumerGroup"] == args.group
    assert meta["topic"] == TopicNames(args.prefix).image_ready
    (job,) = pod_spec(k8s_object("Job", "promptcal-topics"))["containers"]
    topics = build_parser().parse_args(job["args"])
    assert topics.prefix == args.prefix and topics.bootstrap == args.bootstrap
    assert spec["maxReplicaCount"] == topics.partitions  # one worker per partition at most
    assert len(load_camera(args.camera).detectors) == topics.partitions
    # The threshold of the comment: L t <= 60 s - 20 s reserve - t.
    threshold = int(meta["lagThreshold"])
    assert threshold * EXPOSURE_SECONDS <= 60 - 20 - EXPOSURE_SECONDS
    assert spec["minReplicaCount"] == math.ceil(topics.partitions / threshold)
    assert deployment["spec"]["replicas"] == spec["minReplicaCount"]
    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret = next(o for o in k8s_objects() if o["kind"] == "Secret")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_images_are_the_worker_image_and_run_as_its_user():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    (uid,) = re.findall(r"^USER (\d+)", dockerfile, re.M)
    images = {i["name"]: i for i in kustomization()["images"]}
    for kind, name in (("Deployment", "promptcal"), ("Job", "promptcal-topics")):
        spec = pod_spec(k8s_object(kind, name))
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert str(spec["securityContext"]["runAsUser"]) == uid
        for container in spec["containers"]:
            assert container["image"] in images
    assert json.loads((K8S / "calibration.json").read_text())
