"""``kubectl sigops`` against the real API server, on incidents and rotations a real `sigops run`
produced: approve moves an approval-mode E incident forward, deny moves it on, abort undoes a
rotation, each refuses (changing nothing) when the object is not waiting for it, the requesting
user is the one the API server names (a ServiceAccount token here, not the admin), and verify
passes on real records and fails on tampered ones.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sigops.core.keys import HMAC, Key, generate_key
from tests.support import (
    GROUP,
    REPO,
    SampleServer,
    agent_key_fingerprint,
    alert_post,
    backend,
    backend_fingerprints,
    envelope,
    get_kr,
    has_secret,
    keyrotation,
    kubectl,
    make_backend,
    pcs,
    phase,
    rotation_settings,
    service_account_user,
    set_backend_key,
    start,
    wait_for,
)

VERSION = "v1alpha1"
PLUGIN = str(REPO / ".venv" / "bin" / "kubectl-sigops")


@pytest.fixture
def samples():
    s = SampleServer()
    yield s
    s.close()


def sigops(cluster: Any, *args: str, kubeconfig: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = dict(cluster.env)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    out = subprocess.run([PLUGIN, *args], env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def person(api: Any, cluster: Any, ns: str, tmp_path: Path, name: str = "alice"
           ) -> tuple[Path, str]:
    """A person who may read and patch incidents and rotations in ``ns`` (a ServiceAccount
    token), with a kubeconfig whose context namespace is ``ns``. Returns (kubeconfig, the
    user name the API server gives that token)."""
    rbac = client.RbacAuthorizationV1Api(api)
    kc, user = service_account_user(api, cluster, ns, name, tmp_path / f"{name}.kubeconfig")
    rbac.create_namespaced_role(ns, client.V1Role(
        metadata=client.V1ObjectMeta(name=f"{name}-sre"),
        rules=[client.V1PolicyRule(api_groups=[GROUP],
                                   resources=["signatureincidents", "keyrotations"],
                                   verbs=["get", "list", "watch", "patch"])]))
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=f"{name}-sre"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name=f"{name}-sre"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=ns)]))
    return kc, user


def unchanged(obj: dict[str, Any]) -> tuple[Any, str]:
    """What a refused request must leave as it was: the spec (and its generation). Status
    moves on its own while the operator works."""
    return obj["metadata"]["generation"], json.dumps(obj.get("spec"), sort_keys=True)


def si(api: Any, ns: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents", name)


def awaiting_e(api: Any, ns: str, operator_factory: Any, samples: SampleServer,
               tmp_path: Path) -> tuple[Any, Key, dict[str, Any]]:
    """An incident waiting for approval of scenario E (rollback): a signing change someone
    made longer ago than the auto window, agents' samples verifying under no known key."""
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    backend(api, ns, good)
    op = start(operator_factory, tmp_path, ns, samples.url, e_auto_window="1s",
               last_known_good_after="4s")
    wait_for(lambda: has_secret(api, ns, "sigops-lkg-fractal-lba-backend"), 30,
             what="a last-known-good snapshot while healthy")
    changed = time.monotonic()
    set_backend_key(api, ns, bad)  # a bad signing change rolls out
    stranger = generate_key(HMAC, kid="stranger")
    samples.samples = [envelope(pcs(stranger, i)) for i in range(10)]
    # Past the auto window (1s), before a snapshot of the bad change could be due (4s): once
    # the incident is open no snapshot is taken.
    time.sleep(max(0.0, 1.6 - (time.monotonic() - changed)))
    assert alert_post(op, ns)[0] == 200
    inc = wait_for(lambda: _phase_in(api, ns, "AwaitingApproval", "Verifying", "Escalated"),
                   30, what="the incident to wait for approval")
    st = inc["status"]
    assert (st["phase"], st["scenario"]) == ("AwaitingApproval", "E"), st.get("conditions")
    return op, good, inc


def _phase_in(api: Any, ns: str, *phases: str) -> dict[str, Any] | None:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents")["items"]
    if items and (items[0].get("status") or {}).get("phase") in phases:
        return dict(items[0])
    return None


