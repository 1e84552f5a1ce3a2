"""`make demo`: sigops end to end on a local control plane, told as it happens.

1. A local control plane, the CRDs, a backend Deployment and the testbed backend that reads its
   config from that Deployment; real Prometheus and Alertmanager; `sigops run`; healthy agents
   that sign with the key in their Secret.
2. A KeyRotation rotates the backend's HMAC key (short overlap); the agents follow it.
3. A fault: a group of agents was never updated and still signs with the retired key. The
   alert fires, Alertmanager posts to sigops, sigops opens a SignatureIncident, diagnoses
   stale keys, runs scenario A (key overlap), the backend reloads, the error rate falls, the
   alert resolves and the incident ends Resolved.

KEEP=1 leaves everything running and prints how to look around.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".dev" / "bin"
WORK = REPO / ".dev" / "demo"
NS = "fractal-lba"
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def kubectl(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(BIN / "kubectl"), *args], env=env, capture_output=True,
                         text=True, timeout=60)
    return out.stdout if out.returncode == 0 else out.stderr


def wait(fn: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def main() -> int:  # noqa: PLR0915 - a linear story reads best as one function
    from kubernetes import client, config

    from sigops.core.keys import HMAC, generate_key
    from sigops.testbed.agents import AgentPlan, AgentSimulator
    from sigops.testbed.keysource import SecretKey, StaticKey
    from sigops.testbed.rules import write_rule_file

    from .cluster import LocalCluster, free_port
    from .promstack import PromStack, ScrapeTarget

    keep = os.environ.get("KEEP") == "1"
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    sims: list[AgentSimulator] = []
    stack = None
    say("starting a local control plane (etcd, kube-apiserver, kube-controller-manager)")
    cluster = LocalCluster(workdir=WORK / "cluster", bindir=BIN).start()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{BIN}:{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    try:
        kubectl(env, "apply", "-f", str(REPO / "crds"))
        kubectl(env, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        say("CRDs installed: " + ", ".join(
            line.split()[0] for line in kubectl(env, "get", "crd").splitlines()[1:]))
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        old = generate_key(HMAC, kid="original", state="active")
        secret = (old.secret or b"").decode()
        for name in ("backend-key", "agent-key"):
            core.create_namespaced_secret(NS, client.V1Secret(
                metadata=client.V1ObjectMeta(name=name), string_data={"PCS_HMAC_KEY": secret}))
        from sigops.testbed.manifests import backend_deployment, literal_env, secret_env

        apps.create_namespaced_deployment(NS, backend_deployment(
            [*literal_env(PCS_SIGN_ALG="hmac", TOKEN_RATE="1000"),
             secret_env("PCS_HMAC_KEY", "backend-key")], image="fractal-lba/backend:demo"))
        say(f"backend Deployment {NS}/fractal-lba-backend created (key {old.fingerprint})")
        log = open(WORK / "backend.log", "wb")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "sigops"), "testbed", "backend", "--listen",
             "127.0.0.1:0", "--namespace", NS, "--deployment", "fractal-lba-backend",
             "--poll-interval", "0.5"], env=env, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True)
        procs.append(p)
        assert p.stdout is not None
        backend_url = json.loads(p.stdout.readline())["url"]
        say(f"testbed backend serving {backend_url} (config read from the Deployment)")
        token = secrets.token_urlsafe(24)
        (WORK / "alerts-token").write_text(token)
        alerts_port, metrics_port = free_port(), free_port()
        rules = write_rule_file(WORK / "rules.yml", window="10s", for_="3s", threshold=2)
        stack = PromStack(
            targets=[ScrapeTarget(backend_url.removeprefix("http://"),
                                  {"namespace": NS, "deployment": "fractal-lba-backend"})],
            rule_files=[rules], webhook_url=f"http://127.0.0.1:{alerts_port}/v1/alerts",
            webhook_token=token, workdir=WORK / "promstack").start()
        say(f"Prometheus {stack.prometheus_url} (rule FLKSignatureFailuresSpike: "
            f"rate > 2/s over 10s, for 3s) and Alertmanager {stack.alertmanager_url}")
        (WORK / "sigops.yaml").write_text(json.dumps({
            "targets": [{"namespace": NS, "deployment": "fractal-lba-backend",
                         "backendURL": backend_url}],
            "error_rate_query": "sum(rate(flk_signature_err[10s]))",
            "error_rate_threshold": 2, "reconcile_interval": 0.5, "min_overlap": "1s"}))
        log = open(WORK / "sigops.log", "wb")  # noqa: SIM115 - owned by the child
        procs.append(subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "sigops"), "run", "--config", str(WORK / "sigops.yaml"),
             "--alerts-listen", f"127.0.0.1:{alerts_port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}",
             "--alerts-token-file", str(WORK / "alerts-token"),
             "--prometheus-url", stack.prometheus_url], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True))
        say(f"sigops running (alerts :{alerts_port}, metrics :{metrics_port})")
        from sigops.kube.api import Kube

        healthy = AgentSimulator(AgentPlan(backend_url, rate=10, agents=3),
                                 SecretKey(Kube(api).secret_value, NS, "agent-key",
                                           "PCS_HMAC_KEY", HMAC))
        sims.append(healthy)
        threading.Thread(target=healthy.run, daemon=True).start()
        say("3 healthy agents submitting 10 PCS/s with the key from Secret agent-key")

        say("--- act 1: rotate the backend key with a KeyRotation ---")
        kr = {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
              "metadata": {"name": "rotate-2026-11", "namespace": NS},
              "spec": {"target": {"deployment": "fractal-lba-backend",
                                  "agentSecret": {"name": "agent-key"}},
                       "algorithm": "hmac-sha256", "overlap": "5s"}}
        (WORK / "keyrotation.json").write_text(json.dumps(kr))
        kubectl(env, "apply", "-f", str(WORK / "keyrotation.json"))
        seen = ""

        def rotated() -> bool:
            nonlocal seen
            out = kubectl(env, "get", "kr", "-n", NS)
            phase = out.splitlines()[1].split()[2] if len(out.splitlines()) > 1 else ""
            if phase != seen:
                seen = phase
                print(out.rstrip(), flush=True)
            return phase in ("Completed", "Aborted", "Failed")

        wait(rotated, 90, "the rotation to finish")
        say("rotation finished; the healthy agents now sign with the new key")

        say("--- act 2: a forgotten agent group still signs with the retired key ---")
        stale = AgentSimulator(AgentPlan(backend_url, rate=15, agents=2,
                                         agent_prefix="forgotten"), StaticKey(old, "old"))
        sims.append(stale)
        threading.Thread(target=stale.run, daemon=True).start()
        say("waiting for FLKSignatureFailuresSpike to fire (Prometheus -> Alertmanager)")
        wait(lambda: any(a["state"] == "firing" for a in stack.alerts("FLKSignatureFailuresSpike")),
             90, "the alert")
        say("alert firing; sigops receives the webhook")
        last = ""

        def story() -> bool:
            nonlocal last
            out = kubectl(env, "get", "signatureincidents", "-n", NS)
            if out != last:
                last = out
                print(out.rstrip(), flush=True)
            rows = [r.split() for r in out.splitlines()[1:]]
            return any("Resolved" in r or "Escalated" in r for r in rows)

        wait(story, 240, "the incident to end", interval=1.0)
        name = last.splitlines()[1].split()[0]
        inc = json.loads(kubectl(env, "get", "si", name, "-n", NS, "-o", "json"))
        for a in inc["status"].get("actions", []):
            say(f"action: {a['payload']['summary']}")
        print("\n" + inc["status"].get("communication", ""), flush=True)
        pub = kubectl(env, "get", "cm", "sigops-signal-pubkeys", "-n", "sigops-system", "-o",
                      "jsonpath={.data.pubkeys\\.json}")
        (WORK / "pubkeys.json").write_text(pub)
        (WORK / "signal.json").write_text(json.dumps(inc["status"]["signal"]))
        ver = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), "signal", "verify",
                              "--pubkeys", str(WORK / "pubkeys.json"), str(WORK / "signal.json")],
                             capture_output=True, text=True)
        say("signed detection verified by an observer: "
            + ("valid" if ver.returncode == 0 else "REJECTED"))
        say(f"incident {name}: {inc['status']['phase']} "
            f"(cause {inc['status'].get('cause')}, scenario {inc['status'].get('scenario')})")
        if keep:
            down = f"python -m devtools.cluster down --dir {WORK / 'cluster'}"
            print(f"\nKEEP=1: everything is still running.\n"
                  f"  export KUBECONFIG={cluster.kubeconfig}\n  kubectl get kr,si -A\n"
                  f"  Prometheus: {stack.prometheus_url}\n  logs: {WORK}/*.log\n"
                  f"Stop with: {down}; kill the pids listed in {WORK}/pids.json",
                  flush=True)
            (WORK / "pids.json").write_text(json.dumps([p.pid for p in procs] +
                                                       list(stack.pids.values())))
        return 0 if inc["status"]["phase"] == "Resolved" else 1
    finally:
        for s in sims:
            s.stop()
        if not keep:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    p.kill()
            if stack is not None:
                stack.stop()
            cluster.stop()
            say("everything stopped")


if __name__ == "__main__":
    sys.exit(main())
