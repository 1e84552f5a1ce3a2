"""Times and durations: ISO-8601 read strictly (a time sigops cannot read is an error, never
'now'), written one way (UTC, seconds, ``Z``); Go-style durations.

>>> parse_duration("1h30m"), parse_duration("336h"), parse_duration("500ms")
(5400.0, 1209600.0, 0.5)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from .errors import MalformedInput

__all__ = ["parse_time", "format_time", "now_iso", "parse_duration"]


def parse_time(value: Any) -> datetime:
    """Parse an ISO-8601 time (``Z`` or an offset; no offset means UTC) to an aware datetime.

    >>> parse_time("2025-01-19T12:00:00Z").isoformat()
    '2025-01-19T12:00:00+00:00'
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise MalformedInput("time must be an ISO-8601 string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedInput(f"not an ISO-8601 time: {value[:40]!r}") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def format_time(t: datetime) -> str:
    """UTC, second precision, ``Z`` suffix."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    """:func:`format_time` of ``now`` (default: the current time)."""
    return format_time(now or datetime.now(UTC))
