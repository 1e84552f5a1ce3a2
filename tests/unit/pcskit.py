"""Shared builders for the unit tests: fixed keys, signed PCS records, key rings.

Every key here is deterministic (fixed HMAC strings, fixed Ed25519 seeds) and exists only for
tests. Nothing in this module touches a cluster or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sigops.core.keys import ED25519, HMAC, Key, KeyRing
from sigops.core.pcs import expected_pcs_id, sign_pcs

__all__ = [
    "PROFILES",
    "ALGS",
    "SENT_AT",
    "hmac_key",
    "ed_key",
    "key_for",
    "base_pcs",
    "signed",
    "envelope",
    "ring",
    "line",
    "later",
]

PROFILES = ("python", "go", "fixed9")
ALGS = (HMAC, ED25519)
SENT_AT = datetime(2025, 1, 19, 12, 0, 0, tzinfo=UTC)


def hmac_key(kid: str = "hmac-a", state: str = "active", secret: str | None = None,
             **kw: Any) -> Key:
    """An HMAC key whose secret is derived from its kid unless given."""
    return Key(kid, HMAC, state, secret=(secret or f"sigops-test-secret-{kid}").encode(), **kw)


def ed_key(kid: str = "ed-a", state: str = "active", seed_byte: int | None = None,
           **kw: Any) -> Key:
    """An Ed25519 key with a fixed seed (derived from the kid unless ``seed_byte`` is given)."""
    b = seed_byte if seed_byte is not None else sum(kid.encode()) % 251
    return Key(kid, ED25519, state, private_seed=bytes((b + i) % 256 for i in range(32)), **kw)


def key_for(alg: str, kid: str, state: str = "active", **kw: Any) -> Key:
    return hmac_key(kid, state, **kw) if alg == HMAC else ed_key(kid, state, **kw)


def base_pcs(shard: str = "shard-001", epoch: int = 7, **over: Any) -> dict[str, Any]:
    """An unsigned PCS whose floats make the three profiles disagree (1.0 and 0.2)."""
    merkle = over.pop("merkle_root", "ab" * 32)
    pcs: dict[str, Any] = {
        "pcs_id": expected_pcs_id(merkle, epoch, shard),
        "schema": "fractal-lba-kakeya",
        "version": "0.1",
        "shard_id": shard,
        "epoch": epoch,
        "sent_at": SENT_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merkle_root": merkle,
        "D_hat": 1.0,
        "coh_star": 0.2,
        "r": 0.318421053,
        "budget": 0.35,
        "ft": {"outbox_seq": 0, "degraded": False, "fallbacks": []},
    }
    pcs.update(over)
    return pcs


def signed(key: Key, profile: str = "python", **over: Any) -> dict[str, Any]:
    """``base_pcs(**over)`` signed with ``key`` under ``profile``."""
    return sign_pcs(base_pcs(**over), key, profile)


def envelope(pcs: Mapping[str, Any], *, received_at: datetime | None = None,
             source: str | None = None, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"pcs": dict(pcs)}
    if received_at is not None:
        env["received_at"] = received_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if source is not None:
        env["source"] = source
    env.update(extra)
    return env


def ring(keys: Iterable[Key], profile: str = "python", **kw: Any) -> KeyRing:
    return KeyRing(tuple(keys), profile, **kw)


def line(obj: Any) -> bytes:
    """One JSONL line as the CLI reads it."""
    return json.dumps(obj).encode() + b"\n"


def later(seconds: float) -> datetime:
    return SENT_AT + timedelta(seconds=seconds)
