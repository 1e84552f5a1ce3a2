"""KeyRotation's own vocabulary (pure): its final phases, the undo Secret, what agents are given,
and the plan a dry run shows."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from ..core.keys import ED25519, HMAC, Key
from ..core.timeparse import parse_duration
from ..settings import AgentSecret

__all__ = ["Phase", "Reason", "TERMINAL", "UNDO_SECRET",
    "agent_secret_key", "agent_secret_value", "plan",
           "alg_of", "spec_problem", "DEFAULT_OVERLAP", "window_seconds"]

DEFAULT_OVERLAP = "336h"
"""The upstream dedup TTL (14 days): a PCS may be resubmitted that long after it was signed."""

class Phase(StrEnum):
    """A KeyRotation's ``status.phase``: the last step completed (the CRD's enum)."""

    PENDING = "Pending"
    STAGED = "Staged"
    OVERLAPPING = "Overlapping"
    VERIFIED = "Verified"
    PROMOTED = "Promoted"
    RETIRING = "Retiring"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    FAILED = "Failed"
    PLANNED = "Planned"


class Reason(StrEnum):
    """Reasons of a KeyRotation's ``Ready``, ``Progressing`` and ``Guarded`` conditions and of
    its Warning Events (besides :class:`sigops.settings.TargetRefused`'s)."""

    ABORT_REQUESTED = "AbortRequested"
    BACKEND_CONFIG_INVALID = "BackendConfigInvalid"
    BACKEND_REJECTS_OVERLAP = "BackendRejectsOverlap"
    CONFLICT = "Conflict"
    DELETED = "Deleted"
    DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"
    DRY_RUN = "DryRun"
    ERROR_RATE_ABOVE_THRESHOLD = "ErrorRateAboveThreshold"
    INVALID_SPEC = "InvalidSpec"
    KEYRING_LOST = "KeyringLost"
    KEY_REVOKED = "KeyRevoked"
    NO_PROMETHEUS = "NoPrometheus"
    OLD_KEY_STILL_ACCEPTED = "OldKeyStillAccepted"
    PROBE_FAILED = "ProbeFailed"
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    PROVING_RETIREMENT = "ProvingRetirement"
    ROLLOUT_STALLED = "RolloutStalled"
    ROLLOUT_TIMEOUT = "RolloutTimeout"
    ROTATING = "Rotating"
    SNAPSHOT_UNVERIFIED = "SnapshotUnverified"
    TARGET_BUSY = "TargetBusy"
    WAITING_FOR_BACKEND = "WaitingForBackend"
    WAITING_FOR_ROLLOUT = "WaitingForRollout"
    WATCHING = "Watching"


TERMINAL = frozenset({Phase.COMPLETED, Phase.ABORTED, Phase.FAILED, Phase.PLANNED})


UNDO_SECRET = "sigops-undo-snapshots"
"""The Secret in the operator's namespace holding every unfinished rotation's undo snapshot,
one key per rotation UID: a requester cannot read or plant one there, and one fixed name lets
the chart pin the operator's own access to it."""


def agent_secret_key(agent: AgentSecret | None, alg: str) -> str:
    """The key of the agents' Secret that holds what they sign with."""
    if agent is not None and agent.key:
        return agent.key
    return "PCS_HMAC_KEY" if alg == HMAC else "PCS_ED25519_PRIV_B64"


def agent_secret_value(key: Key) -> str:
    """What agents sign with: the HMAC secret, or the Ed25519 private seed (base64)."""
    e = key.to_entry()
    return str(e["secret"] if key.alg == HMAC else e["private_b64"])


def plan(alg: str, target: str, previous: Key | None, overlap: str, agent_secret: str | None,
         guarded: bool) -> list[str]:
    """The steps a rotation will take, for a dry run and for people reading status."""
    prev = f"{previous.kid} ({previous.fingerprint})" if previous else "none"
    steps = [
        f"Staged: generate a new {alg} key into the keyring Secret of {target}; "
        f"current primary key: {prev}",
        f"Overlapping: point {target}'s signing env at the keyring Secret, accept old and new "
        "keys, bump the pod-template annotation so pods roll",
        "Verified: wait for the rollout, sign a probe PCS with the new key and check it "
        "verifies under the backend's effective config; the live backend (probeURL, else its "
        "ready pods) must accept a probe signed with the old key and one with the new key",
        "Promoted: " + (f"switch the agents' Secret {agent_secret} to the new key"
                        if agent_secret else "no agentSecret given: agents switch out of band")
        + "; the new key becomes primary, the old one retiring",
        f"Retiring: keep accepting the old key for {overlap}",
        "Completed: retire the old key and drop it from the backend",
    ]
    steps.append("Each step is guarded by the signature error rate and undone above "
                 "abortOnErrorRate" if guarded else
                 "Unguarded: no Prometheus configured, the error rate is not watched")
    return steps


def alg_of(spec_alg: str) -> str:
    return ED25519 if spec_alg == ED25519 else HMAC


def spec_problem(spec: Mapping[str, Any], min_overlap: str) -> str | None:
    """What is wrong with a KeyRotation spec (None: nothing). The overlap may not be shorter
    than ``min_overlap``: a shorter window retires the old key while agents still use it.

    >>> spec_problem({"algorithm": "ed25519", "overlap": "30m"}, "1h")
    'overlap 30m is shorter than the configured floor 1h'
    """
    overlap = spec.get("overlap", DEFAULT_OVERLAP)
    try:
        secs = parse_duration(overlap)
    except ValueError as e:
        return str(e)
    if secs < parse_duration(min_overlap):
        return f"overlap {overlap} is shorter than the configured floor {min_overlap}"
    if spec.get("algorithm") not in (HMAC, ED25519):
        return "algorithm must be hmac-sha256 or ed25519"
    thr = spec.get("abortOnErrorRate")
    if thr is not None and (not isinstance(thr, int | float) or thr < 0):
        return "abortOnErrorRate must be a number >= 0"
    return None


def window_seconds(overlap: str, rollout_timeout: float, probe_grace: float) -> float:
    """How long a rotation may take before it counts as stuck: its overlap, two rollouts
    (overlap config, retirement) and the grace the live backend gets after the first.

    >>> window_seconds("1h", 600, 120)
    4920.0
    """
    return parse_duration(overlap) + 2 * rollout_timeout + probe_grace
