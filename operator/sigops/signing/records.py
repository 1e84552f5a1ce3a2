"""Signed, hash-chained step records for status.history and status.actions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..core.keys import Key
from ..core.signals import build_payload, sign_signal, signal_hash

__all__ = ["Signer"]


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
               limit: int = 100, **fields: Any) -> list[dict[str, Any]]:
        """The chain with one more record (the oldest dropped beyond ``limit``)."""
        out = [*chain, self.record(chain, kind, target, **fields)]
        return out[-limit:]
