"""`make demo`: sigops end to end on the local node, told as it happens.

1. A one-node cluster whose pods run (or the one `make cluster` started); sigops installed with
   its Helm chart from the image; the testbed backend as 2 pods of the same image reading its
   key from a Secret through env, behind a Service; healthy agents as a pod that follow the
   agents' Secret; Prometheus discovering the backend pods; Alertmanager posting to sigops'
   Service.
2. A KeyRotation rotates the backend's HMAC key: real rollouts, the agents follow it.
3. A fault: a group of agents was never updated and still signs with the retired key. The
   alert fires, Alertmanager posts to sigops, sigops opens a SignatureIncident, diagnoses
   stale keys from the pods' failed samples, and escalates: scenario A never lets a key a
   finished rotation retired back in (it may be a leaked one), and says so; a person updates
   those agents. Its signed detection is verified as an observer would.
4. The post-incident report of that incident (``kubectl sigops report``): Markdown and the
   picture of the error rate from the demo's Prometheus, in .dev/demo/report/.

KEEP=1 leaves everything running and prints how to look around.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def main() -> int:  # noqa: PLR0915 - a linear story reads best as one function
    import shutil

    from sigops.core.keys import HMAC, generate_key

    from .cluster import free_port
    from .dashboard import dashboard_queries, grafana_to_promql, load_dashboard
    from .flk import OPERATOR_NS, RELEASE, Flk
    from .node import DEFAULT_DIR, NodeCluster

    keep = os.environ.get("KEEP") == "1"
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    running = NodeCluster.load(DEFAULT_DIR)
    own: NodeCluster | None = None
    if running is not None and running.running():
        node = running
        say(f"using the node `make cluster` started ({node.kubeconfig})")
    else:
        say("starting a one-node cluster (containerd, kubelet, kube-proxy; the image loaded)")
        if running is not None:
            running.stop()  # a node that died: put the machine back first
        shutil.rmtree(DEFAULT_DIR, ignore_errors=True)  # a fresh cluster, no old objects
        node = own = NodeCluster(workdir=DEFAULT_DIR, bindir=BIN).start()
    env = {**os.environ, "KUBECONFIG": str(node.kubeconfig),
           "PATH": f"{BIN}:{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    flk = Flk(env, node.kubeconfig, WORK, NS)
    ok = False
    try:
        flk.namespace()
        prom_port = free_port()
        say(f"helm upgrade --install sigops charts/sigops -n {OPERATOR_NS} ({flk.image})")
        flk.install(prom_port)
        say("sigops running: " + flk.kubectl("get", "pods", "-n", OPERATOR_NS,
                                             "-o", "wide").splitlines()[-1])
        old = generate_key(HMAC, kid="original", state="active")
        url = flk.backend(old, upstream=True)
        say(f"backend: 2 pods behind {url} (key {old.fingerprint} from Secret backend-key); "
            "like the real FLK backend it has no samples endpoint: it logs each refused PCS "
            "and keeps an inbox WAL, served read-only by the sigops wal serve sidecar to "
            "sigops' token only")
        stack = flk.monitoring(prom_port)
        say(f"Prometheus {stack.prometheus_url} scrapes the backend pods (rule "
            f"FLKSignatureFailuresSpike: rate > 2/s over 10s, for 3s); Alertmanager "
            f"{stack.alertmanager_url} posts to sigops' Service")
        flk.agents("healthy-agents", url, rate=10, count=3)
        say("healthy agents (a pod) submit 10 PCS/s with the key in Secret agent-key")
        flk.wait(lambda: stack.targets_up() and stack.query(
            'sum(rate(flk_accepted[10s])) > 0') != [], 90, "PCS accepted", 1)

        say("--- act 1: rotate the backend key with a KeyRotation ---")
        flk.apply({"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
                   "metadata": {"name": "rotate-2026-11"},
                   "spec": {"target": {"deployment": "fractal-lba-backend"},
                            "algorithm": "hmac-sha256", "overlap": "10s"}})
        seen = ""

        def rotated() -> bool:
            nonlocal seen
            out = flk.kubectl("get", "kr", "-n", NS)
            phase = out.splitlines()[1].split()[2] if len(out.splitlines()) > 1 else ""
            if phase != seen:
                seen = phase
                print(out.rstrip(), flush=True)
            return phase in ("Completed", "Aborted", "Failed")

        flk.wait(rotated, 180, "the rotation to finish")
        dep = flk.get("deployment", "-n", NS, "fractal-lba-backend")
        say("rotation finished after real rollouts (Deployment revision "
            f"{dep['metadata']['annotations']['deployment.kubernetes.io/revision']}); "
            "the healthy agents now sign with the new key")

        say("--- act 2: a forgotten agent group still signs with the retired key ---")
        flk.agents("forgotten-agents", url, rate=15, count=2, old_key=old)
        say("waiting for FLKSignatureFailuresSpike to fire (Prometheus -> Alertmanager)")
        flk.wait(lambda: any(a["state"] == "firing"
                             for a in stack.alerts("FLKSignatureFailuresSpike")),
                 120, "the alert", 1)
        say("alert firing; Alertmanager posts to sigops")
        last = ""

        def story() -> bool:
            nonlocal last
            out = flk.kubectl("get", "signatureincidents", "-n", NS)
            if out != last:
                last = out
                print(out.rstrip(), flush=True)
            rows = [r.split() for r in out.splitlines()[1:]]
            return any("Resolved" in r or "Escalated" in r for r in rows)

        flk.wait(story, 300, "the incident to end", interval=1.0)
        name = last.splitlines()[1].split()[0]
        inc: dict[str, Any] = flk.get("si", name, "-n", NS)
        evidence = inc["status"].get("evidence") or {}
        for src in evidence.get("sources") or []:
            say(f"evidence {src['source']}: {src['status']}: {src['detail']}")
        for a in inc["status"].get("actions", []):
            say(f"action: {a['payload']['summary']}")
        ready: dict[str, Any] = next((c for c in inc["status"].get("conditions") or []
                      if c.get("type") == "Ready"), {})
        say(f"why: {ready.get('message', '-')}")
        print("\n" + inc["status"].get("communication", ""), flush=True)
        pub = flk.kubectl("get", "cm", "sigops-signal-pubkeys", "-n", OPERATOR_NS, "-o",
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
        print("\n$ kubectl get pods,kr,si -A\n" + flk.kubectl("get", "pods,kr,si", "-A"),
              flush=True)
        say("--- the post-incident report (kubectl sigops report) ---")
        report_dir = WORK / "report"
        rep = subprocess.run(
            [str(REPO / ".venv" / "bin" / "kubectl-sigops"), "report", f"si/{name}", "-n", NS,
             "-o", str(report_dir), "--prometheus-url", stack.prometheus_url,
             "--query", f'sum(rate(flk_signature_err{{namespace="{NS}"}}[10s]))',
             "--threshold", "2", "--operator-namespace", OPERATOR_NS],
            env=env, capture_output=True, text=True, timeout=120)
        sys.stdout.write(rep.stdout)
        if rep.returncode != 0 or rep.stderr.strip():
            sys.stdout.write(rep.stderr)
        say(f"report of {name}: {report_dir / 'report.md'}"
            + (f" and {report_dir / 'error-rate.png'}"
               if (report_dir / "error-rate.png").exists() else " (no picture)"))
        say("--- sigops watched: the Grafana dashboard's queries on this Prometheus ---")
        answered = 0
        queries = dashboard_queries(load_dashboard())
        for q in queries:
            res = stack.query(grafana_to_promql(q, RELEASE))
            answered += bool(res)
            print(f"  {len(res):3d} series  {q[:90]}", flush=True)
        say(f"{answered} of {len(queries)} dashboard queries answer (the chart's "
            "grafanaDashboard ConfigMap; sigops scraped through its Service)")
        # The retired key stays retired: the incident ends with a person, not with the key.
        ok = ((inc["status"]["phase"], inc["status"].get("scenario")) == ("Escalated", "A")
              and ver.returncode == 0 and rep.returncode == 0)
        if keep:
            print(f"KEEP=1: everything is still running.\n"
                  f"  export KUBECONFIG={node.kubeconfig}\n  kubectl get pods,kr,si -A\n"
                  f"  Prometheus: {stack.prometheus_url}\n"
                  f"Stop with: make cluster-down (Prometheus and Alertmanager: pids "
                  f"{sorted(stack.pids.values())})", flush=True)
        return 0 if ok else 1
    finally:
        if not keep:
            flk.stop()
            if own is not None:
                own.stop()
            else:
                flk.helm("uninstall", "sigops", "-n", OPERATOR_NS, "--wait")
                flk.kubectl("delete", "namespace", NS, "--wait=false", check=False)
            say("everything stopped" + ("; the machine is as before" if own else ""))


if __name__ == "__main__":
    sys.exit(main())