def test_approve_moves_an_approval_mode_e_incident_forward(cluster, api, namespace,
                                                           operator_factory, samples, tmp_path):
    op, good, inc = awaiting_e(api, namespace, operator_factory, samples, tmp_path)
    name = inc["metadata"]["name"]
    ready = next(c for c in inc["status"]["conditions"] if c["type"] == "Ready")
    assert f"kubectl sigops approve si/{name} -n {namespace}" in ready["message"]
    kc, user = person(api, cluster, namespace, tmp_path)

    # explain says what waits on a person, with the exact command.
    out = sigops(cluster, "explain", f"si/{name}", kubeconfig=kc)
    assert out.returncode == 0, out.stderr
    assert "Waiting on" in out.stdout
    assert f"kubectl sigops approve si/{name} -n {namespace}" in out.stdout
    story = json.loads(sigops(cluster, "explain", f"si/{name}", "-n", namespace,
                              "-o", "json").stdout)
    assert story["diagnosis"]["cause"] == "ConfigurationError"
    assert story["waiting"]["commands"][0]["command"].startswith("kubectl sigops approve")

    # The wrong scenario is refused and nothing changes.
    before = unchanged(si(api, namespace, name))
    out = sigops(cluster, "approve", f"si/{name}", "--scenario", "D", kubeconfig=kc)
    assert out.returncode == 1 and "waits for scenario E, not D" in out.stderr
    assert "nothing changed" in out.stderr
    assert unchanged(si(api, namespace, name)) == before

    # Approve as alice (her context's namespace, no -n).
    out = sigops(cluster, "approve", f"si/{name}", kubeconfig=kc)
    assert out.returncode == 0, out.stderr
    assert f"scenario E approved by {user}" in out.stdout
    spec = si(api, namespace, name)["spec"]
    assert spec["approve"] == ["E"] and spec["decisions"][0]["user"] == user

    inc = wait_for(lambda: _phase_in(api, namespace, "Verifying", "Resolved", "Escalated"),
                   30, what="the approved rollback")
    acts = [a["payload"] for a in inc["status"]["actions"]]
    assert [(a["action"], a["result"]) for a in acts] == [("approve", "approved"),
                                                         ("rollback-template", "applied")]
    assert acts[0]["by"]["user"] == user  # in the signed record, as the API server named her
    assert backend_fingerprints(api, namespace) == [good.fingerprint]
    ready = next(c for c in inc["status"]["conditions"] if c["type"] in ("Ready",))
    assert ready["status"] == "False"

    # Not waiting any more: a second approve is refused and changes nothing.
    before = unchanged(si(api, namespace, name))
    out = sigops(cluster, "approve", f"si/{name}", kubeconfig=kc)
    assert out.returncode == 1 and "not waiting for approval" in out.stderr
    assert unchanged(si(api, namespace, name)) == before

    # verify: the real records pass; the saved copy with one word changed fails.
    out = sigops(cluster, "verify", f"si/{name}", "-n", namespace,
                 "--operator-namespace", op.operator_ns)
    assert out.returncode == 0, out.stdout + out.stderr
    # The detection, two actions and the operator's checkpoint of the actions.
    assert "valid: 4 signed record(s)" in out.stdout
    saved = si(api, namespace, name)
    (tmp_path / "si.yaml").write_text(yaml.safe_dump(saved))
    cm = client.CoreV1Api(api).read_namespaced_config_map("sigops-signal-pubkeys",
                                                           op.operator_ns)
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(
        client.ApiClient().sanitize_for_serialization(cm)))
    out = sigops(cluster, "verify", "-f", str(tmp_path / "si.yaml"),
                 "--pubkeys", str(tmp_path / "keys.yaml"))
    assert out.returncode == 0, out.stdout
    saved["status"]["actions"][0]["payload"]["by"]["user"] = "mallory"
    (tmp_path / "si.yaml").write_text(yaml.safe_dump(saved))
    out = sigops(cluster, "verify", "-f", str(tmp_path / "si.yaml"),
                 "--pubkeys", str(tmp_path / "keys.yaml"))
    assert out.returncode == 1
    assert "INVALID" in out.stdout and "status.actions[0]: bad_signature" in out.stdout

    out = sigops(cluster, "explain", f"si/{name}", kubeconfig=kc)
    assert f"Scenario E approved by {user}" in out.stdout


