"""What every scenario gets to work with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...backend.deployment import Backend
from ...kube.api import Kube
from ...prometheus.client import Prom
from ...settings import Settings, Target
from ..evidence import Evidence

__all__ = ["ScenarioContext", "ScenarioError"]


class ScenarioError(Exception):
    """The scenario cannot run here (e.g. no last-known-good snapshot); try the next one."""


@dataclass
class ScenarioContext:
    kube: Kube
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
