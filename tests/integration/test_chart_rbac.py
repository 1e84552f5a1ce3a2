"""The chart on the real API server: every rendered manifest passes a server-side dry run
(restricted Pod Security included), and `sigops run` with nothing but the chart's
ServiceAccount token and RBAC completes a KeyRotation and answers an alert end to end, while
calls outside its rules are refused with 403.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from sigops.core.keys import HMAC, Key, generate_key
from sigops.core.pcs import expected_pcs_id, sign_pcs
from tests.support import (
    BIN,
    REPO,
    backend,
    backend_fingerprints,
    get_kr,
    keyrotation,
    kubectl,
    make_backend,
    phase,
    set_backend_key,
    wait_for,
)

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
CHART = REPO / "charts" / "sigops"
TOKEN = "chart-test-alert-token-0123456789"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")

pytestmark = pytest.mark.skipif(not (BIN / "helm").exists(), reason="helm missing: make tools")

Doc = dict[str, Any]


def helm_template(release: str, namespace: str, values: Doc, tmp: Path) -> list[Doc]:
    vf = tmp / f"values-{release}.yaml"
    vf.write_text(yaml.safe_dump(values))
    p = subprocess.run([str(BIN / "helm"), "template", release, str(CHART), "--namespace",
                        namespace, "--values", str(vf)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def apply(cluster: object, docs: list[Doc], tmp: Path, *extra: str
          ) -> subprocess.CompletedProcess[str]:
    f = tmp / f"apply-{uuid.uuid4().hex[:6]}.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    return kubectl(cluster, "apply", "-f", str(f), *extra, check=False)


def chart_values(target_ns: str, **over: Any) -> Doc:
    values: Doc = {
        "targets": [{"namespace": target_ns, "deployment": "fractal-lba-backend",
                     "default": True, "agentSecret": {"name": "agent-key"}}],
        "scenarioB": {"mode": "auto", "labelNodes": False},
        "scenarioD": {"mode": "auto", "cooldown": "2s"},
        "scenarioE": {"mode": "approval", "lastKnownGoodAfter": "0s"},
        "keyRotation": {"minOverlap": "1s", "reconcileInterval": 0.5},
        "remediation": {"verifyTimeout": "20s"},
        "alerts": {"token": {"value": TOKEN}},
    }
    values.update(over)
    return values


def make_namespace(api: Any, name: str, labels: dict[str, str] | None = None) -> None:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels=labels)))


class Installed:
    """The chart's RBAC applied for one release, a token for its ServiceAccount, and a
    kubeconfig holding only that token."""

    def __init__(self, release: str, operator_ns: str, docs: list[Doc], kubeconfig: Path
                 ) -> None:
        self.release, self.operator_ns, self.docs, self.kubeconfig = (
            release, operator_ns, docs, kubeconfig)

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def env(self) -> dict[str, str]:
        dep = next(d for d in self.docs if d["kind"] == "Deployment")
        return {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]
                ["env"] if "value" in e}

    def config(self) -> Doc:
        cm = next(d for d in self.docs if d["kind"] == "ConfigMap")
        cfg: Doc = yaml.safe_load(cm["data"]["config.yaml"])
        return cfg


@pytest.fixture
def install_chart(cluster: object, api: Any, tmp_path: Path
                  ) -> Iterator[Callable[..., Installed]]:
    """Render the chart for an operator namespace and apply its ServiceAccount and RBAC;
    cluster-scoped objects and the operator namespace are removed afterwards."""
    made: list[Installed] = []

    def install(operator_ns: str, values: Doc) -> Installed:
        release = f"c{uuid.uuid4().hex[:6]}"
        make_namespace(api, operator_ns)
        docs = helm_template(release, operator_ns, values, tmp_path)
        rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
        p = apply(cluster, rbac, tmp_path)
        assert p.returncode == 0, p.stderr
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        token = kubectl(cluster, "create", "token", sa, "-n", operator_ns,
                        "--duration", "1h").stdout.strip()
        admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())  # type: ignore[attr-defined]
        kc = {**admin, "users": [{"name": "sigops-sa", "user": {"token": token}}],
              "contexts": [{"name": "sigops-sa", "context": {
                  "cluster": admin["clusters"][0]["name"], "user": "sigops-sa"}}],
              "current-context": "sigops-sa"}
        path = tmp_path / f"kubeconfig-{release}"
        path.write_text(json.dumps(kc))
        path.chmod(0o600)
        inst = Installed(release, operator_ns, docs, path)
        made.append(inst)
        return inst

    yield install
    for inst in made:
        for d in inst.docs:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kubectl(cluster, "delete", d["kind"].lower(), d["metadata"]["name"],
                        "--ignore-not-found", "--wait=false", check=False)
        kubectl(cluster, "delete", "namespace", inst.operator_ns, "--ignore-not-found",
                "--wait=false", check=False)


def start_operator(operator_factory: Any, inst: Installed, tmp_path: Path) -> Any:
    """`sigops run` as the chart runs it: the chart's config and env, the SA's token only."""
    tok = tmp_path / "alerts-token"
    tok.write_text(TOKEN)
    env = inst.env()
    op = operator_factory(inst.config(), start=False)
    op.operator_ns = inst.operator_ns
    op.extra_env = {"KUBECONFIG": str(inst.kubeconfig),
                    "SIGOPS_NAMESPACES": env["SIGOPS_NAMESPACES"],
                    "SIGOPS_ALERTS_TOKEN_FILE": str(tok)}
    return op.start()


def assert_no_permission_errors(log: str) -> None:
    # 403 as a status, not inside a number (a random port like 40337 is no error).
    for bad in (r"\b403\b", "Forbidden", "forbidden", "Not enough permissions"):
        assert not re.search(bad, log), f"{bad!r} in the operator log:\n{log[-4000:]}"


def status_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except client.ApiException as e:
        return int(e.status)
    return 200


# -- server-side dry run -------------------------------------------------------------------------

PROMETHEUS_RULE_CRD: Doc = {
    # Just enough of prometheus-operator's CRD for the API server to validate a PrometheusRule.
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "PrometheusRule", "plural": "prometheusrules",
                       "singular": "prometheusrule", "listKind": "PrometheusRuleList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "required": ["groups"], "properties": {"groups": {
                         "type": "array", "items": {
                             "type": "object", "required": ["name", "rules"], "properties": {
                                 "name": {"type": "string"},
                                 "rules": {"type": "array", "items": {
                                     "type": "object", "required": ["expr"], "properties": {
                                         "alert": {"type": "string"},
                                         "expr": {"type": "string"},
                                         "for": {"type": "string"},
                                         "labels": {"type": "object",
                                                    "additionalProperties": {"type": "string"}},
                                         "annotations": {
                                             "type": "object",
                                             "additionalProperties": {"type": "string"}},
                                     }}}}}}}}}}}}]},
}


def test_every_rendered_manifest_passes_a_server_side_dry_run(cluster, api, namespace,
                                                              tmp_path):
    operator_ns = f"sigops-{uuid.uuid4().hex[:6]}"
    second = f"t-{uuid.uuid4().hex[:10]}"
    # Restricted Pod Security on the operator's namespace: warnings name any violation.
    make_namespace(api, operator_ns, {"pod-security.kubernetes.io/enforce": "restricted",
                                      "pod-security.kubernetes.io/warn": "restricted"})
    make_namespace(api, second)
    crd_file = tmp_path / "prometheusrule-crd.json"
    crd_file.write_text(json.dumps(PROMETHEUS_RULE_CRD))
    existed = kubectl(cluster, "get", "crd", PROMETHEUS_RULE_CRD["metadata"]["name"],
                      check=False).returncode == 0
    try:
        if not existed:
            kubectl(cluster, "apply", "-f", str(crd_file))
            kubectl(cluster, "wait", "--for=condition=Established", "--timeout=30s",
                    f"crd/{PROMETHEUS_RULE_CRD['metadata']['name']}")
        values = chart_values(namespace, prometheusRule={"enabled": True},
                              extraNamespaces=[second])
        seen: set[str] = set()
        for case in (values, {**values, "clusterWide": True, "crds": {"enabled": False},
                              "networkPolicy": {"enabled": False}}):
            docs = helm_template("dry", operator_ns, case, tmp_path)
            seen |= {d["kind"] for d in docs}
            p = apply(cluster, docs, tmp_path, "--dry-run=server")
            assert p.returncode == 0, p.stderr
            assert "Warning" not in p.stderr, p.stderr
            assert p.stdout.count("(server dry run)") == len(docs), p.stdout
        assert seen == {"Deployment", "Service", "NetworkPolicy", "PrometheusRule",
                        "ConfigMap", "Secret", "CustomResourceDefinition", "Role",
                        "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
                        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
        # And nothing was created by the dry run.
        assert kubectl(cluster, "get", "deploy,sa,role", "-n", operator_ns, "-o", "name",
                       ).stdout.strip() in ("", "serviceaccount/default")
    finally:
        if not existed:
            kubectl(cluster, "delete", "-f", str(crd_file), "--wait=false", check=False)
        for ns in (operator_ns, second):
            kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)


# -- the operator under the chart's ServiceAccount -----------------------------------------------

def test_keyrotation_completes_under_chart_rbac_and_nothing_more_is_allowed(
        cluster, api, namespace, operator_factory, install_chart, tmp_path):
    inst = install_chart(f"sigops-{uuid.uuid4().hex[:6]}", chart_values(namespace))
    other = f"t-{uuid.uuid4().hex[:10]}"
    make_namespace(api, other)
    try:
        client.CoreV1Api(api).create_namespaced_secret(other, client.V1Secret(
            metadata=client.V1ObjectMeta(name="not-yours"), string_data={"k": "v"}))
        make_backend(api, namespace, HMAC)
        op = start_operator(operator_factory, inst, tmp_path)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "keyrotations", keyrotation("rot", HMAC))
        wait_for(lambda: phase(api, namespace, "rot") in ("Completed", "Aborted", "Failed"),
                 timeout=90, what="the rotation to finish")
        st = get_kr(api, namespace, "rot")["status"]
        assert st["phase"] == "Completed", (st.get("phase"), st.get("message"))
        assert [h["payload"]["phase"] for h in st["history"]] == [
            "Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"]
        # The operator made its signing key and public keys in its own namespace.
        core = client.CoreV1Api(api)
        assert core.read_namespaced_secret("sigops-signing-key", inst.operator_ns)
        assert core.read_namespaced_config_map("sigops-signal-pubkeys", inst.operator_ns)
        time.sleep(1.0)  # let any late watch or event error reach the log
        assert_no_permission_errors(op.logs())

        sa = inst.api()
        sa_core, sa_apps = client.CoreV1Api(sa), client.AppsV1Api(sa)
        sa_rbac, sa_custom = client.RbacAuthorizationV1Api(sa), client.CustomObjectsApi(sa)
        allowed = {
            "get own signing key": lambda: sa_core.read_namespaced_secret(
                "sigops-signing-key", inst.operator_ns),
            "get target deployment": lambda: sa_apps.read_namespaced_deployment(
                "fractal-lba-backend", namespace),
            "list keyrotations in target": lambda: sa_custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "keyrotations"),
        }
        for what, call in allowed.items():
            assert status_of(call) == 200, what
        # Plain dict bodies: what matters is the API server's answer, not client validation.
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
               "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                   "metadata": {"labels": {"a": "b"}},
                   "spec": {"containers": [{"name": "x", "image": "x"}]}}}}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "spec": {"containers": [{"name": "x", "image": "x"}]}}

        def binding(kind: str, name: str, role: str, ns: str) -> Doc:
            return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": "default",
                                  "namespace": ns}]}

        forbidden = {
            "list secrets cluster-wide": lambda: sa_core.list_secret_for_all_namespaces(),
            "list secrets in a target namespace": lambda: sa_core.list_namespaced_secret(
                namespace),
            "watch secrets in a target namespace": lambda: sa_core.list_namespaced_secret(
                namespace, watch=True, timeout_seconds=1),
            "read a secret in a non-target namespace": lambda: sa_core.read_namespaced_secret(
                "not-yours", other),
            "read another secret in its own namespace": lambda: sa_core.read_namespaced_secret(
                f"{inst.release}-sigops-alerts-token", inst.operator_ns),
            "read a configmap in its own namespace": lambda: sa_core.read_namespaced_config_map(
                "kube-root-ca.crt", inst.operator_ns),
            "delete a deployment": lambda: sa_apps.delete_namespaced_deployment(
                "fractal-lba-backend", namespace),
            "patch a deployment": lambda: sa_apps.patch_namespaced_deployment(
                "fractal-lba-backend", namespace, {"metadata": {"labels": {"x": "y"}}}),
            "create a deployment": lambda: sa_apps.create_namespaced_deployment(namespace, dep),
            "create a pod": lambda: sa_core.create_namespaced_pod(namespace, pod),
            "create a clusterrolebinding": lambda: sa_rbac.create_cluster_role_binding(
                binding("ClusterRoleBinding", f"{inst.release}-escalate", "cluster-admin",
                        inst.operator_ns)),
            "create a rolebinding in a target": lambda: sa_rbac.create_namespaced_role_binding(
                namespace, binding("RoleBinding", "escalate", "admin", namespace)),
            "mint a token": lambda: sa_core.create_namespaced_service_account_token(
                "default", inst.operator_ns, {"apiVersion": "authentication.k8s.io/v1",
                                              "kind": "TokenRequest",
                                              "spec": {"audiences": ["x"]}}),
            "list nodes (scenarioB.labelNodes off)": lambda: sa_core.list_node(),
            "create a networkpolicy": lambda: client.NetworkingV1Api(
                sa).create_namespaced_network_policy(namespace, {
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "x"}, "spec": {"podSelector": {}}}),
            "list keyrotations cluster-wide": lambda: (
                sa_custom.list_cluster_custom_object(GROUP, VERSION, "keyrotations")),
            "delete a keyrotation": lambda: sa_custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "keyrotations", "rot"),
            "read a keyrotation in a non-target namespace": lambda: (
                sa_custom.list_namespaced_custom_object(GROUP, VERSION, other,
                                                        "keyrotations")),
        }
        got = {what: status_of(call) for what, call in forbidden.items()}
        assert got == dict.fromkeys(forbidden, 403)
    finally:
        kubectl(cluster, "delete", "namespace", other, "--wait=false", check=False)


# -- the incident path ---------------------------------------------------------------------------

def literal_backend(api: Any, ns: str, key: Key) -> None:
    """A backend Deployment with a literal HMAC key (replicas 0: no kubelet here)."""
    backend(api, ns, key)


set_literal_key = set_backend_key


def signed_sample(key: Key, i: int) -> Doc:
    root = f"{i:064x}"
    doc = {"pcs_id": expected_pcs_id(root, 1, "shard-1"), "merkle_root": root, "epoch": 1,
           "shard_id": "shard-1", "D_hat": 1.0, "coh_star": 0.5, "r": 0.3, "budget": 0.2,
           "version": "0.1", "sent_at": "2026-11-22T00:00:00Z"}
    return {"pcs": sign_pcs(doc, key, "python"), "received_at": doc["sent_at"],
            "source": "agent-1"}


def post_alert(op: Any, ns: str, status: str = "firing") -> tuple[int, Doc]:
    """What Alertmanager's webhook sends, with the chart's bearer token."""
    doc = {"version": "4", "groupKey": "g1", "status": status, "receiver": "sigops",
           "alerts": [{"status": status, "fingerprint": "0123456789abcdef",
                       "labels": {"alertname": "FLKSignatureFailuresSpike",
                                  "severity": "warning", "component": "backend",
                                  "namespace": ns, "deployment": "fractal-lba-backend"},
                       "startsAt": "2026-11-22T00:00:00Z"}]}
    req = urllib.request.Request(f"http://127.0.0.1:{op.alerts_port}/v1/alerts",
                                 data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read() or b"{}")


def incident_in(api: Any, ns: str, *phases: str) -> Callable[[], Doc | None]:
    def check() -> Doc | None:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, ns, "signatureincidents")["items"]
        items = [i for i in items if i["metadata"]["name"] != "by-hand"]
        if len(items) == 1 and (items[0].get("status") or {}).get("phase") in phases:
            return dict(items[0])
        return None
    return check


def has_secret(api: Any, ns: str, name: str) -> bool:
    return status_of(lambda: client.CoreV1Api(api).read_namespaced_secret(name, ns)) == 200


def test_alert_to_rollback_under_chart_rbac(cluster, api, namespace, operator_factory,
                                            install_chart, tmp_path):
    """The incident path with the chart's token only: a last-known-good snapshot while
    healthy, a bad signing change, an alert through the webhook (rate-limit state in the
    operator namespace), diagnosis from ReplicaSet history, rollback (scenario E), Resolved;
    then a person's incident whose samples come from the ConfigMap the config names."""
    values = chart_values(namespace)
    values["targets"][0]["samplesConfigMap"] = "failed-samples"
    inst = install_chart(f"sigops-{uuid.uuid4().hex[:6]}", values)
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    literal_backend(api, namespace, good)
    op = start_operator(operator_factory, inst, tmp_path)
    wait_for(lambda: has_secret(api, namespace, "sigops-lkg-fractal-lba-backend"), 30,
             what="a last-known-good snapshot while healthy")
    set_literal_key(api, namespace, bad)  # a bad signing config rolls out
    apps = client.AppsV1Api(api)
    wait_for(lambda: len(apps.list_namespaced_replica_set(namespace).items) >= 2, 20,
             what="revision 2")
    code, body = post_alert(op, namespace)
    assert code == 200 and body["results"] == {"created": 1}, body
    inc = wait_for(incident_in(api, namespace, "Verifying", "Resolved", "Escalated"), 30,
                   what="scenario E")
    st = inc["status"]
    assert st["scenario"] == "E", (st.get("candidates"), st.get("conditions"))
    assert not [n for n in st["evidence"]["notes"] if "cannot" in n], st["evidence"]["notes"]
    assert backend_fingerprints(api, namespace) == [good.fingerprint]
    post_alert(op, namespace, status="resolved")
    inc = wait_for(incident_in(api, namespace, "Resolved"), 20, what="Resolved")
    assert inc["status"]["actions"][0]["payload"]["action"] == "rollback-template"
    core = client.CoreV1Api(api)
    assert core.read_namespaced_config_map("sigops-ratelimit", inst.operator_ns).data

    # A person's incident with samples in the configured ConfigMap (dryRun: it only diagnoses).
    lines = "\n".join(json.dumps(signed_sample(bad, i)) for i in range(5))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="failed-samples"), data={"samples.jsonl": lines}))
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "signatureincidents", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
        "metadata": {"name": "by-hand"},
        "spec": {"target": {"namespace": namespace, "deployment": "fractal-lba-backend"},
                 "source": "a person", "mode": "dryRun",
                 "samples": {"configMapRef": {"name": "failed-samples"}}}})

    def diagnosed() -> Doc | None:
        obj: Doc = co.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                   "signatureincidents", "by-hand")
        return obj if (obj.get("status") or {}).get("evidence") else None

    ev = wait_for(diagnosed, 30, what="the person's incident diagnosed")["status"]["evidence"]
    assert ev["samples"]["source"] == "configmap/failed-samples", ev
    assert ev["samples"]["report"]["total"] == 5, ev
    time.sleep(1.0)
    assert_no_permission_errors(op.logs())


