"""Status conditions as Kubernetes API conventions have them.

``lastTransitionTime`` moves only when a condition's status flips; reason and message may
change without moving it.

>>> c = set_condition([], "Ready", "False", "Rotating", "step 1", 3, "2026-01-01T00:00:00Z")
>>> c = set_condition(c, "Ready", "False", "Rotating", "step 2", 3, "2026-01-01T00:05:00Z")
>>> c[0]["lastTransitionTime"], c[0]["message"]
('2026-01-01T00:00:00Z', 'step 2')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["set_condition", "get_condition"]

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
