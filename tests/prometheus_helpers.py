"""A real Prometheus (Debian's ``prometheus`` package) for the tests, and PromQL helpers.

``require_binary(name)`` returns the path of ``prometheus`` or ``promtool``. When it is
missing the test *fails* with the install command, so CI (whose ``.ci/run`` installs
the package) can never pass by skipping; a developer without it may set
``PROMPTCAL_SKIP_PROMETHEUS=1`` to skip these tests locally.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from promptcal.report.dashboards import PrometheusClient
from promptcal.stream.broker import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
SKIP_ENV = "PROMPTCAL_SKIP_PROMETHEUS"


def require_binary(name: str) -> str:
    """Path of ``name`` (prometheus, promtool); fail (or skip on request) when missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = (
        f"{name} not found: install Debian's Prometheus with `apt-get install -y "
        f"prometheus` (.ci/run does this in CI); set {SKIP_ENV}=1 to skip locally"
    )
    if os.environ.get(SKIP_ENV) == "1" and os.environ.get("CI") != "true":
        pytest.skip(message)
    pytest.fail(message)


def scrape_config(targets: list[str], interval: str = "1s") -> dict:
    """deploy/prometheus/prometheus.yml with the compose targets replaced by ``targets``,
    the rules by the absolute path of rules.yml, and short intervals for a test."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": targets}]
    return config


class PrometheusServer:
    """``prometheus`` on a free loopback port with a temporary config and storage."""

    def __init__(self, config: dict, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = PrometheusClient(self.url)
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> PrometheusServer:
        binary = require_binary("prometheus")
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.get("/api/v1/status/buildinfo")
                return self
            except (OSError, RuntimeError, ValueError):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise AssertionError(f"prometheus did not start: {self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- PromQL text ---------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"}


def vector_selectors(expr: str) -> list[str]:
    """The vector selectors (``name{matchers}``) of a PromQL expression.

    Range durations and grouping label lists are removed first; a name followed by
    ``(`` is a function or an aggregation, not a selector.
    """
    text = re.sub(r"\[[^\]]*\]", "", expr)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    out = []
    for match in re.finditer(
        r"(?<![\w:\"'.])([a-zA-Z_:][\w:]*)(?![\w:])\s*(\{[^}]*\})?(?!\s*\()", text
    ):
        name, matchers = match.group(1), match.group(2) or ""
        if name.lower() in _KEYWORDS:
            continue
        out.append(name + matchers)
    return out


def rule_exprs() -> tuple[dict[str, str], dict[str, str]]:
    """``(recording rules: record -> expr, alerts: alert -> expr)`` of rules.yml."""
    records, alerts = {}, {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                records[rule["record"]] = rule["expr"]
            else:
                alerts[rule["alert"]] = rule["expr"]
    return records, alerts
