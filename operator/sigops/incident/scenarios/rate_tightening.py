"""Scenario D, rate tightening: set TOKEN_RATE on the backend (default 50), remember the old
value and restore it after resolution plus a cool-down; list the top failing sources. A
NetworkPolicy for a named source is only ever suggested, never applied without a person."""

from __future__ import annotations

from typing import Any

from ...backend.config import find_container
from ...core.scenarios import SCENARIOS
from .base import Scenario, ScenarioContext, ScenarioError


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    dep = ctx.backend.deployment()
    if dep is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")
    name = ctx.backend.names.token_rate
    env = find_container(dep, ctx.target.container).get("env") or []
    previous = next((e.get("value") for e in env if e.get("name") == name), None)
    sources = (ctx.evidence.report or {}).get("top_failing_sources") or []
    steps: list[dict[str, Any]] = [{
        "action": "tighten-token-rate", "env": name, "previous": previous,
        "value": ctx.settings.token_rate, "restoreAfter": ctx.settings.cooldown,
        "summary": f"Set {name}={ctx.settings.token_rate} on {ctx.target_id} "
                   f"(was {previous or 'unset'}); restored {ctx.settings.cooldown} after "
                   "resolution",
        "undo": f"set {name} back to {previous or 'unset'}"}]
    if sources:
        steps.append({"action": "list-failing-sources", "sources": sources[:10],
                      "summary": "Top failing sources: " + ", ".join(
                          f"{s['source']} ({s['failures']})" for s in sources[:5])
                      + "; a NetworkPolicy for a source needs a person's approval"})
    return steps


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    for step in steps:
        if step["action"] == "tighten-token-rate":
            ctx.backend.set_env(step["env"], step["value"])


def held(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tightened rate: restored after resolution plus the cool-down."""
    return next((s for s in steps if s["action"] == "tighten-token-rate"), None)


def restore(ctx: ScenarioContext, step: dict[str, Any]) -> dict[str, Any]:
    ctx.backend.set_env(step["env"], step["previous"])
    return {"action": "restore-token-rate", "env": step["env"], "value": step["previous"],
            "summary": f"Restored {step['env']} to {step['previous'] or 'unset'} after the "
                       f"{step['restoreAfter']} cool-down"}


SCENARIO = Scenario(SCENARIOS["D"], plan, apply, held=held, restore=restore)
