"""Helpers the test tiers share: paths, waiting, the operator process, tools, and the
backend / KeyRotation / incident builders of the cluster tests. Fixtures stay in conftest.py."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools.stub import StubServer
from sigops.backend.config import EnvNames, backend_config, find_container, resolve_env
from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.core.pcs import expected_pcs_id, sign_pcs
from sigops.core.signals import load_pubkeys, verify_chain, verify_signal
from sigops.testbed.manifests import backend_deployment, literal_env, secret_env

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".dev" / "bin"
SHARED = REPO.parent / "shared"


def kubectl(cluster: object, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kubectl"), *args], env=cluster.env,  # type: ignore[attr-defined]
                          capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(fn, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``fn`` until it returns a truthy value; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def require_tool(name: str) -> str:
    """The path of a tool ``make tools`` provides (.dev/bin first, then PATH). Missing: the
    test is skipped, which CI turns into a failure (see pytest_runtest_makereport)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} missing: run `make tools`")
    return found


class BackgroundCheck:
    """Runs :meth:`check` over and over in a thread while a ``with`` block runs: ``checks``
    counts the rounds that ran, ``violations`` collects what a round found (``check`` returns
    None when all is well). A round that raises (a read racing a write) is counted in
    ``errors`` and tried again. Leaving the block fails when no round ran at all, so "no
    violations" never passes on a check that never looked."""

    interval = 0.05

    def __init__(self) -> None:
        self.checks, self.violations = 0, []  # type: ignore[var-annotated]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def check(self) -> object:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._t.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=10)
        if exc_type is None and self.checks == 0:
            last = repr(self.errors[-1]) if self.errors else "none ran"
            raise AssertionError(f"{type(self).__name__}: no check completed ({last})")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = self.check()
            except Exception as e:  # noqa: BLE001 - a read racing a write; try again
                self.errors.append(e)
                time.sleep(self.interval)
                continue
            self.checks += 1
            if found is not None:
                self.violations.append(found)
            time.sleep(self.interval)


def kill_on_each_new_phase(phase, op, rng, until: tuple[str, ...],  # type: ignore[no-untyped-def]
                           timeout: float, jitter: float = 0.4, poll: float = 0.05,
                           skip: tuple[object, ...] = ()) -> list[str]:
    """SIGKILL and restart the operator ``op`` once in each phase ``phase()`` reports (a random
    moment after it appears, to land inside the next step now and then) until one of
    ``until``; the phases it was killed in."""
    kills: list[str] = []
    seen: set[object] = set(skip)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = phase()
        if p in until:
            break
        if p not in seen:
            seen.add(p)
            time.sleep(rng.uniform(0.0, jitter))
            op.kill()
            kills.append(str(p))
            op.start()
        time.sleep(poll)
    return kills