def test_deny_moves_the_incident_on_and_names_who(cluster, api, namespace, operator_factory,
                                                  samples, tmp_path):
    op, _, inc = awaiting_e(api, namespace, operator_factory, samples, tmp_path)
    name = inc["metadata"]["name"]
    before = client.AppsV1Api(api).read_namespaced_deployment(
        "fractal-lba-backend", namespace).metadata.generation
    kc, user = person(api, cluster, namespace, tmp_path, "bob")
    out = sigops(cluster, "deny", f"si/{name}", kubeconfig=kc)
    assert out.returncode == 0, out.stderr
    inc = wait_for(lambda: _phase_in(api, namespace, "Escalated"), 30,
                   what="E denied, no other candidate: escalated")
    acts = [a["payload"] for a in inc["status"]["actions"]]
    assert [(a["action"], a["result"], a["by"]["user"]) for a in acts] == [
        ("deny", "denied", user)]
    ready = next(c for c in inc["status"]["conditions"] if c["type"] == "Ready")
    assert f"denied by {user}" in ready["message"]
    assert client.AppsV1Api(api).read_namespaced_deployment(
        "fractal-lba-backend", namespace).metadata.generation == before  # nothing rolled back
    out = sigops(cluster, "deny", f"si/{name}", kubeconfig=kc)
    assert out.returncode == 1 and "is Escalated, not waiting for approval" in out.stderr
    out = sigops(cluster, "verify", f"si/{name}", "-n", namespace,
                 "--operator-namespace", op.operator_ns)
    assert out.returncode == 0, out.stdout


