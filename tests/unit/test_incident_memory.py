"""A SignatureIncident driven step by step on the in-memory door (``tests/memkube.py``, held to
the real API server by ``tests/integration/test_kube_contract.py``): diagnosis from the
configured samples ConfigMap, scenario D tightening TOKEN_RATE and restoring it, and the
decisions a requester may not take (loosen the mode, approve without a decision naming her)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.memkube import MemoryKube
from tests.support import envelope, pcs

from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.incident.reconciler import IncidentReconciler
from sigops.prometheus.client import Prom
from sigops.settings import Settings
from sigops.signing.records import Signer
from sigops.testbed.manifests import backend_deployment, literal_env

pytestmark = pytest.mark.unit
NS = "payments"
SIGNER = Signer(generate_key(ED25519, kid="incident-memory-signer", state="active"))


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 12, 6, 0, 1, tzinfo=UTC)  # the fake CRs are made at 00:00

    def __call__(self) -> datetime:
        return self.t


def world(modes: dict[str, str] | None = None, **spec: Any) -> tuple[MemoryKube, Any, Clock]:
    """A backend (TOKEN_RATE 100) whose agents' samples were tampered with after signing
    (scenario D), the samples in the configured ConfigMap, and an incident ``inc``."""
    kube = MemoryKube()
    key = Key("k", HMAC, secret=b"incident-memory-backend-key-01")
    kube.add_deployment(NS, backend_deployment(
        literal_env(PCS_SIGN_ALG="hmac", PCS_HMAC_KEY=key.to_entry()["secret"],
                    TOKEN_RATE="100")))
    bad = []
    for i in range(20):
        p = pcs(key, 100 + i)
        p["merkle_root"] = "f" * 64  # changed after signing
        bad.append(envelope(p, "10.9.9.9"))
    kube.write_config_map(NS, "samples", {"samples.jsonl": "\n".join(
        json.dumps(x) for x in bad)}, None)
    settings = Settings.model_validate({
        "targets": [{"namespace": NS, "samplesConfigMap": "samples"}],
        "cooldown": "1s", "verify_timeout": "10m",
        **({"modes": modes} if modes else {})})
    clock = Clock()
    rec = IncidentReconciler(kube, Prom(None), settings, SIGNER, clock=clock,  # type: ignore[arg-type]
                             operator_namespace="sigops-system")
    kube.add_cr(NS, "signatureincidents", {
        "apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "SignatureIncident",
        "metadata": {"name": "inc"},
        "spec": {"source": "person", "target": {"deployment": "fractal-lba-backend"},
                 "samples": {"configMapRef": {"name": "samples"}}, **spec}})
    return kube, rec, clock


def token_rate(kube: MemoryKube) -> str | None:
    dep = kube.read_deployment(NS, "fractal-lba-backend")
    assert dep is not None
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return next((e.get("value") for e in env if e["name"] == "TOKEN_RATE"), None)


def run(kube: MemoryKube, rec: Any, clock: Clock, until: set[str], ticks: int = 20) -> str:
    for _ in range(ticks):
        obj = kube.get_cr(NS, "signatureincidents", "inc")
        assert obj is not None
        st = obj.get("status") or {}
        if st.get("phase") in until:
            return str(st["phase"])
        if st.get("phase") == "Verifying" and not st.get("alertResolvedAt"):
            kube.patch_status(NS, "signatureincidents", "inc",
                              {"alertResolvedAt": "2026-12-06T09:01:00Z"})
        clock.t += timedelta(seconds=5)
        rec.tick(obj)
    raise AssertionError(kube.get_cr(NS, "signatureincidents", "inc"))


def test_scenario_d_tightens_and_restores_the_rate_with_signed_actions() -> None:
    kube, rec, clock = world()
    assert run(kube, rec, clock, {"Verifying", "Resolved", "Escalated"}) != "Escalated"
    inc = kube.get_cr(NS, "signatureincidents", "inc")
    assert inc is not None
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("MaliciousActivity", "D"), st.get("conditions")
    assert token_rate(kube) == "50"
    acts = [a["payload"] for a in st["actions"]]
    assert acts[0]["action"] == "tighten-token-rate" and acts[0]["seq"] == 0
    assert acts[0]["uid"] == inc["metadata"]["uid"] and acts[0]["namespace"] == NS
    # The checkpoint of the actions is published where the incident's writers cannot write.
    cps = kube.read_config_map("sigops-system", "sigops-history")
    assert cps is not None and "signatureincidents.payments.inc" in (cps.data or {})
    run(kube, rec, clock, {"Resolved"})
    for _ in range(5):  # the cool-down passes, the rate is restored
        clock.t += timedelta(seconds=5)
        rec.tick(kube.get_cr(NS, "signatureincidents", "inc"))
    assert token_rate(kube) == "100"


def test_a_requester_cannot_loosen_the_mode_nor_approve_without_a_decision() -> None:
    kube, rec, clock = world(modes={"D": "approval"}, mode="auto", approve=["D"])
    assert run(kube, rec, clock, {"AwaitingApproval", "Verifying", "Escalated"}) == \
        "AwaitingApproval"
    for _ in range(5):
        clock.t += timedelta(seconds=5)
        rec.tick(kube.get_cr(NS, "signatureincidents", "inc"))
    assert token_rate(kube) == "100"  # nothing acted
    kube.crs[(NS, "signatureincidents", "inc")]["spec"]["decisions"] = [
        {"scenario": "D", "decision": "approve", "user": "ann"}]
    assert run(kube, rec, clock, {"Verifying", "Resolved", "Escalated"}) != "Escalated"
    assert token_rate(kube) == "50"
    acts = [a["payload"] for a in kube.get_cr(NS, "signatureincidents", "inc")["status"][
        "actions"]]
    assert (acts[0]["action"], acts[0]["by"]["user"]) == ("approve", "ann")


def test_a_configured_dry_run_acts_on_nothing_even_approved() -> None:
    kube, rec, clock = world(modes={"D": "dryRun"}, decisions=[
        {"scenario": "D", "decision": "approve", "user": "ann"}])
    assert run(kube, rec, clock, {"AwaitingApproval", "Verifying", "Escalated"}) == \
        "AwaitingApproval"
    for _ in range(5):
        clock.t += timedelta(seconds=5)
        rec.tick(kube.get_cr(NS, "signatureincidents", "inc"))
    assert token_rate(kube) == "100"
    assert not [w for w in kube.writes if w.startswith("deployment")]
