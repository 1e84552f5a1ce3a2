"""Signed, hash-chained step records for status.history and status.actions.

Each record names the object it belongs to (UID and namespace) and its sequence number in the
object's history, so a record copied from another object, or a history cut or reordered, shows
when verified (``kubectl sigops verify``, with the checkpoints of
:mod:`sigops.signing.checkpoints`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..core.keys import Key
from ..core.signals import build_payload, sign_signal, signal_hash

__all__ = ["Signer", "subject_of", "next_seq"]


def subject_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """What binds a record to one object: its UID and namespace."""
    meta = obj.get("metadata") or {}
    return {"uid": str(meta.get("uid") or ""), "namespace": str(meta.get("namespace") or "")}


def next_seq(chain: Sequence[Mapping[str, Any]]) -> int:
    """The sequence number of the record after ``chain``: one more than the last record's (a
    chain of records from before sequence numbers counts its length)."""
    if not chain:
        return 0
    last = (chain[-1].get("payload") or {}).get("seq")
    return int(last) + 1 if isinstance(last, int) and not isinstance(last, bool) else len(chain)


class Signer:
    """Signs records with the operator's key; each names the previous record's hash."""

    def __init__(self, key: Key, service_id: str = "sigops") -> None:
        self.key = key
        self.service_id = service_id

    def record(self, chain: Sequence[dict[str, Any]], kind: str, target: str,
               now: datetime | None = None, **fields: Any) -> dict[str, Any]:
        prev = signal_hash(chain[-1]) if chain else None
        payload = build_payload(kind, target=target, service_id=self.service_id,
                                prev_hash=prev, detected_at=now, **fields)
        return sign_signal(payload, self.key)

    def append(self, chain: Sequence[dict[str, Any]], kind: str, target: str,
               limit: int = 100, subject: Mapping[str, str] | None = None,
               **fields: Any) -> list[dict[str, Any]]:
        """The chain with one more record (the oldest dropped beyond ``limit``). With
        ``subject`` (:func:`subject_of` the object) the record names the object's UID and
        namespace and its sequence number."""
        if subject is not None:
            fields = {**fields, **subject, "seq": next_seq(chain)}
        out = [*chain, self.record(chain, kind, target, **fields)]
        return out[-limit:]
