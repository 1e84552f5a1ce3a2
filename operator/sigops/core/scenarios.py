"""The runbook's scenarios A-E as data: the one table every layer reads the letters from.

Diagnosis maps a cause to a letter, the decision table orders letters, settings give each
letter a mode, and :mod:`sigops.incident.scenarios` binds each letter to what it does. Pure.

>>> SCENARIOS["C"].incident_cause, SCENARIOS["E"].default_mode
('CanonicalizationDrift', 'approval')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ScenarioInfo", "SCENARIOS", "LETTERS", "INCIDENT_CAUSE_OF"]


@dataclass(frozen=True, slots=True)
class ScenarioInfo:
    """What a scenario is, apart from what it does."""

    letter: str
    title: str
    incident_cause: str
    """The incident's cause when this scenario is the answer."""
    default_mode: str
    """``auto``, ``approval`` or ``dryRun`` unless the settings say otherwise."""
    changes_something: bool
    mitigation: str
    """The communication template's mitigation line once it ran."""


SCENARIOS: Mapping[str, ScenarioInfo] = {s.letter: s for s in (
    ScenarioInfo("A", "key overlap", "KeyRotationInProgress", "auto", True,
                 "Enabled key overlap: the backend accepts the key the agents use"),
    ScenarioInfo("B", "clock skew", "ClockSkew", "auto", True,
                 "Nodes labelled for NTP sync; clock offsets reported"),
    ScenarioInfo("C", "canonicalization drift", "CanonicalizationDrift", "auto", False,
                 "None automatic: canonicalization is never changed; coordinated upgrade "
                 "needed"),
    ScenarioInfo("D", "rate tightening", "MaliciousActivity", "auto", True,
                 "Tightened TOKEN_RATE; top failing sources listed"),
    ScenarioInfo("E", "rollback", "ConfigurationError", "approval", True,
                 "Rolled back to the last known good configuration"),
)}
LETTERS = tuple(SCENARIOS)
INCIDENT_CAUSE_OF: Mapping[str, str] = {s.letter: s.incident_cause for s in SCENARIOS.values()}
