"""SignatureAudit on the real local API server (issue 27): the CRD's validation, and the
audit's Job with its least-privilege RBAC as the operator creates them. Pods do not run on
this control plane (no kubelet, no job controller): what the pods do is the unit tier's."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sigops.audit.job import job_manifest, plan_job, result_config_map
from sigops.audit.launch import launch
from sigops.audit.reconciler import AuditReconciler
from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.core.pcs import expected_pcs_id, sign_pcs
from sigops.core.timeparse import format_time
from sigops.kube.api import Kube, secret_strings
from sigops.settings import Settings
from sigops.signing.records import Signer
from tests.support import BIN, REPO, kubectl, token_kubeconfig, wait_for

pytestmark = pytest.mark.integration


def audit(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "SignatureAudit",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"target": {}, "lookFor": {"acceptedInvalid": True}, **spec}}


def apply(cluster: object, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kubectl"), "apply", "-f", "-"], input=json.dumps(obj),
                          env=cluster.env,  # type: ignore[attr-defined]
                          capture_output=True, text=True, timeout=60)


def test_the_crd_refuses_what_no_audit_can_run(cluster: object, namespace: str) -> None:
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/signatureaudits.sigops.fractal-lba.io")
    ok = apply(cluster, audit(namespace, "ok", since="2026-11-30T10:00:00Z",
                              until="2026-11-30T11:00:00Z", shards=4, parallelism=2))
    assert ok.returncode == 0, ok.stderr
    got = json.loads(kubectl(cluster, "get", "sau", "ok", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["target"]["deployment"] == "fractal-lba-backend"  # defaulted
    for bad, says in (
        (audit(namespace, "b1", lookFor={}), "must name keyIds or fingerprints"),
        (audit(namespace, "b2", since="2026-11-30T11:00:00Z", until="2026-11-30T10:00:00Z"),
         "until must be after"),
        (audit(namespace, "b3", target={"container": "x"}), "selects a configured target"),
        (audit(namespace, "b4", lookFor={"fingerprints": ["not-hex"]}), "fingerprints"),
        (audit(namespace, "b5", shards=0), "shards"),
    ):
        r = apply(cluster, bad)
        assert r.returncode != 0 and says in r.stderr, (bad["metadata"]["name"], r.stderr)
    cols = kubectl(cluster, "get", "signatureaudits", "-n", namespace).stdout.splitlines()[0]
    assert cols.split() == ["NAME", "TARGET", "PHASE", "DONE", "RECORDS", "FINDINGS", "AGE"]


def test_the_job_and_its_rbac_are_created_least_privilege_and_go_with_the_job(
        cluster: object, namespace: str) -> None:
    settings = Settings.model_validate({
        "targets": [{"namespace": namespace, "walClaim": "backend-wal"}],
        "audit": {"image": "sigops:0.test", "maxParallelism": 2}})
    meta = {"namespace": namespace, "name": "drill", "uid": "11112222-3333-4444-5555-666677778888"}
    spec = {"target": {}, "shards": 3, "parallelism": 8, "lookFor": {"keyIds": ["leaked"]}}
    target = settings.resolve_target(namespace, spec["target"], "SignatureAudit")
    plan = plan_job(meta, spec, target, settings.audit, "sigops-keyring-fractal-lba-backend")
    kube = Kube.connect(str(cluster.kubeconfig))  # type: ignore[attr-defined]
    key = generate_key(ED25519, "audit-drill", state="active")
    job, public = launch(kube, plan, key)
    assert public.public == key.public and not public.can_sign
    assert job["spec"]["suspend"] is False  # resumed once its RBAC existed
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 2
    assert job["spec"]["backoffLimitPerIndex"] == 2
    # A second run (kopf re-runs an interrupted handler) keeps what exists, key included.
    again, public2 = launch(kube, plan, generate_key(ED25519, "other", state="active"))
    assert again["metadata"]["uid"] == job["metadata"]["uid"] and public2.public == key.public
    sa = f"system:serviceaccount:{namespace}:{plan.name}"

    def can(*what: str) -> bool:
        r = kubectl(cluster, "auth", "can-i", "--as", sa, "-n", namespace, *what, check=False)
        return r.stdout.strip() == "yes"

    assert can("update", f"configmap/{result_config_map(plan.name, 2)}")
    assert can("get", f"configmap/{result_config_map(plan.name, 0)}")
    assert not can("update", f"configmap/{result_config_map(plan.name, 3)}")  # not its own
    assert not can("create", "configmaps")
    assert not can("get", f"secret/{plan.name}")  # mounted by the kubelet, never read
    assert not can("get", "secret/sigops-keyring-fractal-lba-backend")
    assert not can("list", "pods") and not can("patch", f"job/{plan.name}")
    # Everything the Job owns is collected with it (what its TTL does once it finishes).
    kubectl(cluster, "delete", "job", plan.name, "-n", namespace, "--cascade=background")
    kinds = "serviceaccount,role,rolebinding,secret,configmap"

    def gone() -> bool:
        out = kubectl(cluster, "get", kinds, "-n", namespace, "-l",
                      f"sigops.fractal-lba.io/audit-uid={meta['uid']}", "-o", "name").stdout
        return not out.strip()

    wait_for(gone, timeout=60, what="the audit's objects garbage-collected with its Job")
    assert job_manifest(plan)["metadata"]["name"] == plan.name


def test_an_audit_key_secret_made_before_the_job_fails_the_audit(
        cluster: Any, namespace: str) -> None:
    """Whoever may create Secrets in the namespace could make ``<job>`` first, with a key of
    her own that would sign (forge) the indexes' partials: the operator uses only the Job's
    own objects, and fails the audit otherwise."""
    kube = Kube.connect(str(cluster.kubeconfig))
    settings = Settings.model_validate({
        "targets": [{"namespace": namespace, "walClaim": "backend-wal"}],
        "audit": {"image": "sigops:0.test"}})
    kube.create_cr(namespace, "signatureaudits", audit(namespace, "early", shards=1))
    obj = kube.get_cr(namespace, "signatureaudits", "early") or {}
    from sigops.audit.job import job_name

    name = job_name("early", obj["metadata"]["uid"])
    forged = generate_key(ED25519, "mallory", state="active")
    kubectl(cluster, "create", "secret", "generic", name, "-n", namespace,
            f"--from-literal=key.json={json.dumps(forged.to_entry())}")
    rec = AuditReconciler(kube, settings, Signer(generate_key(ED25519, "op", state="active")))
    assert rec.tick(obj) == "Failed"
    st = (kube.get_cr(namespace, "signatureaudits", "early") or {})["status"]
    cond = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert cond["reason"] == "NotOwned" and f"secret {namespace}/{name}" in cond["message"]
    assert "private" not in json.dumps(st)


def sa_kubeconfig(cluster: Any, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that is the Job's ServiceAccount, as its pods are."""
    token = kubectl(cluster, "create", "token", sa, "-n", namespace,
                    "--duration", "1h").stdout.strip()
    return token_kubeconfig(cluster, "audit", token, path)


