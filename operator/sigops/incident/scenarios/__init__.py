"""The runbook's scenarios A-E, one module each, bound to their letters in one typed registry.

What a scenario *is* (letter, cause, title, default mode) lives in :mod:`sigops.core.scenarios`;
what it *does* is a :class:`Scenario` here. The incident reconciler records a plan before
applying it, so a restarted operator finishes a scenario once, with the original "previous"
values.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...core.scenarios import LETTERS
from . import canonicalization, clock, key_overlap, rate_tightening, rollback
from .base import Scenario, ScenarioContext, ScenarioError, Step, Steps

__all__ = ["REGISTRY", "Scenario", "ScenarioContext", "ScenarioError", "Step", "Steps",
           "scenario_for"]

REGISTRY: Mapping[str, Scenario] = {s.info.letter: s for s in (
    key_overlap.SCENARIO, clock.SCENARIO, canonicalization.SCENARIO, rate_tightening.SCENARIO,
    rollback.SCENARIO)}
if tuple(REGISTRY) != LETTERS:  # pragma: no cover - a programming error, caught by any test
    raise RuntimeError("every scenario letter needs exactly one implementation")


def scenario_for(letter: str) -> Scenario:
    return REGISTRY[letter]
