"""Signed signals: sigops' detections and actions, verifiable by any observer.

A signal is ``{"payload": {...}, "signature": b64, "key_id": str, "sig_alg_version": 1}``.
The signed bytes are the RFC 8785 (JCS) canonical form of ``payload``; Ed25519 signs them
directly (no prehash). Each payload names the hash of the previous signal of its record, so a
removed or reordered action breaks the chain.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import KeyringError, MalformedInput, SignalRejected
from .keys import ED25519, Key, b64decode_strict
from .strictjson import safe_repr
from .timeparse import format_time

__all__ = [
    "SIG_ALG_VERSION",
    "REJECT_REASONS",
    "canonical_payload",
    "build_payload",
    "sign_signal",
    "verify_signal",
    "signal_hash",
    "verify_chain",
    "load_pubkeys",
    "pubkeys_document",
    "rejection_record",
]

SIG_ALG_VERSION = 1
REJECT_REASONS = ("malformed", "unsigned", "unsupported_version", "unknown_key",
                  "bad_signature", "broken_chain")
"""Stable reason codes of :class:`~sigops.core.errors.SignalRejected`."""


def canonical_payload(payload: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical bytes of a payload."""
    import rfc8785

    try:
        out: bytes = rfc8785.dumps(payload)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise MalformedInput(f"payload is not canonicalizable JSON: {str(e)[:80]}") from None
    return out


def _sorted(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _sorted(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        items = [_sorted(x) for x in v]
        return sorted(items, key=lambda x: canonical_payload({"v": x}))
    return v


def build_payload(kind: str, *, target: str, service_id: str, prev_hash: str | None,
                  cause: str | None = None, scenario: str | None = None,
                  evidence: Any = None, detected_at: datetime | None = None,
                  **fields: Any) -> dict[str, Any]:
    """A signal payload holding every field that matters, collections sorted.

    Fields that are None are left out. ``evidence`` is summarized by the SHA-256 digest of
    its canonical form, so the payload stays small while still binding the evidence.
    """
    payload: dict[str, Any] = {
        "type": kind,
        "target": target,
        "cause": cause,
        "scenario": scenario,
        "evidence_digest": None if evidence is None
        else hashlib.sha256(canonical_payload({"e": _sorted(evidence)})).hexdigest(),
        "detected_at": format_time(detected_at or datetime.now(UTC)),
        "service_id": service_id,
        "prev_hash": prev_hash,
    }
    payload.update({k: _sorted(v) for k, v in fields.items()})
    # Absent rather than null: Kubernetes drops nulls from stored objects, which would break
    # the signature of a signal kept in a status.
    out: dict[str, Any] = _drop_nulls(payload)
    return out


def _drop_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


def sign_signal(payload: Mapping[str, Any], key: Key) -> dict[str, Any]:
    """Sign ``payload`` with an Ed25519 key that has its private part."""
    if key.alg != ED25519 or not key.can_sign:
        raise KeyringError("signals are signed with an Ed25519 key that has private_b64")
    sig = key.sign(canonical_payload(payload))
    return {"payload": dict(payload), "signature": base64.b64encode(sig).decode("ascii"),
            "key_id": key.kid, "sig_alg_version": SIG_ALG_VERSION}


def verify_signal(signal: Any, pubkeys: Mapping[str, bytes]) -> dict[str, Any]:
    """Return the payload of a valid signal; raise :class:`SignalRejected` otherwise.

    Distinct reasons: ``malformed``, ``unsigned``, ``unsupported_version``, ``unknown_key``,
    ``bad_signature``. An empty set of public keys verifies nothing.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(signal, Mapping) or not isinstance(signal.get("payload"), Mapping):
        raise SignalRejected("malformed", "a signal is an object with a 'payload' object")
    sig_b64 = signal.get("signature")
    if sig_b64 is None or sig_b64 == "":
        raise SignalRejected("unsigned", "no signature")
    version = signal.get("sig_alg_version")
    if type(version) is not int or version != SIG_ALG_VERSION:  # true == 1 in Python
        raise SignalRejected("unsupported_version", f"sig_alg_version {safe_repr(str(version))}")
    kid = signal.get("key_id")
    if not isinstance(kid, str) or not kid:
        raise SignalRejected("unsigned", "no key_id")
    pub = pubkeys.get(kid)
    if pub is None:
        raise SignalRejected("unknown_key", f"key_id {safe_repr(kid)}")
    try:
        sig = b64decode_strict(sig_b64, "signature", 64)
        msg = canonical_payload(signal["payload"])
    except MalformedInput as e:
        raise SignalRejected("malformed", e.reason) from None
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except InvalidSignature:
        raise SignalRejected("bad_signature", f"signature does not verify with {kid}") from None
    return dict(signal["payload"])


def signal_hash(signal: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form of the whole signal: the next link's prev_hash."""
    return hashlib.sha256(canonical_payload(signal)).hexdigest()


def verify_chain(signals: Sequence[Any], pubkeys: Mapping[str, bytes],
                 first_prev: str | None = None) -> None:
    """Verify every signal and that each names the previous one's hash."""
    prev = first_prev
    for i, s in enumerate(signals):
        try:
            payload = verify_signal(s, pubkeys)
        except SignalRejected as e:
            raise SignalRejected(e.reason, f"signal {i}: {e.detail}") from None
        if payload.get("prev_hash") != prev:
            raise SignalRejected("broken_chain", f"signal {i} does not follow signal {i - 1}")
        prev = signal_hash(s)


def load_pubkeys(obj: Any) -> dict[str, bytes]:
    """Read the pubkeys document ``{"keys": {"<kid>": "<b64 32 bytes>"}}``."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("keys"), Mapping):
        raise KeyringError("pubkeys must be an object {\"keys\": {kid: base64}}")
    out: dict[str, bytes] = {}
    for kid, b64 in obj["keys"].items():
        try:
            out[kid] = b64decode_strict(b64, f"public key {kid!r}", 32)
        except MalformedInput as e:
            raise KeyringError(e.reason) from None
    if not out:
        raise KeyringError("pubkeys document has no keys: nothing could be verified")
    return out


def pubkeys_document(keys: Sequence[Key]) -> dict[str, Any]:
    """The pubkeys document for a set of Ed25519 keys."""
    return {"keys": {k.kid: base64.b64encode(k.public or b"").decode() for k in keys
                     if k.alg == ED25519}}


def rejection_record(reason: str, source: str | None, raw: Any = None) -> dict[str, Any]:
    """A structured 'potential attack' log record: reason, source and a truncated, escaped
    excerpt of the input. Never includes key material (callers pass only untrusted input)."""
    rec: dict[str, Any] = {"event": "signal_rejected", "potential_attack": True,
                           "reason": reason, "source": safe_repr(source or "unknown", 64)}
    if raw is not None:
        rec["input_excerpt"] = safe_repr(raw if isinstance(raw, str) else repr(raw), 120)
    return rec
