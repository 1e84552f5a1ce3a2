"""The backend's managed key ring (pure): the keys it accepts, the Secret that holds them and the
Deployment env that consumes them. KeyRotation and scenario A both change a backend through it.

The managed key ring lives in one operator-owned Secret per target
(``sigops-keyring-<deployment>``). Its ``keyring.json`` is a regular keyring file (so
``sigops verify --keyring`` reads it) plus ``primary`` (the key the backend treats as its own)
and ``lock`` (the rotation currently working on this target). The backend reads the keys through
env vars that reference the Secret's other entries.

A key in state ``retired`` (a finished rotation dropped it) or ``revoked`` (a person marked it
compromised: ``kubectl sigops revoke``, which records ``revoked_at`` and ``revoked_by``) never
leaves that state and is never written into what the backend accepts again; the ring is the one
place that says which key may be re-admitted (:meth:`ManagedRing.readmission_refused`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import MalformedInput
from ..core.keys import CLOSED_STATES, HMAC, Key, key_from_entry
from ..core.timeparse import parse_time
from .config import DEFAULT_ENV, EnvNames

__all__ = ["ManagedRing", "RingError", "keyring_secret_name", "desired_env", "revision_of",
           "REVISION_ANNOTATION", "OVERLAP_MARK"]

OVERLAP_MARK = "scenario-A"
"""``added_by`` of an entry scenario A (key overlap) made the backend accept for a window."""


class RingError(ValueError):
    """A change the ring refuses (e.g. revoking the key the backend signs as its own)."""

REVISION_ANNOTATION = "sigops.fractal-lba.io/keyring-revision"


def keyring_secret_name(deployment: str) -> str:
    return f"sigops-keyring-{deployment}"[:253]


@dataclass
class ManagedRing:
    """The document in ``keyring.json``; entries keep their secret material."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    primary: str | None = None
    accepts: list[str] = field(default_factory=list)
    lock: dict[str, str] | None = None
    profile: str = "python"

    @classmethod
    def from_json(cls, text: str) -> ManagedRing:
        d = json.loads(text)
        return cls(list(d.get("keys", [])), d.get("primary"), list(d.get("backend_accepts", [])),
                   d.get("lock"), d.get("profile", "python"))

    def to_json(self) -> str:
        return json.dumps({"keys": self.entries, "profile": self.profile,
                           "max_skew_seconds": None, "backend_accepts": self.accepts,
                           "primary": self.primary, "lock": self.lock}, sort_keys=True)

    def copy(self) -> ManagedRing:
        return ManagedRing.from_json(self.to_json())

    def entry(self, kid: str | None) -> dict[str, Any] | None:
        for e in self.entries:
            if e.get("kid") == kid:
                return e
        return None

    def key(self, kid: str | None) -> Key | None:
        e = self.entry(kid)
        return None if e is None else key_from_entry(e)

    def for_rotation(self, uid: str) -> dict[str, Any] | None:
        for e in self.entries:
            if e.get("rotation") == uid:
                return e
        return None

    def by_fingerprint(self, fp: str) -> dict[str, Any] | None:
        for e in self.entries:
            k = self.key(e.get("kid"))
            if k is not None and k.fingerprint == fp:
                return e
        return None

    def closed(self, kid: str | None) -> bool:
        """Is this key retired or revoked (never to be accepted again)?"""
        e = self.entry(kid)
        return e is not None and e.get("state") in CLOSED_STATES

    def set_state(self, kid: str | None, state: str, at: str | None = None) -> bool:
        """Move a key to ``state`` (``at``: when, kept as ``<state>_at`` for retired and
        revoked). A revoked key stays revoked and a retired one may only become revoked:
        False when the move is refused (the entry keeps its state)."""
        e = self.entry(kid)
        if e is None:
            return False
        now = e.get("state")
        if now == "revoked" or (now == "retired" and state != "revoked"):
            return bool(now == state)
        e["state"] = state
        if at is not None and state in CLOSED_STATES:
            e[f"{state}_at"] = at
        if state in CLOSED_STATES:
            self.accepts = [k for k in self.accepts if k != kid]
        return True

    def revoke(self, kid: str, at: str, by: str, reason: str | None = None) -> bool:
        """Mark a key compromised: state ``revoked`` with when and by whom, dropped from what
        the backend accepts. False if it was revoked already. The backend's primary key is
        refused (:class:`RingError`): a rotation first moves the backend off it."""
        e = self.entry(kid)
        if e is None:
            raise RingError(f"no key {kid!r} in the ring")
        if e.get("state") == "revoked":
            return False
        if kid == self.primary:
            raise RingError(f"key {kid} is the backend's primary key: rotate first (a "
                            "KeyRotation), then revoke it once it is retiring")
        self.set_state(kid, "revoked", at)
        e["revoked_by"] = by
        if reason:
            e["revoked_reason"] = reason[:200]
        return True

    def readmission_refused(self, fp: str, now: str) -> str | None:
        """Why the key with fingerprint ``fp`` may not be made accepted again at ``now`` (None:
        it may). Only a key the ring holds as ``active``, or ``retiring`` within its overlap
        window, may: never a retired or revoked key, a pending one, or one sigops does not
        manage."""
        e = self.by_fingerprint(fp)
        if e is None:
            return (f"key {fp} is not in sigops' key ring as active or retiring (known only "
                    "from the backend's history); a person decides whether it may come back")
        kid, state = e.get("kid"), e.get("state")
        if state == "revoked":
            who = e.get("revoked_by") or "unknown"
            return (f"key {kid} ({fp}) was revoked at {e.get('revoked_at') or '?'} by {who}: "
                    "marked compromised, it is never accepted again")
        if state == "retired":
            when = e.get("retired_at")
            return (f"key {kid} ({fp}) was retired" + (f" at {when}" if when else "")
                    + " by a finished rotation: it is never accepted again; agents must "
                    "switch to the current key")
        if state == "pending":
            return (f"key {kid} ({fp}) is pending: a rotation staged it and makes the overlap "
                    "itself")
        until = e.get("overlap_until")
        if state == "retiring" and until and _after(now, str(until)):
            return (f"key {kid} ({fp}) was retiring until {until}: its overlap window is over")
        if state not in ("active", "retiring"):
            return f"key {kid} ({fp}) is in state {state}"
        return None

    def with_overlaps(self, kids: list[str | None], now: str) -> list[str]:
        """``kids`` (what a rotation wants accepted), plus keys scenario A made accepted whose
        window is still open: a rotation never drops a key agents were found signing with.
        Never a retired or revoked key."""
        out = [k for k in kids if k and not self.closed(k)]
        for kid in self.accepts:
            e = self.entry(kid) or {}
            if (kid not in out and e.get("added_by") == OVERLAP_MARK and not self.closed(kid)
                    and e.get("overlap_until") and not _after(now, str(e["overlap_until"]))):
                out.append(kid)
        return out

    def keep_closed_from(self, other: ManagedRing) -> None:
        """Carry every retired or revoked state of ``other`` (the ring as it is now) into this
        one (e.g. a snapshot being restored), so a restore never re-admits such a key."""
        for e in other.entries:
            if e.get("state") not in CLOSED_STATES:
                continue
            mine = self.entry(e.get("kid"))
            if mine is None:
                continue
            for k, v in e.items():
                if k in ("state", "retired_at", "revoked_at", "revoked_by", "revoked_reason"):
                    mine[k] = v
            self.accepts = [k for k in self.accepts if k != e.get("kid")]

    def accepted_keys(self) -> list[Key]:
        """The keys the backend is given: never a retired or revoked one."""
        out = []
        for kid in self.accepts:
            if self.closed(kid):
                continue
            k = self.key(kid)
            if k is not None:
                out.append(k)
        return out

    def secret_data(self, alg: str, names: EnvNames = DEFAULT_ENV) -> dict[str, str]:
        """The Secret's entries: the ring itself and what the backend's env refers to."""
        data = {"keyring.json": self.to_json()}
        primary = self.key(self.primary)
        accepted = self.accepted_keys()
        # The primary first: single-key backends read only that one.
        accepted.sort(key=lambda k: k.kid != self.primary)
        if alg == HMAC:
            secrets = [k.secret.decode() for k in accepted if k.secret is not None]
            data[names.hmac_keys] = ",".join(secrets)
            if primary is not None and primary.secret is not None and not self.closed(
                    self.primary):
                data[names.hmac_key] = primary.secret.decode()
        else:
            pubs = [k.public_entry()["public_b64"] for k in accepted if k.public is not None]
            data[names.ed25519_pubs] = ",".join(pubs)
            if primary is not None and primary.public is not None and not self.closed(
                    self.primary):
                data[names.ed25519_pub] = primary.public_entry()["public_b64"]
        return data

    def public_view(self) -> dict[str, Any]:
        """What may be shown to people: kids, states, fingerprints."""
        return {"primary": self.primary, "accepts": list(self.accepts),
                "keys": [{"kid": e.get("kid"), "state": e.get("state"),
                          "fingerprint": key_from_entry(e).fingerprint} for e in self.entries]}