class OperatorProcess:
    """`sigops run` as a real process (so tests can SIGKILL and restart it)."""

    def __init__(self, cluster: object, workdir: Path, settings: dict, prometheus_url: str | None,
                 extra_env: dict[str, str] | None = None) -> None:
        import yaml

        from devtools.cluster import free_port

        self.cluster, self.workdir = cluster, workdir
        self.config = workdir / "sigops.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.metrics_port, self.alerts_port = free_port(), free_port()
        self.operator_ns = f"sigops-{uuid.uuid4().hex[:6]}"
        self.prometheus_url = prometheus_url
        # A stable identity, as a pod's name is: a copy restarted after a crash (a container
        # restart) takes its leader Lease back at once; another copy has another name.
        self.extra_env = {"POD_NAME": f"sigops-test-{uuid.uuid4().hex[:8]}",
                          **(extra_env or {})}
        self.log = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> OperatorProcess:
        argv = [str(REPO / ".venv" / "bin" / "sigops"), "run", "--config", str(self.config),
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                "--alerts-listen", f"127.0.0.1:{self.alerts_port}",
                "--operator-namespace", self.operator_ns]
        if self.prometheus_url:
            argv += ["--prometheus-url", self.prometheus_url]
        env = {**self.cluster.env, **self.extra_env}  # type: ignore[attr-defined]
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n==== start {self.starts} ====\n".encode())
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(self.healthy, timeout=30, what="operator /healthz")
        return self

    def healthy(self) -> bool:
        import urllib.request

        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz",
                                        timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as in a crash or an OOM kill."""
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
def make_backend(api: Any, ns: str, alg: str) -> Key:
    """A backend Deployment (replicas 0: no kubelet here) whose key comes from a Secret, and
    the agents' Secret with the same key. Returns the key."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    key = generate_key(alg, kid="original", state="active")
    entry = key.to_entry()
    if alg == HMAC:
        backend_data = {"PCS_HMAC_KEY": entry["secret"]}
        agent_data = {"PCS_HMAC_KEY": entry["secret"]}
        env = [*literal_env(PCS_SIGN_ALG="hmac"), secret_env("PCS_HMAC_KEY", "backend-key")]
    else:
        backend_data = {"PCS_ED25519_PUB_B64": entry["public_b64"]}
        agent_data = {"PCS_ED25519_PRIV_B64": entry["private_b64"]}
        env = [*literal_env(PCS_SIGN_ALG="ed25519"),
               secret_env("PCS_ED25519_PUB_B64", "backend-key")]
    env += literal_env(TOKEN_RATE="100")
    for name, data in (("backend-key", backend_data), ("agent-key", agent_data)):
        core.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name=name), string_data=data))
    apps.create_namespaced_deployment(ns, backend_deployment(env))
    return key


def keyrotation(name: str, alg: str, overlap: str = "3s", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "KeyRotation",
            "metadata": {"name": name},
            "spec": {"target": {"deployment": "fractal-lba-backend"},
                     "algorithm": alg, "overlap": overlap, **spec}}


def grant_user(api: Any, ns: str, user: str, name: str,
               rules: list[client.V1PolicyRule]) -> None:
    """A Role ``name`` with ``rules`` in ``ns``, bound to the user ``user`` (for
    ``kubectl --as``): her rights there, and nothing else."""
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(ns, client.V1Role(metadata=client.V1ObjectMeta(name=name),
                                                  rules=rules))
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name=name),
        subjects=[client.RbacV1Subject(kind="User", name=user,
                                       api_group="rbac.authorization.k8s.io")]))


def undo_snapshots(api: Any, ns: str) -> dict[str, str]:
    """The undo snapshots in ``ns`` (an operator's namespace), by rotation UID (values are key
    material: compare keys only)."""
    try:
        sec = client.CoreV1Api(api).read_namespaced_secret("sigops-undo-snapshots", ns)
    except client.ApiException as e:
        if e.status == 404:
            return {}
        raise
    return {k: base64.b64decode(v).decode() for k, v in (sec.data or {}).items()}


def rotation_target(ns: str, **extra: Any) -> dict[str, Any]:
    """The configured target of ``make_backend``'s backend in ``ns``: its agents' Secret is
    ``agent-key`` (the config, not the KeyRotation, names it)."""
    return {"namespace": ns, "deployment": "fractal-lba-backend",
            "agentSecret": {"name": "agent-key"}, **extra}


def rotation_settings(ns: str, **settings: Any) -> dict[str, Any]:
    """An operator config whose one target is ``rotation_target(ns)``."""
    return {"targets": [rotation_target(ns)], **settings}


def get_kr(api: Any, ns: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "keyrotations", name)


def phase(api: Any, ns: str, name: str) -> str | None:
    return (get_kr(api, ns, name).get("status") or {}).get("phase")


def has_secret(api: Any, ns: str, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_secret(name, ns)
        return True
    except client.ApiException:
        return False


def secret(api: Any, ns: str, name: str) -> dict[str, str]:
    s = client.CoreV1Api(api).read_namespaced_secret(name, ns)
    return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}


def agent_key_fingerprint(api: Any, ns: str, alg: str) -> str:
    data = secret(api, ns, "agent-key")
    if alg == HMAC:
        return Key("a", HMAC, secret=data["PCS_HMAC_KEY"].encode()).fingerprint
    return Key("a", ED25519, private_seed=base64.b64decode(data["PCS_ED25519_PRIV_B64"])
               ).fingerprint


