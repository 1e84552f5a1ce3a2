"""The PromQL of the chart's Grafana dashboard, as Grafana would send it to Prometheus: shared
by the self-monitoring e2e test and ``make demo``, which run every query against a real
Prometheus scraping a real operator."""

from __future__ import annotations

import json
import re
from typing import Any

from .cluster import REPO

__all__ = ["DASHBOARD", "load_dashboard", "dashboard_queries", "grafana_to_promql"]

DASHBOARD = REPO / "charts" / "sigops" / "files" / "dashboards" / "sigops.json"


def load_dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_queries(dash: dict[str, Any]) -> list[str]:
    """Every expression: panel targets, annotation queries, and template-variable queries."""
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [a["expr"] for a in dash["annotations"]["list"] if a.get("expr")]
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var.get("definition", ""))
        if m:
            out.append(m.group(1))
    return out


def grafana_to_promql(expr: str, job: str) -> str:
    """The dashboard's Grafana variables filled in as Grafana would for this Prometheus."""
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
            .replace('job=~"$job"', f'job=~"{job}"'))
