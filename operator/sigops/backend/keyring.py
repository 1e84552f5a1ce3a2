"""The backend's managed key ring (pure): the keys it accepts, the Secret that holds them and the
Deployment env that consumes them. KeyRotation and scenario A both change a backend through it.

The managed key ring lives in one operator-owned Secret per target
(``sigops-keyring-<deployment>``). Its ``keyring.json`` is a regular keyring file (so
``sigops verify --keyring`` reads it) plus ``primary`` (the key the backend treats as its own)
and ``lock`` (the rotation currently working on this target). The backend reads the keys through
env vars that reference the Secret's other entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..core.keys import HMAC, Key, key_from_entry
from .config import DEFAULT_ENV, EnvNames

__all__ = ["ManagedRing", "keyring_secret_name", "desired_env", "revision_of",
           "REVISION_ANNOTATION"]

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

    def set_state(self, kid: str | None, state: str) -> None:
        e = self.entry(kid)
        if e is not None:
            e["state"] = state

    def accepted_keys(self) -> list[Key]:
        out = []
        for kid in self.accepts:
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
            if primary is not None and primary.secret is not None:
                data[names.hmac_key] = primary.secret.decode()
        else:
            pubs = [k.public_entry()["public_b64"] for k in accepted if k.public is not None]
            data[names.ed25519_pubs] = ",".join(pubs)
            if primary is not None and primary.public is not None:
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
                 for kid in ring.accepts)
    doc = json.dumps({"accepts": fps})
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


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
