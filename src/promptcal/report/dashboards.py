"""Grafana dashboards of ``dashboards/``: their PromQL, a Prometheus client, a PNG snapshot.

Operators see the dashboards in Grafana; reviewers and tests without Grafana use
:func:`render_dashboard`, which draws each panel from the same PromQL answered by a
real Prometheus (matplotlib, one subplot per panel, laid out by ``gridPos``).

Grafana's interval variables are replaced by fixed windows (:data:`DEFAULT_VARIABLES`,
overridable), so every query can be sent to Prometheus as it is.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Grafana variables and the windows that stand in for them outside Grafana.
DEFAULT_VARIABLES: dict[str, str] = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    panel: str
    panel_type: str
    ref_id: str
    expr: str
    legend: str
    unit: str


def load_dashboard(path: str | Path) -> dict[str, Any]:
    """The dashboard JSON model of ``path``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def substitute(expr: str, variables: Mapping[str, str] | None = None) -> str:
    """``expr`` with Grafana's variables replaced (longest names first)."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


def panel_queries(
    dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[PanelQuery]:
    """Every target of every panel, with the variables substituted."""
    out = []
    for panel in dashboard.get("panels", []):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for target in panel.get("targets", []):
            out.append(
                PanelQuery(
                    panel=panel["title"],
                    panel_type=panel["type"],
                    ref_id=target["refId"],
                    expr=substitute(target["expr"], variables),
                    legend=target.get("legendFormat", ""),
                    unit=unit,
                )
            )
    return out


class PrometheusClient:
    """The two query endpoints of Prometheus's HTTP API.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:9090``.
    timeout : float
        Per request [s].
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        """``data`` of a successful API answer; RuntimeError with Prometheus's error else."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = f"{self.url}{path}?{query}" if query else f"{self.url}{path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422: a bad query, with Prometheus's reason
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = self.get("/api/v1/query", query=expr, time=time)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query: ``[{"metric": {...}, "values": [[t, "v"], ...]}, ...]``."""
        data = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return data["result"]


def legend(template: str, labels: Mapping[str, str]) -> str:
    """Grafana's ``{{label}}`` legend expanded with a series' labels."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text or ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def render_dashboard(
    dashboard: Mapping[str, Any],
    query_range: Callable[[str], list[dict[str, Any]]],
    path: str | Path,
    *,
    variables: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Draw every panel of ``dashboard`` from ``query_range(expr)`` answers into a PNG.

    Time-series panels become line plots against time since the first sample [s];
    bar-gauge panels become bars of each series' last value. Thresholds of a panel
    (e.g. the 60 s latency budget) are drawn as dashed lines.

    Returns
    -------
    dict of str to int
        Panel title -> number of series drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard.get("panels", [])
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, 0.3 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 24)
    drawn: dict[str, int] = {}
    answers = {q.expr: query_range(q.expr) for q in panel_queries(dashboard, variables)}
    starts = [float(s["values"][0][0]) for a in answers.values() for s in a if s["values"]]
    t0 = min(starts) if starts else 0.0
    for panel in panels:
        pos = panel["gridPos"]
        ax = fig.add_subplot(grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]])
        drawn[panel["title"]] = _draw_panel(ax, panel, answers.__getitem__, variables, t0)
    fig.suptitle(dashboard.get("title", ""))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return drawn


def _draw_panel(ax, panel, query_range, variables, t0: float) -> int:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    n = 0
    bars: list[tuple[str, float]] = []
    for target in panel.get("targets", []):
        for series in query_range(substitute(target["expr"], variables)):
            name = legend(target.get("legendFormat", ""), series["metric"])
            times = [float(t) - t0 for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            if panel["type"] == "bargauge":
                finite = [v for v in values if math.isfinite(v)]
                bars.append((name, finite[-1] if finite else math.nan))
            else:
                ax.plot(times, values, label=name)
            n += 1
    if bars:
        ax.bar(range(len(bars)), [v for _, v in bars])
        ax.set_xticks(range(len(bars)), [b for b, _ in bars], rotation=30, fontsize=7)
    else:
        ax.set_xlabel("time since first sample [s]", fontsize=7)
        if n:
            ax.legend(fontsize=6, loc="best")
    thresholds = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
    for step in thresholds.get("steps", []):
        if step.get("value") is not None:
            ax.axhline(step["value"], color=step.get("color", "red"), linestyle="--")
    ax.set_title(f"{panel['title']} [{unit}]" if unit else panel["title"], fontsize=9)
    ax.tick_params(labelsize=7)
    if n == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return n
