"""Parts 3-5: the operator on a real local control plane.

- (3) alert-to-incident latency: POST /v1/alerts to the SignatureIncident seen by a watch on the
  API server, 200 distinct alerts, one at a time (``signal_rate_limit`` raised to 100000 so
  that none is rate-limited);
- (3b) alert to the first remediation action of scenario A (key overlap);
- (4) storm: 10,000 webhook posts (100 distinct groups, 100 posts each, shuffled) from 4 client
  threads paced to finish in 10 s, with the default rate limit (3 per hour per target);
- (5) idle cost with 100 KeyRotations (dry run, phase Planned) and 100 SignatureIncidents.

Each part runs its own ``sigops run`` process (own config, own operator namespace) against one
control plane (etcd, kube-apiserver, kube-controller-manager from .dev/bin), all on 127.0.0.1.
Every process started here is stopped by its process group in a finally block.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    DEV_BIN,
    REPO,
    SIGOPS,
    log,
    median,
    percentile,
    proc_cpu_seconds,
    proc_rss_mib,
    proc_threads,
)

from devtools.stub import StubServer

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
TOKEN = "bench-alert-token-0123456789"
DEPLOYMENT = "fractal-lba-backend"


# -- the control plane and the operator --------------------------------------------------------


class Cluster:
    def __init__(self, workdir: Path) -> None:
        from devtools.cluster import LocalCluster

        self.local = LocalCluster(workdir=workdir, bindir=DEV_BIN)
        self.api: Any = None
        self.env: dict[str, str] = {}

    def start(self) -> Cluster:
        from kubernetes import config

        self.local.start()
        kc = str(self.local.kubeconfig)
        self.env = {**os.environ, "KUBECONFIG": kc, "PATH": f"{DEV_BIN}:{os.environ['PATH']}"}
        kubectl = str(DEV_BIN / "kubectl")
        subprocess.run([kubectl, "apply", "-f", str(REPO / "crds")], env=self.env, check=True,
                       capture_output=True, timeout=60)
        subprocess.run([kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                        f"crd/keyrotations.{GROUP}", f"crd/signatureincidents.{GROUP}"],
                       env=self.env, check=True, capture_output=True, timeout=90)
        self.api = config.new_client_from_config(config_file=kc)
        return self

    def stop(self) -> None:
        self.local.stop()

    def api_requests(self) -> Counter[str]:
        """apiserver_request_total summed by verb and resource (from the API server's
        /metrics), to count what the operator asks of it."""
        out = subprocess.run([str(DEV_BIN / "kubectl"), "get", "--raw", "/metrics"],
                             env=self.env, capture_output=True, text=True, timeout=30).stdout
        counts: Counter[str] = Counter()
        for line in out.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            fields = dict(kv.split("=", 1) for kv in labels[len("apiserver_request_total{"):-1]
                          .split(",") if "=" in kv)
            verb = fields.get("verb", "").strip('"')
            resource = fields.get("resource", "").strip('"')
            counts[f"{verb} {resource}"] += int(float(value))
        return counts

    def cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, pid in self.local.pids.items():
            try:
                out[name] = proc_cpu_seconds(pid)
            except OSError:
                pass
        return out

    # -- objects ------------------------------------------------------------------------------

    def namespace(self, name: str) -> str:
        from kubernetes import client

        client.CoreV1Api(self.api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def backend(self, ns: str, secret: str = "bench-backend-key-0123456789") -> None:
        """The backend Deployment (replicas 0: no kubelet) with its HMAC key from a Secret,
        and the agents' Secret with the same key."""
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        for name in ("backend-key", "agent-key"):
            core.create_namespaced_secret(ns, client.V1Secret(
                metadata=client.V1ObjectMeta(name=name),
                string_data={"PCS_HMAC_KEY": secret}))
        env = [client.V1EnvVar(name="PCS_SIGN_ALG", value="hmac"),
               client.V1EnvVar(name="PCS_HMAC_KEY", value_from=client.V1EnvVarSource(
                   secret_key_ref=client.V1SecretKeySelector(name="backend-key",
                                                             key="PCS_HMAC_KEY"))),
               client.V1EnvVar(name="TOKEN_RATE", value="100")]
        self._deployment(ns, env)

    def backend_literal(self, ns: str, secret: str) -> None:
        from kubernetes import client

        self._deployment(ns, [client.V1EnvVar(name="PCS_SIGN_ALG", value="hmac"),
                              client.V1EnvVar(name="PCS_HMAC_KEY", value=secret),
                              client.V1EnvVar(name="TOKEN_RATE", value="100")])

    def _deployment(self, ns: str, env: list[Any]) -> None:
        from kubernetes import client

        client.AppsV1Api(self.api).create_namespaced_deployment(ns, client.V1Deployment(
            metadata=client.V1ObjectMeta(name=DEPLOYMENT),
            spec=client.V1DeploymentSpec(
                replicas=0, selector=client.V1LabelSelector(match_labels={"app": "backend"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "backend"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(
                        name="backend", image="fractal-lba/backend:bench", env=env)])))))

    def list_cr(self, ns: str, plural: str) -> list[dict[str, Any]]:
        from kubernetes import client

        co = client.CustomObjectsApi(self.api)
        items: list[dict[str, Any]] = co.list_namespaced_custom_object(
            GROUP, VERSION, ns, plural, _request_timeout=30)["items"]
        return items

    def create_cr(self, ns: str, plural: str, body: dict[str, Any]) -> None:
        from kubernetes import client

        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, ns, plural, body, _request_timeout=30)


