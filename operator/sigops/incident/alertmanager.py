"""Alertmanager webhook payloads (version 4) and alert identity, pure.

Alertmanager's alert fingerprint is a 64-bit FNV-1a hash over the sorted label names and
values, each followed by the byte 0xff; computing it the same way lets the Prometheus ``ALERTS``
poll and the webhook dedupe into one incident.

>>> alert_fingerprint({"alertname": "A", "job": "x"}) == alert_fingerprint({"job": "x",
...                                                                          "alertname": "A"})
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import SigopsError

__all__ = ["AlertInfo", "WebhookError", "parse_webhook", "alert_fingerprint"]

_OFFSET, _PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1


def alert_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (16 hex digits)."""
    h = _OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode():
                h = ((h ^ b) * _PRIME) & _MASK
            h = ((h ^ 0xFF) * _PRIME) & _MASK
    return f"{h:016x}"


class WebhookError(SigopsError, ValueError):
    """The payload is not an Alertmanager webhook v4 message; the message says why."""


@dataclass(frozen=True)
class AlertInfo:
    """One alert of a webhook post (or of the ALERTS poll)."""

    name: str
    status: str
    fingerprint: str
    labels: dict[str, str]
    group_key: str = ""
    starts_at: str = ""
    value: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> tuple[str, str, str, str]:
        """Copies of one notification share it; the same alert of a later episode (it
        resolved and fires again: another ``startsAt``) does not."""
        return (self.group_key, self.fingerprint, self.status, self.starts_at)


def _str_map(v: Any, what: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str)
                                          for k, x in v.items()):
        raise WebhookError(f"{what} must be an object of strings")
    return dict(v)


def parse_webhook(doc: Any, max_alerts: int = 1000) -> list[AlertInfo]:
    """Validate a webhook v4 document; return its alerts."""
    if not isinstance(doc, dict):
        raise WebhookError("payload must be a JSON object")
    if str(doc.get("version")) != "4":
        raise WebhookError("unsupported webhook version (expected \"4\")")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise WebhookError("alerts must be a list")
    if len(alerts) > max_alerts:
        raise WebhookError(f"too many alerts in one post ({len(alerts)} > {max_alerts})")
    group_key = doc.get("groupKey", "")
    if not isinstance(group_key, str):
        raise WebhookError("groupKey must be a string")
    out = []
    for i, a in enumerate(alerts):
        if not isinstance(a, dict):
            raise WebhookError(f"alerts[{i}] must be an object")
        labels = _str_map(a.get("labels"), f"alerts[{i}].labels")
        annotations = _str_map(a.get("annotations"), f"alerts[{i}].annotations")
        status = a.get("status", doc.get("status"))
        if status not in ("firing", "resolved"):
            raise WebhookError(f"alerts[{i}].status must be firing or resolved")
        fp = a.get("fingerprint") or alert_fingerprint(labels)
        if not isinstance(fp, str) or len(fp) > 64:
            raise WebhookError(f"alerts[{i}].fingerprint must be a short string")
        starts = a.get("startsAt", "")
        out.append(AlertInfo(labels.get("alertname", ""), status, fp, labels, group_key,
                             starts if isinstance(starts, str) else "",
                             annotations.get("value", ""), annotations))
    return out