def test_abort_undoes_a_rotation_and_verify_catches_a_tampered_history(
        cluster, api, namespace, operator_factory, tmp_path):
    original = make_backend(api, namespace, HMAC)
    agent0 = agent_key_fingerprint(api, namespace, HMAC)
    op = operator_factory(rotation_settings(namespace))
    kc, user = person(api, cluster, namespace, tmp_path, "carol")
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "keyrotations", keyrotation("stop-me", HMAC, overlap="1h"))
    wait_for(lambda: phase(api, namespace, "stop-me") == "Retiring", 30, what="Retiring")
    assert agent_key_fingerprint(api, namespace, HMAC) != agent0  # agents were switched
    out = sigops(cluster, "explain", "kr/stop-me", kubeconfig=kc)
    assert f"kubectl sigops abort kr/stop-me -n {namespace}" in out.stdout

    out = sigops(cluster, "abort", "kr/stop-me", kubeconfig=kc)
    assert out.returncode == 0, out.stderr
    assert f"kr/stop-me: abort requested by {user} in phase Retiring" in out.stdout
    wait_for(lambda: phase(api, namespace, "stop-me") == "Aborted", 30, what="Aborted")
    assert agent_key_fingerprint(api, namespace, HMAC) == agent0
    assert backend_fingerprints(api, namespace) == [original.fingerprint]
    kr = get_kr(api, namespace, "stop-me")
    last = kr["status"]["history"][-1]["payload"]
    assert last["phase"] == "Aborted" and last["requested_by"]["user"] == user
    ready = next(c for c in kr["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "AbortRequested" and user in ready["message"]

    before = unchanged(kr)
    out = sigops(cluster, "abort", "kr/stop-me", kubeconfig=kc)
    assert out.returncode == 1 and "is Aborted: nothing to abort; nothing changed" in out.stderr
    assert unchanged(get_kr(api, namespace, "stop-me")) == before

    out = sigops(cluster, "verify", "kr/stop-me", "-n", namespace,
                 "--operator-namespace", op.operator_ns)
    assert out.returncode == 0, out.stdout + out.stderr
    # Someone with status access removes a step from the history: verify says where it broke.
    history = kr["status"]["history"]
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "keyrotations", "stop-me",
        {"status": {"history": history[:2] + history[3:]}})
    out = sigops(cluster, "verify", "kr/stop-me", "-n", namespace,
                 "--operator-namespace", op.operator_ns, "-o", "json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["valid"] is False
    assert doc["broken"] == [{"where": "status.history[2]", "valid": False,
                              "key_id": history[3]["key_id"], "reason": "truncated",
                              "detail": "sequence number 3 follows 1: records were removed"}]
    # -A: every object in every namespace, exit 1 because of this one.
    out = sigops(cluster, "verify", "-A", "--operator-namespace", op.operator_ns)
    assert out.returncode == 1 and "kr/stop-me: INVALID" in out.stdout


def test_refusals_on_missing_objects_and_wrong_kinds(cluster, api, namespace):
    out = sigops(cluster, "approve", "si/nope", "-n", namespace)
    assert out.returncode == 2 and "si/nope not found" in out.stderr
    out = sigops(cluster, "abort", "si/nope", "-n", namespace)
    assert out.returncode == 2 and "this verb takes kr/NAME" in out.stderr


def test_namespace_and_context_flags_before_the_verb(cluster, api, namespace, tmp_path):
    """``kubectl sigops -n NS explain si/x`` was refused ("invalid choice"): kubectl's flags
    work before or after the verb, against the real API server."""
    kubeconfig, _ = person(api, cluster, namespace, tmp_path)
    for args in (["-n", namespace, "explain", "si/nope"],
                 ["--context", "alice", "-n", namespace, "approve", "si/nope"],
                 ["explain", "si/nope", "--context", "alice", "-n", namespace]):
        out = sigops(cluster, *args, kubeconfig=kubeconfig)
        assert out.returncode == 2, (args, out.stderr)
        assert f"si/nope not found in namespace {namespace}" in out.stderr, (args, out.stderr)
    out = sigops(cluster, "--context", "nobody", "explain", "si/nope", kubeconfig=kubeconfig)
    assert out.returncode == 2 and "invalid choice" not in out.stderr
    assert "nobody" in out.stderr, out.stderr


def test_admission_policy_lets_only_the_requester_be_named(cluster, api, namespace, tmp_path):
    """The chart's ValidatingAdmissionPolicy: a new decision or abort request must name the
    user making the request. kubectl sigops passes; claiming to be someone else does not."""
    helm = REPO / ".dev" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm missing: run `make tools`")
    manifest = subprocess.run(
        [str(helm), "template", "plugin-test", str(REPO / "charts" / "sigops"),
         "--set-json", f'targets=[{{"namespace": "{namespace}", '
                       '"deployment": "fractal-lba-backend"}]',
         "--show-only", "templates/admissionpolicy.yaml"],
        capture_output=True, text=True, check=True).stdout
    (tmp_path / "vap.yaml").write_text(manifest)
    kubectl(cluster, "apply", "-f", str(tmp_path / "vap.yaml"))
    try:
        kc, user = person(api, cluster, namespace, tmp_path, "dave")
        co = client.CustomObjectsApi(api)
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
            "metadata": {"name": "drill"},
            "spec": {"source": "person", "target": {"deployment": "fractal-lba-backend"}}})
        forged = json.dumps({"spec": {"decisions": [
            {"scenario": "E", "decision": "approve", "user": "someone-else"}]}})

        def refused() -> str | None:
            out = kubectl(cluster, "--kubeconfig", str(kc), "patch", "si", "drill",
                           "--type", "merge", "-p", forged, check=False)
            if out.returncode == 0:  # the policy is not active yet: take it back, try again
                co.patch_namespaced_custom_object(GROUP, VERSION, namespace,
                                                  "signatureincidents", "drill",
                                                  {"spec": {"decisions": None}})
                return None
            return out.stderr

        err = wait_for(refused, 30, 0.5, what="the admission policy to refuse a forged user")
        assert "may only gain entries that name the requesting user" in err
        # The plugin names the user the API server gave: admitted, and the operator-side
        # reader finds it.
        co.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "signatureincidents", "drill",
            {"status": {"phase": "AwaitingApproval", "scenario": "E", "conditions": [
                {"type": "Ready", "status": "False", "reason": "AwaitingApproval",
                 "message": "m", "lastTransitionTime": "2026-11-30T10:00:00Z"}]}})
        out = sigops(cluster, "approve", "si/drill", kubeconfig=kc)
        assert out.returncode == 0, out.stderr
        spec = si(api, namespace, "drill")["spec"]
        assert spec["decisions"][0]["user"] == user
        # Entries already there pass when someone else (the admin) changes the spec.
        co.patch_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents",
                                          "drill", {"spec": {"mode": "approval"}})
        # The same for an abort request on a KeyRotation.
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                           keyrotation("r", HMAC, overlap="1h"))
        out = kubectl(cluster, "--kubeconfig", str(kc), "patch", "kr", "r", "--type", "merge",
                       "-p", json.dumps({"spec": {"abort": True, "abortRequestedBy": {
                           "user": "someone-else"}}}), check=False)
        assert out.returncode != 0 and "must name the requesting user" in out.stderr
        out = sigops(cluster, "abort", "kr/r", kubeconfig=kc)
        assert out.returncode == 0, out.stderr
        assert get_kr(api, namespace, "r")["spec"]["abortRequestedBy"]["user"] == user
    finally:
        kubectl(cluster, "delete", "-f", str(tmp_path / "vap.yaml"), check=False)
        # The API server drops the policy a moment later: wait, so later tests see none.
        probe = json.dumps({"spec": {"decisions": [
            {"scenario": "E", "decision": "deny", "user": "nobody-in-particular"}]}})
        if kubectl(cluster, "get", "si", "drill", "-n", namespace, check=False).returncode == 0:
            wait_for(lambda: kubectl(cluster, "patch", "si", "drill", "-n", namespace,
                                     "--type", "merge", "-p", probe, check=False
                                     ).returncode == 0, 30, 0.5,
                     what="the admission policy to be gone")
        # And the target policy: a rotation of an unconfigured backend is admitted again.
        other = keyrotation("probe-gone", HMAC, overlap="1h", dryRun=True)
        other["spec"]["target"]["deployment"] = "not-configured"
        (tmp_path / "probe.json").write_text(json.dumps(other))

        def target_policy_gone() -> bool:
            ok = kubectl(cluster, "create", "-n", namespace, "-f", str(tmp_path / "probe.json"),
                         check=False).returncode == 0
            kubectl(cluster, "delete", "kr", "probe-gone", "-n", namespace, check=False)
            return ok

        wait_for(target_policy_gone, 30, 0.5, what="the target admission policy to be gone")


