"""The closed loop on running pods (the story of `make demo`, asserted): sigops installed by
its chart, the backend as 2 pods of the image, agents as pods, Prometheus scraping the pods,
Alertmanager posting to the operator's Service. A KeyRotation waits for real rollouts; a
forgotten agent group, still on the key the rotation retired, then fires the alert once per
backend pod, and sigops opens one incident, diagnoses it from the pods' own failed samples, and
escalates: scenario A never lets a retired key back in (issue 26). (It used to re-admit it.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import free_port
from devtools.flk import OPERATOR_NS, Flk
from sigops.core.keys import HMAC, generate_key
from tests.node.support import flk_in
from tests.support import REPO, wait_for

NS = "node-loop"


@pytest.fixture
def flk(node: object, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flk]:
    # A namespace per test: the previous test's may still be terminating.
    name = request.node.name
    yield from flk_in(node, tmp_path,
                      f"{NS}-{'e' if 'rolled_back' in name else 'd' if 'tamper' in name else 'a'}")


def phase_of(flk: Flk, kind: str, name: str) -> str | None:
    return (flk.get(kind, "-n", flk.ns, name).get("status") or {}).get("phase")


def test_rotation_then_forgotten_agents_escalated_by_scenario_a(flk: Flk, tmp_path: Path) -> None:
    prom_port = free_port()
    flk.install(prom_port)
    old = generate_key(HMAC, kid="original", state="active")
    # The backend as upstream's: no samples endpoint; its logs and inbox WAL are the evidence.
    url = flk.backend(old, upstream=True)
    stack = flk.monitoring(prom_port)
    flk.agents("healthy-agents", url, rate=10, count=3)
    wait_for(lambda: stack.query("sum(rate(flk_accepted[10s])) > 0"), timeout=90, interval=1,
             what="the healthy agents' PCS accepted")

    flk.apply({"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
               "metadata": {"name": "rot"},
               "spec": {"target": {"deployment": "fractal-lba-backend"},
                        "algorithm": HMAC, "overlap": "10s"}})
    wait_for(lambda: phase_of(flk, "keyrotation", "rot") in ("Completed", "Aborted", "Failed"),
             timeout=180, interval=1, what="the rotation")
    assert phase_of(flk, "keyrotation", "rot") == "Completed"
    # The healthy agents followed their Secret: no signature errors after the rotation.
    wait_for(lambda: stack.query("sum(rate(flk_signature_err[10s])) == 0"), timeout=60,
             interval=1, what="no signature errors from the healthy agents")

    flk.agents("forgotten-agents", url, rate=15, count=2, old_key=old)
    firing = wait_for(lambda: [a for a in stack.alerts("FLKSignatureFailuresSpike")
                               if a["state"] == "firing"], timeout=120, interval=1,
                      what="the alert")
    assert firing

    def ended() -> list[dict[str, Any]]:
        items = flk.get("signatureincidents", "-n", flk.ns)["items"]
        return [i for i in items if (i.get("status") or {}).get("phase")
                in ("Resolved", "Escalated")]

    done = wait_for(ended, timeout=300, interval=1, what="the incident to end")
    items = flk.get("signatureincidents", "-n", flk.ns)["items"]
    assert len(items) == 1, [(i["metadata"]["name"], i.get("status", {}).get("phase"))
                             for i in items]
    inc = done[0]
    st = inc["status"]
    # The forgotten agents sign with the key the finished rotation retired: scenario A never
    # lets a retired key back in (it may be a leaked one); it escalates and says why.
    assert (st["phase"], st["cause"], st["scenario"]) == ("Escalated", "KeyRotationInProgress",
                                                          "A"), st.get("message")
    assert not st.get("actions"), st.get("actions")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert "retired" in ready["message"] and "never accepted again" in ready["message"], ready
    evidence = st["evidence"]
    assert evidence["samples"]["source"].startswith("inbox WAL of the backend pods"), evidence
    sources = {s["source"]: s for s in evidence["sources"]}
    assert sources["samples"]["status"] == "unavailable", sources
    assert sources["logs"]["status"] == sources["wal"]["status"] == "ok", sources
    assert "from 2 of 2 pods (sidecar)" in sources["wal"]["detail"], sources["wal"]
    logs = evidence["logs"]
    assert logs["by_kind"].get("hmac_mismatch", 0) > 0 and len(logs["by_pod"]) == 2, logs
    by_cause = evidence["samples"]["report"]["by_cause"]
    assert by_cause.get("stale_key", 0) + by_cause.get("pending_key", 0) > 0, by_cause
    assert {p["ready"] for p in evidence["pods"]} == {True}, evidence["pods"]
    # The retired key is still refused by every pod: the forgotten agents' PCS keep failing.
    assert stack.query("sum(rate(flk_signature_err[10s])) > 0")
    # Anyone can verify the signed detection with the published keys.
    pub = flk.kubectl("get", "cm", "sigops-signal-pubkeys", "-n", OPERATOR_NS, "-o",
                      "jsonpath={.data.pubkeys\\.json}")
    (tmp_path / "pubkeys.json").write_text(pub)
    (tmp_path / "signal.json").write_text(json.dumps(st["signal"]))
    r = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), "signal", "verify",
                        "--pubkeys", str(tmp_path / "pubkeys.json"),
                        str(tmp_path / "signal.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_signing_change_rolled_back_to_the_earlier_replicaset(flk: Flk) -> None:
    """Someone rolls out a wrong backend key: the agents' PCS fail on every pod, the alert
    fires, sigops diagnoses a recent signing change and runs scenario E: the Deployment goes
    back to its last known good template, which is the earlier ReplicaSet, scaled up again."""
    prom_port = free_port()
    # A template counts as last known good after 15 s of health here (default 5m): longer
    # than a bad change takes to show its errors, so it is never snapshotted itself.
    flk.install(prom_port, scenarioE={"lastKnownGoodAfter": "15s"})
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    url = flk.backend(good)
    stack = flk.monitoring(prom_port)
    flk.agents("agents", url, rate=15, count=3)
    wait_for(lambda: stack.query("sum(rate(flk_accepted[10s])) > 0"), timeout=90, interval=1,
             what="the agents' PCS accepted")
    wait_for(lambda: flk.kubectl("get", "secret", "-n", flk.ns, "sigops-lkg-fractal-lba-backend",
                                 check=False), timeout=60, interval=1,
             what="a last-known-good snapshot while healthy")

    def replicasets() -> dict[str, dict[str, Any]]:
        return {rs["metadata"]["labels"]["pod-template-hash"]: rs
                for rs in flk.get("replicasets", "-n", flk.ns, "-l", "app=fractal-lba-backend")[
                    "items"]}

    (good_hash,) = replicasets()

    def roll_out_bad_key() -> bool:  # a bad signing config rolls out (retried on a 409)
        dep = flk.get("deployment", "-n", flk.ns, "fractal-lba-backend")
        for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
            if e["name"] == "PCS_HMAC_KEY":
                e.pop("valueFrom", None)
                e["value"] = bad.to_entry()["secret"]
        try:
            flk.kubectl("replace", "-f", "-", input=json.dumps(dep))
            return True
        except RuntimeError:
            return False

    wait_for(roll_out_bad_key, timeout=20, interval=0.5, what="the bad change applied")
    wait_for(lambda: len(replicasets()) == 2 and replicasets()[good_hash]["status"].get(
        "replicas", 0) == 0, timeout=120, interval=1, what="the bad template rolled out")

    def ended() -> list[dict[str, Any]]:
        return [i for i in flk.get("signatureincidents", "-n", flk.ns)["items"]
                if (i.get("status") or {}).get("phase") in ("Resolved", "Escalated")]

    (inc,) = wait_for(ended, timeout=300, interval=1, what="the incident to end")
    st = inc["status"]
    assert (st["phase"], st["scenario"]) == ("Resolved", "E"), st.get("message")
    assert st["evidence"]["recentSigningChange"] is True
    assert [a["payload"]["action"] for a in st["actions"]] == ["rollback-template"]
    # Back on the earlier ReplicaSet: its pods run again, the bad one is scaled to 0.
    rs = replicasets()
    assert rs[good_hash]["status"].get("readyReplicas") == 2, rs[good_hash]["status"]
    assert all(r["spec"]["replicas"] == 0 for h, r in rs.items() if h != good_hash)
    pods = flk.get("pods", "-n", flk.ns, "-l", "app=fractal-lba-backend")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in live} == {good_hash}


def test_tamper_flood_tightens_the_rate_on_running_pods_then_restores_it(flk: Flk) -> None:
    """Attackers post tampered PCS beside honest agents: sigops diagnoses malicious activity,
    runs D (TOKEN_RATE tightened: a real rollout of 2 pods), the signature errors fall, the
    incident resolves, and after the cool-down the old TOKEN_RATE comes back (another
    rollout). Pods stay available throughout."""
    prom_port = free_port()
    flk.install(prom_port, scenarioD={"tokenRate": "1", "cooldown": "5s"})
    key = generate_key(HMAC, kid="k")
    # With the samples endpoint: it records who sent each PCS (X-Agent-Id), which an inbox
    # WAL does not, so D can name the failing sources.
    url = flk.backend(key)
    stack = flk.monitoring(prom_port)
    flk.agents("honest", url, rate=3, count=2)
    wait_for(lambda: stack.query("sum(rate(flk_accepted[10s])) > 0"), timeout=90, interval=1,
             what="the honest agents' PCS accepted")
    flk.agents("attacker", url, rate=20, count=2, args=("--fault", "tamper"))

    def token_rate() -> str | None:
        dep = flk.get("deployment", "-n", flk.ns, "fractal-lba-backend")
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        return next((e.get("value") for e in env if e["name"] == "TOKEN_RATE"), None)

    (inc,) = wait_for(lambda: [i for i in flk.get("signatureincidents", "-n", flk.ns)["items"]
                               if (i.get("status") or {}).get("phase") in ("Resolved",
                                                                           "Escalated")],
                      timeout=300, interval=1, what="the incident to end")
    st = inc["status"]
    assert (st["phase"], st["cause"], st["scenario"]) == ("Resolved", "MaliciousActivity",
                                                          "D"), st.get("message")
    tighten = st["actions"][0]["payload"]
    assert (tighten["previous"], tighten["value"]) == ("1000", "1"), tighten
    sources = [s["source"] for s in st["actions"][1]["payload"]["sources"]]
    assert sources and all(s.startswith("attacker") for s in sources), sources
    assert st["evidence"]["samples"]["report"]["by_cause"].get("tampered", 0) > 0
    wait_for(lambda: token_rate() == "1000", timeout=120, interval=1,
             what="TOKEN_RATE restored after the cool-down")
    wait_for(lambda: (flk.get("deployment", "-n", flk.ns, "fractal-lba-backend").get("status")
                      or {}).get("updatedReplicas") == 2, timeout=120, interval=1,
             what="the restored template rolled out")
