"""The FLK stack on the local node, the way a user runs it: sigops installed by its chart, the
testbed backend as a Deployment of the image (2 replicas, key from a Secret through env),
its Service, agents as pods, Prometheus discovering and scraping the backend pods, and
Alertmanager posting to the operator's Service. Shared by ``make demo`` and the node tests.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sigops.core.keys import Key
from sigops.testbed.manifests import (
    agents,
    backend_service,
    literal_env,
    running_backend,
    secret_env,
    wal_reader_policy,
)
from sigops.testbed.rules import write_rule_file

from .cluster import DEFAULT_BIN, REPO, free_port
from .node import GATEWAY
from .promstack import PromStack

__all__ = ["Flk", "image_ref"]

BACKEND = "fractal-lba-backend"
RELEASE, OPERATOR_NS = "sigops", "sigops-system"


def image_ref() -> str:
    """``sigops:<version>``: the short name the chart defaults to and the node holds."""
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return f"sigops:{version}"


class Flk:
    """One FLK namespace on the node and the sigops release looking after it."""

    def __init__(self, env: dict[str, str], kubeconfig: Path, workdir: Path,
                 ns: str = "fractal-lba", bindir: Path = DEFAULT_BIN) -> None:
        self.env, self.kubeconfig, self.workdir, self.ns = env, kubeconfig, workdir, ns
        self.bindir = bindir
        self.image = image_ref()
        self.token = secrets.token_urlsafe(24)
        self.stack: PromStack | None = None
        self._discovery: PodTargets | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    # -- kubectl / helm ----------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        r = subprocess.run([str(self.bindir / "kubectl"), *args], env=self.env, input=input,
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def apply(self, *objs: dict[str, Any], ns: str | None = None) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)})
        # Server-side: a client-side apply would copy Secrets' values into an annotation.
        self.kubectl("apply", "--server-side", "--force-conflicts", "-n", ns or self.ns,
                     "-f", "-", input=doc)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def helm(self, *args: str) -> str:
        r = subprocess.run([str(self.bindir / "helm"), *args], env=self.env, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        if r.returncode:
            raise RuntimeError(f"helm {' '.join(args[:2])}: {r.stderr.strip()}")
        return r.stdout

    # -- the pieces --------------------------------------------------------------------------

    def namespace(self) -> None:
        """Create the namespace (after an earlier one of the name has finished terminating)."""
        def phase() -> str:
            out = self.kubectl("get", "namespace", self.ns, "-o",
                               "jsonpath={.status.phase}", check=False)
            return out.strip()

        self.wait(lambda: phase() != "Terminating", 180, f"namespace {self.ns} to go")
        if phase() == "":
            self.kubectl("create", "namespace", self.ns)

    def backend(self, key: Key, replicas: int = 2, upstream: bool = False,
                args: tuple[str, ...] = (), sidecar: bool = True,
                wal_claim: str | None = None) -> str:
        """Secrets backend-key and agent-key holding ``key``, the backend Deployment and its
        Service; waits for the pods and for the Service to answer. Returns the Service URL.
        ``upstream``: no samples endpoint, an inbox WAL and its reader sidecar, like the real
        FLK backend (see ``running_backend``), with the runbook's NetworkPolicy; the sidecar
        mounts the chart's WAL token Secret, so :meth:`install` comes first. ``wal_claim``:
        the pods keep their WALs on that claim, one directory per pod."""
        secret = key.to_entry()["secret"]
        self.apply(*({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n},
                      "stringData": {"PCS_HMAC_KEY": secret}}
                     for n in ("backend-key", "agent-key")))
        self.apply(running_backend([*literal_env(PCS_SIGN_ALG="hmac", TOKEN_RATE="1000"),
                                    secret_env("PCS_HMAC_KEY", "backend-key")], self.image,
                                   replicas=replicas, upstream=upstream, args=args,
                                   sidecar=sidecar, wal_claim=wal_claim),
                   backend_service(),
                   # Only sigops reaches the WAL reader (enforced where a policy controller
                   # runs; the node's bridge alone ignores it).
                   *([wal_reader_policy({"app": BACKEND}, OPERATOR_NS, RELEASE)]
                     if upstream and sidecar else []))
        self.wait(lambda: (self.get("deployment", "-n", self.ns, BACKEND).get("status") or {})
                  .get("availableReplicas") == replicas, 120, f"{replicas} backend pods")
        ip = self.get("service", "-n", self.ns, BACKEND)["spec"]["clusterIP"]
        url = f"http://{ip}:8080"
        self.wait(lambda: _answers(f"{url}/healthz"), 30, "the backend Service")
        return url

    def agents(self, name: str, url: str, *, rate: float, count: int, old_key: Key | None = None,
               args: tuple[str, ...] = ()) -> None:
        """Agents as a pod: following the agents' Secret (``old_key`` None), or signing with a
        fixed old key from a Secret of their own (a group nobody updated)."""
        if old_key is None:
            objs = agents(name, self.image, url,
                          ["--secret", f"{self.ns}/agent-key/PCS_HMAC_KEY", *args],
                          rate=rate, count=count, read_secret="agent-key")
        else:
            self.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                        "stringData": {"PCS_HMAC_KEY": old_key.to_entry()["secret"]}})
            objs = agents(name, self.image, url, ["--key-env", "PCS_HMAC_KEY", *args],
                          env=[secret_env("PCS_HMAC_KEY", name)], rate=rate, count=count)
        self.apply(*objs)

    def monitoring(self, prom_port: int) -> PromStack:
        """Prometheus (scraping every running backend pod, listening on the bridge address so
        the operator pod reaches it) and Alertmanager posting to the operator's Service with
        the chart's token. Debian's Prometheus has no Kubernetes discovery: the pods are
        listed through the API every second into a file_sd file (what the discovery would
        find: pod IP and port ``http``, labels namespace, deployment, pod)."""
        svc = self.get("service", "-n", OPERATOR_NS, RELEASE)["spec"]["clusterIP"]
        rules = write_rule_file(self.workdir / "rules.yml", window="10s", for_="3s",
                                threshold=2)
        targets = self.workdir / "backend-pods.json"
        self._discovery = PodTargets(self, targets)
        self._discovery.start()
        self.stack = PromStack(
            rule_files=[rules], webhook_url=f"http://{svc}:8080/v1/alerts",
            webhook_token=self.token, workdir=self.workdir / "promstack", host=GATEWAY,
            prom_port=prom_port,
            scrape_configs=[{"job_name": "flk-backend",
                             "file_sd_configs": [{"files": [str(targets)],
                                                  "refresh_interval": "5s"}]},
                            # sigops itself, through its Service, as a ServiceMonitor would
                            # (job = the Service's name).
                            {"job_name": RELEASE, "static_configs": [{
                                "targets": [f"{svc}:8081"],
                                "labels": {"namespace": OPERATOR_NS}}]}]).start()
        return self.stack

    def install(self, prom_port: int, **extra: Any) -> None:
        """helm upgrade --install with a values file: this namespace as the target, Prometheus
        on the bridge address, a short error-rate window, the alert token."""
        values: dict[str, Any] = {
            "targets": [{"namespace": self.ns, "deployment": BACKEND, "default": True,
                         "agentSecret": {"name": "agent-key"}}],
            "prometheus": {"url": f"http://{GATEWAY}:{prom_port}"},
            "detection": {"errorRateQuery": "sum(rate({metric}{{{scope}}}[10s]))",
                          "errorRateThreshold": 2, "alertPollInterval": 5},
            "keyRotation": {"minOverlap": "1s", "reconcileInterval": 1},
            "alerts": {"token": {"value": self.token}},
            **extra,
        }
        path = self.workdir / "values.json"
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        self.helm("upgrade", "--install", RELEASE, "charts/sigops", "-n", OPERATOR_NS,
                  "--create-namespace", "--wait", "--timeout", "3m", "-f", str(path))

    def stop(self) -> None:
        if self._discovery is not None:
            self._discovery.done.set()
            self._discovery = None
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    @staticmethod
    def wait(fn: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class PodTargets(threading.Thread):
    """The backend's running pods as a Prometheus file_sd file, refreshed every second."""

    def __init__(self, flk: Flk, path: Path) -> None:
        super().__init__(daemon=True, name="pod-targets")
        self.flk, self.path = flk, path
        self.done = threading.Event()
        self.write()

    def write(self) -> None:
        try:
            pods = self.flk.get("pods", "-n", self.flk.ns, "-l", f"app={BACKEND}")["items"]
        except (RuntimeError, ValueError):
            return
        groups = []
        for p in pods:
            ip = (p.get("status") or {}).get("podIP")
            if not ip or (p.get("status") or {}).get("phase") != "Running":
                continue
            ports = [port for c in p["spec"]["containers"] for port in c.get("ports") or []
                     if port.get("name") == "http"]
            if ports:
                groups.append({"targets": [f"{ip}:{ports[0]['containerPort']}"],
                               "labels": {"namespace": self.flk.ns, "deployment": BACKEND,
                                          "pod": p["metadata"]["name"]}})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.path)

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.write()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def new_prom_port() -> int:
    return free_port()
