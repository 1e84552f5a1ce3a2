"""The testbed backend reads its config from its Deployment and Secrets on a real API server.

Like a pod: a Secret change alone does not change the keys in use; a pod-template change (a
rollout) does, with the Secret values of that moment.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.core.pcs import expected_pcs_id, sign_pcs
from sigops.kube.api import Kube
from sigops.testbed.agents import AgentPlan, AgentSimulator
from sigops.testbed.backend import Backend, BackendServer
from sigops.testbed.keysource import SecretKey
from sigops.testbed.reload import DeploymentWatcher
from tests.support import wait_for

NAME = "fractal-lba-backend"


def material(k: Key) -> str:
    """What the backend's env holds for a key: the HMAC string or the Ed25519 public key."""
    return (k.secret or b"").decode() if k.alg == HMAC else base64.b64encode(
        k.public or b"").decode()


def seed_b64(k: Key) -> str:
    """What an agent's Secret holds: the HMAC string or the Ed25519 private seed."""
    return (k.secret or b"").decode() if k.alg == HMAC else base64.b64encode(
        k.private_seed or b"").decode()


_n = iter(range(1_000_000))


def pcs(key: Key) -> dict[str, Any]:
    n = next(_n)
    merkle = f"{n:064x}"
    body = {"pcs_id": expected_pcs_id(merkle, n, "shard-k8s"), "schema": "fractal-lba-kakeya",
            "version": "0.1", "shard_id": "shard-k8s", "epoch": n,
            "sent_at": datetime.now(UTC).isoformat(), "merkle_root": merkle,
            "D_hat": 1.41, "coh_star": 0.73, "r": 0.87, "budget": 0.42}
    return sign_pcs(body, key)


def submit(url: str, key: Key) -> int:
    req = urllib.request.Request(f"{url}/v1/pcs/submit", data=json.dumps(pcs(key)).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def env_for(alg: str, ref_key: str = "current", multi: bool = False) -> list[dict[str, Any]]:
    var = {(HMAC, False): "PCS_HMAC_KEY", (HMAC, True): "PCS_HMAC_KEYS",
           (ED25519, False): "PCS_ED25519_PUB_B64", (ED25519, True): "PCS_ED25519_PUBS_B64"}
    return [{"name": "PCS_SIGN_ALG", "value": "hmac" if alg == HMAC else "ed25519"},
            {"name": var[(alg, multi)],
             "valueFrom": {"secretKeyRef": {"name": "backend-keys", "key": ref_key}}},
            {"name": "TOKEN_RATE", "value": "0"}]


def deployment(env: list[dict[str, Any]]) -> dict[str, Any]:
    labels = {"app": NAME}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "backend", "image": "fractal-lba/backend:test", "env": env}]}}}}


class Env:
    """The Deployment, its Secret and a backend watching them."""

    def __init__(self, api: Any, ns: str, kubeconfig: str) -> None:
        self.core, self.apps, self.ns = client.CoreV1Api(api), client.AppsV1Api(api), ns
        self.kubeconfig = kubeconfig
        self.server: BackendServer | None = None

    def secret(self, name: str, data: dict[str, str]) -> None:
        body = {"metadata": {"name": name}, "stringData": data}
        try:
            self.core.create_namespaced_secret(self.ns, body)
        except client.ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_namespaced_secret(name, self.ns, body)

    def deploy(self, env: list[dict[str, Any]]) -> None:
        self.apps.create_namespaced_deployment(self.ns, deployment(env))

    def set_env(self, env: list[dict[str, Any]]) -> None:
        self.apps.patch_namespaced_deployment(NAME, self.ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "backend", "env": env}]}}}})

    def rollout(self) -> None:
        """What `kubectl rollout restart` (and the operator) do: bump a template annotation."""
        self.apps.patch_namespaced_deployment(NAME, self.ns, {"spec": {"template": {"metadata": {
            "annotations": {"kubectl.kubernetes.io/restartedAt": str(time.time())}}}}})

    def start_backend(self) -> BackendServer:
        backend = Backend()
        watcher = DeploymentWatcher(Kube.connect(self.kubeconfig), self.ns, NAME, backend.apply,
                                    container="backend", interval=0.2,
                                    on_error=backend.report_error)
        self.server = BackendServer(backend, watcher=watcher).start()
        return self.server

    @property
    def backend(self) -> Backend:
        assert self.server is not None
        return self.server.backend

    def fingerprints(self) -> list[str]:
        cfg = self.backend.current_config()
        return [] if cfg is None else list(cfg["fingerprints"])

    def generation(self) -> int:
        cfg = self.backend.current_config()
        return 0 if cfg is None else int(cfg["generation"])


@pytest.fixture
def k8s(cluster: Any, api: Any, namespace: str) -> Iterator[Env]:
    e = Env(api, namespace, str(cluster.kubeconfig))
    yield e
    if e.server is not None:
        e.server.stop()


