"""The runbook's scenarios A-E. Each module offers ``plan(ctx)`` (read-only: what it will do,
with the values it will replace) and ``apply(ctx, plan)`` (idempotent: re-running it after a
crash changes nothing more). The incident reconciler records the plan before applying it, so a
restarted operator finishes a scenario once, with the original "previous" values."""

from __future__ import annotations

from types import ModuleType

from .base import ScenarioContext, ScenarioError

__all__ = ["ScenarioContext", "ScenarioError", "module_for"]


def module_for(letter: str) -> ModuleType:
    from . import canonicalization, clock, key_overlap, rate_tightening, rollback

    return {"A": key_overlap, "B": clock, "C": canonicalization, "D": rate_tightening,
            "E": rollback}[letter]

