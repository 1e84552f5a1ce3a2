"""KeyRotation against a backend whose pods run: the operator installed by the chart, the
testbed backend as 2 replicas of the image reading its key from its environment (as the real
backend does), agents submitting through the backend's Service all along.

What an SRE needs from a rotation, checked on real rollouts: no legitimate PCS refused, never
zero backends available, every pod accepting the new key and refusing the old one at the end;
a backend whose new pods never become Ready leaves the agents alone and the old key accepted;
the operator pod deleted mid-rotation and the new one finishing it exactly once."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sigops.core.keys import HMAC, Key, generate_key, key_from_entry
from sigops.testbed.manifests import backend_service, literal_env, running_backend, secret_env
from tests.node.support import (
    OPERATOR_NS,
    RELEASE,
    ensure_namespace,
    get_json,
    helm,
    operator_pods,
    pod_ready,
    wait_operator_ready,
)
from tests.support import REPO, kubectl, pcs, wait_for

GROUP = "sigops.fractal-lba.io"
NAMESPACES = ("node-rotation", "node-crashloop", "node-restart", "node-onekey", "node-stall")
PROFILES = {"node-onekey": "go"}  # the real-server shape: agents and backend sign the go form
BACKEND = "fractal-lba-backend"
IMAGE = "sigops:0.1.0"


@pytest.fixture(scope="module")
def operator(node: object) -> Iterator[object]:
    """sigops installed by the chart, watching the namespaces of this module's backends."""
    for ns in NAMESPACES:
        ensure_namespace(node, ns)
    targets = [{"namespace": ns, "deployment": BACKEND, "default": i == 0,
                "agentSecret": {"name": "agent-key"}, "profile": PROFILES.get(ns, "python")}
               for i, ns in enumerate(NAMESPACES)]
    helm(node, "upgrade", "--install", RELEASE, "charts/sigops", "-n", OPERATOR_NS,
         "--create-namespace", "--wait", "--timeout", "3m",
         "--set-json", f"targets={json.dumps(targets)}",
         "--set", "keyRotation.minOverlap=1s", "--set", "keyRotation.reconcileInterval=1",
         "--set", "keyRotation.overlapProbeGrace=30s",
         "--set", "remediation.rolloutTimeout=40s", "--set", "logLevel=DEBUG")
    wait_operator_ready(node)
    yield node
    helm(node, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", check=False)
    for ns in NAMESPACES:
        kubectl(node, "delete", "namespace", ns, "--wait=false", check=False)


def apply(node: object, obj: dict[str, Any], ns: str) -> None:
    # Server-side: a client-side apply would copy Secrets' values into an annotation.
    r = subprocess.run([str(REPO / ".dev" / "bin" / "kubectl"), "apply", "--server-side",
                        "--force-conflicts", "-n", ns, "-f", "-"],
                       input=json.dumps(obj), env=node.env,  # type: ignore[attr-defined]
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def backend(node: object, ns: str, key: Key, crash_on_overlap: bool = False,
            crash_on_single: bool = False, args: tuple[str, ...] = ()) -> str:
    """Secrets for the backend and the agents, the backend Deployment (2 replicas of the image,
    key from the Secret through env) and its Service. Returns the Service's ClusterIP.

    ``crash_on_overlap``: the backend's new version exits at start whenever it is given more
    than one key (a stand-in for any release that cannot start with the new config);
    ``crash_on_single``: it exits at start when given exactly one key in PCS_HMAC_KEYS (the
    retirement's config), so the final rollout stalls with the overlap pods still serving."""
    secret = key.to_entry()["secret"]
    for name in ("backend-key", "agent-key"):
        apply(node, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                     "stringData": {"PCS_HMAC_KEY": secret}}, ns)
    dep = running_backend([*literal_env(PCS_SIGN_ALG="hmac"),
                           secret_env("PCS_HMAC_KEY", "backend-key")], IMAGE, args=args)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "Never"
    if crash_on_overlap:
        container["command"] = ["/bin/sh", "-c",
                                'if [ -n "$PCS_HMAC_KEYS" ]; then echo "cannot start" >&2; '
                                'exit 1; fi; exec sigops "$@"', "sh"]
    if crash_on_single:
        container["command"] = CRASH_ON_SINGLE
    apply(node, dep, ns)
    apply(node, backend_service(), ns)
    wait_for(lambda: (get_json(node, "deployment", "-n", ns, BACKEND).get("status") or {})
             .get("availableReplicas") == 2, timeout=120, what="2 available backend pods")
    ip = str(get_json(node, "service", "-n", ns, BACKEND)["spec"]["clusterIP"])
    wait_for(lambda: _healthy(f"http://{ip}:8080"), timeout=30,
             what="the Service to reach the backend (kube-proxy rules)")
    return ip


CRASH_ON_SINGLE = ["/bin/sh", "-c", 'case "$PCS_HMAC_KEYS" in "" | *,*) ;; *) '
                   'echo "cannot start with one key" >&2; exit 1;; esac; exec sigops "$@"', "sh"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def keyrotation(name: str, overlap: str = "8s") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "KeyRotation",
            "metadata": {"name": name},
            "spec": {"target": {"deployment": BACKEND},
                     "algorithm": HMAC, "overlap": overlap}}


def kr_status(node: object, ns: str, name: str) -> dict[str, Any]:
    return get_json(node, "keyrotation", "-n", ns, name).get("status") or {}


def post_pcs(url: str, key: Key, i: int) -> int:
    body = pcs(key, 10_000 + i + int(time.time() * 1000) % 1_000_000 * 100)
    req = urllib.request.Request(f"{url}/v1/pcs/submit", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def backend_pods(node: object, ns: str) -> list[dict[str, Any]]:
    pods = get_json(node, "pods", "-n", ns, "-l", f"app={BACKEND}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


class Agents:
    """`sigops testbed agents` through the Service, reading the agents' Secret as it changes
    (the way agents get their key), stopped with SIGTERM; its report counts answers."""

    def __init__(self, node: object, ns: str, cluster_ip: str, profile: str = "python") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sigops.cli", "testbed", "agents", "--profile", profile,
             "--url", f"http://{cluster_ip}:8080", "--secret", f"{ns}/agent-key/PCS_HMAC_KEY",
             "--kubeconfig", str(node.kubeconfig), "--rate", "20", "--workers", "4",  # type: ignore[attr-defined]
             "--duration", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node.env)  # type: ignore[attr-defined]

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        assert out.strip(), err
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report


class Availability(threading.Thread):
    """The fewest available backend replicas seen, polled every 0.2 s."""

    def __init__(self, node: object, ns: str) -> None:
        super().__init__(daemon=True)
        self.node, self.ns = node, ns
        self.lowest = 99
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            st = get_json(self.node, "deployment", "-n", self.ns, BACKEND).get("status") or {}
            self.lowest = min(self.lowest, int(st.get("availableReplicas") or 0))
            self.samples += 1
            self.done.wait(0.2)


def new_key_of(node: object, ns: str, status: dict[str, Any]) -> Key:
    data = get_json(node, "secret", "-n", ns, f"sigops-keyring-{BACKEND}")["data"]
    ring = json.loads(base64.b64decode(data["keyring.json"]))
    entry = next(k for k in ring["keys"] if k["kid"] == status["newKeyId"])
    return key_from_entry(entry)


def test_rotation_on_running_pods_refuses_no_legitimate_pcs(operator: object) -> None:
    node, ns = operator, "node-rotation"
    old = generate_key(HMAC, kid="original", state="active")
    ip = backend(node, ns, old)
    assert post_pcs(f"http://{ip}:8080", old, 0) == 200
    agents = Agents(node, ns, ip)
    watch = Availability(node, ns)
    watch.start()
    try:
        time.sleep(3)  # traffic before the rotation starts
        apply(node, keyrotation("rot"), ns)
        wait_for(lambda: kr_status(node, ns, "rot").get("phase") in
                 ("Completed", "Aborted", "Failed"), timeout=240, interval=1,
                 what="the rotation to finish")
        time.sleep(3)  # traffic after it
    finally:
        report = agents.stop()
        watch.done.set()
        watch.join()
    st = kr_status(node, ns, "rot")
    assert st["phase"] == "Completed", st
    # Every PCS the agents signed with the key their Secret held was accepted: no 401, and
    # the drained pods cut no request off.
    assert report["sent"] > 100, report
    assert set(report["by_status"]) == {"200"}, report
    assert watch.samples > 50 and watch.lowest >= 2, (watch.lowest, watch.samples)
    # Real rollouts happened (overlap, then new key only) and every pod now runs the result.
    dep = get_json(node, "deployment", "-n", ns, BACKEND)
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    new = new_key_of(node, ns, st)
    pods = backend_pods(node, ns)
    assert len(pods) == 2 and all(pod_ready(p) for p in pods)
    for p in pods:
        url = f"http://{p['status']['podIP']}:8080"
        assert post_pcs(url, new, 1) == 200, p["metadata"]["name"]
        assert post_pcs(url, old, 2) == 401, p["metadata"]["name"]
    # The step before promotion proved both keys on the running pods.
    verified = next(h for h in st["history"] if h["payload"]["phase"] == "Verified")
    assert "live backend accepts both keys (2 endpoints)" in verified["payload"]["step"]


def test_backend_that_cannot_start_with_the_overlap_leaves_agents_alone(operator: object
                                                                       ) -> None:
    node, ns = operator, "node-crashloop"
    old = generate_key(HMAC, kid="original", state="active")
    ip = backend(node, ns, old, crash_on_overlap=True)
    apply(node, keyrotation("rot"), ns)
    wait_for(lambda: kr_status(node, ns, "rot").get("phase") in
             ("Completed", "Aborted", "Failed"), timeout=180, interval=1,
             what="the rotation to give up")
    st = kr_status(node, ns, "rot")
    assert st["phase"] == "Aborted", st
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["reason"] == "RolloutTimeout" and "undone" in ready["message"], ready
    assert not any(h["payload"]["phase"] == "Promoted" for h in st["history"])
    # The agents kept their key, and the backend (its old pods never left) still accepts it.
    agent = get_json(node, "secret", "-n", ns, "agent-key")["data"]["PCS_HMAC_KEY"]
    assert base64.b64decode(agent).decode() == old.to_entry()["secret"]
    wait_for(lambda: (get_json(node, "deployment", "-n", ns, BACKEND).get("status") or {})
             .get("updatedReplicas") == 2 and len(backend_pods(node, ns)) == 2,
             timeout=120, what="the backend back on its old template")
    assert post_pcs(f"http://{ip}:8080", old, 3) == 200
    for p in backend_pods(node, ns):
        assert post_pcs(f"http://{p['status']['podIP']}:8080", old, 4) == 200


def test_operator_pod_deleted_mid_rotation_finishes_once(operator: object) -> None:
    node, ns = operator, "node-restart"
    old = generate_key(HMAC, kid="original", state="active")
    ip = backend(node, ns, old)
    agents = Agents(node, ns, ip)
    try:
        apply(node, keyrotation("rot", overlap="15s"), ns)
        wait_for(lambda: kr_status(node, ns, "rot").get("phase") in ("Verified", "Promoted",
                                                                     "Retiring"),
                 timeout=180, interval=0.3, what="the rotation past its overlap check")
        first = operator_pods(node)[0]["metadata"]["name"]
        kubectl(node, "delete", "pod", "-n", OPERATOR_NS, first, "--wait=false")
        wait_for(lambda: any(p["metadata"]["name"] != first and pod_ready(p)
                             for p in operator_pods(node)),
                 timeout=120, what="a new operator pod")
        wait_for(lambda: kr_status(node, ns, "rot").get("phase") in
                 ("Completed", "Aborted", "Failed"), timeout=180, interval=1,
                 what="the rotation to finish")
    finally:
        report = agents.stop()
    st = kr_status(node, ns, "rot")
    assert st["phase"] == "Completed", st
    phases = [h["payload"]["phase"] for h in st["history"]]
    assert phases == ["Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"]
    assert "401" not in report["by_status"], report


def rollout_done_at(node: object, ns: str, revision: int) -> float | None:
    """time.monotonic() now if the Deployment's rollout of ``revision`` is done, else None."""
    dep = get_json(node, "deployment", "-n", ns, BACKEND)
    st = dep.get("status") or {}
    rev = int(dep["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
    done = (rev >= revision and st.get("observedGeneration") == dep["metadata"]["generation"]
            and st.get("updatedReplicas") == st.get("replicas") == st.get("availableReplicas")
            == dep["spec"]["replicas"])
    return time.monotonic() if done else None


def test_single_key_backend_in_the_go_form_stops_the_rotation_at_once(operator: object
                                                                     ) -> None:
    """The real upstream server's shape (reads PCS_HMAC_KEY only; agents sign the go form; the
    target is configured with profile go): the rotation's probes are in the go form, so the
    backend accepts the old key and refuses the new one, and the rotation stops as
    BackendRejectsOverlap within 30 s of the new revision being ready, agents untouched."""
    node, ns = operator, "node-onekey"
    old = generate_key(HMAC, kid="original", state="active")
    ip = backend(node, ns, old, args=("--single-key", "--profile", "go"))
    agent0 = get_json(node, "secret", "-n", ns, "agent-key")["data"]
    agents = Agents(node, ns, ip, profile="go")
    ready_at = stopped_at = None
    try:
        time.sleep(3)
        apply(node, keyrotation("rot"), ns)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and stopped_at is None:
            ready_at = ready_at or rollout_done_at(node, ns, 2)
            if kr_status(node, ns, "rot").get("phase") in ("Completed", "Aborted", "Failed"):
                stopped_at = time.monotonic()
            time.sleep(0.5)
        time.sleep(3)
    finally:
        report = agents.stop()
    st = kr_status(node, ns, "rot")
    assert st["phase"] == "Aborted", st
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["reason"] == "BackendRejectsOverlap", ready
    assert "ignores PCS_HMAC_KEYS" in ready["message"], ready
    assert "old key 200, new key 401" in ready["message"], ready
    assert ready_at is not None and stopped_at is not None
    assert stopped_at - ready_at <= 30, (stopped_at - ready_at, st)
    # sigops' own refused probes: one round (a PCS per key per pod), not one per reconcile.
    assert st["probeRounds"] == 1, st
    # No legitimate PCS was refused; the agents' Secret never changed.
    assert report["sent"] > 100 and set(report["by_status"]) == {"200"}, report
    assert get_json(node, "secret", "-n", ns, "agent-key")["data"] == agent0


def test_completed_only_once_every_pod_refuses_the_old_key(operator: object) -> None:
    """The final rollout stalls (the new pods cannot start with one key): the overlap pods keep
    serving and would accept the retired key, so the phase stays Retiring and says why; once
    the Deployment is repaired, the rotation completes and every pod refuses the old key."""
    node, ns = operator, "node-stall"
    old = generate_key(HMAC, kid="original", state="active")
    backend(node, ns, old, crash_on_single=True)
    apply(node, keyrotation("rot"), ns)

    def progressing() -> dict[str, Any]:
        st = kr_status(node, ns, "rot")
        return {c["type"]: c for c in st.get("conditions") or []}.get("Progressing") or {}

    wait_for(lambda: progressing().get("reason") == "RolloutStalled", timeout=240, interval=1,
             what="the stalled final rollout to be named")
    st = kr_status(node, ns, "rot")
    assert st["phase"] == "Retiring" and st.get("retiredAt"), st
    assert "old pods may still accept the retired key" in progressing()["message"]
    # Why Completed would be a lie now: an overlap pod still accepts the old key.
    answers = [post_pcs(f"http://{p['status']['podIP']}:8080", old, 5)
               for p in backend_pods(node, ns) if pod_ready(p)]
    assert 200 in answers, answers
    # Repair the backend; the rollout finishes and the rotation proves the retirement live.
    kubectl(node, "patch", "deployment", BACKEND, "-n", ns, "--type", "json", "-p", json.dumps(
        [{"op": "remove", "path": "/spec/template/spec/containers/0/command"}]))
    wait_for(lambda: kr_status(node, ns, "rot").get("phase") in
             ("Completed", "Aborted", "Failed"), timeout=240, interval=1,
             what="the rotation to complete after the repair")
    st = kr_status(node, ns, "rot")
    assert st["phase"] == "Completed", st
    done = next(h for h in st["history"] if h["payload"]["phase"] == "Completed")
    assert "every live endpoint refuses the old key and accepts the new one (2 endpoints)" in \
        done["payload"]["step"], done
    new = new_key_of(node, ns, st)
    for p in backend_pods(node, ns):
        url = f"http://{p['status']['podIP']}:8080"
        assert post_pcs(url, old, 6) == 401 and post_pcs(url, new, 7) == 200


def test_hand_the_backend_back_after_uninstall(operator: object) -> None:
    """runbooks/key-rotation.md section 7, run as written (namespace substituted) after the
    rotation of the first test: the backend reads the user's own Secret again, with the key
    the rotation left, and keeps accepting it. Last in this module: it uninstalls sigops."""
    import re

    node, ns = operator, "node-rotation"
    st = kr_status(node, ns, "rot")
    assert st.get("phase") == "Completed", "needs the completed rotation of the first test"
    new = new_key_of(node, ns, st)
    helm(node, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait")
    text = (REPO / "runbooks" / "key-rotation.md").read_text()
    section = text[text.index("## 7. Handing the backend back"):text.index("## 8. ")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("ns=fractal-lba", f"ns={ns}")
    r = subprocess.run(["bash", "-c", script], env=node.env,  # type: ignore[attr-defined]
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert new.to_entry()["secret"] not in r.stdout + r.stderr  # nothing printed
    dep = get_json(node, "deployment", "-n", ns, BACKEND)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
            for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
            if "valueFrom" in e}
    assert refs == {"PCS_HMAC_KEY": "backend-key", "PCS_HMAC_KEYS": "backend-key"}, refs
    own_secret = get_json(node, "secret", "-n", ns, "backend-key")
    # No copy of the key in an annotation (a client-side apply would leave one).
    assert new.to_entry()["secret"] not in json.dumps(own_secret["metadata"])
    own = own_secret["data"]
    assert "keyring.json" not in own
    assert base64.b64decode(own["PCS_HMAC_KEY"]).decode() == new.to_entry()["secret"]
    wait_for(lambda: len(backend_pods(node, ns)) == 2
             and all(pod_ready(p) for p in backend_pods(node, ns)),
             timeout=120, what="the backend rolled onto its own Secret")
    for p in backend_pods(node, ns):
        assert post_pcs(f"http://{p['status']['podIP']}:8080", new, 5) == 200
