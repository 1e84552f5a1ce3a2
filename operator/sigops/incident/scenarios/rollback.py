"""Scenario E, rollback: restore the last known good Deployment template (snapshotted by the
operator while the target was healthy; apps/v1 has no rollback API). Runs without approval only
when the spike began shortly after a change to the signing config."""

from __future__ import annotations

from typing import Any

from ...backend.lkg import read_snapshot, template_digest
from ...core.scenarios import SCENARIOS
from .base import Scenario, ScenarioContext, ScenarioError


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    snap = read_snapshot(ctx.kube, ctx.target.namespace, ctx.target.deployment)
    if snap is None:
        raise ScenarioError("no last-known-good snapshot of the deployment template")
    dep = ctx.backend.deployment()
    if dep is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")
    current = template_digest(dep["spec"]["template"])
    if current == snap["digest"]:
        raise ScenarioError("the deployment already runs the last known good template")
    return [{"action": "rollback-template", "from": current, "to": snap["digest"],
             "snapshotTakenAt": snap["takenAt"],
             "summary": f"Rolled {ctx.target_id} back to the last known good template "
                        f"(snapshot of {snap['takenAt']})",
             "undo": "re-apply the template recorded as 'from' (kept in ReplicaSet history)"}]


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    snap = read_snapshot(ctx.kube, ctx.target.namespace, ctx.target.deployment)
    if snap is None:
        raise ScenarioError("the last-known-good snapshot disappeared")
    if ctx.backend.deployment() is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")

    def roll_back(dep: dict[str, Any]) -> bool:
        if template_digest(dep["spec"]["template"]) == snap["digest"]:
            return False
        dep["spec"]["template"] = snap["template"]
        return True

    ctx.backend.update(roll_back)


SCENARIO = Scenario(SCENARIOS["E"], plan, apply)
