"""Status conditions and durations: small pure helpers shared by the handlers.

``lastTransitionTime`` moves only when a condition's status flips, as Kubernetes API
conventions ask; reason and message may change without moving it.

>>> c = set_condition([], "Ready", "False", "Rotating", "step 1", 3, "2026-01-01T00:00:00Z")
>>> c = set_condition(c, "Ready", "False", "Rotating", "step 2", 3, "2026-01-01T00:05:00Z")
>>> c[0]["lastTransitionTime"], c[0]["message"]
('2026-01-01T00:00:00Z', 'step 2')
>>> parse_duration("1h30m"), parse_duration("336h"), parse_duration("500ms")
(5400.0, 1209600.0, 0.5)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["set_condition", "get_condition", "parse_duration", "now_iso"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``336h``, ``1h30m``, ``90s``, ``2d``, ``500ms``)."""
    if not isinstance(text, str) or not text:
        raise ValueError("duration must be a non-empty string like 336h or 90s")
    pos, total = 0, 0.0
    for m in _DUR.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text[:40]!r}: use e.g. 336h, 1h30m, 90s")
    return total


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(conditions: Sequence[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    for c in conditions or ():
        if c.get("type") == ctype:
            return c
    return None


def set_condition(conditions: Sequence[dict[str, Any]] | None, ctype: str, status: str,
                  reason: str, message: str, generation: int | None, now: str
                  ) -> list[dict[str, Any]]:
    """A new condition list with ``ctype`` set; other conditions are kept as they are."""
    out = [dict(c) for c in conditions or () if c.get("type") != ctype]
    old = get_condition(conditions, ctype)
    moved = old is None or old.get("status") != status
    cond: dict[str, Any] = {
        "type": ctype, "status": status, "reason": reason, "message": message[:1024],
        "lastTransitionTime": now if moved or old is None
        else old.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    out.append(cond)
    return sorted(out, key=lambda c: str(c["type"]))
