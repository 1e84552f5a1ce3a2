"""Signing keys and key rings.

A key ring lists every key sigops knows about a target, in every state of its life; which of
them the backend accepts is a property of the ring (``backend_accepts``) or, by default, the
keys in state ``active`` or ``retiring``. An empty ring fails closed. A ``revoked`` key (marked
compromised by a person) is never accepted, whatever ``backend_accepts`` says.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .canonical import PROFILES
from .errors import KeyringError, MalformedInput
from .timeparse import format_time, parse_time

__all__ = [
    "ALGS",
    "STATES",
    "CLOSED_STATES",
    "HMAC",
    "ED25519",
    "Key",
    "KeyRing",
    "keyring_from_dict",
    "load_keyring",
    "generate_key",
    "fingerprint",
    "b64decode_strict",
]

HMAC = "hmac-sha256"
ED25519 = "ed25519"
ALGS = (HMAC, ED25519)
STATES = ("pending", "active", "retiring", "retired", "revoked")
CLOSED_STATES = frozenset({"retired", "revoked"})
"""States a key never leaves: sigops never makes a backend accept such a key again."""
SIG_LEN = {HMAC: 32, ED25519: 64}


def b64decode_strict(value: Any, what: str, length: int | None = None) -> bytes:
    """Decode standard base64 strictly (alphabet and padding); check the length if given."""
    if not isinstance(value, str):
        raise MalformedInput(f"{what} must be a base64 string")
    try:
        # Strict mode accepts only canonical base64, which the check below accepts with the
        # same bytes; it is twice as fast, and anything it refuses gets the check's answer.
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedInput(f"{what} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise MalformedInput(f"{what} decodes to {len(raw)} bytes; expected {length}")
    return raw


def fingerprint(material: bytes) -> str:
    """A short, non-secret handle on key material: SHA-256 prefix (12 hex digits)."""
    return hashlib.sha256(b"sigops-key-fingerprint\x00" + material).hexdigest()[:12]


@functools.cache
def _invalid_signature() -> type[Exception]:
    """cryptography's InvalidSignature, imported once, on first need (not at every verify)."""
    from cryptography.exceptions import InvalidSignature

    return InvalidSignature


