"""SignatureIncident's own vocabulary (pure): its phases as named constants, which are open and
which final."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Phase", "OPEN", "TERMINAL"]


class Phase(StrEnum):
    """A SignatureIncident's ``status.phase`` (the CRD's enum)."""

    DETECTED = "Detected"
    DIAGNOSING = "Diagnosing"
    REMEDIATING = "Remediating"
    VERIFYING = "Verifying"
    RESOLVED = "Resolved"
    AWAITING_APPROVAL = "AwaitingApproval"
    ESCALATED = "Escalated"
    RATE_LIMITED = "RateLimited"
    REFUSED = "Refused"


OPEN = frozenset({Phase.DETECTED, Phase.DIAGNOSING, Phase.REMEDIATING, Phase.VERIFYING,
                  Phase.AWAITING_APPROVAL})
"""Phases of an incident still being worked on (or waiting for a person)."""
TERMINAL = frozenset({Phase.ESCALATED, Phase.RATE_LIMITED, Phase.REFUSED})
"""Phases no reconcile moves on from (Resolved may still restore a tightened rate)."""