def wal(path: Path, key: Key, n: int, late: int, base: int) -> None:
    """``n`` records signed with ``key``, the last ``late`` after its window ends."""
    out = []
    for i in range(n):
        when = datetime(2026, 11, 30, 10, 0, tzinfo=UTC) + timedelta(minutes=i)
        if i >= n - late:
            when += timedelta(hours=2)
        pcs = {"pcs_id": expected_pcs_id("ab" * 32, base + i, "s-1"), "merkle_root": "ab" * 32,
               "epoch": base + i, "shard_id": "s-1", "D_hat": 1.5, "coh_star": 0.25,
               "r": 0.5, "budget": 0.35, "sent_at": format_time(when)}
        body = json.dumps(sign_pcs(pcs, key, "python")).encode()
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000000001Z")
        out.append(f"{stamp}|{len(body)}|".encode() + body + b"\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(out))


def leak_drill(namespace: str, tmp_path: Path) -> tuple[Settings, Path]:
    """A volume target in ``namespace``, a key history with one retired key ("leaked") and
    two pods' WALs under ``tmp_path/wal`` signed with it, 3 records after its window: the
    config and the history file."""
    settings = Settings.model_validate({
        "targets": [{"namespace": namespace, "walClaim": "backend-wal"}],
        "audit": {"image": "sigops:0.test", "firstN": 5}})
    leaked = Key("leaked", HMAC, "retired", secret=b"sigops-integration-leaked-key",
                 not_after=datetime(2026, 11, 30, 11, 0, tzinfo=UTC))
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"keys": [leaked.to_entry()], "profile": "python"}))
    wal(tmp_path / "wal" / "pod-a" / "inbox-20261130.wal", leaked, 6, 2, 0)
    wal(tmp_path / "wal" / "pod-b" / "inbox-20261130.wal", leaked, 5, 1, 100)
    return settings, history


