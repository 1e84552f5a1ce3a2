"""``kubectl sigops verify``: every signed record of an object, and the hash chain of its
history, against the published public keys. Pure: the object and the keys in, a verdict out.

What is checked, per object:

- SignatureIncident: the signed detection (``status.signal``), each record of
  ``status.actions`` and their chain;
- KeyRotation: each record of ``status.history`` and their chain.

Each record must verify with a published key that was not revoked before the record was
signed, belong to this object (its payload names the incident or the rotation, and the
object's UID and namespace: ``foreign_record`` otherwise), carry the next sequence number
(``truncated`` after a gap, ``reordered`` when it goes back) and name the hash of the record
before it; the first record names none, unless the chain is at its length limit (the
operator then drops the oldest records).
With the operator's checkpoint of the chain (ConfigMap ``sigops-history``, or a saved copy),
the chain must reach the checkpoint's length and hold its head there (``truncated`` /
``reordered`` otherwise). An object with nothing signed is not valid: there is nothing to
vouch for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import SignalRejected
from ...core.signals import signal_hash, verify_signal
from ...signing.checkpoints import checkpoint_key
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
         belongs: Mapping[str, str], revoked: Mapping[str, str] | None = None
         ) -> tuple[Finding, dict[str, Any] | None]:
    kid = record.get("key_id") if isinstance(record, Mapping) else None
    kid = kid if isinstance(kid, str) else None
    try:
        payload = verify_signal(record, pubkeys)
    except SignalRejected as e:
        return Finding(where, False, kid, e.reason, e.detail), None
    if kid is not None and revoked and kid in revoked and \
            str(payload.get("detected_at", "")) >= revoked[kid]:
        return Finding(where, False, kid, "revoked_key",
                       f"signed at {payload.get('detected_at')} with key {kid}, revoked at "
                       f"{revoked[kid]}"), payload
    for k, want in belongs.items():
        if k in payload and payload[k] != want:
            return Finding(where, False, kid, "foreign_record",
                           f"signed for {k} {payload[k]!r}, not {want!r}"), payload
    return Finding(where, True, kid), payload


def _chain(verdict: Verdict, path: str, records: Sequence[Any], pubkeys: Mapping[str, bytes],
           belongs: Mapping[str, str], limit: int, revoked: Mapping[str, str] | None = None
           ) -> None:
    prev: str | None = None
    prev_seq: int | None = None
    for i, rec in enumerate(records):
        where = f"{path}[{i}]"
        finding, payload = _one(where, rec, pubkeys, belongs, revoked)
        seq = payload.get("seq") if payload is not None else None
        if finding.ok and isinstance(seq, int) and prev_seq is not None and seq != prev_seq + 1:
            gap = seq > prev_seq + 1
            finding = Finding(where, False, finding.key_id, "truncated" if gap else "reordered",
                              f"sequence number {seq} follows {prev_seq}: "
                              + ("records were removed" if gap else "records were reordered"))
        prev_seq = seq if isinstance(seq, int) else None
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


def _checkpoint(verdict: Verdict, path: str, records: Sequence[Any],
                checkpoint: Mapping[str, Any] | None, pubkeys: Mapping[str, bytes],
                meta: Mapping[str, Any], plural: str) -> None:
    """Hold the chain to the operator's signed checkpoint of it."""
    where = f"checkpoint of {path}"
    if checkpoint is None:
        verdict.notes.append(f"{path}: no checkpoint published for it (an older object, or "
                             "none given offline): a cut at its end could not be seen")
        return
    try:
        cp = verify_signal(checkpoint, pubkeys)
    except SignalRejected as e:
        verdict.findings.append(Finding(where, False, None, e.reason, e.detail))
        return
    kid = checkpoint.get("key_id")
    want = {"type": "checkpoint", "uid": meta.get("uid"), "namespace": meta.get("namespace"),
            "object": f"{plural}/{meta.get('name')}", "path": path}
    wrong = [k for k, v in want.items() if cp.get(k) != v]
    if wrong:
        verdict.findings.append(Finding(where, False, kid, "foreign_record",
                                        f"the checkpoint is of another object ({wrong[0]})"))
        return
    count, head = cp.get("count"), cp.get("head")
    by_seq = {(r.get("payload") or {}).get("seq"): r for r in records
              if isinstance(r, Mapping)}
    if not isinstance(count, int) or count <= 0:
        verdict.findings.append(Finding(where, True, kid))
        return
    last = max((k for k in by_seq if isinstance(k, int)), default=-1)
    if last + 1 < count:
        verdict.findings.append(Finding(
            where, False, kid, "truncated",
            f"the operator's checkpoint counts {count} record(s); the chain ends at "
            f"{last + 1}: records were removed from its end"))
    elif count - 1 in by_seq and signal_hash(by_seq[count - 1]) != head:
        verdict.findings.append(Finding(
            where, False, kid, "reordered",
            f"record {count - 1} is not the one the operator checkpointed"))
    elif count - 1 not in by_seq and len(records) > 0:
        verdict.notes.append(f"{path}: record {count - 1} of the checkpoint was dropped at the "
                             "length limit; later records continue the chain")
        verdict.findings.append(Finding(where, True, kid))
    else:
        verdict.findings.append(Finding(where, True, kid))


def verify_object(obj: Mapping[str, Any], pubkeys: Mapping[str, bytes],
                  checkpoints: Mapping[str, Mapping[str, Any]] | None = None,
                  revoked: Mapping[str, str] | None = None) -> Verdict:
    """Verify the signed records of a SignatureIncident or a KeyRotation: each record, the
    chain, and (``checkpoints``: by :func:`~sigops.signing.checkpoints.checkpoint_key`) the
    operator's checkpoint of the chain; ``revoked`` maps key ids to the time they were
    revoked (records signed with one at or after that time are not valid)."""
    ref = ref_of(dict(obj))
    meta = obj.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    st = obj.get("status") or {}
    verdict = Verdict(f"{ref.short}/{name}")
    bound = {"uid": str(meta.get("uid") or ""), "namespace": ns} if meta.get("uid") else {}
    cps = checkpoints
    if ref.short == "si":
        belongs = {"incident": name, **bound}
        if st.get("signal") is not None:
            finding, payload = _one("status.signal", st["signal"], pubkeys, belongs, revoked)
            if finding.ok and payload is not None and payload.get("type") != "detection":
                finding = Finding("status.signal", False, finding.key_id, "foreign_record",
                                  f"a {payload.get('type')!r} record, not the detection")
            verdict.findings.append(finding)
        actions = list(st.get("actions") or [])
        _chain(verdict, "status.actions", actions, pubkeys, belongs, CHAIN_LIMITS["actions"],
               revoked)
        if cps is not None:
            _checkpoint(verdict, "status.actions", actions,
                        cps.get(checkpoint_key("signatureincidents", ns, name)), pubkeys, meta,
                        "signatureincidents")
    else:
        history = list(st.get("history") or [])
        _chain(verdict, "status.history", history, pubkeys,
               {"rotation": f"{ns}/{name}", **bound}, CHAIN_LIMITS["history"], revoked)
        if cps is not None:
            _checkpoint(verdict, "status.history", history,
                        cps.get(checkpoint_key("keyrotations", ns, name)), pubkeys, meta,
                        "keyrotations")
    return verdict