def test_a_request_built_on_a_stale_read_changes_nothing(api, namespace):
    """The patch approve/deny/abort send tests the resourceVersion they checked: if the object
    changed in between, the API server refuses it (and the plugin reads and checks again)."""
    from sigops.cli.plugin.requests import decision_patch
    from sigops.kube.api import Kube, KubeError

    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
        "metadata": {"name": "stale"}, "spec": {"source": "person"}})
    co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "signatureincidents", "stale",
        {"status": {"phase": "AwaitingApproval", "scenario": "E"}})
    read = si(api, namespace, "stale")
    kube = Kube(api)
    who = kube.whoami()  # the admin here; the chart's admission policy wants the real name
    _, ops = decision_patch(read, "approve", who, "2026-11-30T10:00:00Z")
    # Meanwhile the incident moves on (here: the operator's status write).
    co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "signatureincidents", "stale",
        {"status": {"phase": "Escalated"}})
    with pytest.raises(KubeError) as e:
        kube.json_patch_cr(namespace, "signatureincidents", "stale", ops)
    assert e.value.status in (409, 422), e.value
    assert "approve" not in si(api, namespace, "stale")["spec"]
    # On a fresh read the same request applies.
    _, ops = decision_patch(si(api, namespace, "stale") | {"status": read["status"]},
                            "approve", who, "t")
    kube.json_patch_cr(namespace, "signatureincidents", "stale", ops)
    assert si(api, namespace, "stale")["spec"]["approve"] == ["E"]


