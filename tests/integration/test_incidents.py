"""SignatureIncident on the real API server: alert intake, diagnosis, scenarios A-E, approval,
dry run, rate limiting and restarts, driven by a real `sigops run` process and synthetic
Alertmanager posts. (The closed loop through real Prometheus and Alertmanager is in tests/e2e.)
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from sigops.core.keys import HMAC, Key, generate_key
from tests.support import (
    TOKEN,
    SampleServer,
    alert_post,
    backend,
    backend_fingerprints,
    envelope,
    grant_user,
    has_secret,
    incidents,
    kubectl,
    only_incident,
    pcs,
    set_backend_key,
    start,
    token_rate,
    verify_records,
    wait_for,
)

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def samples():
    s = SampleServer()
    yield s
    s.close()


def phase_is(api: Any, ns: str, *phases: str):  # type: ignore[no-untyped-def]
    def check() -> dict[str, Any] | None:
        items = incidents(api, ns)
        if items and (items[0].get("status") or {}).get("phase") in phases:
            return items[0]
        return None
    return check


# -- scenarios -----------------------------------------------------------------------------


def rotated_too_early(api: Any, ns: str, state: str = "retiring",
                      **old_fields: Any) -> tuple[Key, Key]:
    """A backend on a new key while agents still sign with the old one, which sigops' keyring
    holds in ``state`` (default: retiring, its overlap window open for a day: the backend
    dropped it too early). Returns (old, new)."""
    old = Key("old", HMAC, secret=b"old-agent-key-0123456789")
    new = Key("new", HMAC, secret=b"new-backend-key-987654321")
    backend(api, ns, new)
    window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    fields = {"overlap_until": window} if state == "retiring" else {}
    ring = {"keys": [{**old.to_entry(), "state": state, **fields, **old_fields},
                     {**new.to_entry(), "state": "active"}],
            "profile": "python", "backend_accepts": ["new"], "primary": "new", "lock": None}
    client.CoreV1Api(api).create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="sigops-keyring-fractal-lba-backend"),
        string_data={"keyring.json": json.dumps(ring)}))
    return old, new


def test_scenario_a_key_overlap(api, namespace, operator_factory, samples, tmp_path):
    old, new = rotated_too_early(api, namespace)
    samples.samples = [envelope(pcs(old, i)) for i in range(20)]
    op = start(operator_factory, tmp_path, namespace, samples.url)
    assert alert_post(op, namespace)[0] == 200
    inc = wait_for(phase_is(api, namespace, "Verifying", "Resolved", "Escalated"), 30,
                   what="scenario A to be applied")
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("KeyRotationInProgress", "A"), st.get("conditions")
    assert st["evidence"]["samples"]["report"]["by_cause"] == {"stale_key": 20}
    assert old.fingerprint in backend_fingerprints(api, namespace)
    assert new.fingerprint in backend_fingerprints(api, namespace)
    alert_post(op, namespace, status="resolved")
    inc = wait_for(phase_is(api, namespace, "Resolved"), 20, what="Resolved")
    verify_records(api, op, inc)
    assert "Enabled key overlap" in inc["status"]["communication"]
    blob = json.dumps(inc)
    assert old.secret.decode() not in blob and new.secret.decode() not in blob


def test_scenario_a_against_a_single_key_backend_is_undone(cluster, api, namespace,
                                                           operator_factory, tmp_path):
    """The upstream server reads PCS_HMAC_KEY only: scenario A's overlap never takes on it.
    The live probe sees the agents' key still refused, A's change is taken back, and the
    incident moves on (here: escalates, A being the only candidate)."""
    from sigops.backend.probe import submit
    from tests.support import LiveTestbed

    old, new = rotated_too_early(api, namespace)
    with LiveTestbed(cluster, namespace, tmp_path, "--single-key") as tb:
        codes = [submit(f"{tb.url}/v1/pcs/submit", 5, pcs(old, i)) for i in range(12)]
        assert codes == [401] * 12
        op = start(operator_factory, tmp_path, namespace, tb.url, overlap_probe_grace="3s")
        assert alert_post(op, namespace)[0] == 200
        inc = wait_for(phase_is(api, namespace, "Escalated", "Resolved"), 60,
                       what="scenario A to be refused")
    st = inc["status"]
    assert st["phase"] == "Escalated" and st["scenario"] == "A", st.get("conditions")
    results = [(a["payload"]["action"], a["payload"]["result"]) for a in st["actions"]]
    assert results == [("accept-agent-keys", "applied"), ("undo", "undone")]
    assert "ignores PCS_HMAC_KEYS" in st["actions"][-1]["payload"]["summary"]
    # The backend accepts its own key only, as before the incident.
    assert backend_fingerprints(api, namespace) == [new.fingerprint]
    events = client.CoreV1Api(api).list_namespaced_event(namespace)
    assert any(e.reason == "ScenarioFailed" and "ignores PCS_HMAC_KEYS" in e.message
               for e in events.items)
    verify_records(api, op, inc)


def _escalated_without_acting(api: Any, ns: str, new: Key) -> dict[str, Any]:
    inc = wait_for(phase_is(api, ns, "Escalated", "Resolved", "Verifying"), 30,
                   what="scenario A to refuse")
    st = inc["status"]
    assert (st["phase"], st["scenario"]) == ("Escalated", "A"), st.get("conditions")
    assert not [a for a in st.get("actions") or []
                if a["payload"]["action"] == "accept-agent-keys"], st["actions"]
    assert backend_fingerprints(api, ns) == [new.fingerprint]
    return inc


def test_scenario_a_never_readmits_a_key_a_finished_rotation_retired(api, namespace,
                                                                      operator_factory,
                                                                      samples, tmp_path):
    """Issue 26: PCS signed with a leaked old key, then an alert, and scenario A put the old
    key back in PCS_HMAC_KEYS. A retired key stays retired: A escalates and says why."""
    old, new = rotated_too_early(api, namespace, "retired", retired_at="2026-11-20T00:00:00Z")
    samples.samples = [envelope(pcs(old, i)) for i in range(50)]
    op = start(operator_factory, tmp_path, namespace, samples.url)
    assert alert_post(op, namespace)[0] == 200
    inc = _escalated_without_acting(api, namespace, new)
    ready = next(c for c in inc["status"]["conditions"] if c["type"] == "Ready")
    assert "key old" in ready["message"] and "retired at 2026-11-20" in ready["message"]
    assert "never accepted again" in ready["message"]
    events = client.CoreV1Api(api).list_namespaced_event(namespace)
    assert any(e.reason == "ScenarioFailed" and "retired" in e.message for e in events.items)
    blob = json.dumps(inc)
    assert old.secret.decode() not in blob and new.secret.decode() not in blob


def test_a_key_revoked_with_kubectl_sigops_is_never_readmitted(cluster, api, namespace,
                                                              operator_factory, samples,
                                                              tmp_path):
    """A key A could re-admit (retiring, its window open), marked compromised with ``kubectl
    sigops revoke``: the ring records who and when, the backend no longer accepts it, and A
    escalates naming the revocation instead of letting it back in."""
    import subprocess

    from tests.support import REPO, secret

    old, new = rotated_too_early(api, namespace)
    out = subprocess.run([str(REPO / ".venv" / "bin" / "kubectl-sigops"), "revoke", "old",
                          "-n", namespace, "--reason", "leaked in a CI log"],
                         env=dict(cluster.env), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"key old ({old.fingerprint}) revoked by" in out.stdout
    ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")
                      ["keyring.json"])
    entry = next(e for e in ring["keys"] if e["kid"] == "old")
    assert entry["state"] == "revoked" and entry["revoked_by"] and entry["revoked_at"]
    assert "old" not in ring["backend_accepts"]
    samples.samples = [envelope(pcs(old, i)) for i in range(50)]
    op = start(operator_factory, tmp_path, namespace, samples.url)
    assert alert_post(op, namespace)[0] == 200
    inc = _escalated_without_acting(api, namespace, new)
    ready = next(c for c in inc["status"]["conditions"] if c["type"] == "Ready")
    assert "was revoked at" in ready["message"] and entry["revoked_by"] in ready["message"]
    # The operator signs the revocation the person recorded (she wrote the ring herself).
    from sigops.core.signals import load_pubkeys, verify_signal

    def signed() -> dict[str, Any] | None:
        ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")
                          ["keyring.json"])
        rec = next(e for e in ring["keys"] if e["kid"] == "old").get("revocation_record")
        return rec if isinstance(rec, dict) else None

    record = wait_for(signed, 30, what="the revocation signed by the operator")
    cm = client.CoreV1Api(api).read_namespaced_config_map("sigops-signal-pubkeys",
                                                           op.operator_ns)
    payload = verify_signal(record, load_pubkeys(json.loads(cm.data["pubkeys.json"])))
    assert (payload["type"], payload["kid"], payload["fingerprint"]) == (
        "keyring.revocation", "old", old.fingerprint)
    assert payload["revoked_by"] == entry["revoked_by"]
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=fractal-lba-backend")
    assert any(e.reason == "KeyRevoked" for e in events.items)


def test_scenario_b_clock_skew_labels_nodes(api, namespace, operator_factory, samples,
                                            tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-clock-test")
    backend(api, namespace, key)
    core = client.CoreV1Api(api)
    node = f"node-{namespace}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
    try:
        sent = "2026-11-22T00:00:00Z"
        late = "2026-11-22T00:10:00Z"  # agent clock 600 s behind
        samples.samples = [envelope(pcs(key, i, sent_at=sent), "agent-7", late)
                           for i in range(10)]
        op = start(operator_factory, tmp_path, namespace, samples.url,
                   target_extra={"maxSkewSeconds": 30})
        alert_post(op, namespace)
        inc = wait_for(phase_is(api, namespace, "Verifying", "Resolved", "Escalated"), 30,
                       what="scenario B")
        st = inc["status"]
        assert (st["cause"], st["scenario"]) == ("ClockSkew", "B")
        skew = st["evidence"]["samples"]["report"]["skew"]
        assert skew["offset_seconds"] == 600.0 and skew["scope"] == "single_source"
        assert core.read_node(node).metadata.labels.get("ntp") == "enabled"
        measured = st["actions"][0]["payload"]
        assert measured["action"] == "measure-skew"
        # Tolerances are never widened: the backend's env is untouched.
        assert token_rate(api, namespace) == "100"
        alert_post(op, namespace, status="resolved")
        wait_for(phase_is(api, namespace, "Resolved"), 20, what="Resolved")
    finally:
        core.delete_node(node)


def test_scenario_c_drift_escalates_and_changes_nothing(api, namespace, operator_factory,
                                                       samples, tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-drift-test")
    backend(api, namespace, key)
    gen = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend",
                                                           namespace).metadata.generation
    samples.samples = [envelope(pcs(key, i, profile="go")) for i in range(10)]
    op = start(operator_factory, tmp_path, namespace, samples.url)
    alert_post(op, namespace)
    inc = wait_for(phase_is(api, namespace, "Escalated"), 30, what="C to escalate")
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("CanonicalizationDrift", "C")
    action = st["actions"][0]["payload"]
    assert action["driftingProfiles"] == {"go": 10}
    assert action["verifierProfile"] == "python"
    assert action["forms"].startswith("10 records are signed in the go form")
    assert "the verifier checks the python form" in action["summary"]
    assert all(action["golden"].values())
    assert "NOT changed" in action["summary"]
    assert client.AppsV1Api(api).read_namespaced_deployment(
        "fractal-lba-backend", namespace).metadata.generation == gen
    verify_records(api, op, inc)


def test_scenario_d_rate_tightening_then_restore(api, namespace, operator_factory, samples,
                                                 tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-tamper-test")
    backend(api, namespace, key, token_rate="100")
    good = [envelope(pcs(key, i), "agent-1") for i in range(5)]
    bad = []
    for i in range(30):
        p = pcs(key, 100 + i)
        p["merkle_root"] = "f" * 64  # changed after signing
        bad.append(envelope(p, "10.9.9.9"))
    samples.samples = good + bad
    op = start(operator_factory, tmp_path, namespace, samples.url)
    alert_post(op, namespace)
    inc = wait_for(phase_is(api, namespace, "Verifying", "Resolved", "Escalated"), 30,
                   what="scenario D")
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("MaliciousActivity", "D")
    assert token_rate(api, namespace) == "50"
    tighten = st["actions"][0]["payload"]
    assert tighten["previous"] == "100" and tighten["value"] == "50"
    sources = st["actions"][1]["payload"]["sources"]
    assert sources[0] == {"source": "10.9.9.9", "failures": 30}
    alert_post(op, namespace, status="resolved")
    wait_for(phase_is(api, namespace, "Resolved"), 20, what="Resolved")
    wait_for(lambda: token_rate(api, namespace) == "100", 20,
             what="TOKEN_RATE restored after the cool-down")
    # The rollout comes first, its signed record in status.actions right after: wait for both.
    inc = wait_for(lambda: (lambda i: i if i["status"]["actions"][-1]["payload"]["action"]
                            == "restore-token-rate" else None)(only_incident(api, namespace)),
                   20, what="the restore recorded in status.actions")
    verify_records(api, op, inc)


def test_scenario_e_rollback_after_bad_signing_change(api, namespace, operator_factory,
                                                      samples, tmp_path):
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    backend(api, namespace, good)
    op = start(operator_factory, tmp_path, namespace, samples.url)
    wait_for(lambda: has_secret(api, namespace, "sigops-lkg-fractal-lba-backend"), 30,
             what="a last-known-good snapshot while healthy")
    set_backend_key(api, namespace, bad)  # a bad signing config rolls out
    wait_for(lambda: len(client.AppsV1Api(api).list_namespaced_replica_set(namespace).items)
             >= 2, 20, what="revision 2")
    samples.samples = [envelope(pcs(good, i)) for i in range(10)]
    alert_post(op, namespace)
    inc = wait_for(phase_is(api, namespace, "Verifying", "Resolved", "Escalated"), 30,
                   what="scenario E")
    st = inc["status"]
    assert st["scenario"] == "E", (st.get("candidates"), st.get("conditions"))
    assert st["evidence"]["recentSigningChange"] is True
    assert backend_fingerprints(api, namespace) == [good.fingerprint]
    alert_post(op, namespace, status="resolved")
    wait_for(phase_is(api, namespace, "Resolved"), 20, what="Resolved")
    verify_records(api, op, only_incident(api, namespace))


# -- modes -----------------------------------------------------------------------------------


def test_approval_flow_and_dry_run(api, namespace, operator_factory, samples, tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-approval")
    backend(api, namespace, key, token_rate="100")
    bad = []
    for i in range(10):
        p = pcs(key, i)
        p["D_hat"] = 9.5
        p["merkle_root"] = "e" * 64
        bad.append(envelope(p, "10.1.1.1"))
    samples.samples = bad
    op = start(operator_factory, tmp_path, namespace, samples.url,
               modes={"A": "auto", "B": "auto", "C": "auto", "D": "approval", "E": "approval"})
    co = client.CustomObjectsApi(api)
    # A person's dry-run incident: plan only, nothing changes.
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
        "metadata": {"name": "drill"}, "spec": {"source": "person", "mode": "dryRun",
                                                "target": {"deployment": "fractal-lba-backend"}}})
    inc = wait_for(phase_is(api, namespace, "AwaitingApproval"), 30, what="dry-run plan")
    ready = next(c for c in inc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DryRun"
    assert inc["status"]["pendingActions"]["steps"][0]["action"] == "tighten-token-rate"
    time.sleep(2)
    assert token_rate(api, namespace) == "100"
    co.delete_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents", "drill")
    # The finalizer goes when the operator's delete handler runs: after any step under way
    # (one cold CI run took longer than 20 s here).
    wait_for(lambda: not incidents(api, namespace), 60, what="drill deleted")
    # The alert path with D in approval mode waits for a person.
    alert_post(op, namespace)
    inc = wait_for(phase_is(api, namespace, "AwaitingApproval"), 30, what="approval wait")
    assert token_rate(api, namespace) == "100"
    name = inc["metadata"]["name"]
    # A requester (a user who may patch incidents in this namespace, nothing else) may not
    # loosen the configured mode, and a bare spec.approve (no decision naming who) counts for
    # nothing: the incident keeps waiting and nothing changes.
    grant_user(api, namespace, "requester", "requester", [client.V1PolicyRule(
        api_groups=[GROUP], resources=["signatureincidents"], verbs=["get", "patch"])])
    for loosen in ('{"spec":{"mode":"auto"}}', '{"spec":{"approve":["D"]}}'):
        out = kubectl(op.cluster, "--as", "requester", "patch", "si", name, "-n", namespace,
                      "--type", "merge", "-p", loosen, check=False)
        assert out.returncode == 0, out.stderr
    time.sleep(3)  # several reconcile ticks
    assert phase_is(api, namespace, "AwaitingApproval")()
    assert token_rate(api, namespace) == "100"
    decision = {"spec": {"decisions": [{"scenario": "D", "decision": "approve",
                                        "user": "sre-on-call"}]}}
    out = kubectl(op.cluster, "patch", "si", name, "-n", namespace, "--type", "merge",
                  "-p", json.dumps(decision))
    assert out.returncode == 0
    wait_for(phase_is(api, namespace, "Verifying", "Resolved"), 30, what="approved run")
    assert token_rate(api, namespace) == "50"


# -- intake ------------------------------------------------------------------------------------


def test_intake_auth_dedupe_flood_and_rate_limit(api, namespace, operator_factory, tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-intake")
    backend(api, namespace, key)
    op = start(operator_factory, tmp_path, namespace, None)
    # Wrong, missing and partial tokens: 401, nothing created.
    assert alert_post(op, namespace, token="wrong")[0] == 401
    assert alert_post(op, namespace, token=None)[0] == 401
    assert alert_post(op, namespace, token=TOKEN[:-1])[0] == 401
    assert alert_post(op, namespace, body=b"{not json")[0] == 400
    assert alert_post(op, namespace, body=b'{"version": "3", "alerts": []}')[0] == 400
    assert incidents(api, namespace) == []
    # A flood of 1,000 identical posts (and a replay) makes one incident.
    codes = set()

    def flood(n: int) -> None:
        for _ in range(n):
            codes.add(alert_post(op, namespace)[0])

    threads = [threading.Thread(target=flood, args=(250,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == {200}
    assert len(incidents(api, namespace)) == 1
    # Four distinct alerts in an hour from one source: the 4th is rate-limited, recorded once.
    for fp in ("0000000000000002", "0000000000000003", "0000000000000004", "0000000000000005"):
        alert_post(op, namespace, fp=fp, group=f"g-{fp}")
    items = incidents(api, namespace)
    phases = sorted((i.get("status") or {}).get("phase", "Detected") for i in items)
    assert len(items) == 4 and phases.count("RateLimited") == 1, phases
    limited = next(i for i in items if (i.get("status") or {}).get("phase") == "RateLimited")
    rec = limited["status"]["rateLimited"]["payload"]
    assert rec["source"] == f"{namespace}/fractal-lba-backend" and rec["signal_count"] == 4
    assert rec["window_seconds"] == 3600
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    assert sum(e.reason == "SignalRateLimited" for e in events) == 1
    # The window survives a restart: a fifth alert after a restart is still limited.
    op.kill()
    op.start()
    alert_post(op, namespace, fp="0000000000000006", group="g6")
    assert len(incidents(api, namespace)) == 4
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics").read()
    assert b"sigops_signals_rate_limited_total 1.0" in metrics
    logs = op.logs()
    assert '"potential_attack": true' in logs and TOKEN not in logs and "wrong" not in logs


def tampered_samples(key: Key, n: int, root: str, source: str) -> list[dict[str, Any]]:
    """``n`` failed samples from ``source``: signed PCS whose merkle root was then changed."""
    out = []
    for i in range(n):
        p = pcs(key, i)
        p["merkle_root"] = root * 64
        out.append(envelope(p, source))
    return out


def test_killed_mid_remediation_finishes_once(api, namespace, operator_factory, samples,
                                              tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-crash")
    backend(api, namespace, key, token_rate="100")
    samples.samples = tampered_samples(key, 10, "d", "10.2.2.2")
    op = start(operator_factory, tmp_path, namespace, samples.url)
    alert_post(op, namespace)
    for _ in range(3):  # die as soon as it is diagnosing/remediating, several times
        wait_for(phase_is(api, namespace, "Diagnosing", "Remediating", "Verifying"), 30,
                 what="work in progress", interval=0.02)
        op.kill()
        op.start()
    inc = wait_for(phase_is(api, namespace, "Verifying", "Resolved"), 30, what="verifying")
    actions = [a["payload"]["action"] for a in inc["status"]["actions"]]
    assert actions.count("tighten-token-rate") == 1, actions
    assert inc["status"]["actions"][0]["payload"]["previous"] == "100"
    assert token_rate(api, namespace) == "50"


def test_unresolved_incident_escalates_and_notifies(api, namespace, operator_factory, samples,
                                                   tmp_path):
    key = Key("k", HMAC, secret=b"backend-key-for-escalation")
    backend(api, namespace, key)
    samples.samples = tampered_samples(key, 5, "c", "10.3.3.3")
    posts: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            return

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        op = start(operator_factory, tmp_path, namespace, samples.url, escalate_after="4s",
                   modes={"A": "auto", "B": "auto", "C": "auto", "D": "approval",
                          "E": "approval"},
                   notification_url=f"http://127.0.0.1:{hook.server_address[1]}/page")
        alert_post(op, namespace)
        inc = wait_for(phase_is(api, namespace, "Escalated"), 30, what="escalation")
        ready = next(c for c in inc["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "Unresolved" and "4s" in ready["message"]
        wait_for(lambda: posts, 10, what="the notification webhook")
        assert posts[0]["incident"] == inc["metadata"]["name"]
        assert posts[0]["scenario"] == "D" and posts[0]["reason"] == "Unresolved"
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        assert any(e.reason == "Escalated" and e.type == "Warning" for e in events)
        assert "Status: Escalated" in inc["status"]["communication"]
        assert token_rate(api, namespace) == "100"  # never approved: nothing changed
    finally:
        hook.shutdown()
