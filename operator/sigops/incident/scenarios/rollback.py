"""Scenario E, rollback: restore the last known good Deployment template (snapshotted by the
operator while the target was healthy; apps/v1 has no rollback API). Runs without approval only
when the spike began shortly after a change to the signing config.

Only to a template of the Deployment's own ReplicaSets: the snapshot (a Secret in the target's
namespace) names the good template by digest, and the template applied is that of the
ReplicaSet the Deployment owns (by UID) with this digest, never one read from the Secret. A
snapshot that is missing, unreadable or matches no such ReplicaSet is never restored."""

from __future__ import annotations

from typing import Any

from ...backend.lkg import own_templates, read_snapshot, template_digest
from ...core.scenarios import SCENARIOS
from ...kube.api import KubeError
from .base import Scenario, ScenarioContext, ScenarioError


def _snapshot_digest(ctx: ScenarioContext) -> tuple[str, str]:
    try:
        snap = read_snapshot(ctx.kube, ctx.target.namespace, ctx.target.deployment)
    except (ValueError, UnicodeDecodeError) as e:
        raise ScenarioError(f"the last-known-good snapshot of {ctx.target_id} is unreadable "
                            f"({type(e).__name__}): not restored") from None
    if snap is None:
        raise ScenarioError("no last-known-good snapshot of the deployment template")
    digest, taken = snap.get("digest"), snap.get("takenAt")
    if not isinstance(digest, str) or not digest:
        raise ScenarioError(f"the last-known-good snapshot of {ctx.target_id} names no "
                            "template digest: not restored")
    return digest, taken if isinstance(taken, str) else "unknown"


def _own(ctx: ScenarioContext, dep: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    try:
        return own_templates(ctx.kube, dep)
    except KubeError as e:
        raise ScenarioError(f"cannot list the ReplicaSets of {ctx.target_id} ({e.status}): "
                            "the last-known-good template cannot be verified, not restored"
                            ) from None


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    digest, taken = _snapshot_digest(ctx)
    dep = ctx.backend.deployment()
    if dep is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")
    current = template_digest(dep["spec"]["template"])
    if current == digest:
        raise ScenarioError("the deployment already runs the last known good template")
    own = _own(ctx, dep)
    if digest not in own:
        raise ScenarioError(
            f"the last-known-good snapshot of {ctx.target_id} (template {digest}) matches no "
            "ReplicaSet the Deployment owns: not restored (scenario E rolls back only to a "
            "template of the Deployment's own ReplicaSets; check the sigops-lkg Secret and "
            "roll back by hand)")
    rs_name = own[digest][0]
    return [{"action": "rollback-template", "from": current, "to": digest,
             "replicaSet": rs_name, "snapshotTakenAt": taken,
             "summary": f"Rolled {ctx.target_id} back to the last known good template "
                        f"(snapshot of {taken}, the template of its ReplicaSet {rs_name})",
             "undo": "re-apply the template recorded as 'from' (kept in ReplicaSet history)"}]


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    to = steps[0].get("to") if steps else None
    dep = ctx.backend.deployment()
    if dep is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")
    own = _own(ctx, dep)
    if not isinstance(to, str) or to not in own:
        raise ScenarioError(f"the last known good template {to} is no longer the template of "
                            f"a ReplicaSet of {ctx.target_id}: not restored")
    template = own[to][1]

    def roll_back(dep: dict[str, Any]) -> bool:
        if template_digest(dep["spec"]["template"]) == to:
            return False
        dep["spec"]["template"] = template
        return True

    ctx.backend.update(roll_back)


SCENARIO = Scenario(SCENARIOS["E"], plan, apply)
