"""Where an agent's signing key comes from: a file, an env var, or a Kubernetes Secret.

Specs: ``file:PATH`` (a keyring entry, or a keyring whose first signing-capable active key is
used), ``env:VAR`` (the HMAC secret string, or the Ed25519 private seed in base64), and
``secret:NS/NAME/KEY`` (the same value read from a Secret, re-read every second so that a
rotation's promotion is picked up mid-run). Key material is never logged: fingerprints only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import KeyringError, MalformedInput, SigopsError
from ..core.keys import ED25519, HMAC, Key, b64decode_strict, key_from_entry
from ..core.strictjson import loads

__all__ = ["KeySource", "StaticKey", "SecretKey", "literal_key", "key_from_file",
           "parse_key_spec", "ALG_ALIASES"]

log = logging.getLogger("sigops.testbed")

ALG_ALIASES = {"hmac": HMAC, HMAC: HMAC, ED25519: ED25519}


class KeySource(Protocol):
    """Something that yields the key to sign with now."""

    def current(self) -> Key: ...

    def describe(self) -> str: ...


def literal_key(value: str, alg: str = HMAC, kid: str | None = None) -> Key:
    """A signing key from the value an agent is given: HMAC string or Ed25519 seed (base64)."""
    alg = ALG_ALIASES.get(alg, alg)
    value = value.strip()
    if not value:
        raise KeyringError("empty key value")
    if alg == HMAC:
        k = Key("tmp", HMAC, "active", secret=value.encode("utf-8"))
    elif alg == ED25519:
        try:
            seed = b64decode_strict(value, "ed25519 private seed", 32)
        except MalformedInput as e:
            raise KeyringError(e.reason) from None
        k = Key("tmp", ED25519, "active", private_seed=seed)
    else:
        raise KeyringError(f"unknown alg {alg!r}; expected hmac or ed25519")
    return Key(kid or f"agent-{k.fingerprint}", k.alg, "active", k.secret, k.public,
               k.private_seed)


def key_from_file(path: str | Path) -> Key:
    """A keyring entry file, or a keyring file (its first active key that can sign)."""
    p = Path(path)
    try:
        obj: Any = loads(p.read_bytes())
    except OSError as e:
        raise KeyringError(f"cannot read {p}: {e.strerror}") from None
    except MalformedInput as e:
        raise KeyringError(f"{p}: {e.reason}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("keys"), list):
        keys = [key_from_entry(e, i) for i, e in enumerate(obj["keys"])]
        usable = sorted((k for k in keys if k.can_sign), key=lambda k: k.state != "active")
        if not usable:
            raise KeyringError(f"{p}: no key with signing material")
        return usable[0]
    k = key_from_entry(obj)
    if not k.can_sign:
        raise KeyringError(f"{p}: key {k.kid!r} has no signing material")
    return k


class StaticKey:
    """A key that does not change during the run."""

    def __init__(self, key: Key, origin: str) -> None:
        self.key = key
        self.origin = origin

    def current(self) -> Key:
        return self.key

    def describe(self) -> str:
        return f"{self.origin} ({self.key.alg}, fingerprint {self.key.fingerprint})"


SecretRead = Callable[[str, str, str], str | None]
"""(namespace, name, key) -> value or None (e.g. :meth:`sigops.kube.api.Kube.secret_value`)."""


class SecretKey:
    """A key read from a Secret and re-read at most every ``refresh`` seconds."""

    def __init__(self, read: SecretRead, namespace: str, name: str, key: str,
                 alg: str = HMAC, refresh: float = 1.0) -> None:
        self._read = read
        self.namespace, self.name, self.key_name = namespace, name, key
        self.alg = alg
        self.refresh = refresh
        self._lock = threading.Lock()
        self._key = self._load()  # fail at start-up if it cannot be read at all
        self._at = time.monotonic()
        self._warned = False
        self.changes = 0

    @property
    def origin(self) -> str:
        return f"secret {self.namespace}/{self.name} key {self.key_name}"

    def _load(self) -> Key:
        value = self._read(self.namespace, self.name, self.key_name)
        if value is None:
            raise KeyringError(f"{self.origin}: not found")
        return literal_key(value, self.alg)

    def current(self) -> Key:
        with self._lock:
            if time.monotonic() - self._at >= self.refresh:
                self._at = time.monotonic()
                try:
                    new = self._load()
                except Exception as e:  # noqa: BLE001 - keep signing with the last key
                    if not self._warned:
                        log.warning("%s: re-read failed (%s); keeping key %s", self.origin,
                                    type(e).__name__, self._key.fingerprint)
                        self._warned = True
                else:
                    self._warned = False
                    if new.fingerprint != self._key.fingerprint:
                        log.info("%s changed: signing key %s -> %s", self.origin,
                                 self._key.fingerprint, new.fingerprint)
                        self._key = new
                        self.changes += 1
            return self._key

    def describe(self) -> str:
        return f"{self.origin} ({self.alg}, fingerprint {self.current().fingerprint})"


def parse_key_spec(spec: str, alg: str = HMAC, *,
                   secret_reader: Callable[[], SecretRead] | None = None,
                   environ: Mapping[str, str] | None = None) -> KeySource:
    """``file:PATH``, ``env:VAR`` or ``secret:NS/NAME/KEY`` to a :class:`KeySource`."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise KeyringError(f"key spec {spec[:60]!r}: use file:PATH, env:VAR or secret:NS/NAME/KEY")
    alg = ALG_ALIASES.get(alg, alg)
    if kind == "file":
        return StaticKey(key_from_file(rest), f"file {rest}")
    if kind == "env":
        value = (os.environ if environ is None else environ).get(rest)
        if value is None:
            raise KeyringError(f"env var {rest} is not set")
        return StaticKey(literal_key(value, alg), f"env {rest}")
    if kind == "secret":
        parts = rest.split("/")
        if len(parts) != 3 or not all(parts):
            raise KeyringError(f"secret key spec {rest[:60]!r}: use NS/NAME/KEY")
        if secret_reader is None:
            raise SigopsError("a secret: key spec needs Kubernetes access")
        return SecretKey(secret_reader(), parts[0], parts[1], parts[2], alg)
    raise KeyringError(f"key spec kind {kind[:20]!r}: use file, env or secret")
