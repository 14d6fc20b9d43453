"""deploy/compose.yaml, deploy/Dockerfile and the Grafana provisioning, checked against
the code (no container engine here: parsed, and the commands they run are run or parsed
by the real ``promptcal`` parser)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import PurePosixPath

import yaml
from deploy_helpers import (
    DEPLOY,
    REPO,
    compose,
    dockerfile,
    env_names_read_by_numba,
    env_names_read_by_promptcal,
    exec_form,
    option,
)

from promptcal.commands.cli import build_parser
from promptcal.report.dashboards import load_dashboard


def _promptcal_services():
    return {n: s for n, s in compose()["services"].items() if s.get("image") == "promptcal:latest"}


def _instructions(word: str) -> list[str]:
    return [rest for w, rest in dockerfile() if w == word]


def test_every_promptcal_service_runs_a_real_command_built_from_the_dockerfile():
    services = _promptcal_services()
    assert {"topics", "night", "worker-1", "worker-2", "replay"} <= set(services)
    parser = build_parser()
    for name, service in services.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / "deploy" / "Dockerfile").is_file()
        args = parser.parse_args([str(a) for a in service["command"]])  # SystemExit if wrong
        assert callable(args.handler), name
    assert exec_form(_instructions("ENTRYPOINT")[0]) == ["promptcal"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "promptcal" in scripts


def test_workers_read_what_the_night_writes_and_publish_where_prometheus_scrapes(tmp_path):
    services = _promptcal_services()
    night = [str(a) for a in services["night"]["command"]]
    root = PurePosixPath(option(night, "--output"))
    workers = [s for n, s in services.items() if n.startswith("worker-")]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    names = {n for n, s in services.items() if n.startswith("worker-")}
    for worker in workers:
        args = [str(a) for a in worker["command"]]
        assert option(args, "--refcat") == str(root / "refcat")
        assert option(args, "--camera") == str(root / "camera.json")
        assert int(worker["stop_grace_period"].rstrip("s")) > float(option(args, "--grace-period"))
    ports = {option([str(a) for a in w["command"]], "--http-port") for w in workers}
    assert targets == {f"{n}:{p}" for n in names for p in ports}
    assert job["job_name"] == "promptcal"  # what rules.yml and the dashboards select
    replay = [str(a) for a in services["replay"]["command"]]
    assert replay[1] == str(root / "manifest.json")
    # What the night command writes, checked by running it on a tiny night.
    small = tmp_path / "night"
    cmd = ["simulate-night", "--camera=toy3x3", "--visits=1", "--detectors=0", "--size=128x128"]
    subprocess.run(
        [sys.executable, "-m", "promptcal.commands.cli", *cmd, f"--output={small}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for produced in ("refcat/manifest.json", "camera.json", "manifest.json"):
        assert (small / produced).is_file(), produced


def test_compose_mounts_existing_files_and_pins_third_party_images():
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        image = service["image"]
        if image != "promptcal:latest":
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin {image}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    config = PurePosixPath(option(prometheus["command"], "--config.file"))
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in scrape["rule_files"]:
        assert str(config.parent / rule_file) in mounts.values()


def test_grafana_is_provisioned_from_dashboards_with_prometheus():
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "promptcal.yml").read_text())[
        "providers"
    ]
    assert mounts["../dashboards"] == provider["options"]["path"]
    for path in (REPO / "dashboards").glob("*.json"):
        for panel in load_dashboard(path)["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], path
            assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def test_dockerfile_user_healthcheck_and_environment_exist_in_the_code():
    assert re.fullmatch(r"\d+(:\d+)?", _instructions("USER")[0])
    assert not _instructions("USER")[0].startswith("0")
    health = " ".join(exec_form(_instructions("HEALTHCHECK")[0].split("CMD", 1)[1]))
    parser = build_parser()
    serve = parser.parse_args(["serve", "--bootstrap=b", "--group=g", "--refcat=r", "--output=o"])
    assert f"http://127.0.0.1:{serve.http_port}/healthz" in health
    assert _instructions("EXPOSE") == [str(serve.http_port)]
    python = _instructions("FROM")[-1]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python.startswith(f"python:{requires.removeprefix('>=')}")
    known = env_names_read_by_promptcal() | env_names_read_by_numba()
    for env in _instructions("ENV"):
        for name, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", env):
            if name == "PATH":
                assert value.startswith("/opt/promptcal/bin:")
            else:
                assert name in known, f"ENV {name} is read by neither promptcal nor Numba"


def test_the_dockerfile_warm_up_command_runs(tmp_path):
    """The build step that fills the Numba cache, run here (a warm cache makes it quick)."""
    (command,) = [r for r in _instructions("RUN") if "warm_up" in r]
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "")}
    result = subprocess.run(
        [sys.executable, "-c", argv[2]],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in env.items() if v},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "status='success'" in result.stdout
    copies = [r.split() for r in _instructions("COPY") if "--from" not in r]
    for *sources, _dest in copies:
        for source in sources:
            assert (REPO / source).exists(), source
    assert json.dumps(compose())  # plain data after the anchors are resolved