@pytest.mark.parametrize("alg", [HMAC, ED25519])
def test_secret_change_alone_keeps_keys_template_change_reloads(k8s: Env, alg: str) -> None:
    a, b = generate_key(alg, "a", "active"), generate_key(alg, "b", "active")
    k8s.secret("backend-keys", {"current": material(a)})
    k8s.deploy(env_for(alg))
    srv = k8s.start_backend()
    assert k8s.fingerprints() == [a.fingerprint] and k8s.generation() == 1
    assert submit(srv.url, a) == 200

    # The Secret is rotated in place: running pods keep the env they started with.
    k8s.secret("backend-keys", {"current": material(b)})
    time.sleep(1.5)  # several polls
    assert k8s.fingerprints() == [a.fingerprint] and k8s.generation() == 1
    assert (submit(srv.url, a), submit(srv.url, b)) == (200, 401)

    # A rollout: new pods read the Secret as it is now.
    k8s.rollout()
    wait_for(lambda: k8s.generation() == 2, 10, what="reload after the template change")
    assert k8s.fingerprints() == [b.fingerprint]
    assert (submit(srv.url, a), submit(srv.url, b)) == (401, 200)
    cfg = k8s.backend.current_config() or {}
    assert cfg["source"] == f"deployment {k8s.ns}/{NAME}" and cfg["alg"] == alg

    # The overlap of a rotation: the multi-key variable, from the Secret, after a rollout.
    k8s.secret("backend-keys", {"accepted": f"{material(a)},{material(b)}"})
    k8s.set_env(env_for(alg, "accepted", multi=True))
    wait_for(lambda: k8s.generation() == 3, 10, what="reload with both keys")
    assert sorted(k8s.fingerprints()) == sorted([a.fingerprint, b.fingerprint])
    assert (submit(srv.url, a), submit(srv.url, b)) == (200, 200)


def test_a_rollout_with_a_missing_secret_keeps_the_old_config(k8s: Env) -> None:
    a, b = generate_key(HMAC, "a", "active"), generate_key(HMAC, "b", "active")
    k8s.secret("backend-keys", {"current": material(a)})
    k8s.deploy(env_for(HMAC))
    srv = k8s.start_backend()
    broken = [e if e["name"] != "PCS_HMAC_KEY" else {"name": "PCS_HMAC_KEY", "valueFrom": {
        "secretKeyRef": {"name": "new-keys", "key": "current"}}} for e in env_for(HMAC)]
    k8s.set_env(broken)
    wait_for(lambda: "new-keys" in (k8s.backend.config_error or ""), 10,
             what="the CreateContainerConfigError of the new template")
    assert k8s.fingerprints() == [a.fingerprint] and submit(srv.url, a) == 200
    k8s.secret("new-keys", {"current": material(b)})  # the missing Secret appears
    wait_for(lambda: k8s.fingerprints() == [b.fingerprint], 10, what="the retried rollout")
    assert k8s.backend.config_error is None and submit(srv.url, b) == 200


def test_agents_pick_up_a_promotion_from_their_secret(k8s: Env) -> None:
    a, b = generate_key(HMAC, "a", "active"), generate_key(HMAC, "b", "active")
    k8s.secret("backend-keys", {"accepted": f"{material(a)},{material(b)}"})
    k8s.secret("agent-key", {"key": seed_b64(a)})
    k8s.deploy(env_for(HMAC, "accepted", multi=True))
    srv = k8s.start_backend()
    kube = Kube.connect(k8s.kubeconfig)
    source = SecretKey(kube.secret_value, k8s.ns, "agent-key", "key", HMAC, refresh=1.0)
    sim = AgentSimulator(AgentPlan(srv.url, rate=20, duration=4.0), source)
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(sim.run()), daemon=True)
    t.start()
    time.sleep(1.2)
    k8s.secret("agent-key", {"key": seed_b64(b)})  # the rotation's promotion step
    t.join(timeout=15)
    assert not t.is_alive()
    assert sorted(result["key_fingerprints"]) == sorted([a.fingerprint, b.fingerprint])
    assert result["by_status"] == {"200": result["sent"]} and source.changes == 1


def test_cli_backend_from_a_deployment(cluster: Any, k8s: Env) -> None:
    """`sigops testbed backend --deployment ...` as a process: URL on stdout, no key in logs."""
    import os
    import signal
    import subprocess
    import sys

    a = generate_key(HMAC, "a", "active")
    k8s.secret("backend-keys", {"current": material(a)})
    k8s.deploy(env_for(HMAC))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigops.cli", "testbed", "backend", "--listen", "127.0.0.1:0",
         "--kubeconfig", str(cluster.kubeconfig), "--namespace", k8s.ns, "--deployment", NAME,
         "--container", "backend", "--poll-interval", "0.2", "--max-skew", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PCS_")})
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started["config"]["fingerprints"] == [a.fingerprint]
        assert submit(started["url"], a) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert a.fingerprint in err and material(a) not in err
