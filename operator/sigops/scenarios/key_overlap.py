"""Scenario A, key overlap: make the backend accept the key(s) the agents actually sign with,
alongside its own, for the overlap window. It only ever adds keys: never drops one agents use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..conditions import now_iso, parse_duration
from ..core.keys import Key
from .base import ScenarioContext, ScenarioError

OVERLAP = "336h"  # the dedup TTL: 14 days


def _agent_keys(ctx: ScenarioContext) -> list[Key]:
    ring = ctx.evidence.ring
    if ring is None:
        return []
    kids = {v.kid for v in ctx.evidence.verdicts if v.cause in ("stale_key", "pending_key")}
    return [k for k in ring.keys if k.kid in kids]


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    keys = _agent_keys(ctx)
    if not keys:
        raise ScenarioError("no failing sample verifies with a key sigops knows: "
                            "nothing to add to the backend")
    until = now_iso(ctx.now + timedelta(seconds=parse_duration(OVERLAP)))
    return [{"action": "accept-agent-keys", "kids": [k.kid for k in keys],
             "fingerprints": [k.fingerprint for k in keys], "overlapUntil": until,
             "summary": f"Backend {ctx.target_id} now also accepts the key(s) agents use "
                        f"({', '.join(k.fingerprint for k in keys)}) until {until}",
             "undo": "remove these kids from backend_accepts in the keyring Secret"}]


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    keys = {k.kid: k for k in _agent_keys(ctx)}
    alg = ctx.evidence.backend_alg or "hmac-sha256"
    dep = ctx.backend.deployment()
    if dep is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")
    ring, existing = ctx.backend.read_ring()
    if ring is None:
        ring = ctx.backend.import_ring(alg, dep)
    for step in steps:
        for kid, fp in zip(step["kids"], step["fingerprints"], strict=True):
            entry = next((e for e in ring.entries
                          if ring.key(e["kid"]) and ring.key(e["kid"]).fingerprint == fp), None)  # type: ignore[union-attr]
            if entry is None:
                k = keys.get(kid)
                if k is None:
                    continue
                entry = {**k.to_entry(), "state": "retiring", "created_at": now_iso(ctx.now),
                         "overlap_until": step["overlapUntil"], "added_by": "scenario-A"}
                ring.entries.append(entry)
            if entry["kid"] not in ring.accepts:
                ring.accepts.append(entry["kid"])
    ctx.backend.apply(ring, alg, existing)
