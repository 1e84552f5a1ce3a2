"""Scenario A, key overlap: make the backend accept the key(s) the agents actually sign with,
alongside its own, for the overlap window. It only ever adds keys: never drops one agents use.

The overlap is reported done only when the live backend accepts both (:func:`confirm`): a
backend that holds one key (the upstream server reads ``PCS_HMAC_KEY`` only) is not
overlap-capable, and the added keys are taken back (:func:`undo`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ...backend.probe import probe_overlap
from ...core.keys import HMAC, Key
from ...core.scenarios import SCENARIOS
from ...core.timeparse import now_iso, parse_duration, parse_time
from ...rotation.model import DEFAULT_OVERLAP
from .base import Scenario, ScenarioContext, ScenarioError

OVERLAP = DEFAULT_OVERLAP  # the dedup TTL: 14 days


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
    """Add the agents' keys to what the backend accepts (idempotent)."""
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


def _keys(ring: Any, kids: list[str]) -> list[Key]:
    return [k for k in (ring.key(kid) for kid in kids) if k is not None]


def _added(ring: Any, steps: list[dict[str, Any]]) -> list[str]:
    """Accepted kids whose key is one the steps added: the agents' keys, which the backend did
    not accept before (that is why their PCS failed)."""
    fps = {fp for s in steps for fp in s.get("fingerprints", [])}
    return [k.kid for k in _keys(ring, list(ring.accepts)) if k.fingerprint in fps]


def confirm(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> str | None:
    """Ask the live backend (its ready pods, else ``backendURL``) to accept a probe signed with
    its own key and one signed with the agents' key. None: confirmed, or nothing to ask (no
    pod, no URL with a submit endpoint, no key that can sign); a message: not yet;
    :class:`ScenarioError`: it holds one key only."""
    ring, _ = ctx.backend.read_ring()
    dep = ctx.backend.deployment()
    if ring is None or dep is None:
        return None
    url = ctx.target.backend_url
    urls = ctx.backend.pod_urls(dep) or ([f"{url.rstrip('/')}/v1/pcs/submit"] if url else [])
    added = _added(ring, steps)
    agents = next((k for k in _keys(ring, added) if k.can_sign), None)
    own = next((k for k in _keys(ring, [kid for kid in ring.accepts if kid not in added])
                if k.can_sign), None)
    if not urls or agents is None:
        return None
    answers = probe_overlap(urls, ctx.settings.probe_timeout, own, agents, ctx.target.profile)
    answers = [a for a in answers if not a.no_submit_endpoint]
    if all(a.both_accepted for a in answers):
        return None
    seen = "; ".join(a.describe().replace("old key", "backend's key").replace(
        "new key", "agents' key") for a in answers)
    var = "PCS_HMAC_KEYS" if agents.alg == HMAC else "PCS_ED25519_PUBS_B64"
    single = "PCS_HMAC_KEY" if agents.alg == HMAC else "PCS_ED25519_PUB_B64"
    one_key = (f"the backend does not accept two keys at once: it reads {single} only and "
               f"ignores {var}; the overlap cannot be made here")
    if any(a.refuses_old for a in answers):
        raise ScenarioError(f"{one_key} [{seen}]")
    started = (ctx.incident.get("status") or {}).get("verifyStartedAt")
    waited = (ctx.now - parse_time(started)).total_seconds() if started else 0.0
    if waited > ctx.settings.seconds("overlap_probe_grace"):
        if any(a.refuses_new for a in answers):
            raise ScenarioError(f"{one_key}; it still refuses the agents' key "
                                f"{ctx.settings.overlap_probe_grace} after the change [{seen}]")
        raise ScenarioError(f"the live backend did not accept both keys within "
                            f"{ctx.settings.overlap_probe_grace} [{seen}]")
    return f"live backend does not accept both keys yet [{seen}]"


def undo(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    """Take back the keys :func:`apply` added (their entries stay on record)."""
    ring, existing = ctx.backend.read_ring()
    if ring is None:
        return
    drop = set(_added(ring, steps))
    if not drop:
        return
    ring.accepts = [kid for kid in ring.accepts if kid not in drop]
    ctx.backend.apply(ring, ctx.evidence.backend_alg or "hmac-sha256", existing)


SCENARIO = Scenario(SCENARIOS["A"], plan, apply, confirm=confirm, undo=undo)