def backend_fingerprints(api: Any, ns: str) -> list[str]:
    dep = client.ApiClient().sanitize_for_serialization(
        client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", ns))

    def read(name: str, key: str) -> str | None:
        try:
            return secret(api, ns, name).get(key)
        except client.ApiException:
            return None

    return backend_config(resolve_env(find_container(dep, None), read), EnvNames()).fingerprints


class AcceptanceWatch(BackgroundCheck):
    """Checks, over and over while a rotation runs, that the backend accepts the agents' key."""

    def __init__(self, api: Any, ns: str, alg: str) -> None:
        self.api, self.ns, self.alg = api, ns, alg
        super().__init__()

    def check(self) -> object:
        agent = agent_key_fingerprint(self.api, self.ns, self.alg)
        backend = backend_fingerprints(self.api, self.ns)
        if agent in backend:
            return None
        # The two reads are not one snapshot: an abort restores the agents' Secret and then
        # the backend between them (seen once in 342 checks). Only an agent key that is the
        # same after the backend read is a violation; a torn read is checked again next time.
        if agent_key_fingerprint(self.api, self.ns, self.alg) != agent:
            return None
        return agent, backend


def verify_history(api: Any, operator_ns: str, kr: dict[str, Any]) -> None:
    cm = client.CoreV1Api(api).read_namespaced_config_map("sigops-signal-pubkeys", operator_ns)
    pubkeys = load_pubkeys(json.loads(cm.data["pubkeys.json"]))
    history = kr["status"]["history"]
    assert len(history) >= 5
    verify_chain(history, pubkeys)


class LiveTestbed:
    """``sigops testbed backend`` reading its config from the Deployment, as a pod would."""

    def __init__(self, cluster: Any, ns: str, tmp_path: Any, *extra: str) -> None:
        import subprocess

        from tests.conftest import REPO

        self.log = tmp_path / f"backend{'-'.join(extra)}.log"
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "sigops"), "testbed", "backend", "--listen",
             "127.0.0.1:0", "--namespace", ns, "--deployment", "fractal-lba-backend",
             "--poll-interval", "0.3", *extra],  # a later --listen wins
            env=cluster.env, stdout=subprocess.PIPE, stderr=self.log.open("ab"),
            start_new_session=True)
        assert self.proc.stdout is not None
        self.url = json.loads(self.proc.stdout.readline())["url"]

    def __enter__(self) -> LiveTestbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


TOKEN = "s3cret-alert-token-for-tests"


def pcs(key: Key, i: int, profile: str = "python", sent_at: str = "2026-11-22T00:00:00Z"
        ) -> dict[str, Any]:
    root = f"{i:064x}"
    doc = {"pcs_id": expected_pcs_id(root, 1, "shard-1"), "merkle_root": root, "epoch": 1,
           "shard_id": "shard-1", "D_hat": 1.0, "coh_star": 0.5, "r": 0.3, "budget": 0.2,
           "version": "0.1", "sent_at": sent_at}
    return sign_pcs(doc, key, profile)


def envelope(p: dict[str, Any], source: str = "agent-1", received: str | None = None
             ) -> dict[str, Any]:
    return {"pcs": p, "received_at": received or p["sent_at"], "source": source}


