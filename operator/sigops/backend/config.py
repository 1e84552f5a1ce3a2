"""The FLK backend's effective signing configuration, read from its Deployment.

Pure: the caller passes the Deployment as a dict and a function that reads one key of a Secret,
so the operator (through the API server) and the testbed backend (the same, standing in for a
pod) resolve env vars identically: literal ``value`` or ``valueFrom.secretKeyRef``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import KeyringError, MalformedInput
from ..core.keys import ED25519, HMAC, Key, KeyRing, b64decode_strict, fingerprint

__all__ = [
    "EnvNames", "DEFAULT_ENV", "BackendConfig", "find_container", "resolve_env", "backend_config",
]

SecretReader = Callable[[str, str], str | None]
"""(secret name, key) -> value, or None when the Secret or key is missing."""


@dataclass(frozen=True)
class EnvNames:
    """Names of the backend's environment variables (upstream defaults)."""

    sign_alg: str = "PCS_SIGN_ALG"
    hmac_key: str = "PCS_HMAC_KEY"
    hmac_keys: str = "PCS_HMAC_KEYS"
    ed25519_pub: str = "PCS_ED25519_PUB_B64"
    ed25519_pubs: str = "PCS_ED25519_PUBS_B64"
    token_rate: str = "TOKEN_RATE"

    @classmethod
    def from_spec(cls, env: Mapping[str, Any] | None) -> EnvNames:
        env = env or {}
        d = cls()
        return cls(env.get("signAlg", d.sign_alg), env.get("hmacKey", d.hmac_key),
                   env.get("hmacKeys", d.hmac_keys), env.get("ed25519Pub", d.ed25519_pub),
                   env.get("ed25519Pubs", d.ed25519_pubs), env.get("tokenRate", d.token_rate))


DEFAULT_ENV = EnvNames()


@dataclass(frozen=True)
class BackendConfig:
    """What the backend accepts: its algorithm and the keys it verifies with."""

    alg: str
    keys: tuple[Key, ...]
    token_rate: str | None

    def keyring(self, profile: str = "python") -> KeyRing:
        """A key ring of exactly the accepted keys (fails closed when there are none)."""
        return KeyRing(self.keys, profile=profile)

    @property
    def fingerprints(self) -> list[str]:
        return [k.fingerprint for k in self.keys]


def find_container(deployment: Mapping[str, Any], name: str | None) -> dict[str, Any]:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get(
        "containers") or []
    if not containers:
        raise KeyringError("deployment has no containers")
    if name is None:
        c: dict[str, Any] = containers[0]
        return c
    for c in containers:
        if c.get("name") == name:
            return dict(c)
    raise KeyringError(f"deployment has no container named {name!r}")


def resolve_env(container: Mapping[str, Any], read_secret: SecretReader) -> dict[str, str]:
    """Env var values of a container: literals and Secret references (others are skipped)."""
    out: dict[str, str] = {}
    for e in container.get("env") or []:
        name = e.get("name")
        if not name:
            continue
        if "value" in e and e["value"] is not None:
            out[name] = str(e["value"])
            continue
        ref = ((e.get("valueFrom") or e.get("value_from") or {}).get("secretKeyRef")
               or (e.get("valueFrom") or e.get("value_from") or {}).get("secret_key_ref"))
        if ref:
            v = read_secret(ref["name"], ref["key"])
            if v is not None:
                out[name] = v
    return out


def _split(v: str | None) -> list[str]:
    return [p.strip() for p in (v or "").split(",") if p.strip()]


def backend_config(env: Mapping[str, str], names: EnvNames = DEFAULT_ENV) -> BackendConfig:
    """The accepted keys from resolved env: the multi-key variable when set, else the single."""
    alg_raw = env.get(names.sign_alg, "hmac").strip().lower()
    alg = {"hmac": HMAC, "hmac-sha256": HMAC, "ed25519": ED25519}.get(alg_raw)
    if alg is None:
        # The value is never shown: a misconfigured name could point at any variable.
        raise KeyringError(f"{names.sign_alg} is not hmac or ed25519")
    keys: list[Key] = []
    if alg == HMAC:
        for s in _split(env.get(names.hmac_keys)) or _split(env.get(names.hmac_key)):
            fp = fingerprint(s.encode())
            if all(k.fingerprint != fp for k in keys):
                keys.append(Key(f"backend-{fp}", HMAC, "active", secret=s.encode()))
    else:
        for b in _split(env.get(names.ed25519_pubs)) or _split(env.get(names.ed25519_pub)):
            try:
                pub = b64decode_strict(b, names.ed25519_pub, 32)
            except MalformedInput as e:
                raise KeyringError(e.reason) from None
            fp = fingerprint(pub)
            if all(k.fingerprint != fp for k in keys):
                keys.append(Key(f"backend-{fp}", ED25519, "active", public=pub))
    return BackendConfig(alg, tuple(keys), env.get(names.token_rate))
