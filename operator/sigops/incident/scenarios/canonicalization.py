"""Scenario C, canonicalization drift: run known-answer checks for every profile and the live
probe, name the drifting profile / agent version, and escalate. It never changes
canonicalization: that would break every signature already made."""

from __future__ import annotations

from typing import Any

from ...backend.probe import probe_pcs, submit
from ...core.canonical import PROFILES, canonical_bytes
from ...core.scenarios import SCENARIOS
from .base import Scenario, ScenarioContext

# Known answers (the upstream vectors' shapes): each profile must reproduce its own bytes.
_SUBSET = {"pcs_id": "p", "merkle_root": "m", "epoch": 1, "shard_id": "s", "D_hat": 1.0,
           "coh_star": 0.2, "r": 1e-7, "budget": 0.5}
_EXPECT = {
    "python": b'{"D_hat":1.0,"budget":0.5,"coh_star":0.2,"epoch":1,"merkle_root":"m",'
              b'"pcs_id":"p","r":1e-07,"shard_id":"s"}',
    "go": b'{"budget":0.5,"coh_star":0.2,"D_hat":1,"epoch":1,"merkle_root":"m","pcs_id":"p",'
          b'"r":1e-7,"shard_id":"s"}',
    "fixed9": b'{"D_hat":1.000000000,"budget":0.500000000,"coh_star":0.200000000,"epoch":1,'
              b'"merkle_root":"m","pcs_id":"p","r":0.000000100,"shard_id":"s"}',
}


def plan(ctx: ScenarioContext) -> list[dict[str, Any]]:
    report = ctx.evidence.report or {}
    drift = report.get("drift") or {}
    golden = {p: canonical_bytes(_SUBSET, p) == _EXPECT[p] for p in PROFILES}
    live: dict[str, int] = {}
    url = ctx.target.backend_url
    ring = ctx.evidence.ring
    signer = next((k for k in (ring.keys if ring else ())
                   if k.can_sign and ring is not None and ring.accepts(k)), None)
    if url and signer is not None:
        for p in PROFILES:
            live[p] = submit(f"{url.rstrip('/')}/v1/pcs/submit", ctx.settings.probe_timeout,
                             probe_pcs(signer, p))
    accepted = sorted(p for p, code in live.items() if code in (200, 202))
    who = ", ".join(f"profile {p}" for p in drift.get("profiles", {})) or "unknown profile"
    versions = drift.get("versions") or []
    forms = drift.get("summary")
    return [{"action": "golden-and-live-probe", "golden": golden, "liveProbe": live,
             "backendAccepts": accepted, "driftingProfiles": drift.get("profiles", {}),
             "verifierProfile": drift.get("verifier_profile"), "forms": forms,
             "agentVersions": versions,
             "summary": f"Golden vectors per profile: {golden}; live probe accepted under "
                        f"{accepted or 'n/a'}; "
                        + (forms if forms else f"agents sign under {who}")
                        + (f" (agent version {', '.join(versions)})" if versions else "")
                        + ". Canonicalization NOT changed: breaking change, needs a "
                          "coordinated agent/backend upgrade"}]


def apply(ctx: ScenarioContext, steps: list[dict[str, Any]]) -> None:
    """Nothing to change, by design."""


SCENARIO = Scenario(SCENARIOS["C"], plan, apply, escalation=(
    "CanonicalizationDrift", "breaking canonicalization change: needs a coordinated agent and "
                             "backend upgrade; canonicalization was not changed"))
