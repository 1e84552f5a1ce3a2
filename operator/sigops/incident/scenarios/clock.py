"""Scenario B, clock skew: measure the skew (samples, the skew metric, the backend's Date
header), label nodes for the NTP DaemonSet, report the offset per source. It never widens a
signature freshness tolerance."""

from __future__ import annotations

import email.utils
import urllib.request
from typing import Any

from ...core.scenarios import SCENARIOS
from .base import Scenario, ScenarioContext


def _backend_date_offset(ctx: ScenarioContext) -> float | None:
    url = ctx.target.backend_url
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/healthz", timeout=5) as r:
            date = r.headers.get("Date")
    except OSError:
        return None
    if not date:
        return None
    return (email.utils.parsedate_to_datetime(date) - ctx.now).total_seconds()


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    skew = (ctx.evidence.report or {}).get("skew") or {}
    key, _, value = ctx.settings.ntp_label.partition("=")
    nodes = []
    if ctx.settings.label_nodes:
        for n in ctx.kube.list_nodes():
            if (n.metadata.labels or {}).get(key) != value:
                nodes.append(n.metadata.name)
    pods_off = ctx.evidence.pods.clocks_off if ctx.evidence.pods else {}
    measured = {"samples": skew or None, "skewMetricSeconds": ctx.evidence.skew_metric,
                "backendDateOffsetSeconds": _backend_date_offset(ctx),
                "backendPodsOff": pods_off}
    off = ("; backend pods with a clock off: "
           + ", ".join(f"{name} ({offset:+g}s)" for name, offset in sorted(pods_off.items()))
           if pods_off else "; no backend pod clock off")
    steps: list[dict[str, Any]] = [{
        "action": "measure-skew", "measured": measured,
        "summary": f"Measured clock skew: offset {skew.get('offset_seconds', 'n/a')}s, "
                   f"scope {skew.get('scope', 'unknown')}, suspect "
                   f"{skew.get('suspect', 'unknown')}{off}; signature tolerances left "
                   "unchanged"}]
    steps.append({"action": "label-nodes-for-ntp", "label": ctx.settings.ntp_label,
                  "nodes": sorted(nodes),
                  "summary": f"Labelled {len(nodes)} node(s) {ctx.settings.ntp_label} for the "
                             "NTP DaemonSet" if nodes else "All nodes already labelled for NTP",
                  "undo": f"remove label {key} from these nodes"})
    return steps


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    key, _, value = ctx.settings.ntp_label.partition("=")
    for step in steps:
        if step["action"] != "label-nodes-for-ntp":
            continue
        for name in step["nodes"]:
            ctx.kube.label_node(name, key, value)


SCENARIO = Scenario(SCENARIOS["B"], plan, apply)
