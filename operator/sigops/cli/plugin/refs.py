"""Object references as kubectl writes them (``si/NAME``, ``keyrotation/NAME``) and small
time helpers shared by the plugin's verbs. Pure.

>>> parse_ref("si/flk-sig-x7k2p")
Ref(kind='SignatureIncident', plural='signatureincidents', short='si', name='flk-sig-x7k2p')
>>> parse_ref("keyrotations/backend-2026-11").short
'kr'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...core.errors import SigopsError

__all__ = ["Ref", "RefError", "parse_ref", "ref_of", "KINDS", "parse_ts", "ago"]


class RefError(SigopsError):
    """Not a reference to a SignatureIncident, a KeyRotation or a SignatureAudit."""


@dataclass(frozen=True, slots=True)
class Ref:
    kind: str
    plural: str
    short: str
    name: str

    def __str__(self) -> str:
        return f"{self.short}/{self.name}"


KINDS: dict[str, tuple[str, str, str]] = {}
for _kind, _plural, _short in (("SignatureIncident", "signatureincidents", "si"),
                               ("KeyRotation", "keyrotations", "kr"),
                               ("SignatureAudit", "signatureaudits", "sau")):
    for _alias in (_short, _kind.lower(), _plural,
                   f"{_plural}.sigops.fractal-lba.io", f"{_kind.lower()}.sigops.fractal-lba.io"):
        KINDS[_alias] = (_kind, _plural, _short)


def parse_ref(text: str, only: tuple[str, ...] = ("si", "kr")) -> Ref:
    """``KIND/NAME`` with KIND one of si, signatureincident(s), kr, keyrotation(s), sau,
    signatureaudit(s); ``only`` the short names this verb takes."""
    kind, sep, name = text.partition("/")
    row = KINDS.get(kind.lower())
    if not sep or not name or row is None:
        want = " or ".join(f"{s}/NAME" for s in only)
        raise RefError(f"{text!r} is not an object reference: use {want}")
    if row[2] not in only:
        want = " or ".join(f"{s}/NAME" for s in only)
        raise RefError(f"{text!r}: this verb takes {want}")
    return Ref(*row, name)


def ref_of(obj: dict[str, Any], only: tuple[str, ...] = ("si", "kr")) -> Ref:
    """The reference of a stored object (by its ``kind``), one of the kinds ``only``."""
    kind = str(obj.get("kind") or "")
    row = KINDS.get(kind.lower())
    if row is None or row[2] not in only:
        names = " or ".join(KINDS[s][0] for s in only)
        raise RefError(f"not a {names}: kind {kind or 'missing'}")
    return Ref(*row, str((obj.get("metadata") or {}).get("name") or ""))


def parse_ts(s: Any) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset) as an aware datetime; None if absent or bad."""
    if not isinstance(s, str) or not s:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def ago(seconds: float) -> str:
    """A duration as people say it: ``45s``, ``3m20s``, ``2h05m``, ``3d4h``.

    >>> ago(45), ago(200), ago(7500), ago(273600)
    ('45s', '3m20s', '2h05m', '3d4h')
    """
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"
