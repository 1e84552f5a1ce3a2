"""From evidence to a plan: which runbook scenarios to try, in which order, and whether a
person must approve first. Pure: tables and small functions, unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.scenarios import INCIDENT_CAUSE_OF, SCENARIOS

__all__ = ["SCENARIOS", "candidates", "needs_approval", "communication", "INCIDENT_CAUSE_OF"]


def candidates(report: Mapping[str, Any] | None, *, rotation_in_progress: bool,
               recent_signing_change: bool, skew_metric_seconds: float | None = None,
               max_skew_seconds: float = 1.0) -> list[str]:
    """Scenarios to try, most likely first.

    The sample report decides when there are samples; the context (a recent change to the
    signing config, a KeyRotation in flight, the skew metric) breaks ties and fills in when
    there are none.
    """
    scen = (report or {}).get("scenario")
    dominant = (report or {}).get("dominant_cause")
    out: list[str] = []
    if scen == "A":
        # Agents sign with a key the backend stopped accepting. Right after a signing-config
        # rollout that is a bad rollout (E first); otherwise restore the overlap (A).
        out = ["E", "A"] if recent_signing_change and not rotation_in_progress else ["A"]
    elif scen == "E" or (dominant == "unverifiable" and recent_signing_change):
        out = ["E", "A"] if rotation_in_progress else ["E"]
    elif scen in ("B", "C", "D"):
        out = [scen]
    elif not report or not report.get("total"):
        if recent_signing_change:
            out.append("E")
        if rotation_in_progress:
            out.append("A")
        if skew_metric_seconds is not None and abs(skew_metric_seconds) > max_skew_seconds:
            out.append("B")
    return out


MODES = ("auto", "approval", "dryRun")
"""From least to most careful."""


def effective_mode(configured: str, requested: object) -> str:
    """The mode a scenario runs in: the configured one, or the requester's ``spec.mode`` when
    that is more careful. A requester may tighten (auto -> approval -> dryRun), never loosen.

    >>> effective_mode("approval", "auto"), effective_mode("auto", "dryRun")
    ('approval', 'dryRun')
    >>> effective_mode("dryRun", "auto"), effective_mode("auto", "bogus")
    ('dryRun', 'auto')
    """
    want = requested if requested in MODES else configured
    return max(configured, str(want), key=lambda m: MODES.index(m) if m in MODES else 2)


def decided(spec: object, decision: str) -> list[str]:
    """The scenarios with a ``decision`` (approve or deny) in ``spec.decisions``: entries the
    admission policy checked name the user who made the request. ``spec.approve`` and
    ``spec.deny`` alone count for nothing (anyone who may edit the spec can write them).

    >>> decided({"approve": ["E"], "decisions": [{"scenario": "D", "decision": "approve",
    ...                                           "user": "ann"}]}, "approve")
    ['D']
    """
    entries = spec.get("decisions") if isinstance(spec, dict) else None
    return [d["scenario"] for d in entries or []
            if isinstance(d, dict) and d.get("decision") == decision and d.get("user")
            and isinstance(d.get("scenario"), str)]


def needs_approval(scenario: str, mode: str, approved: Sequence[str], *,
                   recent_signing_change: bool) -> bool:
    """Whether a person must approve ``scenario`` before it runs (a dry run runs nothing,
    approved or not).

    E runs without approval only when the spike began shortly after a signing-config change.
    """
    if mode == "dryRun":
        return True
    if scenario in approved:
        return False
    if scenario == "E" and recent_signing_change and mode == "approval":
        return False
    return mode == "approval"


def communication(*, phase: str, cause: str | None, scenario: str | None,
                  actions: Sequence[Mapping[str, Any]], error_rate: float | None,
                  next_update: str, target: str) -> str:
    """The runbook's status message, filled in and ready to paste."""
    resolved = phase == "Resolved"
    status = "Resolved" if resolved else ("Escalated" if phase == "Escalated" else "In Progress")
    title = "Resolved" if resolved else "Investigating"
    rate = "unknown" if error_rate is None else f"{error_rate:.1f}/s"
    lines = [
        f"Subject: [P2] Signature Verification Failures - {title}",
        "",
        "We are investigating elevated signature verification failures affecting PCS "
        f"submissions to {target}." if not resolved else
        f"Signature verification failures affecting PCS submissions to {target} are resolved.",
        "",
        f"Status: {status}",
        "Impact: Users may see 401 errors when submitting PCS"
        + ("" if not resolved else " (no longer occurring)"),
        f"Cause: {cause or 'under diagnosis'}"
        + (f" (scenario {scenario}: {SCENARIOS[scenario].title})"
           if scenario is not None and scenario in SCENARIOS else ""),
        f"Signature error rate: {rate}",
        f"Next Update: {next_update}",
        "",
        "Actions Taken:",
    ]
    done = [a for a in actions if a.get("result") != "planned"]
    lines += [f"- {a.get('summary', a.get('action', ''))}" for a in done] or ["- none yet"]
    lines += ["", "Mitigation:"]
    acted = [a for a in done if a.get("result") not in ("approved", "denied")]
    lines.append(f"- {SCENARIOS[scenario].mitigation}"
                 if scenario is not None and scenario in SCENARIOS and acted else "- none yet")
    return "\n".join(lines)
