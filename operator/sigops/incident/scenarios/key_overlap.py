"""Scenario A, key overlap: make the backend accept the key(s) the agents actually sign with,
alongside its own, for the overlap window. It only ever adds keys: never drops one agents use.

It re-admits only a key sigops' key ring holds as ``active``, or ``retiring`` within its
overlap window (:meth:`ManagedRing.readmission_refused`): never a key a finished rotation
retired, one a person revoked (``kubectl sigops revoke``), a pending one, or one known only from
the backend's history. With no key left to add it refuses and says why, so the incident
escalates (a leaked old key signing PCS must not be let back in by an alert).

The overlap is reported done only when the live backend accepts both (:func:`confirm`): a
backend that holds one key (the upstream server reads ``PCS_HMAC_KEY`` only) is not
overlap-capable, and the added keys are taken back (:func:`undo`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ...backend.keyring import OVERLAP_MARK, ManagedRing
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


def _admissible(ctx: ScenarioContext, ring: ManagedRing | None, keys: list[Key]
                ) -> tuple[list[Key], list[str]]:
    """The keys the ring lets back in now, and why each of the others may not come back."""
    now = now_iso(ctx.now)
    ok: list[Key] = []
    refused: list[str] = []
    for k in keys:
        why = (f"key {k.fingerprint} is not in sigops' key ring" if ring is None
               else ring.readmission_refused(k.fingerprint, now))
        if why is None:
            ok.append(k)
        else:
            refused.append(why)
    return ok, refused


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    found = _agent_keys(ctx)
    if not found:
        raise ScenarioError("no failing sample verifies with a key sigops knows: "
                            "nothing to add to the backend")
    ring, _ = ctx.backend.read_ring()
    keys, refused = _admissible(ctx, ring, found)
    if not keys:
        raise ScenarioError("the agents sign with a key sigops will not accept again: "
                            + "; ".join(refused))
    until = now_iso(ctx.now + timedelta(seconds=parse_duration(OVERLAP)))
    return [{"action": "accept-agent-keys", "kids": [k.kid for k in keys],
             "fingerprints": [k.fingerprint for k in keys], "overlapUntil": until,
             "summary": f"Backend {ctx.target_id} now also accepts the key(s) agents use "
                        f"({', '.join(k.fingerprint for k in keys)}) until {until}",
             "undo": "remove these kids from backend_accepts in the keyring Secret",
             **({"refused": refused} if refused else {})}]


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    """Add the agents' keys to what the backend accepts (idempotent). The ring is asked again
    here: a key revoked or retired since the plan (an approval may come much later) stays out,
    and nothing is changed."""
    alg = ctx.evidence.backend_alg or "hmac-sha256"
    dep = ctx.backend.deployment()
    if dep is None:
        raise ScenarioError(f"deployment {ctx.target_id} not found")
    ring, existing = ctx.backend.read_ring()
    if ring is None:
        ring = ctx.backend.import_ring(alg, dep)
    now = now_iso(ctx.now)
    for step in steps:
        for fp in step["fingerprints"]:
            why = ring.readmission_refused(fp, now)
            if why is not None:
                raise ScenarioError(f"not applied: {why}")
    for step in steps:
        for fp in step["fingerprints"]:
            entry = ring.by_fingerprint(fp)
            assert entry is not None  # readmission_refused said it is there
            if entry["kid"] not in ring.accepts:
                if entry.get("state") == "retiring":
                    entry.setdefault("overlap_until", step["overlapUntil"])
                    entry.setdefault("added_by", OVERLAP_MARK)
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