def test_the_reconciler_starts_the_job_and_merges_the_partials_its_indexes_write(
        cluster: Any, namespace: str, tmp_path: Path) -> None:
    kube = Kube.connect(str(cluster.kubeconfig))
    settings, history = leak_drill(namespace, tmp_path)
    kube.create_cr(namespace, "signatureaudits", audit(
        namespace, "leak", shards=2, parallelism=2, lookFor={"keyIds": ["leaked"],
                                                             "acceptedInvalid": True}))
    operator_key = generate_key(ED25519, "sigops-test", state="active")
    rec = AuditReconciler(kube, settings, Signer(operator_key))
    assert rec.tick(kube.get_cr(namespace, "signatureaudits", "leak") or {}) == "Running"
    st = (kube.get_cr(namespace, "signatureaudits", "leak") or {})["status"]
    name = st["job"]["name"]
    assert kube.read_job(namespace, name) is not None
    assert "key.json" not in json.dumps(st) and "private" not in json.dumps(st)
    # The indexes, run here as the Job's ServiceAccount with the Job's own arguments.
    kc = sa_kubeconfig(cluster, namespace, name, tmp_path / "kc")
    key = tmp_path / "key.json"
    key.write_text(secret_strings(kube.read_secret(namespace, name))["key.json"])
    args = (kube.read_job(namespace, name) or {})["spec"]["template"]["spec"]["containers"][0][
        "args"]
    args = [{"/etc/sigops/history/keyring.json": str(history),
             "/etc/sigops/audit-key/key.json": str(key),
             "/wal": str(tmp_path / "wal")}.get(a, a) for a in args]
    for i in range(2):
        r = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), *args,
                            "--index", str(i)], env={**cluster.env, "KUBECONFIG": str(kc)},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # The partial is in, and the ConfigMap is still the Job's (its TTL removes it).
        cm = kube.read_config_map(namespace, f"{name}-r{i}")
        assert cm is not None and "partial.json" in (cm.data or {})
        assert [o.name for o in cm.metadata.owner_references or []] == [name]
    assert rec.tick(kube.get_cr(namespace, "signatureaudits", "leak") or {}) == "Running"
    st = (kube.get_cr(namespace, "signatureaudits", "leak") or {})["status"]
    assert st["progress"]["summary"] == "2/2"  # the Job itself never finishes here
    assert st["totals"]["total"] == 11 and st["totals"]["by_verdict"] == {
        "valid": 8, "stale_key": 3}
    assert st["findings"]["accepted_invalid"]["count"] == 3
    assert st["findings"]["searched_key"]["count"] == 11
    # One index may not write another's result.
    other = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(kc), "-n", namespace,
                            "create", "configmap", f"{name}-r9"], capture_output=True,
                           text=True, timeout=60)
    assert other.returncode != 0 and "forbidden" in other.stderr


