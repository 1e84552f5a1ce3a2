"""KeyRotation on the real API server, driven by a real `sigops run` process."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from kubernetes import client

from devtools.stub import StubServer
from sigops.core.keys import ED25519, HMAC, key_from_entry
from tests.support import (
    GROUP,
    VERSION,
    AcceptanceWatch,
    LiveTestbed,
    agent_key_fingerprint,
    backend_fingerprints,
    get_kr,
    keyrotation,
    kill_on_each_new_phase,
    kubectl,
    make_backend,
    phase,
    rotation_settings,
    rotation_target,
    secret,
    undo_snapshots,
    verify_history,
    wait_for,
)


def assert_no_key_material(api: Any, ns: str, name: str, material: list[str], logs: str) -> None:
    kr = get_kr(api, ns, name)
    events = client.CoreV1Api(api).list_namespaced_event(ns)
    blob = json.dumps(kr) + json.dumps([e.message for e in events.items]) + logs
    for m in material:
        assert m not in blob, "key material leaked into status, events, annotations or logs"


@pytest.mark.parametrize("alg", [HMAC, ED25519])
def test_full_rotation(api, namespace, operator_factory, alg):
    old = make_backend(api, namespace, alg)
    op = operator_factory(rotation_settings(namespace))
    seen: dict[str, set[str]] = {}  # phase -> the Ready messages seen in it

    def finished() -> bool:
        st = get_kr(api, namespace, "rot").get("status") or {}
        ready = {c["type"]: c for c in st.get("conditions") or []}.get("Ready")
        if st.get("phase") and ready:
            seen.setdefault(st["phase"], set()).add(ready["message"])
        return st.get("phase") in ("Completed", "Aborted", "Failed")

    with AcceptanceWatch(api, namespace, alg) as watch:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "keyrotations", keyrotation("rot", alg))
        wait_for(finished, timeout=60, interval=0.05, what="rotation to finish")
    kr = get_kr(api, namespace, "rot")
    st = kr["status"]
    assert st["phase"] == "Completed", st
    # Ready says where the rotation is in each phase, not the first step's message throughout.
    for ph, messages in seen.items():
        if ph != "Completed":
            assert all(m.startswith(f"{ph}:") for m in messages), (ph, messages)
    assert len(seen) >= 3, seen
    # A finished rotation keeps no finalizer: it (and its namespace) can go without sigops.
    wait_for(lambda: not get_kr(api, namespace, "rot")["metadata"].get("finalizers"),
             timeout=15, what="the finalizer to be removed")
    assert watch.checks > 20 and watch.violations == []
    ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")["keyring.json"])
    states = {k["kid"]: k["state"] for k in ring["keys"]}
    assert states[st["newKeyId"]] == "active"
    assert states[st["previousKeyId"]] == "retired"
    assert ring["backend_accepts"] == [st["newKeyId"]] and ring["lock"] is None
    new = key_from_entry(next(k for k in ring["keys"] if k["kid"] == st["newKeyId"]))
    # The backend accepts only the new key now, and the agents sign with it.
    assert backend_fingerprints(api, namespace) == [new.fingerprint]
    assert agent_key_fingerprint(api, namespace, alg) == new.fingerprint
    assert st["newKeyFingerprint"] == new.fingerprint
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Guarded"]["reason"] == "NoPrometheus"
    # The pod template was bumped so pods roll; Deployment revisions record it.
    dep = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", namespace)
    assert "sigops.fractal-lba.io/keyring-revision" in dep.spec.template.metadata.annotations
    # Two rollouts, no more: accept both keys (Overlapping), accept only the new (Completed).
    # Promoting changes which key is primary, not what the backend accepts.
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    verify_history(api, op.operator_ns, kr)
    phases = [h["payload"]["phase"] for h in st["history"]]
    assert phases == ["Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"]
    material = [v for e in (old.to_entry(), new.to_entry())
                for k, v in e.items() if k in ("secret", "private_b64")]
    assert_no_key_material(api, namespace, "rot", material, op.logs())
    # The undo snapshot (kept in the operator's namespace) is gone once the rotation is complete.
    names = [s.metadata.name for s in client.CoreV1Api(api).list_namespaced_secret(namespace).items]
    assert not any(n.startswith("sigops-undo-") for n in names), names
    assert kr["metadata"]["uid"] not in undo_snapshots(api, op.operator_ns)


def test_dry_run_changes_nothing(api, namespace, operator_factory):
    make_backend(api, namespace, HMAC)
    dep_before = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend",
                                                                    namespace)
    agent_before = secret(api, namespace, "agent-key")
    operator_factory(rotation_settings(namespace))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "keyrotations", keyrotation("plan", HMAC, dryRun=True))
    wait_for(lambda: phase(api, namespace, "plan") == "Planned", timeout=30, what="a plan")
    st = get_kr(api, namespace, "plan")["status"]
    assert len(st["plan"]) >= 6 and "Staged" in st["plan"][0]
    dep_after = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", namespace)
    assert dep_after.metadata.generation == dep_before.metadata.generation
    assert dep_after.spec.template == dep_before.spec.template
    assert secret(api, namespace, "agent-key") == agent_before
    names = [s.metadata.name for s in client.CoreV1Api(api).list_namespaced_secret(namespace).items]
    assert "sigops-keyring-fractal-lba-backend" not in names


def test_bad_specs_are_refused_without_changes(cluster, api, namespace, operator_factory):
    make_backend(api, namespace, HMAC)
    operator_factory(settings={"min_overlap": "1h", "targets": [
        rotation_target(namespace), rotation_target(namespace, deployment="no-such-backend")]})
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                       keyrotation("short", HMAC, overlap="5m"))
    missing = keyrotation("missing", HMAC, overlap="2h")
    missing["spec"]["target"]["deployment"] = "no-such-backend"
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", missing)
    unknown = keyrotation("unknown", HMAC, overlap="2h")
    unknown["spec"]["target"]["deployment"] = "not-configured"
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", unknown)
    for name, reason in (("short", "InvalidSpec"), ("missing", "DeploymentNotFound"),
                         ("unknown", "TargetNotConfigured")):
        wait_for(lambda n=name: phase(api, namespace, n) == "Failed", timeout=30,
                 what=f"{name} to fail")
        st = get_kr(api, namespace, name)["status"]
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == reason and ready["status"] == "False"
    assert "floor" in get_kr(api, namespace, "short")["status"]["message"]
    names = [s.metadata.name for s in client.CoreV1Api(api).list_namespaced_secret(namespace).items]
    assert "sigops-keyring-fractal-lba-backend" not in names
    out = kubectl(cluster, "get", "kr", "-n", namespace).stdout
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["Failed"] * 3


def test_second_rotation_on_same_target_is_refused(api, namespace, operator_factory):
    make_backend(api, namespace, HMAC)
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                       keyrotation("first", HMAC, overlap="30s"))
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                       keyrotation("second", HMAC, overlap="30s"))
    operator_factory(rotation_settings(namespace))
    wait_for(lambda: phase(api, namespace, "second") == "Failed", timeout=30,
             what="the second rotation to be refused")
    st = get_kr(api, namespace, "second")["status"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "TargetBusy" and "first" in ready["message"]
    wait_for(lambda: phase(api, namespace, "first") == "Retiring", timeout=30,
             what="the first rotation to proceed")


def test_operator_killed_at_every_step_completes_once(api, namespace, operator_factory):
    old = make_backend(api, namespace, HMAC)
    op = operator_factory(rotation_settings(namespace))
    rng = random.Random(7)
    kills: list[str] = []
    with AcceptanceWatch(api, namespace, HMAC) as watch:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "keyrotations", keyrotation("crash", HMAC, overlap="4s"))
        kills += kill_on_each_new_phase(lambda: phase(api, namespace, "crash"), op, rng,
                                        until=("Completed", "Aborted", "Failed"), timeout=120)
    st = get_kr(api, namespace, "crash")["status"]
    assert st["phase"] == "Completed", (st.get("phase"), st.get("message"))
    assert len(kills) >= 4, kills
    assert watch.violations == []
    ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")["keyring.json"])
    # Exactly one new key was generated however often the operator died: nothing lost or doubled.
    assert sorted(k["state"] for k in ring["keys"]) == ["active", "retired"]
    assert any(k.get("secret") == old.to_entry()["secret"] for k in ring["keys"])
    phases = [h["payload"]["phase"] for h in st["history"]]
    for ph in ("Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"):
        assert phases.count(ph) == 1, phases
    verify_history(api, op.operator_ns, get_kr(api, namespace, "crash"))


def test_abort_and_delete_undo_every_change(api, namespace, operator_factory):
    original = make_backend(api, namespace, HMAC)
    fp0 = backend_fingerprints(api, namespace)
    agent0 = secret(api, namespace, "agent-key")
    operator_factory(rotation_settings(namespace))
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                       keyrotation("stop-me", HMAC, overlap="1h"))
    wait_for(lambda: phase(api, namespace, "stop-me") == "Retiring", 30, what="Retiring")
    assert secret(api, namespace, "agent-key") != agent0  # agents were switched
    co.patch_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", "stop-me",
                                      {"spec": {"abort": True}})
    wait_for(lambda: phase(api, namespace, "stop-me") == "Aborted", 30, what="Aborted")
    st = get_kr(api, namespace, "stop-me")["status"]
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["reason"] == \
        "AbortRequested"
    assert secret(api, namespace, "agent-key") == agent0
    assert backend_fingerprints(api, namespace) == fp0 == [original.fingerprint]
    ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")["keyring.json"])
    assert ring["lock"] is None
    assert {k["state"] for k in ring["keys"] if k["kid"] == st["newKeyId"]} == {"retired"}
    # Deleting a rotation mid-way undoes it too (a new one, then deleted while Retiring).
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                       keyrotation("delete-me", HMAC, overlap="1h"))
    wait_for(lambda: phase(api, namespace, "delete-me") == "Retiring", 30, what="Retiring")
    co.delete_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", "delete-me")

    def gone() -> bool:
        try:
            get_kr(api, namespace, "delete-me")
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_for(gone, 30, what="the rotation deleted after its undo")
    assert secret(api, namespace, "agent-key") == agent0
    assert backend_fingerprints(api, namespace) == [original.fingerprint]


class SpikyExporter(StubServer):
    """A tiny exporter of flk_signature_err that the test can make spike."""

    def __init__(self) -> None:
        self.errors = 0.0
        self.spiking = False
        super().__init__(self._metrics, "text/plain; version=0.0.4")

    def _metrics(self) -> bytes:
        if self.spiking:
            self.errors += 500  # about 500 errors per 1 s scrape
        return f"# TYPE flk_signature_err counter\nflk_signature_err {self.errors}\n".encode()


def test_error_spike_aborts_and_undoes(api, namespace, operator_factory, tmp_path):
    from devtools.promstack import PromStack

    original = make_backend(api, namespace, HMAC)
    agent0 = secret(api, namespace, "agent-key")
    exporter = SpikyExporter()
    with PromStack(targets=[exporter.address], workdir=tmp_path / "prom") as stack:
        wait_for(stack.targets_up, 20, what="the exporter scraped")
        operator_factory(rotation_settings(namespace, targets=[rotation_target(
            namespace, allowErrorRateQuery=True)]), prometheus_url=stack.prometheus_url)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "keyrotations",
            keyrotation("guarded", HMAC, overlap="1h", abortOnErrorRate=5,
                        errorRateQuery="sum(rate(flk_signature_err[5s]))"))
        wait_for(lambda: phase(api, namespace, "guarded") == "Retiring", 30, what="Retiring")
        st = get_kr(api, namespace, "guarded")["status"]
        guarded = next(c for c in st["conditions"] if c["type"] == "Guarded")
        assert guarded["status"] == "True" and guarded["reason"] == "Watching"
        assert secret(api, namespace, "agent-key") != agent0
        exporter.spiking = True
        wait_for(lambda: phase(api, namespace, "guarded") == "Aborted", 40,
                 what="the spike to abort the rotation")
        exporter.spiking = False
    exporter.srv.shutdown()
    st = get_kr(api, namespace, "guarded")["status"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ErrorRateAboveThreshold" and "abortOnErrorRate" in ready["message"]
    assert secret(api, namespace, "agent-key") == agent0
    assert backend_fingerprints(api, namespace) == [original.fingerprint]
    assert st["history"][-1]["payload"]["phase"] == "Aborted"


def test_rotation_against_a_single_key_backend_is_refused_and_undone(
        cluster, api, namespace, operator_factory, tmp_path):
    """The upstream server reads PCS_HMAC_KEY only: during the overlap it accepts the old key
    and refuses the new one. The live probe must see it, switch no agent and undo the rest."""
    make_backend(api, namespace, HMAC)
    fp0 = backend_fingerprints(api, namespace)
    agent0 = secret(api, namespace, "agent-key")
    env0 = client.AppsV1Api(api).read_namespaced_deployment(
        "fractal-lba-backend", namespace).spec.template.spec.containers[0].env
    with LiveTestbed(cluster, namespace, tmp_path, "--single-key") as backend:
        # Grace a minute: the rollout is done at once here (no replicas), so the rotation must
        # stop at its first probe round, not after the grace.
        operator_factory({"overlap_probe_grace": "60s", "targets": [
            rotation_target(namespace, backendURL=backend.url)]})
        spec = keyrotation("one-key", HMAC, overlap="1h")
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "keyrotations", spec)
        seen: set[str] = set()

        def ended() -> bool:
            p = phase(api, namespace, "one-key")
            seen.add(str(p))
            return p in ("Completed", "Aborted", "Failed")

        wait_for(ended, 30, what="the rotation to stop")
    st = get_kr(api, namespace, "one-key")["status"]
    assert st["phase"] == "Aborted", st
    assert "Overlapping" in seen and not {"Verified", "Promoted"} & seen
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "BackendRejectsOverlap"
    assert "ignores PCS_HMAC_KEYS" in ready["message"]
    assert "new key 401" in ready["message"] and "old key 200" in ready["message"]
    assert "every ready pod of the new revision refuses the new key" in ready["message"]
    assert st["probeRounds"] == 1, st  # one round (two probes), not one per reconcile
    # Nothing changed for the agents; the backend's env and keys are as before.
    assert secret(api, namespace, "agent-key") == agent0
    assert backend_fingerprints(api, namespace) == fp0
    env = client.AppsV1Api(api).read_namespaced_deployment(
        "fractal-lba-backend", namespace).spec.template.spec.containers[0].env
    assert env == env0
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=one-key")
    assert any(e.reason == "RotationAborted" for e in events.items)


def ready_pod(api: Any, ns: str, name: str, labels: dict[str, str], ip: str) -> None:
    """A Pod object the API server reports Running and Ready at ``ip`` (no kubelet here: the
    status is written as a kubelet would)."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="backend", image="x")])))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})


