"""The chart's pod health and NetworkPolicy on the node, on one install.

- Probes: the operator pod gets Ready through its readiness probe (/readyz), the kubelet's own
  probe counters show it calling /readyz and /livez and getting successes, and when the
  operator's process is frozen (SIGSTOP from the host: a wedged container, nothing added to
  sigops for it) the pod goes NotReady and the liveness probe has the container restarted.
- NetworkPolicy (needs kube-router, which ``make tools`` builds; see conftest.py): with
  kube-router's network policy controller enforcing policies on the node, a pod labelled as
  Alertmanager in the allowed namespace gets an HTTP answer from the receiver (401: no token),
  while the same pod in another namespace, and an unlabelled pod in the allowed namespace,
  cannot connect; adding the other namespace to ``networkPolicy.alertmanager.namespaces`` with
  ``helm upgrade`` lets it through.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.flk import image_ref
from tests.node.support import (
    OPERATOR_NS,
    RELEASE,
    ensure_namespace,
    get_json,
    helm,
    operator_pods,
    pod_ready,
    uninstall_everything,
    wait_operator_ready,
)
from tests.support import kubectl, wait_for

TARGET_NS, AM_NS, OTHER_NS = "np-target", "np-alertmanager", "np-other"
AM_LABELS = {"app.kubernetes.io/name": "alertmanager"}

# Fast probes, so a wedge is noticed in seconds (the chart's defaults take about a minute).
PROBES = {
    "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 3,
                      "timeoutSeconds": 1},
    "readinessProbe": {"initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2,
                       "timeoutSeconds": 1},
    "terminationGracePeriodSeconds": 3,
}

# Run in a client pod: POST an empty alert batch, print "HTTP <code>", "refused" or "timeout".
POST = r"""
import socket, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], data=b'{"alerts": []}', method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=float(sys.argv[2])) as r:
        print("HTTP", r.status)
except urllib.error.HTTPError as e:
    print("HTTP", e.code)
except urllib.error.URLError as e:
    r = e.reason
    print("refused" if isinstance(r, ConnectionRefusedError) else
          "timeout" if isinstance(r, (TimeoutError, socket.timeout)) else f"error {r!r}")
except (TimeoutError, socket.timeout):
    print("timeout")
"""


def _values(tmp: Path, namespaces: list[str]) -> Path:
    values = {
        "targets": [{"namespace": TARGET_NS, "deployment": "fractal-lba-backend",
                     "default": True}],
        "alerts": {"token": {"value": secrets.token_urlsafe(24)}},
        "networkPolicy": {"enabled": True, "alertmanager": {"namespaces": namespaces}},
        **PROBES,
    }
    path = tmp / "values.json"
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return path


def _client(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{
                "name": "client", "image": image_ref(), "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", "import time; time.sleep(100000)"],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                                    "seccompProfile": {"type": "RuntimeDefault"}}}],
                "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0}}


@pytest.fixture(scope="module")
def release(node: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """sigops installed with its NetworkPolicy (Alertmanager allowed from AM_NS only) and fast
    probes; client pods: labelled as Alertmanager in AM_NS and in OTHER_NS, unlabelled in
    AM_NS."""
    tmp = tmp_path_factory.mktemp("pod-health")
    uninstall_everything(node)
    for ns in (TARGET_NS, AM_NS, OTHER_NS):
        ensure_namespace(node, ns)
    clients = {"am": (AM_NS, _client("am", AM_LABELS)),
               "am-other-ns": (OTHER_NS, _client("am", AM_LABELS)),
               "unlabelled": (AM_NS, _client("unlabelled", {"app": "curious"}))}
    for ns, pod in clients.values():
        _create(node, ns, pod)
    t0 = time.monotonic()
    helm(node, "upgrade", "--install", RELEASE, "charts/sigops", "-n", OPERATOR_NS,
         "--create-namespace", "--wait", "--timeout", "3m", "-f", str(_values(tmp, [AM_NS])))
    installed = time.monotonic() - t0
    for ns, pod in clients.values():
        kubectl(node, "wait", "-n", ns, "--for=condition=Ready", f"pod/{pod['metadata']['name']}",
                "--timeout=60s", timeout=90)
    svc = get_json(node, "service", "-n", OPERATOR_NS, RELEASE)["spec"]["clusterIP"]
    yield {"tmp": tmp, "clients": {k: (ns, p["metadata"]["name"])
                                   for k, (ns, p) in clients.items()},
           "alerts_url": f"http://{svc}:8080/v1/alerts", "metrics_url": f"http://{svc}:8081/metrics",
           "installed_s": installed}
    helm(node, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", check=False)
    for ns in (TARGET_NS, AM_NS, OTHER_NS):
        kubectl(node, "delete", "namespace", ns, "--wait=false", check=False)


def _create(node: object, ns: str, obj: dict[str, Any]) -> None:
    import subprocess

    from tests.support import BIN

    r = subprocess.run([str(BIN / "kubectl"), "apply", "-n", ns, "-f", "-"],
                       input=json.dumps(obj), env=node.env,  # type: ignore[attr-defined]
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def post_from(node: object, client: tuple[str, str], url: str, timeout: float = 3) -> str:
    ns, pod = client
    r = kubectl(node, "exec", "-n", ns, pod, "--", "python3", "-c", POST, url, str(timeout),
                timeout=60)
    return r.stdout.strip()


def probe_counts(node: object, pod: str) -> dict[tuple[str, str], float]:
    """The kubelet's prober_probe_total for the operator pod: (probe type, result) -> count."""
    text = kubectl(node, "get", "--raw",
                   "/api/v1/nodes/sigops-node/proxy/metrics/probes").stdout
    out: dict[tuple[str, str], float] = {}
    for ln in text.splitlines():
        if ln.startswith("prober_probe_total{") and f'pod="{pod}"' in ln:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', ln))
            key = (labels["probe_type"], labels["result"])
            out[key] = out.get(key, 0.0) + float(ln.rsplit(" ", 1)[1])
    return out