def test_a_sidecar_audit_reads_one_index_per_own_ready_pod_listed_in_its_config_map(
        cluster: Any, api: Any, namespace: str) -> None:
    """``walSource: sidecar``: at launch the operator lists the Deployment's own ready pods
    (its ReplicaSet's, here made by the controller and marked ready as a kubelet would), never
    a look-alike that only matches the selector, and writes them into the Job's pods
    ConfigMap; one index per pod, the WAL token mounted, the Role no wider."""
    import time

    from kubernetes import client

    from sigops.audit.job import pods_config_map
    from sigops.audit.sidecar import WalPod, parse_pods

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    labels = {"app": "fractal-lba-backend"}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "fractal-lba-backend", "labels": labels},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "backend", "image": "x",
                      "ports": [{"name": "http", "containerPort": 8080}]},
                     {"name": "wal-reader", "image": "x",
                      "ports": [{"name": "flk-wal", "containerPort": 8079}]}]}}}})

    def own_pods() -> list[str] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=fractal-lba-backend")
        names = sorted(p.metadata.name for p in pods.items
                       if any(o.kind == "ReplicaSet" for o in p.metadata.owner_references or []))
        return names if len(names) == 3 else None

    names = wait_for(own_pods, 60, what="the ReplicaSet's three pods")[:2]  # one never ready
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def ready(name: str, ip: str) -> None:
        core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})

    for i, name in enumerate(names):
        ready(name, f"10.20.0.{i + 1}")
    decoy = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="decoy")))
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="look-alike", labels=labels, owner_references=[
            client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="decoy",
                                    uid=decoy.metadata.uid, controller=True)]),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="wal-reader", image="x",
            ports=[client.V1ContainerPort(name="flk-wal", container_port=8079)])])))
    ready("look-alike", "10.20.0.99")

    kube = Kube.connect(str(cluster.kubeconfig))
    settings = Settings.model_validate({
        "targets": [{"namespace": namespace, "walSource": "sidecar"}],
        "audit": {"image": "sigops:0.test", "maxParallelism": 4}})
    kube.create_cr(namespace, "signatureaudits", audit(namespace, "pods", shards=7))
    rec = AuditReconciler(kube, settings, Signer(generate_key(ED25519, "op", state="active")))
    assert rec.tick(kube.get_cr(namespace, "signatureaudits", "pods") or {}) == "Running"
    st = (kube.get_cr(namespace, "signatureaudits", "pods") or {})["status"]
    job_name = st["job"]["name"]
    assert st["job"]["shards"] == 2  # spec.shards 7 is replaced by the pod count
    assert st["job"]["podsNotRead"] == 1  # the third pod, never ready: said, not hidden
    cond = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert "one index per ready pod (2" in cond["message"]
    assert "1 pod(s) not ready, not read" in cond["message"]
    cm = kube.read_config_map(namespace, pods_config_map(job_name))
    assert cm is not None and cm.metadata.owner_references[0].kind == "Job"
    assert parse_pods(cm.data["pods.json"]) == [WalPod(names[0], "10.20.0.1", 8079),
                                                 WalPod(names[1], "10.20.0.2", 8079)]
    job = kube.read_job(namespace, job_name) or {}
    assert job["spec"]["completions"] == 2 and job["spec"]["suspend"] is False
    pod_spec = job["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod_spec["volumes"]}
    assert vols["wal-token"]["secret"]["secretName"] == "sigops-wal-token"
    assert vols["pods"]["configMap"]["name"] == pods_config_map(job_name)
    sa = f"system:serviceaccount:{namespace}:{job_name}"
    for what in (("list", "pods"), ("get", "secret/sigops-wal-token"),
                 ("update", f"configmap/{pods_config_map(job_name)}")):
        r = kubectl(cluster, "auth", "can-i", "--as", sa, "-n", namespace, *what, check=False)
        assert r.stdout.strip() == "no", what
    # The reconciler follows it with the Job's own count of indexes.
    assert rec.tick(kube.get_cr(namespace, "signatureaudits", "pods") or {}) == "Running"
    st = (kube.get_cr(namespace, "signatureaudits", "pods") or {})["status"]
    assert st["progress"]["summary"] == "0/2"