class SampleServer(StubServer):
    """Stands in for the backend's failed-sample endpoint (and its Date header)."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        super().__init__(lambda: json.dumps({"samples": self.samples}).encode())


def backend(api: Any, ns: str, key: Key, token_rate: str = "100") -> None:
    """A backend Deployment with a literal HMAC key (replicas 0: no kubelet here)."""
    env = literal_env(PCS_SIGN_ALG="hmac", PCS_HMAC_KEY=key.secret.decode(),
                      TOKEN_RATE=token_rate)
    client.AppsV1Api(api).create_namespaced_deployment(ns, backend_deployment(env))


def set_backend_key(api: Any, ns: str, key: Key) -> None:
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment("fractal-lba-backend", ns)
    for e in dep.spec.template.spec.containers[0].env:
        if e.name == "PCS_HMAC_KEY":
            e.value = key.secret.decode()
    apps.replace_namespaced_deployment("fractal-lba-backend", ns, dep)


def token_rate(api: Any, ns: str) -> str | None:
    dep = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", ns)
    return next((e.value for e in dep.spec.template.spec.containers[0].env
                 if e.name == "TOKEN_RATE"), None)


def alert_post(op: Any, ns: str, status: str = "firing", fp: str = "a1b2c3d4e5f60718",
               token: str | None = TOKEN, group: str = "g1", body: bytes | None = None
               ) -> tuple[int, dict[str, Any]]:
    doc = {"version": "4", "groupKey": group, "status": status, "receiver": "sigops",
           "alerts": [{"status": status, "fingerprint": fp,
                       "labels": {"alertname": "FLKSignatureFailuresSpike",
                                  "severity": "warning", "component": "backend",
                                  "namespace": ns, "deployment": "fractal-lba-backend"},
                       "annotations": {"value": "42"},
                       "startsAt": "2026-11-22T00:00:00Z"}]}
    req = urllib.request.Request(f"http://127.0.0.1:{op.alerts_port}/v1/alerts",
                                 data=body if body is not None else json.dumps(doc).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def incidents(api: Any, ns: str) -> list[dict[str, Any]]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents")["items"]


def only_incident(api: Any, ns: str) -> dict[str, Any]:
    items = incidents(api, ns)
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return items[0]


def start(operator_factory: Any, tmp_path: Any, ns: str, sample_url: str | None,
          env: dict[str, str] | None = None, **settings: Any) -> Any:
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    target = {"namespace": ns, "deployment": "fractal-lba-backend"}
    if sample_url:
        target["backendURL"] = sample_url
    target.update(settings.pop("target_extra", {}))
    base = {"targets": [target], "verify_timeout": "20s", "cooldown": "2s"}
    op = operator_factory({**base, **settings}, start=False,
                          extra_env={"SIGOPS_ALERTS_TOKEN_FILE": str(tok), **(env or {})})
    return op.start()


def verify_records(api: Any, op: Any, inc: dict[str, Any]) -> None:
    cm = client.CoreV1Api(api).read_namespaced_config_map("sigops-signal-pubkeys",
                                                           op.operator_ns)
    pubkeys = load_pubkeys(json.loads(cm.data["pubkeys.json"]))
    payload = verify_signal(inc["status"]["signal"], pubkeys)
    assert payload["type"] == "detection" and payload["cause"] == inc["status"]["cause"]
    if inc["status"].get("actions"):
        verify_chain(inc["status"]["actions"], pubkeys)


def token_kubeconfig(cluster: Any, user: str, token: str, path: Path,
                     namespace: str | None = None) -> Path:
    """A kubeconfig of ``cluster`` that is ``token`` (user ``user``), its context's namespace
    ``namespace`` if given; written at ``path``, readable by its owner only."""
    import yaml

    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context: dict[str, str] = {"cluster": admin["clusters"][0]["name"], "user": user}
    if namespace:
        context["namespace"] = namespace
    kc = {"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
          "users": [{"name": user, "user": {"token": token}}],
          "contexts": [{"name": user, "context": context}], "current-context": user}
    path.write_text(yaml.safe_dump(kc))
    path.chmod(0o600)
    return path


def service_account_user(api: Any, cluster: Any, ns: str, name: str, path: Path
                         ) -> tuple[Path, str]:
    """ServiceAccount ``ns/name``, made now, as a person with no rights of her own
    (grant_user gives her some): a kubeconfig of a token of it at ``path`` (context namespace
    ``ns``) and the user name the API server gives that token."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name=name)))
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    tok = core.create_namespaced_service_account_token(name, ns, req).status.token
    return (token_kubeconfig(cluster, name, tok, path, ns),
            f"system:serviceaccount:{ns}:{name}")
