"""What every scenario gets to work with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...backend.deployment import Backend
from ...core.errors import SigopsError
from ...core.scenarios import ScenarioInfo
from ...kube.door import KubeDoor
from ...prometheus.client import Prom
from ...settings import Settings, Target
from ..evidence import Evidence

__all__ = ["ScenarioContext", "ScenarioError", "Scenario", "Step", "Steps"]

Step = dict[str, Any]
"""One recorded action: ``action``, ``summary`` and what it needs to be applied or undone."""
Steps = list[Step]


class ScenarioError(SigopsError):
    """The scenario cannot run here (e.g. no last-known-good snapshot); try the next one."""


@dataclass
class ScenarioContext:
    kube: KubeDoor
    prom: Prom
    settings: Settings
    backend: Backend
    target: Target
    incident: dict[str, Any]
    evidence: Evidence
    now: datetime

    @property
    def target_id(self) -> str:
        return f"{self.target.namespace}/{self.target.deployment}"


def _confirmed(ctx: ScenarioContext, steps: Steps) -> str | None:
    return None


def _nothing_to_undo(ctx: ScenarioContext, steps: Steps) -> None:
    return None


def _nothing_held(steps: Steps) -> Step | None:
    return None


@dataclass(frozen=True)
class Scenario:
    """What a scenario does. The incident reconciler calls these and nothing else, so it has
    no scenario-specific branches.

    - ``plan(ctx)``: read-only; the steps it will take, with the values it will replace.
    - ``apply(ctx, steps)``: idempotent; re-running it after a crash changes nothing more.
    - ``confirm(ctx, steps)``: after ``apply``, before the scenario counts as done: None when
      the live system confirms it, a message while waiting, :class:`ScenarioError` when it
      refuses (then ``undo(ctx, steps)`` takes the change back).
    - ``held(steps)``: a change to take back once the incident is resolved (plus a cool-down,
      the step's ``restoreAfter``); ``restore(ctx, step)`` does it and returns the record.
    - ``escalation``: (reason, message) when the scenario ends in a person's hands right after
      it ran (C: canonicalization is never changed automatically).
    """

    info: ScenarioInfo
    plan: Callable[[ScenarioContext], Steps]
    apply: Callable[[ScenarioContext, Steps], None]
    confirm: Callable[[ScenarioContext, Steps], str | None] = _confirmed
    undo: Callable[[ScenarioContext, Steps], None] = _nothing_to_undo
    held: Callable[[Steps], Step | None] = _nothing_held
    restore: Callable[[ScenarioContext, Step], Step] | None = None
    escalation: tuple[str, str] | None = None
