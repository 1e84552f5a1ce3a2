"""A requester may make sigops more careful, never less (pure decisions of the incident)."""

from __future__ import annotations

import pytest

from sigops.incident.decide import decided, effective_mode, needs_approval

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("configured", "requested", "effective"), [
    ("auto", None, "auto"), ("auto", "approval", "approval"), ("auto", "dryRun", "dryRun"),
    ("approval", "auto", "approval"), ("approval", "dryRun", "dryRun"),
    ("dryRun", "auto", "dryRun"), ("dryRun", "approval", "dryRun"),
    ("approval", "AUTO", "approval"), ("approval", ["auto"], "approval"),
])
def test_spec_mode_only_tightens(configured: str, requested: object, effective: str) -> None:
    assert effective_mode(configured, requested) == effective


def test_the_configured_dry_run_is_absolute() -> None:
    """Approved or not, a dry run acts on nothing."""
    assert needs_approval("D", "dryRun", ["D"], recent_signing_change=False)
    assert needs_approval("E", "dryRun", ["E"], recent_signing_change=True)


def test_only_decisions_naming_a_user_count() -> None:
    spec = {"approve": ["D", "E"], "deny": ["A"], "decisions": [
        {"scenario": "E", "decision": "approve"},                  # no user: not checked
        {"scenario": "B", "decision": "approve", "user": "ann"},
        {"scenario": "C", "decision": "deny", "user": "bob"}]}
    assert decided(spec, "approve") == ["B"]
    assert decided(spec, "deny") == ["C"]
    assert needs_approval("D", "approval", decided(spec, "approve"),
                          recent_signing_change=False)