def test_an_approval_given_before_it_was_asked_is_recorded(api, namespace, operator_factory,
                                                           samples, tmp_path):
    """A person opens an incident with the scenario already approved (D in approval mode):
    it runs without waiting, and its signed actions still start with who approved."""
    key = Key("k", HMAC, secret=b"backend-key-for-preapproval")
    backend(api, namespace, key, token_rate="100")
    bad = []
    for i in range(10):
        p = pcs(key, i)
        p["merkle_root"] = "e" * 64  # changed after signing: tampering, scenario D
        bad.append(envelope(p, "10.1.1.1"))
    samples.samples = bad
    start(operator_factory, tmp_path, namespace, samples.url,
          modes={"A": "auto", "B": "auto", "C": "auto", "D": "approval", "E": "approval"})
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "signatureincidents", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
            "metadata": {"name": "pre"},
            "spec": {"source": "person", "target": {"deployment": "fractal-lba-backend"},
                     "approve": ["D"], "decisions": [
                         {"scenario": "D", "decision": "approve", "user": "sigops-admin"}]}})
    inc = wait_for(lambda: _phase_in(api, namespace, "Verifying", "Resolved", "Escalated"), 30,
                   what="the pre-approved scenario to run")
    acts = [a["payload"] for a in inc["status"]["actions"]]
    assert (acts[0]["action"], acts[0]["by"]["user"]) == ("approve", "sigops-admin")
    assert acts[1]["action"] == "tighten-token-rate"


def _ring(api: Any, ns: str) -> dict[str, Any]:
    from tests.support import secret

    return json.loads(secret(api, ns, "sigops-keyring-fractal-lba-backend")["keyring.json"])


def test_revoke_as_a_namespace_user_needs_her_rights_on_the_ring(cluster, api, namespace,
                                                                tmp_path):
    """``kubectl sigops revoke`` acts with the person's own credentials: without update on the
    ring Secret it is refused and nothing changes; with it, the key is revoked in her name
    (the API server's), dropped from the backend's env entries, and the pods roll. The
    backend's primary key is refused."""
    old = Key("old", HMAC, secret=b"old-agent-key-0123456789")
    new = Key("new", HMAC, secret=b"new-backend-key-987654321")
    backend(api, namespace, new)
    ring = {"keys": [{**old.to_entry(), "state": "retiring"},
                     {**new.to_entry(), "state": "active"}],
            "profile": "python", "backend_accepts": ["new", "old"], "primary": "new",
            "lock": None}
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="sigops-keyring-fractal-lba-backend"),
        string_data={"keyring.json": json.dumps(ring)}))
    kubeconfig, user = person(api, cluster, namespace, tmp_path)
    out = sigops(cluster, "revoke", "old", kubeconfig=kubeconfig)
    assert out.returncode == 2 and "403" in out.stderr, out.stderr
    assert _ring(api, namespace)["keys"][0]["state"] == "retiring"

    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="alice-keys"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"],
                                   resource_names=["sigops-keyring-fractal-lba-backend"],
                                   verbs=["get", "update"]),
               client.V1PolicyRule(api_groups=["apps"], resources=["deployments"],
                                   resource_names=["fractal-lba-backend"],
                                   verbs=["get", "update"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="alice-keys"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="alice-keys"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="alice",
                                       namespace=namespace)]))

    def revoked() -> subprocess.CompletedProcess[str] | None:
        o = sigops(cluster, "revoke", old.fingerprint, "--reason", "leaked",
                   kubeconfig=kubeconfig)
        return o if o.returncode == 0 else None  # RBAC takes a moment to apply

    out = wait_for(revoked, 15, what="the revocation")
    assert f"revoked by {user}" in out.stdout and "rolls" in out.stdout
    got = _ring(api, namespace)
    entry = next(e for e in got["keys"] if e["kid"] == "old")
    assert (entry["state"], entry["revoked_by"], entry["revoked_reason"]) == (
        "revoked", user, "leaked")
    assert got["backend_accepts"] == ["new"]
    from tests.support import secret

    data = secret(api, namespace, "sigops-keyring-fractal-lba-backend")
    assert data["PCS_HMAC_KEYS"] == new.secret.decode()  # type: ignore[union-attr]
    dep = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", namespace)
    assert dep.spec.template.metadata.annotations[
        "sigops.fractal-lba.io/keyring-revision"].endswith("-revoked")
    # Again: said, nothing changes. The primary: refused.
    out = sigops(cluster, "revoke", "old", kubeconfig=kubeconfig)
    assert out.returncode == 0 and "revoked already" in out.stdout
    out = sigops(cluster, "-n", namespace, "revoke", "new", kubeconfig=kubeconfig)
    assert out.returncode == 1 and "primary key" in out.stderr
    assert next(e for e in _ring(api, namespace)["keys"] if e["kid"] == "new")[
        "state"] == "active"
    assert old.secret.decode() not in out.stdout + out.stderr  # type: ignore[union-attr]