@pytest.mark.netpol
def test_network_policy_admits_only_the_configured_alertmanager(
        node: object, release: dict[str, Any]) -> None:
    from devtools.netpol import PolicyEnforcer, filter_rules

    url, c = release["alerts_url"], release["clients"]
    # Without enforcement (the node's bridge CNI ignores policies) every client gets through:
    # what follows is the policy's doing, not a closed port.
    # (Waited for: just after the release's install, the Service may still be without a ready
    # operator pod for a moment -- a refused connection that is no policy's doing.)
    for who in ("am", "am-other-ns", "unlabelled"):
        wait_for(lambda who=who: post_from(node, c[who], url) == "HTTP 401", timeout=60,
                 interval=1,
                 what=f"{who} to reach the receiver before any policy is enforced")
    assert post_from(node, c["am"], release["metrics_url"]).startswith("HTTP ")
    with PolicyEnforcer(node.kubeconfig, release["tmp"] / "enforcer") as enforcer:  # type: ignore[attr-defined]
        op = operator_pods(node)[0]
        ip = op["status"]["podIP"]
        wait_for(lambda: any(ln.startswith("-A KUBE-ROUTER-FORWARD") and f"-d {ip}/32" in ln
                             for ln in filter_rules()), timeout=60, interval=0.5,
                 what="kube-router's firewall chain for the operator pod")
        wait_for(lambda: post_from(node, c["am-other-ns"], url) != "HTTP 401", timeout=60,
                 interval=1, what="the policy enforced")
        # Allowed: Alertmanager's label in the allowed namespace. An HTTP answer (401: no
        # token) is a connection made.
        assert post_from(node, c["am"], url) == "HTTP 401"
        # Not allowed: the same label in another namespace; no label in the allowed one.
        # (kube-router rejects: the client sees "refused" at once rather than a timeout.)
        blocked = {"am-other-ns": post_from(node, c["am-other-ns"], url),
                   "unlabelled": post_from(node, c["unlabelled"], url),
                   # The metrics port admits only `monitoring` (the default): not even the
                   # Alertmanager.
                   "am to metrics": post_from(node, c["am"], release["metrics_url"])}
        assert all(v in ("refused", "timeout") for v in blocked.values()), blocked
        print(f"blocked: {blocked}")
        # Probes come from the node, which policies do not stop: the pod stays Ready.
        assert pod_ready(operator_pods(node)[0])

        # The value is the door: name the other namespace too and its Alertmanager gets in.
        helm(node, "upgrade", RELEASE, "charts/sigops", "-n", OPERATOR_NS, "--reuse-values",
             "--set-json", f"networkPolicy.alertmanager.namespaces={json.dumps([AM_NS, OTHER_NS])}",
             "--wait")
        wait_for(lambda: post_from(node, c["am-other-ns"], url) == "HTTP 401", timeout=60,
                 interval=1, what="the other namespace's Alertmanager admitted")
        assert post_from(node, c["unlabelled"], url) in ("refused", "timeout")
        assert operator_pods(node)[0]["metadata"]["name"] == op["metadata"]["name"]
    assert enforcer.leftovers() == []


def test_probes_ready_then_liveness_restarts_a_wedged_operator(
        node: object, release: dict[str, Any]) -> None:
    pod = wait_operator_ready(node)
    name = pod["metadata"]["name"]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    c = pod["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    # The kubelet called both probes and got successes (its own counters).
    counts = wait_for(lambda: (lambda n: n if n.get(("Liveness", "successful"), 0) >= 2
                               and n.get(("Readiness", "successful"), 0) >= 2 else None)(
        probe_counts(node, name)), timeout=30, interval=1, what="successful probes")
    assert counts.get(("Liveness", "failed"), 0) == 0

    # Freeze the operator's process from the host: it holds its sockets and answers nothing.
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    pids = _container_pids(cid)
    assert pids, f"no process of container {cid[:12]} found on the host"
    t0 = time.monotonic()
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        wait_for(lambda: not pod_ready(get_json(node, "pod", "-n", OPERATOR_NS, name)),
                 timeout=30, interval=0.5, what="the frozen pod NotReady")
        not_ready = time.monotonic() - t0

        def restarted() -> dict[str, Any] | None:
            p = get_json(node, "pod", "-n", OPERATOR_NS, name)
            st = p["status"]["containerStatuses"][0]
            return p if st["restartCount"] >= 1 else None

        wait_for(restarted, timeout=60, interval=0.5, what="the liveness probe's restart")
        restart = time.monotonic() - t0
    finally:
        for p in pids:  # harmless if the kubelet has killed them
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
    after = wait_operator_ready(node, timeout=90)
    assert after["metadata"]["name"] == name  # the same pod: its container was restarted
    st = after["status"]["containerStatuses"][0]
    assert st["restartCount"] == 1 and st["lastState"]["terminated"]
    assert probe_counts(node, name).get(("Liveness", "failed"), 0) >= 3
    events = kubectl(node, "get", "events", "-n", OPERATOR_NS, "--field-selector",
                     f"involvedObject.name={name}", "-o", "json").stdout
    assert "failed liveness probe, will be restarted" in events, events
    print(f"install {release['installed_s']:.1f}s; NotReady {not_ready:.1f}s and restarted "
          f"{restart:.1f}s after the freeze")


def _container_pids(cid: str) -> list[int]:
    """Host pids of the processes in container ``cid`` (their cgroup names it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if cid in (proc / "cgroup").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids
