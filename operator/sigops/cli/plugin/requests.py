"""What ``approve``, ``deny`` and ``abort`` write, and when they refuse. Pure.

Each builds an RFC 6902 JSON patch that starts with a ``test`` of the resourceVersion that was
read, so it applies to exactly the object whose state was checked: if the operator moved the
object on in between, the API server refuses the patch and nothing changes. A refusal is a
:class:`Refused` with a sentence saying why; nothing has been written then either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.errors import SigopsError
from .story import ROTATION_TERMINAL

__all__ = ["Refused", "decision_patch", "abort_patch"]


class Refused(SigopsError):
    """The object is not waiting for this request; nothing was changed."""


def _base(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    ops: list[dict[str, Any]] = []
    if rv:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": rv})
    if not isinstance(obj.get("spec"), Mapping):
        ops.append({"op": "add", "path": "/spec", "value": {}})
    return ops


def decision_patch(obj: Mapping[str, Any], decision: str, who: Mapping[str, Any], now: str,
                   scenario: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Approve or deny the scenario a SignatureIncident waits for: ``(scenario, patch)``.

    Refused unless the incident is ``AwaitingApproval`` for a person (not a dry run), and when
    ``scenario`` is given, for that scenario; refused too when it was already decided.

    >>> inc = {"metadata": {"name": "x", "resourceVersion": "7"}, "spec": {},
    ...        "status": {"phase": "AwaitingApproval", "scenario": "E"}}
    >>> scen, ops = decision_patch(inc, "approve", {"user": "ann"}, "2026-11-30T10:00:00Z")
    >>> scen, [o["path"] for o in ops]
    ('E', ['/metadata/resourceVersion', '/spec/approve', '/spec/decisions'])
    """
    if decision not in ("approve", "deny"):
        raise ValueError(decision)
    name = (obj.get("metadata") or {}).get("name")
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    st = obj.get("status") or {}
    phase = st.get("phase") or "Detected"
    waiting_for = st.get("scenario")
    ready = next((c for c in st.get("conditions") or []
                  if isinstance(c, Mapping) and c.get("type") == "Ready"), {})
    if phase != "AwaitingApproval":
        raise Refused(f"si/{name} is {phase}, not waiting for approval: nothing to "
                      f"{decision}; nothing changed")
    if ready.get("reason") == "DryRun":
        raise Refused(f"si/{name} is a dry run (mode dryRun): it shows its plan and waits for "
                      f"nobody; nothing changed")
    if not waiting_for:
        raise Refused(f"si/{name} names no scenario to {decision}; nothing changed")
    if scenario is not None and scenario != waiting_for:
        raise Refused(f"si/{name} waits for scenario {waiting_for}, not {scenario}; "
                      "nothing changed")
    approved = list(spec.get("approve") or [])
    denied = list(spec.get("deny") or [])
    if waiting_for in approved or waiting_for in denied:
        done = "approved" if waiting_for in approved else "denied"
        raise Refused(f"scenario {waiting_for} of si/{name} is already {done}; the operator "
                      "has not acted on it yet; nothing changed")
    entry = {"scenario": waiting_for, "decision": decision, **dict(who), "at": now}
    ops = _base(obj)
    key = "approve" if decision == "approve" else "deny"
    current = approved if decision == "approve" else denied
    ops.append({"op": "add", "path": f"/spec/{key}", "value": [*current, waiting_for]})
    ops.append({"op": "add", "path": "/spec/decisions",
                "value": [*(spec.get("decisions") or []), entry]})
    return str(waiting_for), ops


def abort_patch(obj: Mapping[str, Any], who: Mapping[str, Any], now: str
                ) -> list[dict[str, Any]]:
    """Ask the operator to stop a KeyRotation and undo it. Refused when it is finished
    (Completed, Aborted, Failed, or a dry run's Planned) or an abort is already asked for.

    >>> kr = {"metadata": {"name": "r", "resourceVersion": "3"}, "spec": {},
    ...       "status": {"phase": "Completed"}}
    >>> abort_patch(kr, {"user": "ann"}, "2026-11-30T10:00:00Z")
    Traceback (most recent call last):
    ...
    sigops.cli.plugin.requests.Refused: kr/r is Completed: nothing to abort; nothing changed
    """
    name = (obj.get("metadata") or {}).get("name")
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    phase = (obj.get("status") or {}).get("phase") or "Pending"
    if phase in ROTATION_TERMINAL:
        raise Refused(f"kr/{name} is {phase}: nothing to abort; nothing changed")
    if spec.get("abort"):
        by = (spec.get("abortRequestedBy") or {}).get("user")
        raise Refused(f"kr/{name}: an abort is already requested"
                      + (f" (by {by})" if by else "") + "; nothing changed")
    ops = _base(obj)
    ops.append({"op": "add", "path": "/spec/abort", "value": True})
    ops.append({"op": "add", "path": "/spec/abortRequestedBy", "value": {**dict(who),
                                                                         "at": now}})
    return ops
