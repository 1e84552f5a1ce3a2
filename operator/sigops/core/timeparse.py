"""ISO-8601 times, strictly: a time sigops cannot read is an error, never 'now'."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .errors import MalformedInput

__all__ = ["parse_time", "format_time"]


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