def revision_of(ring: ManagedRing) -> str:
    """A short digest of what the backend accepts; changes exactly when pods must roll.

    Only the accepted keys count, not which of them is primary: promoting the new key (the
    agents switch, the backend accepts the same two keys) needs no rollout."""
    fps = sorted((ring.key(kid) or Key(kid, HMAC, secret=b"?")).fingerprint
                 for kid in ring.accepts if not ring.closed(kid))
    doc = json.dumps({"accepts": fps})
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _after(a: str, b: str) -> bool:
    """Is time ``a`` later than time ``b`` (both ISO 8601)? Unreadable counts as later: a
    window that cannot be read is closed."""
    try:
        return parse_time(a) > parse_time(b)
    except (MalformedInput, ValueError, TypeError, OverflowError):
        return True


def _ref(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def desired_env(env: list[dict[str, Any]] | None, alg: str, secret: str,
                names: EnvNames = DEFAULT_ENV) -> list[dict[str, Any]]:
    """The container env with the signing variables pointing at the keyring Secret.

    Other variables are kept as they are, in order; replaced ones keep their position.
    """
    wanted: dict[str, dict[str, Any]] = {
        names.sign_alg: {"name": names.sign_alg, "value": "hmac" if alg == HMAC else "ed25519"}}
    if alg == HMAC:
        wanted[names.hmac_key] = _ref(names.hmac_key, secret, names.hmac_key)
        wanted[names.hmac_keys] = _ref(names.hmac_keys, secret, names.hmac_keys)
    else:
        wanted[names.ed25519_pub] = _ref(names.ed25519_pub, secret, names.ed25519_pub)
        wanted[names.ed25519_pubs] = _ref(names.ed25519_pubs, secret, names.ed25519_pubs)
    out: list[dict[str, Any]] = []
    for e in env or []:
        n = e.get("name")
        if n in wanted:
            out.append(wanted.pop(n))
        else:
            out.append(e)
    out.extend(wanted.values())
    return out