def test_rotation_against_a_multi_key_backend_probes_its_pods_live(
        cluster, api, namespace, operator_factory, tmp_path):
    """No probeURL: the operator finds the backend's ready pods by the Deployment's selector
    and asks each one (here one pod whose address is the testbed backend's)."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    make_backend(api, namespace, HMAC)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    # One replica: its ReplicaSet makes the pod (no kubelet here: its status is then written
    # as a kubelet would, at the testbed backend's address).
    apps.patch_namespaced_deployment("fractal-lba-backend", namespace, {"spec": {
        "replicas": 1, "template": {"spec": {"containers": [{"name": "backend", "ports": [
            {"name": "http", "containerPort": port}]}]}}}})

    def own_pod() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=fractal-lba-backend")
        return next((p.metadata.name for p in pods.items
                     if any(o.kind == "ReplicaSet" for o in p.metadata.owner_references or [])),
                    None)

    name = wait_for(own_pod, 30, what="the ReplicaSet's pod")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})
    # A look-alike pod: it matches the selector, but another object controls it (so no
    # ReplicaSet adopts it). It must get no probe signed with the production keys.
    decoy = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="decoy")))
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="look-alike", labels={"app": "fractal-lba-backend"},
                                     owner_references=[client.V1OwnerReference(
                                         api_version="v1", kind="ConfigMap", name="decoy",
                                         uid=decoy.metadata.uid, controller=True)]),
        spec=client.V1PodSpec(containers=[client.V1Container(name="backend", image="x")])))
    core.patch_namespaced_pod_status("look-alike", namespace, {"status": {
        "phase": "Running", "podIP": "127.0.0.2", "podIPs": [{"ip": "127.0.0.2"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})
    hits: list[str] = []

    class Catch(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    catcher = ThreadingHTTPServer(("127.0.0.2", port), Catch)
    threading.Thread(target=catcher.serve_forever, daemon=True).start()
    # The pods never roll here (no kubelet): the live probes decide, not the rollout.
    operator_factory(rotation_settings(namespace, overlap_probe_grace="20s",
                                       wait_for_rollout=False))
    try:
        with LiveTestbed(cluster, namespace, tmp_path, "--listen", f"127.0.0.1:{port}"):
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "keyrotations", keyrotation("two-keys", HMAC, "2s"))
            wait_for(lambda: phase(api, namespace, "two-keys") in (
                "Completed", "Aborted", "Failed"), 60, what="the rotation to finish")
    finally:
        catcher.shutdown()
    st = get_kr(api, namespace, "two-keys")["status"]
    assert st["phase"] == "Completed", st
    verified = next(h["payload"] for h in st["history"] if h["payload"]["phase"] == "Verified")
    assert "live backend accepts both keys (1 endpoint)" in verified["step"], verified
    done = st["history"][-1]["payload"]["step"]
    assert "every live endpoint refuses the old key and accepts the new one (1 endpoint)" in \
        done, done
    assert hits == []


def test_json_logs_name_the_rotation(api, namespace, operator_factory):
    """``--log-format json`` (SIGOPS_LOG_FORMAT): every line of the operator's stderr is one
    JSON object, and a rotation's step lines carry its name as a field."""
    make_backend(api, namespace, HMAC)
    op = operator_factory(rotation_settings(namespace),
                          extra_env={"SIGOPS_LOG_FORMAT": "json"})
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "keyrotations", keyrotation("logged", HMAC, dryRun=True))
    wait_for(lambda: phase(api, namespace, "logged") == "Planned", timeout=30, what="a plan")

    def step_line() -> dict[str, Any] | None:
        docs = [json.loads(x) for x in op.logs().splitlines() if x.startswith("{")]
        return next((d for d in docs if d.get("rotation") == f"{namespace}/logged"), None)

    doc = wait_for(step_line, 10, what="the rotation's log line")
    assert doc["phase"] == "Planned" and doc["level"] == "INFO" and doc["time"].endswith("Z")
    assert doc["target"] == f"{namespace}/fractal-lba-backend"
    # Every line the operator wrote (the harness marks each start with "==== start N ====").
    lines = [x for x in op.logs().splitlines() if x.strip() and not x.startswith("====")]
    assert lines and all(x.startswith("{") and json.loads(x) for x in lines), lines[:3]
