"""``kubectl sigops verify``: every signed record of an object, and the hash chain of its
history, against the published public keys. Pure: the object and the keys in, a verdict out.

What is checked, per object:

- SignatureIncident: the signed detection (``status.signal``), each record of
  ``status.actions`` and their chain;
- KeyRotation: each record of ``status.history`` and their chain.

Each record must verify with a published key, belong to this object (its payload names the
incident or the rotation), and name the hash of the record before it; the first record names
none, unless the chain is at its length limit (the operator then drops the oldest records).
An object with nothing signed is not valid: there is nothing to vouch for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import SignalRejected
from ...core.signals import signal_hash, verify_signal
from .refs import ref_of

__all__ = ["Finding", "Verdict", "verify_object", "CHAIN_LIMITS"]

CHAIN_LIMITS = {"actions": 200, "history": 100}
"""How many records the operator keeps per chain (it drops the oldest beyond that)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One record's result: ``where`` (``status.actions[2]``), ok, and what broke."""

    where: str
    ok: bool
    key_id: str | None = None
    reason: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("where", self.where), ("valid", self.ok),
                                  ("key_id", self.key_id), ("reason", self.reason),
                                  ("detail", self.detail)) if v is not None}


@dataclass(slots=True)
class Verdict:
    ref: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    @property
    def broken(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"object": self.ref, "valid": self.valid,
                               "records": len(self.findings),
                               "broken": [f.to_dict() for f in self.broken],
                               "checked": [f.to_dict() for f in self.findings]}
        if self.notes:
            out["notes"] = self.notes
        if not self.findings:
            out["broken"] = [{"where": "status", "valid": False, "reason": "nothing_signed",
                              "detail": "no signed record to verify"}]
        return out


def _one(where: str, record: Any, pubkeys: Mapping[str, bytes],
         belongs: Mapping[str, str]) -> tuple[Finding, dict[str, Any] | None]:
    kid = record.get("key_id") if isinstance(record, Mapping) else None
    kid = kid if isinstance(kid, str) else None
    try:
        payload = verify_signal(record, pubkeys)
    except SignalRejected as e:
        return Finding(where, False, kid, e.reason, e.detail), None
    for k, want in belongs.items():
        if k in payload and payload[k] != want:
            return Finding(where, False, kid, "foreign_record",
                           f"signed for {k} {payload[k]!r}, not {want!r}"), payload
    return Finding(where, True, kid), payload


def _chain(verdict: Verdict, path: str, records: Sequence[Any], pubkeys: Mapping[str, bytes],
           belongs: Mapping[str, str], limit: int) -> None:
    prev: str | None = None
    for i, rec in enumerate(records):
        where = f"{path}[{i}]"
        finding, payload = _one(where, rec, pubkeys, belongs)
        if finding.ok and payload is not None:
            named = payload.get("prev_hash")
            if i == 0 and named is not None:
                if len(records) < limit:
                    finding = Finding(where, False, finding.key_id, "broken_chain",
                                      "the first record names a previous record that is "
                                      "missing: records were removed from the start")
                else:
                    verdict.notes.append(f"{path}: the oldest records were dropped at the "
                                         f"limit of {limit}; the chain is checked from "
                                         "the first kept record")
            elif i > 0 and named != prev:
                finding = Finding(where, False, finding.key_id, "broken_chain",
                                  f"does not follow {path}[{i - 1}]: a record was removed, "
                                  "inserted, reordered or changed")
        verdict.findings.append(finding)
        prev = signal_hash(rec) if isinstance(rec, Mapping) else None


def verify_object(obj: Mapping[str, Any], pubkeys: Mapping[str, bytes]) -> Verdict:
    """Verify the signed records of a SignatureIncident or a KeyRotation."""
    ref = ref_of(dict(obj))
    meta = obj.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    st = obj.get("status") or {}
    verdict = Verdict(f"{ref.short}/{name}")
    if ref.short == "si":
        belongs = {"incident": name}
        if st.get("signal") is not None:
            finding, payload = _one("status.signal", st["signal"], pubkeys, belongs)
            if finding.ok and payload is not None and payload.get("type") != "detection":
                finding = Finding("status.signal", False, finding.key_id, "foreign_record",
                                  f"a {payload.get('type')!r} record, not the detection")
            verdict.findings.append(finding)
        _chain(verdict, "status.actions", list(st.get("actions") or []), pubkeys, belongs,
               CHAIN_LIMITS["actions"])
    else:
        _chain(verdict, "status.history", list(st.get("history") or []), pubkeys,
               {"rotation": f"{ns}/{name}"}, CHAIN_LIMITS["history"])
    return verdict
