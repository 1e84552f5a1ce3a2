"""The harness itself: a real API server with our CRDs, RBAC and token auth."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.support import kubectl, wait_for

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"


def _kr(name: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "KeyRotation",
            "metadata": {"name": name},
            "spec": {"target": {"deployment": "fractal-lba-backend"}, "algorithm": "hmac-sha256",
                     "overlap": "1h"}}


def test_custom_resource_create_read_patch_watch(api, namespace):
    co = client.CustomObjectsApi(api)
    seen: list[tuple[str, str | None]] = []
    w = watch.Watch()

    def watcher() -> None:
        for ev in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, namespace,
                           "keyrotations", timeout_seconds=30):
            obj = ev["object"]
            seen.append((ev["type"], (obj.get("status") or {}).get("phase")))
            if len(seen) >= 2:
                w.stop()

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    created = co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                                 _kr("rot1"))
    # Defaults from the structural schema are applied by the API server.
    assert created["spec"]["dryRun"] is False
    assert created["spec"]["target"]["deployment"] == "fractal-lba-backend"
    got = co.get_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", "rot1")
    assert got["spec"]["overlap"] == "1h"
    co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "keyrotations", "rot1",
        {"status": {"phase": "Staged", "newKeyId": "k-new"}})
    t.join(timeout=30)
    assert seen[0] == ("ADDED", None)
    assert ("MODIFIED", "Staged") in seen
    # The schema rejects an unknown algorithm: bad input changes nothing.
    bad = _kr("rot2")
    bad["spec"]["algorithm"] = "rsa"
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", bad)
    assert e.value.status == 422


def test_printer_columns(cluster, api, namespace):
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", _kr("rot1"))
    co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "keyrotations", "rot1",
        {"status": {"phase": "Overlapping", "newKeyId": "hmac-new-1",
                    "overlapUntil": "2026-12-06T00:00:00Z"}})
    out = kubectl(cluster, "get", "kr", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "ALGORITHM", "PHASE", "NEW", "KEY", "OVERLAP", "UNTIL", "AGE"]
    assert "hmac-new-1" in out and "Overlapping" in out and "hmac-sha256" in out

    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
        "metadata": {"name": "inc1"}, "spec": {"source": "test", "mode": "auto"}})
    co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "signatureincidents", "inc1",
        {"status": {"phase": "Remediating", "cause": "KeyRotationInProgress", "scenario": "A",
                    "errorRate": "12.5"}})
    out = kubectl(cluster, "get", "signatureincidents", "-n", namespace).stdout
    assert out.splitlines()[0].split() == ["NAME", "CAUSE", "SCENARIO", "PHASE", "RATE", "AGE"]
    row = out.splitlines()[1].split()
    assert row[:5] == ["inc1", "KeyRotationInProgress", "A", "Remediating", "12.5"]
    short = kubectl(cluster, "get", "si", "-n", namespace).stdout
    assert short.splitlines()[1].split()[:5] == row[:5]


def test_rbac_denies_with_service_account_token(cluster, api, namespace):
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="reader")))
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="kr-reader"),
        rules=[client.V1PolicyRule(api_groups=[GROUP], resources=["keyrotations"],
                                   verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="kr-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="kr-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader",
                                       namespace=namespace)]))
    token = kubectl(cluster, "create", "token", "reader", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a JWT minted by the API server's TokenRequest

    cfg = client.Configuration()
    cfg.host = api.configuration.host
    cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    sa_api = client.ApiClient(cfg)
    co = client.CustomObjectsApi(sa_api)
    # Allowed: list KeyRotations in its namespace (RBAC may take a moment to see the binding).
    wait_for(lambda: _can_list(co, namespace), what="RBAC binding to take effect")
    # Denied: reading Secrets, and creating KeyRotations.
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(sa_api).list_namespaced_secret(namespace)
    assert e.value.status == 403
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", _kr("x"))
    assert e.value.status == 403


def _can_list(co: client.CustomObjectsApi, ns: str) -> bool:
    try:
        co.list_namespaced_custom_object(GROUP, VERSION, ns, "keyrotations")
        return True
    except ApiException:
        return False


def test_deployment_gets_replicaset_and_revision(api, namespace):
    apps = client.AppsV1Api(api)
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]))))
    apps.create_namespaced_deployment(namespace, dep)
    rs = wait_for(lambda: apps.list_namespaced_replica_set(namespace).items,
                  what="the deployment controller to create a ReplicaSet")
    assert rs[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"
