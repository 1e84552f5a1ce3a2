"""SignatureAudit on the real local API server (issue 27): the CRD's validation, and the
audit's Job with its least-privilege RBAC as the operator creates them. Pods do not run on
this control plane (no kubelet, no job controller): what the pods do is the unit tier's."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from sigops.audit.job import job_manifest, plan_job, result_config_map
from sigops.audit.launch import launch
from sigops.core.keys import ED25519, generate_key
from sigops.kube.api import Kube
from sigops.settings import Settings
from tests.support import BIN, kubectl, wait_for

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