class Operator:
    """`sigops run` as a real process, stopped by process group."""

    def __init__(self, cluster: Cluster, workdir: Path, name: str, settings: dict[str, Any]
                 ) -> None:
        import yaml

        from devtools.cluster import free_port

        self.cluster, self.name = cluster, name
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.token_file = workdir / "alerts-token"
        self.token_file.write_text(TOKEN)
        self.log_path = workdir / f"{name}.log"
        self.alerts_port, self.metrics_port = free_port(), free_port()
        self.operator_ns = f"sigops-bench-{name}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Operator:
        argv = [SIGOPS, "run", "--config", str(self.config),
                "--alerts-listen", f"127.0.0.1:{self.alerts_port}",
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                "--alerts-token-file", str(self.token_file),
                "--operator-namespace", self.operator_ns]
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(argv, env=self.cluster.env, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator {self.name} exited: {self.tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator {self.name} not healthy in {timeout:.0f}s: {self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def alert_body(ns: str, fp: str, group: str, status: str = "firing") -> bytes:
    return json.dumps({
        "version": "4", "groupKey": group, "status": status, "receiver": "sigops",
        "alerts": [{"status": status, "fingerprint": fp,
                    "labels": {"alertname": "FLKSignatureFailuresSpike", "severity": "warning",
                               "component": "backend", "namespace": ns,
                               "deployment": DEPLOYMENT},
                    "annotations": {"value": "42"}, "startsAt": "2026-11-22T00:00:00Z"}],
    }).encode()


def post(port: int, body: bytes, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/alerts", body=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        try:
            doc = json.loads(data or b"{}")
        except ValueError:
            doc = {}
        return r.status, doc
    finally:
        conn.close()


def raw_request(port: int, body: bytes) -> bytes:
    """The bytes of one POST /v1/alerts (the receiver speaks HTTP/1.0: one post per
    connection), prepared once so the storm's client spends little CPU per post."""
    head = (f"POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def post_raw(port: int, request: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    resp = b"".join(chunks)
    return int(resp[9:12]), resp.partition(b"\r\n\r\n")[2]


class IncidentWatch:
    """Notes when each SignatureIncident (by alert-fingerprint label) first appears."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="incident-watch")

    def start(self) -> IncidentWatch:
        self.thread.start()
        return self

    def _run(self) -> None:
        from kubernetes import client, watch

        co = client.CustomObjectsApi(self.cluster.api)
        while not self.stopping:
            w = watch.Watch()
            try:
                for ev in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, self.ns,
                                   "signatureincidents", timeout_seconds=30):
                    now = time.monotonic()
                    if ev["type"] == "ADDED":
                        labels = ev["object"]["metadata"].get("labels") or {}
                        fp = labels.get("sigops.fractal-lba.io/alert-fingerprint")
                        if fp:
                            with self.cond:
                                self.seen.setdefault(fp, now)
                                self.cond.notify_all()
                    if self.stopping:
                        break
            except Exception:  # noqa: BLE001 - reconnect; the latency part times out if needed
                time.sleep(0.1)
            finally:
                w.stop()

    def wait(self, fp: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while fp not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.seen[fp]

    def stop(self) -> None:
        self.stopping = True


# -- (3) alert to incident -----------------------------------------------------------------------


def latency(cluster: Cluster, work: Path, n: int = 200, gap: float = 0.05) -> dict[str, Any]:
    ns = cluster.namespace("bench-latency")
    cluster.backend(ns)
    op = Operator(cluster, work, "latency", {
        "targets": [{"namespace": ns, "deployment": DEPLOYMENT}], "reconcile_interval": 0.5,
        "signal_rate_limit": 100000}).start()
    watcher = IncidentWatch(cluster, ns).start()
    try:
        # Warm-up (not counted): the watch is live and the operator's first API calls are done.
        for i in range(3):
            fp = f"ffff{i:012x}"
            post(op.alerts_port, alert_body(ns, fp, f"warm-{i}"))
            if watcher.wait(fp, 30) is None:
                raise RuntimeError("the warm-up incident never appeared")
        cpu0, t_start = proc_cpu_seconds(op.pid), time.monotonic()
        lat, resp, codes, missing = [], [], Counter(), 0
        for i in range(n):
            fp = f"{i:016x}"
            t0 = time.monotonic()
            code, doc = post(op.alerts_port, alert_body(ns, fp, f"lat-{i}"))
            t1 = time.monotonic()
            codes[f"{code} {','.join(sorted(doc.get('results', {})))}"] += 1
            seen = watcher.wait(fp, 10)
            if seen is None:
                missing += 1
            else:
                lat.append((seen - t0) * 1000)
            resp.append((t1 - t0) * 1000)
            time.sleep(gap)
            if (i + 1) % 50 == 0:
                log(f"  latency: {i + 1}/{n} alerts, p50 so far {median(lat):.0f} ms")
        busy = (proc_cpu_seconds(op.pid) - cpu0) / (time.monotonic() - t_start)
        return {
            "alerts": n, "gap_s": gap, "missing": missing, "responses": dict(codes),
            "latency_ms": {"p50": median(lat), "p90": percentile(lat, 90),
                           "p99": percentile(lat, 99), "max": max(lat) if lat else None,
                           "min": min(lat) if lat else None},
            "response_ms": {"p50": median(resp), "p99": percentile(resp, 99)},
            "operator_cpu_share": busy,
            "incidents_in_namespace": len(cluster.list_cr(ns, "signatureincidents")),
            "operator_rss_mib": proc_rss_mib(op.pid),
        }
    finally:
        watcher.stop()
        op.stop()


# -- (3b) alert to first action, scenario A ------------------------------------------------------


class SampleServer(StubServer):
    """Stands in for the backend's failed-sample endpoint."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        body = json.dumps({"samples": samples}).encode()
        super().__init__(lambda: body)


def scenario_a(cluster: Cluster, work: Path, reps: int = 3) -> dict[str, Any]:
    from kubernetes import client

    from sigops.core.keys import HMAC, Key
    from sigops.core.pcs import expected_pcs_id, sign_pcs

    old = Key("old", HMAC, secret=b"old-agent-key-0123456789")
    new = Key("new", HMAC, secret=b"new-backend-key-987654321")
    samples = []
    for i in range(20):
        root = f"{i:064x}"
        doc = sign_pcs({"pcs_id": expected_pcs_id(root, 1, "shard-1"), "merkle_root": root,
                        "epoch": 1, "shard_id": "shard-1", "D_hat": 1.0, "coh_star": 0.5,
                        "r": 0.3, "budget": 0.2, "version": "0.1",
                        "sent_at": "2026-11-22T00:00:00Z"}, old)
        samples.append({"pcs": doc, "received_at": doc["sent_at"], "source": "agent-1"})
    server = SampleServer(samples)
    # Retiring within its window: the key scenario A may re-admit (a retired one it refuses).
    window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    ring = {"keys": [{**old.to_entry(), "state": "retiring", "overlap_until": window},
                     {**new.to_entry(), "state": "active"}],
            "profile": "python", "backend_accepts": ["new"], "primary": "new", "lock": None}
    namespaces = [f"bench-a-{i}" for i in range(reps)]
    for ns in namespaces:
        cluster.namespace(ns)
        cluster.backend_literal(ns, new.secret.decode())  # type: ignore[union-attr]
        client.CoreV1Api(cluster.api).create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"sigops-keyring-{DEPLOYMENT}"),
            string_data={"keyring.json": json.dumps(ring)}))
    op = Operator(cluster, work, "scenario-a", {
        "targets": [{"namespace": ns, "deployment": DEPLOYMENT, "backendURL": server.url}
                    for ns in namespaces],
        "reconcile_interval": 0.5, "verify_timeout": "20s", "cooldown": "2s",
        "min_overlap": "1s"}).start()
    runs = []
    try:
        time.sleep(2)
        for i, ns in enumerate(namespaces):
            t0 = time.monotonic()
            code, _ = post(op.alerts_port, alert_body(ns, f"a{i:015x}", f"scen-a-{i}"))
            created = first_action = action = None
            phases: dict[str, float] = {}
            deadline = t0 + 60
            while time.monotonic() < deadline:
                items = cluster.list_cr(ns, "signatureincidents")
                now = time.monotonic() - t0
                if items:
                    created = created if created is not None else now
                    st = items[0].get("status") or {}
                    phases.setdefault(st.get("phase") or "Detected", now)
                    if st.get("actions"):
                        first_action = now
                        action = st["actions"][0]["payload"].get("action")
                        break
                time.sleep(0.05)
            runs.append({"namespace": ns, "post_status": code, "incident_s": created,
                         "first_action_s": first_action,
                         "first_action": action,
                         "phases_first_seen_s": phases})
            log(f"  scenario A {i + 1}/{reps}: first action after "
                f"{first_action if first_action is None else round(first_action, 2)} s")
        ok = [r["first_action_s"] for r in runs if r["first_action_s"] is not None]
        return {"reps": reps, "runs": runs,
                "first_action_s": {"median": median(ok), "max": max(ok) if ok else None},
                "poll_interval_s": 0.05}
    finally:
        op.stop()
        server.close()


# -- (4) storm -----------------------------------------------------------------------------------


def storm(cluster: Cluster, work: Path, posts: int = 10_000, groups: int = 100,
          threads: int = 8, duration: float = 10.0) -> dict[str, Any]:
    ns = cluster.namespace("bench-storm")
    cluster.backend(ns)
    op = Operator(cluster, work, "storm", {
        "targets": [{"namespace": ns, "deployment": DEPLOYMENT}],
        "reconcile_interval": 0.5}).start()  # default signal_rate_limit: 3 per hour
    try:
        time.sleep(3)
        rss_before, hwm_before = proc_rss_mib(op.pid), _hwm(op.pid)
        rng = random.Random(7)
        plan = [g for g in range(groups) for _ in range(posts // groups)]
        rng.shuffle(plan)
        requests = {g: raw_request(op.alerts_port, alert_body(ns, f"{0x5000 + g:016x}",
                                                              f"storm-{g}"))
                    for g in range(groups)}
        shares = [plan[t::threads] for t in range(threads)]
        results: list[list[tuple[float, float, int, str]]] = [[] for _ in range(threads)]
        interval = duration / (posts / threads)
        start = time.monotonic() + 0.2

        def client_thread(t: int) -> None:
            for k, g in enumerate(shares[t]):
                delay = start + k * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.monotonic()
                try:
                    code, body = post_raw(op.alerts_port, requests[g])
                    what = ",".join(sorted(json.loads(body or b"{}").get("results", {})))
                except (OSError, ValueError) as e:
                    code, what = 0, type(e).__name__
                results[t].append((t0, time.monotonic(), code, what or "-"))

        cpu0, client0 = proc_cpu_seconds(op.pid), time.process_time()
        workers = [threading.Thread(target=client_thread, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=300)
        flat = [r for rs in results for r in rs]
        first = min(r[0] for r in flat)
        last = max(r[1] for r in flat)
        cpu_storm = proc_cpu_seconds(op.pid) - cpu0
        client_cpu = time.process_time() - client0
        rss_after, hwm_after = proc_rss_mib(op.pid), _hwm(op.pid)
        resp = [(r[1] - r[0]) * 1000 for r in flat]
        by_result: dict[str, list[float]] = {}
        for r in flat:
            by_result.setdefault(r[3], []).append((r[1] - r[0]) * 1000)
        time.sleep(3)
        items = cluster.list_cr(ns, "signatureincidents")
        limited = [i for i in items
                   if (i["metadata"].get("labels") or {}).get(
                       "sigops.fractal-lba.io/rate-limited") == "true"]
        log("  storm: letting the operator settle for 15 s")
        time.sleep(12)
        rss_settled = proc_rss_mib(op.pid)
        limit = 3
        elapsed = last - first
        return {
            "posts": len(flat), "groups": groups, "client_threads": threads,
            "target_duration_s": duration, "elapsed_s": elapsed,
            "posts_per_s": len(flat) / elapsed,
            "status_codes": dict(Counter(str(r[2]) for r in flat)),
            "results": dict(Counter(r[3] for r in flat)),
            "response_ms": {"p50": median(resp), "p90": percentile(resp, 90),
                            "p99": percentile(resp, 99), "max": max(resp)},
            "response_ms_by_result": {k: {"n": len(v), "p50": median(v),
                                          "p99": percentile(v, 99), "sum_s": sum(v) / 1000}
                                      for k, v in by_result.items()},
            "incidents_total": len(items),
            "incidents_remediating": len(items) - len(limited),
            "incidents_rate_limited_records": len(limited),
            "expected_incidents": min(groups, limit),
            "expected_rate_limited_records": 1 if groups > limit else 0,
            "signal_rate_limit": limit,
            "operator_cpu_s_during_storm": cpu_storm,
            "operator_cpu_share": cpu_storm / elapsed,
            "client_cpu_share": client_cpu / elapsed,
            "rss_mib": {"before": rss_before, "after": rss_after, "settled_15s": rss_settled,
                        "peak_before": hwm_before, "peak_after": hwm_after},
            "operator_alive": op.alive(), "threads_after": proc_threads(op.pid),
        }
    finally:
        op.stop()


def _hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- (5) idle ------------------------------------------------------------------------------------


def idle(cluster: Cluster, work: Path, objects: int = 100, window: float = 45.0,
         intervals: tuple[float, ...] = (0.5, 5.0), window_slow: float = 30.0
         ) -> dict[str, Any]:
    ns = cluster.namespace("bench-idle")
    cluster.backend(ns)
    out: dict[str, Any] = {"keyrotations": objects, "incidents": objects, "runs": []}
    for k, interval in enumerate(intervals):
        op = Operator(cluster, work, f"idle-{round(interval * 10)}", {
            "targets": [{"namespace": ns, "deployment": DEPLOYMENT}],
            "reconcile_interval": interval}).start()
        try:
            if k == 0:
                log(f"  idle: creating {objects} KeyRotations (dry run) and {objects} "
                    "SignatureIncidents")
                for i in range(objects):
                    cluster.create_cr(ns, "keyrotations", {
                        "apiVersion": f"{GROUP}/{VERSION}", "kind": "KeyRotation",
                        "metadata": {"name": f"kr-{i:03d}"},
                        "spec": {"target": {"deployment": DEPLOYMENT},
                                 "algorithm": "hmac-sha256", "overlap": "336h",
                                 "dryRun": True}})
                    cluster.create_cr(ns, "signatureincidents", {
                        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
                        "metadata": {"name": f"si-{i:03d}"},
                        "spec": {"source": "person", "mode": "dryRun",
                                 "target": {"deployment": DEPLOYMENT}}})
            settle = _settle(cluster, ns, objects, timeout=180)
            time.sleep(5 if k == 0 else 10)  # kopf's own start-up and first ticks
            win = window if k == 0 else window_slow
            log(f"  idle: reconcile_interval {interval:g}s, measuring for {win:.0f}s")
            req0 = cluster.api_requests()
            log0 = _log_lines(op)
            api0 = cluster.cpu_seconds()
            cpu0, t0 = proc_cpu_seconds(op.pid), time.monotonic()
            rss0 = proc_rss_mib(op.pid)
            time.sleep(win)
            dt = time.monotonic() - t0
            cpu = proc_cpu_seconds(op.pid) - cpu0
            api1 = cluster.cpu_seconds()
            req = cluster.api_requests() - req0
            log_lines = _log_lines(op) - log0
            out["runs"].append({
                "reconcile_interval_s": interval, "window_s": dt,
                "settle": settle,
                "operator_cpu_percent": cpu / dt * 100,
                "operator_rss_mib": {"start": rss0, "end": proc_rss_mib(op.pid)},
                "operator_threads": proc_threads(op.pid),
                "control_plane_cpu_percent": {n: (api1[n] - api0.get(n, 0.0)) / dt * 100
                                              for n in api1},
                "operator_alive": op.alive(),
                "api_requests_per_s": {k: round(v / dt, 2) for k, v in req.most_common(8)},
                "operator_log_lines_per_s": log_lines / dt,
            })
        finally:
            op.stop()
    return out


def _log_lines(op: Operator) -> int:
    with op.log_path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _settle(cluster: Cluster, ns: str, n: int, timeout: float) -> dict[str, Any]:
    """Wait until every KeyRotation is Planned and every incident sits in a resting phase."""
    t0 = time.monotonic()
    resting = {"AwaitingApproval", "Escalated", "RateLimited", "Resolved"}
    kr_phases: Counter[str] = Counter()
    si_phases: Counter[str] = Counter()
    while time.monotonic() - t0 < timeout:
        kr_phases = Counter((o.get("status") or {}).get("phase") or "Pending"
                            for o in cluster.list_cr(ns, "keyrotations"))
        si_phases = Counter((o.get("status") or {}).get("phase") or "Detected"
                            for o in cluster.list_cr(ns, "signatureincidents"))
        if kr_phases.get("Planned", 0) == n and sum(si_phases[p] for p in resting) == n:
            break
        time.sleep(1)
    return {"seconds": time.monotonic() - t0, "keyrotation_phases": dict(kr_phases),
            "incident_phases": dict(si_phases)}


# -- all of it -----------------------------------------------------------------------------------


def run(work: Path, latency_n: int = 200, storm_posts: int = 10_000,
        idle_window: float = 45.0, with_scenario_a: bool = True) -> dict[str, Any]:
    res: dict[str, Any] = {}
    cdir = work / "cluster"
    shutil.rmtree(cdir, ignore_errors=True)
    log("part 3-5: starting the local control plane")
    cluster = Cluster(cdir)
    try:
        t0 = time.monotonic()
        cluster.start()
        res["control_plane_start_s"] = time.monotonic() - t0
        steps: list[tuple[str, Any]] = [
            ("latency", lambda: latency(cluster, work, latency_n)),
            ("storm", lambda: storm(cluster, work, storm_posts)),
            ("idle", lambda: idle(cluster, work, window=idle_window)),
        ]
        if with_scenario_a:
            steps.append(("scenario_a", lambda: scenario_a(cluster, work)))
        for name, step in steps:
            log(f"part 3-5: {name}")
            t1 = time.monotonic()
            try:
                res[name] = step()
            except Exception as e:  # noqa: BLE001 - report it, go on with the next part
                res[name] = {"error": f"{type(e).__name__}: {e}"}
                log(f"  {name} failed: {e}")
            res[name]["seconds"] = time.monotonic() - t1
        res["control_plane_rss_mib"] = cluster.local.rss_mb()
    finally:
        cluster.stop()
        shutil.rmtree(cdir, ignore_errors=True)
    return res