def test_an_audit_starts_its_job_and_rbac_under_chart_rbac(
        cluster, api, namespace, operator_factory, install_chart, tmp_path):
    values = chart_values(namespace, audit={"enabled": True})
    values["targets"][0]["walClaim"] = "backend-wal"
    inst = install_chart(f"sigops-{uuid.uuid4().hex[:6]}", values)
    op = start_operator(operator_factory, inst, tmp_path)
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "signatureaudits", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureAudit",
            "metadata": {"name": "drill"},
            "spec": {"target": {}, "lookFor": {"all": True}, "shards": 2, "parallelism": 2}})

    def started() -> Doc | None:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "signatureaudits", "drill")
        st = obj.get("status") or {}
        return st if st.get("job") else None

    st = wait_for(started, timeout=60, what="the audit's Job to start")
    job = client.BatchV1Api(api).read_namespaced_job(st["job"]["name"], namespace)
    assert job.spec.suspend is False and job.spec.completion_mode == "Indexed"
    image = next(d for d in inst.docs if d["kind"] == "Deployment")["spec"]["template"][
        "spec"]["containers"][0]["image"]
    assert job.spec.template.spec.containers[0].image == image  # the operator's own
    role = client.RbacAuthorizationV1Api(api).read_namespaced_role(st["job"]["name"],
                                                                    namespace)
    assert [r.resource_names for r in role.rules] == [[f"{st['job']['name']}-r0",
                                                       f"{st['job']['name']}-r1"]]
    time.sleep(1.0)
    assert_no_permission_errors(op.logs())
