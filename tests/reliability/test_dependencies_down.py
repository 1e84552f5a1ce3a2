"""Dependencies going away under a running operator.

- kube-apiserver restarted mid-rotation (a dedicated LocalCluster, so only this test's API
  server goes down): the watch is lost and re-established, the rotation completes once, a
  KeyRotation created after the restart is picked up.
- Prometheus down (``--prometheus-url`` at a dead port): a KeyRotation still completes and its
  ``Guarded`` condition says the error rate is not watched; incidents still open from the
  webhook.
- Alertmanager down (real Prometheus with an always-firing rule, its Alertmanager killed): the
  operator's own ``ALERTS`` poll opens the incident.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devtools.cluster import LocalCluster, free_port
from devtools.promstack import PromStack
from sigops.core.keys import HMAC, Key
from tests.reliability import kit
from tests.support import (
    BIN,
    GROUP,
    REPO,
    TOKEN,
    VERSION,
    AcceptanceWatch,
    OperatorProcess,
    alert_post,
    backend,
    get_kr,
    incidents,
    keyrotation,
    make_backend,
    phase,
    rotation_target,
)

STEPS = ("Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed")


# -- a dedicated control plane whose API server we restart ------------------------------------


class Dedicated:
    def __init__(self, c: LocalCluster) -> None:
        self.local = c
        self.kubeconfig = c.kubeconfig
        self.env = {**os.environ, "KUBECONFIG": str(c.kubeconfig),
                    "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.api = config.new_client_from_config(config_file=str(c.kubeconfig))
        self.downtime = 0.0

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "kubectl"), *args], env=self.env, capture_output=True,
                              text=True, check=check, timeout=60)

    def ready(self) -> bool:
        return self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0

    def stop_apiserver(self) -> list[str]:
        """SIGKILL kube-apiserver (only it); returns its argv to start it again."""
        pid = self.local.pids["kube-apiserver"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self._down_at = time.monotonic()
        return argv

    def start_apiserver(self, argv: list[str]) -> None:
        with open(self.local.workdir / "kube-apiserver.log", "ab") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        self.local.pids["kube-apiserver"] = p.pid
        assert kit.wait_until(self.ready, 60, 0.25), "kube-apiserver did not come back"
        self.downtime = time.monotonic() - self._down_at


@pytest.fixture(scope="module")
def dedicated() -> Iterator[Dedicated]:
    workdir = REPO / ".dev" / f"rel-apiserver-{os.getpid()}"
    shutil.rmtree(workdir, ignore_errors=True)
    c = LocalCluster(workdir=workdir, bindir=BIN).start()
    d = Dedicated(c)
    try:
        d.kubectl("apply", "-f", str(REPO / "crds"))
        d.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/keyrotations.sigops.fractal-lba.io",
                  "crd/signatureincidents.sigops.fractal-lba.io")
        yield d
        # Leak scan of everything this control plane holds, before it goes.
        namespaces = [n.metadata.name for n in
                      client.CoreV1Api(d.api).list_namespace().items]
        for ns in namespaces:
            kit.REGISTRY.harvest_secrets(d.api, ns)
        n, size, found = kit.scan(kit.cluster_documents(d.api, namespaces))
        kit.bump("leak scan (per test)", documents=n, bytes=size, findings=len(found))
        assert not found, found
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _operator(d: Dedicated, tmp_path: Path, **settings: Any) -> OperatorProcess:
    kit.LOG_DIRS.add(tmp_path)
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    op = OperatorProcess(d, tmp_path, {"reconcile_interval": 0.5, "min_overlap": "1s",
                                       **settings}, None,
                         extra_env={"SIGOPS_ALERTS_TOKEN_FILE": str(tok)})
    return op


def _new_ns(api: Any) -> str:
    import uuid

    name = f"t-rel-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_apiserver_restart_mid_rotation(dedicated: Dedicated, tmp_path: Path) -> None:
    api = dedicated.api
    ns = _new_ns(api)
    old = make_backend(api, ns, HMAC)
    kit.REGISTRY.add_key(old)
    ns2 = _new_ns(api)  # for a rotation after the restart; the config names both targets
    op = _operator(dedicated, tmp_path,
                   targets=[rotation_target(ns), rotation_target(ns2)]).start()
    try:
        with AcceptanceWatch(api, ns, HMAC) as watch:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "keyrotations", keyrotation("rot", HMAC, overlap="6s"))
            assert kit.wait_until(lambda: phase(api, ns, "rot") in ("Overlapping", "Verified"),
                                  30, 0.05)
            argv = dedicated.stop_apiserver()
            time.sleep(4)  # the watch and every request fail meanwhile
            assert op.proc is not None and op.proc.poll() is None, "operator died"
            dedicated.start_apiserver(argv)
            t_up = time.monotonic()
            assert kit.wait_until(lambda: phase(api, ns, "rot") in (
                "Completed", "Aborted", "Failed"), 90, 0.2), phase(api, ns, "rot")
            resumed = time.monotonic() - t_up
        kr = get_kr(api, ns, "rot")
        st = kr["status"]
        assert st["phase"] == "Completed", (st.get("phase"), st.get("message"))
        phases = [h["payload"]["phase"] for h in st["history"]]
        assert [phases.count(p) for p in STEPS] == [1] * 6, phases
        assert watch.checks > 0 and watch.violations == [], watch.violations[:3]
        # The watch was re-established: an object created now is noticed and worked on.
        kit.REGISTRY.add_key(make_backend(api, ns2, HMAC))
        t_new = time.monotonic()
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns2, "keyrotations", keyrotation("after", HMAC, overlap="1s"))
        assert kit.wait_until(lambda: phase(api, ns2, "after") == "Completed", 60, 0.2)
        noticed = time.monotonic() - t_new
        assert op.proc is not None and op.proc.poll() is None
        assert op.starts == 1  # no restart of the operator was needed
        kit.figure("kube-apiserver restart mid-rotation", apiserver_restarts=1,
                   apiserver_down_s=round(dedicated.downtime, 1),
                   rotation_completed_s_after_apiserver_back=round(resumed, 1),
                   new_rotation_completed_s_after_restart=round(noticed, 1),
                   operator_restarts=0, history_steps_once=True,
                   acceptance_checks=watch.checks, acceptance_violations=len(watch.violations))
    finally:
        op.stop()
        _scan_logs(tmp_path)


def test_alert_during_apiserver_outage_is_answered_503(dedicated: Dedicated,
                                                       tmp_path: Path) -> None:
    api = dedicated.api
    ns = _new_ns(api)
    op = _operator(dedicated, tmp_path, targets=[{"namespace": ns}]).start()
    try:
        argv = dedicated.stop_apiserver()
        try:
            code, _ = alert_post_raw(op, ns)
        finally:
            dedicated.start_apiserver(argv)
        crashed = "Exception occurred during processing of request" in op.logs()
        kit.figure("kube-apiserver restart mid-rotation",
                   alert_during_outage_http_status=code,
                   alert_during_outage_handler_traceback=crashed)
        assert code == 503
        assert not crashed
    finally:
        op.stop()
        _scan_logs(tmp_path)


def alert_post_raw(op: OperatorProcess, ns: str) -> tuple[int | None, bytes]:
    doc = {"version": "4", "groupKey": "g-outage", "status": "firing",
           "alerts": [{"status": "firing", "fingerprint": "00000000000000ee",
                       "labels": {"alertname": "FLKSignatureFailuresSpike", "namespace": ns,
                                  "deployment": "fractal-lba-backend"}}]}
    return kit.post_bytes(op.alerts_port, json.dumps(doc).encode(),
                          {"Authorization": f"Bearer {TOKEN}"})


def _scan_logs(root: Path) -> None:
    n, size, found = kit.scan(kit.log_documents(root))
    kit.bump("leak scan (per test)", documents=n, bytes=size, findings=len(found))
    assert not found, found


# -- Prometheus down ----------------------------------------------------------------------------


class PromDown:
    """A rotation and an alert on an operator whose Prometheus is a dead port. Started when
    this module starts: every guarded step waits out the Prometheus client's retries (about
    6.5 s each), so it runs alongside the API-server tests and is checked at the end."""

    def __init__(self, cluster: Any, api: Any, workdir: Path) -> None:
        self.api, self.ns = api, _new_ns(api)
        self.old = make_backend(api, self.ns, HMAC)
        kit.REGISTRY.add_key(self.old)
        kit.LOG_DIRS.add(workdir)
        (workdir / "token").write_text(TOKEN)
        self.dead = f"http://127.0.0.1:{free_port()}"
        self.op = OperatorProcess(cluster, workdir, {
            "reconcile_interval": 0.5, "min_overlap": "1s", "alert_poll_interval": 1.0,
            "targets": [rotation_target(self.ns)]}, self.dead,
            # Watches only its namespace: it runs while other tests' operators do.
            extra_env={"SIGOPS_ALERTS_TOKEN_FILE": str(workdir / "token"),
                       "SIGOPS_NAMESPACES": self.ns})
        self.op.start()
        kit.OPERATOR_NAMESPACES.add(self.op.operator_ns)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, self.ns, "keyrotations",
            keyrotation("rot", HMAC, overlap="2s", abortOnErrorRate=1))
        self.alert = alert_post(self.op, self.ns, fp="00000000000000dd")[0]


@pytest.fixture(scope="module", autouse=True)
def prometheus_down(cluster: Any, api: Any, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[PromDown]:
    pd = PromDown(cluster, api, tmp_path_factory.mktemp("prometheus-down"))
    try:
        yield pd
    finally:
        pd.op.stop()
        kit.REGISTRY.harvest_secrets(api, pd.ns)
        kit.REGISTRY.harvest_secrets(api, pd.op.operator_ns)
        n, size, found = kit.scan([*kit.cluster_documents(api, [pd.ns]),
                                   *kit.log_documents(pd.op.workdir)])
        kit.bump("leak scan (per test)", documents=n, bytes=size, findings=len(found))
        client.CoreV1Api(api).delete_namespace(pd.ns)
        assert not found, found


def test_prometheus_down_rotation_completes_unguarded_and_incidents_open(
        api: Any, prometheus_down: PromDown) -> None:
    pd, ns = prometheus_down, prometheus_down.ns
    assert pd.alert == 200
    assert kit.wait_until(lambda: phase(api, ns, "rot") in ("Completed", "Aborted", "Failed"),
                          90, 0.2)
    st = get_kr(api, ns, "rot")["status"]
    assert st["phase"] == "Completed", st.get("message")
    guarded = next(c for c in st["conditions"] if c["type"] == "Guarded")
    assert (guarded["status"], guarded["reason"]) == ("False", "PrometheusUnavailable")
    items = incidents(api, ns)
    assert len(items) == 1 and items[0]["spec"]["source"] == "alertmanager"
    assert kit.wait_until(lambda: (incidents(api, ns)[0].get("status") or {}).get(
        "phase") not in (None, "Detected"), 30)
    logs = pd.op.logs()
    assert "prometheus query failed" in logs and "Traceback" not in logs
    assert pd.op.healthy()
    stamps = [h["payload"]["detected_at"] for h in st["history"]]
    took = (datetime.fromisoformat(stamps[-1].replace("Z", "+00:00"))
            - datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))).total_seconds()
    kit.figure("Prometheus down", rotation="Completed",
               guarded_condition=f"{guarded['status']}/{guarded['reason']}",
               rotation_staged_to_completed_s=took,
               incidents_opened_from_webhook=1,
               incident_phase=(incidents(api, ns)[0].get("status") or {}).get("phase"),
               failed_prometheus_queries_logged=logs.count("prometheus query failed"))


# -- Alertmanager down --------------------------------------------------------------------------


@pytest.mark.skipif(not (BIN / "prometheus").exists(), reason="prometheus not installed")
def test_alertmanager_down_the_alerts_poll_opens_the_incident(api, namespace, operator_factory,
                                                              tmp_path):
    t0 = time.monotonic()
    key = Key("k", HMAC, secret=b"reliability-am-down-backend-key-1")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "reliability", "rules": [{
        "alert": "FLKSignatureFailuresSpike", "expr": "vector(42)",
        "labels": {"severity": "warning", "component": "backend", "namespace": namespace,
                   "deployment": "fractal-lba-backend"}}]}]}))
    op = operator_factory({"targets": [{"namespace": namespace}], "alert_poll_interval": 1.0},
                          start=False, extra_env={"SIGOPS_NAMESPACES": namespace})
    stack = PromStack(targets=["127.0.0.1:9"], rule_files=[rules], webhook_url=f"http://127.0.0.1:{op.alerts_port}"
                      "/v1/alerts", webhook_token=TOKEN, workdir=tmp_path / "promstack")
    stack.start()
    try:
        am = stack.procs["alertmanager"]
        os.killpg(am.pid, signal.SIGKILL)
        am.wait(timeout=10)
        op.prometheus_url = stack.prometheus_url
        op.start()
        assert kit.wait_until(lambda: stack.alerts("FLKSignatureFailuresSpike"), 20)
        t_fire = time.monotonic()
        assert kit.wait_until(lambda: incidents(api, namespace), 30, 0.2), "no incident"
        opened = time.monotonic() - t_fire
        items = incidents(api, namespace)
        assert len(items) == 1 and items[0]["spec"]["source"] == "prometheus-poll"
        assert items[0]["spec"]["alert"]["labels"]["namespace"] == namespace
        time.sleep(2.5)  # more polls of the same firing alert: still one incident
        assert len(incidents(api, namespace)) == 1
        kit.figure("Alertmanager down", alertmanager_running=am.poll() is None,
                   incident_opened_by="prometheus-poll",
                   incident_opened_s_after_alert_active=round(opened, 1), incidents=1,
                   seconds=round(time.monotonic() - t0, 1))
    finally:
        op.stop()
        stack.stop()