@dataclass(frozen=True, slots=True)
class Key:
    """One key. Secret material is excluded from ``repr`` so it cannot leak into logs."""

    kid: str
    alg: str
    state: str = "active"
    secret: bytes | None = field(default=None, repr=False)
    public: bytes | None = None
    private_seed: bytes | None = field(default=None, repr=False)
    not_before: datetime | None = None
    not_after: datetime | None = None
    _verifier: Any = field(default=None, repr=False, compare=False)
    _signer: Any = field(default=None, repr=False, compare=False)
    _pads: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alg == HMAC and self.secret is not None:
            # HMAC-SHA256 (RFC 2104) with the two padded-key blocks hashed once: a MAC then
            # costs two SHA-256 copies, under half of hmac.digest's per-call setup.
            k = self.secret if len(self.secret) <= 64 else hashlib.sha256(self.secret).digest()
            k = k.ljust(64, b"\0")
            object.__setattr__(self, "_pads", (hashlib.sha256(bytes(b ^ 0x36 for b in k)),
                                               hashlib.sha256(bytes(b ^ 0x5C for b in k))))
        if self.alg == ED25519:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import (
                Ed25519PrivateKey,
                Ed25519PublicKey,
            )

            if self.private_seed is not None:
                priv = Ed25519PrivateKey.from_private_bytes(self.private_seed)
                object.__setattr__(self, "_signer", priv)
                # (public_bytes_raw: no import of the serialization module, ~7 ms a process)
                pub = priv.public_key().public_bytes_raw()
                if self.public is None:
                    object.__setattr__(self, "public", pub)
                elif pub != self.public:
                    raise KeyringError(f"key {self.kid!r}: private_b64 does not match public_b64")
            if self.public is None:
                raise KeyringError(f"key {self.kid!r}: ed25519 key needs public_b64")
            object.__setattr__(self, "_verifier", Ed25519PublicKey.from_public_bytes(self.public))

    @property
    def fingerprint(self) -> str:
        """SHA-256 prefix of the public key (Ed25519) or of the secret (HMAC)."""
        mat = self.public if self.alg == ED25519 else self.secret
        return fingerprint(mat or b"")

    @property
    def can_sign(self) -> bool:
        return self.secret is not None or self._signer is not None

    def verify(self, message: bytes, sig: bytes) -> bool:
        """True if ``sig`` is this key's signature of ``message`` (prehashed for Ed25519)."""
        if self.alg == HMAC:
            return hmac.compare_digest(self.mac(message), sig)
        try:
            self._verifier.verify(sig, message)
        except _invalid_signature():
            return False
        return True

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under this (HMAC) key."""
        if self._pads is None:
            raise KeyringError(f"key {self.kid!r} has no secret")
        inner, outer = self._pads[0].copy(), self._pads[1].copy()
        inner.update(message)
        outer.update(inner.digest())
        mac: bytes = outer.digest()
        return mac

    def sign(self, message: bytes) -> bytes:
        if self.alg == HMAC:
            return self.mac(message)
        if self._signer is None:
            raise KeyringError(f"key {self.kid!r} has no private_b64: cannot sign")
        sig: bytes = self._signer.sign(message)
        return sig

    def valid_at(self, when: datetime | None) -> int:
        """0 inside the validity window (or no time to check), -1 before it, 1 after it."""
        if when is None:
            return 0
        if self.not_before is not None and when < self.not_before:
            return -1
        if self.not_after is not None and when > self.not_after:
            return 1
        return 0

    def public_entry(self) -> dict[str, Any]:
        """The key's entry without secret material (for status and logs)."""
        d: dict[str, Any] = {"kid": self.kid, "alg": self.alg, "state": self.state,
                             "fingerprint": self.fingerprint}
        if self.public is not None:
            d["public_b64"] = base64.b64encode(self.public).decode()
        return d

    def to_entry(self) -> dict[str, Any]:
        """The full keyring entry, secret material included (for keyring files and Secrets)."""
        d: dict[str, Any] = {"kid": self.kid, "alg": self.alg, "state": self.state}
        if self.secret is not None:
            d["secret"] = self.secret.decode("utf-8")
        if self.public is not None:
            d["public_b64"] = base64.b64encode(self.public).decode()
        if self.private_seed is not None:
            d["private_b64"] = base64.b64encode(self.private_seed).decode()
        if self.not_before is not None:
            d["not_before"] = format_time(self.not_before)
        if self.not_after is not None:
            d["not_after"] = format_time(self.not_after)
        return d

    def with_state(self, state: str) -> Key:
        if state not in STATES:
            raise KeyringError(f"unknown key state {state!r}")
        return Key(self.kid, self.alg, state, self.secret, self.public, self.private_seed,
                   self.not_before, self.not_after)



@dataclass(frozen=True)
class KeyRing:
    """The keys of one target, the canonical profile and the freshness rule."""

    keys: tuple[Key, ...]
    profile: str = "python"
    max_skew_seconds: float | None = None
    backend_accepts: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("key ring has no keys: refusing to verify anything (fail closed)")
        if self.profile not in PROFILES:
            raise KeyringError(
                f"unknown profile {self.profile!r}; known: {', '.join(PROFILES)}")
        kids = [k.kid for k in self.keys]
        dup = {k for k in kids if kids.count(k) > 1}
        if dup:
            raise KeyringError(f"duplicate kid(s) in key ring: {', '.join(sorted(dup))}")
        if self.backend_accepts is not None:
            unknown = self.backend_accepts - set(kids)
            if unknown:
                raise KeyringError(
                    f"backend_accepts names unknown kid(s): {', '.join(sorted(unknown))}")

    def accepts(self, key: Key) -> bool:
        """Does the backend accept this key (ignoring its validity window)? Never a revoked
        key: a signature by a compromised key is not valid, whoever still accepts it."""
        if key.state == "revoked":
            return False
        if self.backend_accepts is not None:
            return key.kid in self.backend_accepts
        return key.state in ("active", "retiring")

    def get(self, kid: str) -> Key | None:
        for k in self.keys:
            if k.kid == kid:
                return k
        return None

    def to_dict(self, include_secrets: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "keys": [k.to_entry() if include_secrets else k.public_entry() for k in self.keys],
            "profile": self.profile,
            "max_skew_seconds": self.max_skew_seconds,
        }
        if self.backend_accepts is not None:
            d["backend_accepts"] = sorted(self.backend_accepts)
        return d


def _opt_time(entry: Mapping[str, Any], name: str, kid: str) -> datetime | None:
    v = entry.get(name)
    if v is None:
        return None
    try:
        return parse_time(v)
    except MalformedInput as e:
        raise KeyringError(f"key {kid!r}: {name}: {e.reason}") from None


