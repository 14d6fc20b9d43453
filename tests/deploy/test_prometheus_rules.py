"""deploy/prometheus/: ``promtool check`` and ``promtool test rules``, runbooks, metrics.

The promtool unit tests (rules_test.yml) must fire every alert on a failing synthetic
series and show it quiet on a healthy one; every alert must have a runbook section in
docs/operations.md; every promptcal metric a rule or dashboard reads must be one the
worker registers.
"""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from deploy_helpers import DEPLOY, REPO
from prometheus_client import CollectorRegistry
from prometheus_helpers import DASHBOARDS, RULES, require_binary, rule_exprs, vector_selectors

from promptcal.report.dashboards import load_dashboard, panel_queries
from promptcal.stream.metrics import WorkerMetrics

PROMETHEUS = DEPLOY / "prometheus"


def _promtool(*args: str) -> str:
    result = subprocess.run(
        [require_binary("promtool"), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_checks_the_rules_and_the_compose_config():
    records, alerts = rule_exprs()
    out = _promtool("check", "rules", "rules.yml")
    assert f"SUCCESS: {len(records) + len(alerts)} rules found" in out
    out = _promtool("check", "config", "prometheus.yml")  # also loads rules.yml
    assert "SUCCESS" in out


def test_promtool_unit_tests_fire_each_alert_and_keep_it_quiet_when_healthy():
    _, alerts = rule_exprs()
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == set(alerts), f"alerts never fired in rules_test.yml: {set(alerts) - fired}"
    assert quiet == set(alerts), f"alerts never shown quiet: {set(alerts) - quiet}"
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml")


def test_every_alert_has_a_runbook_in_docs_operations():
    text = (REPO / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9]", "", h.lower()) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md" and anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"no section for {rule['alert']} in docs/operations.md"
        assert rule["labels"]["severity"] in {"page", "warning"}


def test_rules_and_dashboards_read_only_metrics_the_worker_registers():
    """Checked against the collectors themselves (and the recording rules' outputs),
    so a renamed metric breaks this test, not the dashboards in production."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, detectors=[0])
    # One observation of each kind, so that every labelled collector has a series.
    summary = {"zeroPoint": 28.0, "psfSigma": 2.0, "pixelScale": 0.2, "skyBg": 500.0}
    metrics.observe_result(
        "success",
        detector=0,
        summary={**summary, "astromOffsetStd": 0.02, "effTimeZeroPointScale": 0.9},
        latency=1.0,
        stage_durations={"psf": 0.1},
        matches={"astrometry": 50, "photometry": 40},
    )
    metrics.observe_preload(True, 0.1)
    stats = {"topics": {"image-ready": {"partitions": {"0": {"consumer_lag": 3}}}}}
    metrics.update_from_librdkafka_stats(json.dumps(stats))
    names = {s.name for family in registry.collect() for s in family.samples}
    names |= {"up"}  # Prometheus's own per-target series
    records, alerts = rule_exprs()
    exprs = [*records.values(), *alerts.values()]
    exprs += [q.expr for path in DASHBOARDS for q in panel_queries(load_dashboard(path))]
    for expr in exprs:
        for selector in vector_selectors(expr):
            name = selector.split("{", 1)[0]
            assert name in names or name in records, f"{name} (in {expr!r}) is not exported"
    dashboards = [load_dashboard(p) for p in DASHBOARDS]
    assert {d["uid"] for d in dashboards} == {"promptcal-service", "promptcal-quality"}