def key_from_entry(entry: Any, index: int = 0) -> Key:
    """Build a :class:`Key` from one keyring JSON entry, with clear errors."""
    if not isinstance(entry, Mapping):
        raise KeyringError(f"keys[{index}] must be an object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 253:
        raise KeyringError(f"keys[{index}]: kid must be a non-empty string")
    alg = entry.get("alg")
    if alg not in ALGS:
        raise KeyringError(f"key {kid!r}: unknown alg {alg!r}; expected one of {', '.join(ALGS)}")
    state = entry.get("state", "active")
    if state not in STATES:
        raise KeyringError(
            f"key {kid!r}: unknown state {state!r}; expected one of {', '.join(STATES)}")
    nb, na = _opt_time(entry, "not_before", kid), _opt_time(entry, "not_after", kid)
    try:
        if alg == HMAC:
            secret = entry.get("secret")
            if not isinstance(secret, str) or not secret:
                raise KeyringError(f"key {kid!r}: hmac-sha256 key needs a non-empty 'secret'")
            return Key(kid, alg, state, secret=secret.encode("utf-8"), not_before=nb, not_after=na)
        pub = entry.get("public_b64")
        priv = entry.get("private_b64")
        if pub is None and priv is None:
            raise KeyringError(f"key {kid!r}: ed25519 key needs public_b64 (or private_b64)")
        return Key(
            kid, alg, state,
            public=None if pub is None else b64decode_strict(pub, "public_b64", 32),
            private_seed=None if priv is None else b64decode_strict(priv, "private_b64", 32),
            not_before=nb, not_after=na,
        )
    except MalformedInput as e:
        raise KeyringError(f"key {kid!r}: {e.reason}") from None


def keyring_from_dict(obj: Any, profile: str | None = None) -> KeyRing:
    """Build a :class:`KeyRing` from the keyring JSON document."""
    if not isinstance(obj, Mapping):
        raise KeyringError("keyring must be a JSON object with a 'keys' list")
    keys = obj.get("keys")
    if not isinstance(keys, list):
        raise KeyringError("keyring must have a 'keys' list")
    skew = obj.get("max_skew_seconds")
    if skew is not None and (isinstance(skew, bool) or not isinstance(skew, int | float)
                             or skew < 0):
        raise KeyringError("max_skew_seconds must be a non-negative number or null")
    accepts = obj.get("backend_accepts")
    if accepts is not None and (not isinstance(accepts, list)
                                or not all(isinstance(a, str) for a in accepts)):
        raise KeyringError("backend_accepts must be a list of kids")
    prof = profile or obj.get("profile") or "python"
    if not isinstance(prof, str):
        raise KeyringError("profile must be a string")
    return KeyRing(
        keys=tuple(key_from_entry(e, i) for i, e in enumerate(keys)),
        profile=prof,
        max_skew_seconds=None if skew is None else float(skew),
        backend_accepts=None if accepts is None else frozenset(accepts),
    )


def load_keyring(path: str | Path, profile: str | None = None) -> KeyRing:
    """Load a keyring file; every problem is a :class:`KeyringError` naming the file."""
    from . import strictjson

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise KeyringError(f"cannot read keyring {p}: {e.strerror}") from None
    try:
        obj = strictjson.loads(data)
    except MalformedInput as e:
        raise KeyringError(f"keyring {p}: {e.reason}") from None
    try:
        return keyring_from_dict(obj, profile)
    except KeyringError as e:
        raise KeyringError(f"keyring {p}: {e}") from None


def generate_key(alg: str, kid: str | None = None, state: str = "pending") -> Key:
    """A fresh random key. HMAC secrets are 43-character URL-safe strings (256 bits)."""
    if kid is not None and not kid.strip():
        raise KeyringError("kid must not be empty")
    if alg == HMAC:
        secret = secrets.token_urlsafe(32).encode()
        k = Key(kid or "tmp", HMAC, state, secret=secret)
    elif alg == ED25519:
        k = Key(kid or "tmp", ED25519, state, private_seed=secrets.token_bytes(32))
    else:
        raise KeyringError(f"unknown alg {alg!r}; expected one of {', '.join(ALGS)}")
    if kid is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        k = Key(f"{'hmac' if alg == HMAC else 'ed25519'}-{stamp}-{k.fingerprint[:6]}", k.alg,
                k.state, k.secret, k.public, k.private_seed)
    return k

