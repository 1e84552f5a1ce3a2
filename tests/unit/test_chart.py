"""The Helm chart, rendered offline: `helm lint`, `helm template` with several value sets, and
assertions on the objects (security context, RBAC, config, CRDs, PrometheusRule, NOTES).

Needs the helm binary of `make tools` (.dev/bin/helm); promtool and amtool (Debian's prometheus
packages) are used when present to check the alert rule and the Alertmanager snippet.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import require_tool

from sigops.settings import Settings, Target

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sigops"
HELM = REPO / ".dev" / "bin" / "helm"
RELEASE_NS = "sigops-system"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm missing: run `make tools`")

Doc = dict[str, Any]


def helm(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args, str(chart)], capture_output=True, text=True,
                          timeout=60)


def render(values: Doc | None = None, *, chart: Path = CHART, tmp: Path | None = None,
           namespace: str = RELEASE_NS) -> list[Doc]:
    """`helm template` with ``values`` (a values file), parsed into objects."""
    args = ["template", "rel", "--namespace", namespace]
    if values:
        tmp = tmp or Path(tempfile.mkdtemp(prefix="sigops-chart-"))
        vf = tmp / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        vf.write_text(yaml.safe_dump(values))
        args += ["--values", str(vf)]
    p = helm(*args, chart=chart)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def kinds(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    found = kinds(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def env_of(docs: list[Doc]) -> dict[str, Any]:
    c = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def config_of(docs: list[Doc]) -> Doc:
    cm = next(d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
    cfg: Doc = yaml.safe_load(cm["data"]["config.yaml"])
    return cfg


def all_rules(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    return [(d, r) for d in docs if d["kind"] in ("ClusterRole", "Role")
            for r in d.get("rules", [])]


def grants(docs: list[Doc], resource: str, verb: str, *, kind: str | None = None,
           namespace: str | None = None) -> bool:
    for d, r in all_rules(docs):
        if kind and d["kind"] != kind:
            continue
        if namespace and d["metadata"].get("namespace") != namespace:
            continue
        if resource in r.get("resources", []) and verb in r.get("verbs", []):
            return True
    return False


def config_replicas(docs: list[Doc]) -> int:
    """The replica count the chart was asked for (the Deployment's label says it)."""
    dep = one(docs, "Deployment")
    return int(dep["metadata"]["annotations"]["sigops.fractal-lba.io/replicas"])


def check_invariants(docs: list[Doc], *, paused: bool = False) -> None:
    """What every rendering must satisfy, whatever the values."""
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    env = env_of(docs)
    replicas = int(config_replicas(docs))
    assert spec["replicas"] == (0 if paused else replicas)
    if replicas == 1:
        assert spec["strategy"] == {"type": "Recreate"}
        assert not kinds(docs, "PodDisruptionBudget")
    else:
        # Several copies only with leader election: one acts, the others stand by.
        assert env.get("SIGOPS_LEADER_ELECTION", "true") == "true"
        assert spec["strategy"]["type"] == "RollingUpdate"
        (pdb,) = kinds(docs, "PodDisruptionBudget")
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"] == spec["selector"]
    pod = spec["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = env_of(docs)
    assert env["SIGOPS_METRICS_LISTEN"] == f"0.0.0.0:{ports['metrics']}"
    assert env["SIGOPS_ALERTS_LISTEN"] == f"0.0.0.0:{ports['alerts']}"
    assert env["SIGOPS_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The token and the config arrive as files, from the Secret and the ConfigMap.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    token = vols["alerts-token"]["secret"]
    assert env["SIGOPS_ALERTS_TOKEN_FILE"] == (
        f"{mounts['alerts-token']['mountPath']}/{token['items'][0]['path']}")
    assert env["SIGOPS_CONFIG"] == f"{mounts['config']['mountPath']}/config.yaml"
    assert vols["config"]["configMap"]["name"].endswith("-config")
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in vols["tmp"]
    assert all(m.get("readOnly") for n, m in mounts.items() if n != "tmp")
    svc = one(docs, "Service")
    assert {p["name"] for p in svc["spec"]["ports"]} == {"alerts", "metrics"}
    # The config only uses fields of Settings (extra="forbid" would refuse anything else).
    Settings.model_validate(config_of(docs))
    # RBAC: no wildcards, no Secrets beyond what the code reads, nothing cluster-wide on them.
    for d, r in all_rules(docs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in r.get(field, []), (d["metadata"]["name"], r)
        assert "nonResourceURLs" not in r
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(r["verbs"])
        # sigops only suggests a NetworkPolicy for a source; it never creates one.
        assert "networkpolicies" not in r["resources"]
        if r.get("resourceNames"):
            # Kubernetes ignores resourceNames for create/list/watch: such a rule would lie.
            assert not {"create", "list", "watch", "deletecollection"} & set(r["verbs"]), r
        if "secrets" in r["resources"]:
            assert d["kind"] == "Role", "Secrets must never be granted cluster-wide"
            assert not {"list", "watch"} & set(r["verbs"]), r
    for crb in kinds(docs, "ClusterRoleBinding") + kinds(docs, "RoleBinding"):
        assert crb["subjects"] == [{"kind": "ServiceAccount",
                                     "name": one(docs, "ServiceAccount")["metadata"]["name"],
                                     "namespace": RELEASE_NS}]
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel", d["kind"]


# -- lint and the value sets ---------------------------------------------------------------------

def test_helm_lint_strict() -> None:
    p = helm("lint", "--strict")
    assert p.returncode == 0, p.stdout + p.stderr
    p = helm("lint", "--strict", "--set", "prometheusRule.enabled=true,clusterWide=true,"
             "crds.enabled=false,networkPolicy.enabled=false")
    assert p.returncode == 0, p.stdout + p.stderr


CASES: dict[str, Doc] = {
    "defaults": {},
    "crds-disabled": {"crds": {"enabled": False}},
    "crds-not-kept": {"crds": {"keep": False}},
    "prometheus-rule": {"prometheusRule": {"enabled": True}},
    "no-network-policy": {"networkPolicy": {"enabled": False}},
    "multi-namespace": {
        "targets": [{"namespace": "flk-a", "deployment": "backend-a", "default": True},
                    {"namespace": "flk-b", "deployment": "backend-b", "profile": "go",
                     "maxSkewSeconds": 30, "backendURL": "http://backend-b.flk-b:8080"},
                    {"namespace": "flk-a", "deployment": "backend-a2", "container": "api"}],
        "extraNamespaces": ["rotations"]},
    "no-node-labelling": {"scenarioB": {"mode": "auto", "labelNodes": False}},
    "cluster-wide": {"clusterWide": True},
    "dry-run": {"mode": "dryRun", "prometheus": {"url": "http://prometheus.monitoring:9090"}},
    "paused": {"paused": True},
    "wal-exec": {"evidence": {"walExec": {"enabled": True, "dir": "/var/lib/flk/wal"}}},
    "existing-token": {"alerts": {"token": {"existingSecret": "my-token", "secretKey": "bearer"}},
                       "evidence": {"walReader": {"token": {"existingSecret": "my-wal-token",
                                                            "secretKey": "wal"}}}},
    "secure": {"prometheus": {"url": "https://prometheus.monitoring:9090",
                              "tls": {"caSecret": {"name": "prom-ca", "key": "ca.pem"},
                                      "clientCertSecret": "sigops-client"},
                              "basicAuth": {"username": "sigops",
                                            "passwordSecret": {"name": "prom-pw"}}},
               "alerts": {"tls": {"secretName": "sigops-receiver-tls"}}},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"},
                                      "scrapeTimeout": "10s"},
                   "healthRules": {"enabled": True, "labels": {"release": "kps"}},
                   "grafanaDashboard": {"enabled": True, "namespace": "monitoring"}},
    "two-copies": {"replicaCount": 2, "leaderElection": {"leaseDuration": 20}},
    "prometheus-bearer": {"prometheus": {"url": "https://p:9090",
                                         "bearerTokenSecret": {"name": "prom-token"},
                                         "tls": {"insecureSkipVerify": True}}},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    tmp = tmp_path_factory.mktemp("chart")
    return {name: render(values, tmp=tmp) for name, values in CASES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invariants_hold_for_every_value_set(rendered: dict[str, list[Doc]], case: str) -> None:
    check_invariants(rendered[case], paused=case == "paused")


def test_defaults(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["defaults"]
    env = env_of(docs)
    assert env["SIGOPS_NAMESPACES"] == "fractal-lba"
    assert "SIGOPS_PROMETHEUS_URL" not in env
    # Defaults of the chart are the defaults of the code (except the target it names and the
    # audit Jobs' image and WAL token Secret: the release's own).
    cfg = Settings.model_validate(config_of(docs))
    mine: Any = {"targets": True, "audit": {"image", "wal_token_secret"}}
    assert cfg.model_dump(exclude=mine) == Settings().model_dump(exclude=mine)
    (target,) = cfg.targets
    assert (target.namespace, target.deployment, target.default) == (
        "fractal-lba", "fractal-lba-backend", True)
    assert target.model_dump(exclude={"namespace", "deployment", "default"}) == type(
        target)(namespace="x", deployment="y").model_dump(
        exclude={"namespace", "deployment", "default"})
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds(docs, "Role")}
    assert roles == {(RELEASE_NS, "rel-sigops-self"), ("fractal-lba", "rel-sigops-target")}
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"])
                for b in kinds(docs, "RoleBinding")}
    assert bindings == roles
    assert not kinds(docs, "PrometheusRule")
    assert grants(docs, "nodes", "patch", kind="ClusterRole")
    # Secret, ConfigMap and the token the Deployment mounts belong together.
    secret = next(s for s in kinds(docs, "Secret")
                  if s["metadata"]["name"] == "rel-sigops-alerts-token")
    assert len(secret["data"]["token"]) >= 48


def test_operator_namespace_role_is_pinned_to_its_own_objects(
        rendered: dict[str, list[Doc]]) -> None:
    role = next(r for r in kinds(rendered["defaults"], "Role")
                if r["metadata"]["name"] == "rel-sigops-self")
    rules = {(r["resources"][0], tuple(r["verbs"])): r.get("resourceNames") for r in role["rules"]}
    assert rules == {
        ("secrets", ("get",)): ["sigops-signing-key"],
        ("secrets", ("create",)): None,
        ("secrets", ("get", "update")): ["sigops-undo-snapshots"],
        ("configmaps", ("get", "update")): ["sigops-signal-pubkeys", "sigops-ratelimit",
                                            "sigops-history"],
        ("configmaps", ("create",)): None,
        ("leases", ("get", "update")): ["sigops-leader"],
        ("leases", ("create",)): None,
    }


def test_target_role_has_exactly_the_calls_of_the_handlers(
        rendered: dict[str, list[Doc]]) -> None:
    role = next(r for r in kinds(rendered["defaults"], "Role")
                if r["metadata"]["name"] == "rel-sigops-target")
    got = {(g, res, v) for r in role["rules"] for g in r["apiGroups"]
           for res in r["resources"] for v in r["verbs"]}
    crs = "sigops.fractal-lba.io"
    want = {(crs, "keyrotations", v) for v in ("get", "list", "watch", "patch")}
    want |= {(crs, "signatureincidents", v) for v in ("create", "get", "list", "watch", "patch")}
    want |= {(crs, "keyrotations/status", "patch"), (crs, "signatureincidents/status", "patch")}
    want |= {("", "secrets", v) for v in ("get", "create", "update", "delete")}
    want |= {("", "configmaps", "get")}  # spec.samples.configMapRef
    want |= {("apps", "deployments", v) for v in ("get", "update")}  # replace, never patch
    want |= {("apps", "replicasets", "list")}
    want |= {("", "pods", "list")}  # the live overlap probe finds the backend's pods
    want |= {("", "pods/log", "get")}  # the backend's rejection lines (evidence)
    want |= {("", "events", "create"), ("", "events", "list")}  # Events on the backend
    assert got == want


def test_pods_exec_only_when_reading_the_wal_by_exec_is_on(
        rendered: dict[str, list[Doc]]) -> None:
    def exec_verbs(case: str) -> set[str]:
        return {v for r in kinds(rendered[case], "Role") for res in r["rules"]
                if "pods/exec" in res["resources"] for v in res["verbs"]}

    assert all(not exec_verbs(case) for case in CASES if case != "wal-exec")
    assert exec_verbs("wal-exec") == {"create", "get"}
    cfg = config_of(rendered["wal-exec"])
    assert (cfg["wal_exec"], cfg["wal_exec_dir"]) == (True, "/var/lib/flk/wal")
    assert Settings.model_validate(cfg).wal_exec


def test_cluster_role_defaults(rendered: dict[str, list[Doc]]) -> None:
    cr = one(rendered["defaults"], "ClusterRole")
    got = {(g, res, v, tuple(r.get("resourceNames", ()))) for r in cr["rules"]
           for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    assert got == {
        ("", "namespaces", "get", (RELEASE_NS,)),
        ("", "namespaces", "list", ()), ("", "namespaces", "watch", ()),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list", ()),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch", ()),
        ("", "nodes", "list", ()), ("", "nodes", "patch", ()),
    }


def test_crds_are_templated_from_identical_copies(rendered: dict[str, list[Doc]]) -> None:
    sources = sorted((REPO / "crds").glob("*.yaml"))
    copies = sorted((CHART / "files" / "crds").glob("*.yaml"))
    assert [p.name for p in sources] == [p.name for p in copies]
    for s, c in zip(sources, copies, strict=True):
        assert s.read_bytes() == c.read_bytes(), f"{c} differs: run scripts/chart-sync-crds.sh"
    p = subprocess.run(["bash", str(REPO / "scripts" / "chart-sync-crds.sh"), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # Not in the chart's crds/ too: Helm would install them from there a second time.
    assert not (CHART / "crds").exists()
    crds = {d["metadata"]["name"]: d
            for d in kinds(rendered["defaults"], "CustomResourceDefinition")}
    for s in sources:
        want = yaml.safe_load(s.read_text())
        got = crds[want["metadata"]["name"]]
        assert got["spec"] == want["spec"]
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not kinds(rendered["crds-disabled"], "CustomResourceDefinition")
    for d in kinds(rendered["crds-not-kept"], "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (d["metadata"].get("annotations") or {})


def promtool_rule_test(tmp_path: Path, rule: Doc, name: str, series: dict[str, str],
                       alerts: list[tuple[Doc, float]]) -> None:
    """`promtool test rules`: ``series`` (selector -> values, one sample a minute) give
    exactly ``alerts`` (labels, the rule's own added; and the rate the description shows) at
    minute 12."""
    f = tmp_path / f"rules-{name}.yaml"
    f.write_text(yaml.safe_dump(rule["spec"]))
    (spec,) = rule["spec"]["groups"][0]["rules"]

    def described(labels: Doc, rate: float) -> str:
        where = labels["namespace"] + (f"/{labels['deployment']}" if "deployment" in labels
                                       else f" (pod {labels['pod']})" if "pod" in labels else "")
        return (f"{where} is rejecting more than 10 PCS submissions per second with 401 "
                f"(current rate {rate:.1f}/s). sigops answers this alert automatically; see "
                "its SignatureIncident.")

    test = {"rule_files": [str(f)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": k, "values": v} for k, v in series.items()],
        "alert_rule_test": [{"eval_time": "12m", "alertname": "FLKSignatureFailuresSpike",
                             "exp_alerts": [{
                                 "exp_labels": {**spec["labels"], **labels},
                                 "exp_annotations": {**spec["annotations"],
                                                     "description": described(labels, rate)}}
                                 for labels, rate in alerts]}]}]}
    t = tmp_path / f"test-{name}.yaml"
    t.write_text(yaml.safe_dump(test))
    p = subprocess.run([require_tool("promtool"), "test", "rules", str(t)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, name + p.stdout + p.stderr


def per_second(rate: float) -> str:
    """promtool values of a counter rising ``rate`` per second, one sample a minute."""
    return f"0+{rate * 60:g}x20"


POD = "fractal-lba-backend-5c54f8bbf4-{}"
NS = 'namespace="fractal-lba"'


def pods(metric: str, rate: float, n: int, deployment: str = "fractal-lba-backend",
         ns: str = NS) -> dict[str, str]:
    return {f'{metric}{{{ns},pod="{deployment}-5c54f8bbf4-p{i}",job="flk"}}': per_second(rate)
            for i in range(n)}


BACKEND = {"namespace": "fractal-lba", "deployment": "fractal-lba-backend"}


def test_prometheus_rule(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    """Issue 28: the rule fires for the backend's failure rate, whatever its number of pods."""
    rule = one(rendered["prometheus-rule"], "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    (alert,) = group["rules"]
    assert alert["alert"] == "FLKSignatureFailuresSpike"
    # One expression: the operator's (Settings.error_rate_by_target) is the rule's.
    cfg = Settings.model_validate(config_of(rendered["prometheus-rule"]))
    assert alert["expr"] == f"({cfg.error_rate_by_target()}) > 10"
    assert cfg.error_query("fractal-lba", "fractal-lba-backend") == (
        f'sum({cfg.error_rate_by_target("fractal-lba", "fractal-lba-backend")})')
    assert alert["for"] == "5m"
    assert alert["labels"] == {"severity": "warning", "component": "backend"}
    assert alert["annotations"]["runbook_url"].endswith("runbooks/signature-failures-spike.md")
    assert (REPO / "runbooks" / "signature-failures-spike.md").exists()
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump(rule["spec"]))
    p = subprocess.run([require_tool("promtool"), "check", "rules", str(f)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    # Prometheus's own rule engine. A key or canonicalization fault hits every pod alike.
    for metric in ("flk_signature_err", "flk_signature_errors"):
        promtool_rule_test(tmp_path, rule, f"3x5-{metric}", pods(metric, 5, 3),
                           [(BACKEND, 15)])
    promtool_rule_test(tmp_path, rule, "1x11", pods("flk_signature_err", 11, 1),
                       [(BACKEND, 11)])
    promtool_rule_test(tmp_path, rule, "3x3", pods("flk_signature_err", 3, 3), [])
    # One backend exporting one name on some pods and the other on the rest adds up.
    promtool_rule_test(tmp_path, rule, "mixed", {**pods("flk_signature_err", 6, 1),
                                                 **{k.replace("p0", "q0"): v for k, v in pods(
                                                     "flk_signature_errors", 6, 1).items()}},
                       [(BACKEND, 12)])
    # Two Deployments in one namespace, 6/s each: neither is over 10/s.
    promtool_rule_test(tmp_path, rule, "two-deployments", {
        **pods("flk_signature_err", 3, 2),
        **pods("flk_signature_err", 3, 2, deployment="fractal-lba-canary")}, [])
    promtool_rule_test(tmp_path, rule, "two-deployments-one-over", {
        **pods("flk_signature_err", 3, 2),
        **pods("flk_signature_err", 4, 3, deployment="fractal-lba-canary")},
        [({**BACKEND, "deployment": "fractal-lba-canary"}, 12)])
    # Two namespaces do not add up either; series without a pod label count per namespace.
    promtool_rule_test(tmp_path, rule, "namespaces", {
        **pods("flk_signature_err", 6, 1), **pods("flk_signature_err", 6, 1, ns='namespace="b"'),
        'flk_signature_err{namespace="c",job="flk"}': per_second(11)}, [({"namespace": "c"}, 11)])
    description = ("fractal-lba/fractal-lba-backend is rejecting more than 10 PCS submissions "
                   "per second with 401 (current rate 15.0/s). sigops answers this alert "
                   "automatically; see its SignatureIncident.")
    test = {"rule_files": [str(f)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": k, "values": v}
                         for k, v in pods("flk_signature_err", 5, 3).items()],
        "alert_rule_test": [{"eval_time": "12m", "alertname": "FLKSignatureFailuresSpike",
                             "exp_alerts": [{"exp_labels": {**alert["labels"], **BACKEND},
                                             "exp_annotations": {**alert["annotations"],
                                                                 "description": description}}]}]}]}
    t = tmp_path / "test-description.yaml"
    t.write_text(yaml.safe_dump(test))
    p = subprocess.run([require_tool("promtool"), "test", "rules", str(t)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_prometheus_rule_per_pod_form_is_upstreams(tmp_path: Path) -> None:
    docs = render({"prometheusRule": {"enabled": True, "aggregation": "pod"}}, tmp=tmp_path)
    rule = one(docs, "PrometheusRule")
    (alert,) = rule["spec"]["groups"][0]["rules"]
    assert alert["expr"] == ("(rate(flk_signature_err[5m]) or rate(flk_signature_errors[5m]))"
                             " > 10")
    promtool_rule_test(tmp_path, rule, "pod-3x5", pods("flk_signature_err", 5, 3), [])
    promtool_rule_test(tmp_path, rule, "pod-1x11", pods("flk_signature_errors", 11, 1), [
        ({"namespace": "fractal-lba", "pod": POD.format("p0"), "job": "flk"}, 11)])


def test_rule_dashboard_and_guard_read_one_expression(tmp_path: Path) -> None:
    """Other detection values: the rule, the dashboard panel and the operator's default guard
    still hold Settings' expression for the same values (the chart cannot drift from it)."""
    values: Doc = {"detection": {"signatureErrorMetric": "flk_signature_errors",
                                 "namespaceLabel": "kubernetes_namespace",
                                 "deploymentLabel": "app", "errorRateWindow": "2m",
                                 "errorRateThreshold": 2.5},
                   "prometheusRule": {"enabled": True},
                   "grafanaDashboard": {"enabled": True}}
    docs = render(values, tmp=tmp_path)
    cfg = Settings.model_validate(config_of(docs))
    want = cfg.error_rate_by_target()
    assert want == Settings(signature_error_metric="flk_signature_errors",
                            namespace_label="kubernetes_namespace", deployment_label="app",
                            error_rate_window="2m").error_rate_by_target()
    assert "[2m]" in want and "sum by (kubernetes_namespace, app)" in want
    (alert,) = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert alert["expr"] == f"({want}) > 2.5"
    assert "{{ $labels.kubernetes_namespace }}{{ with $labels.app }}" in (
        alert["annotations"]["description"])
    (cm,) = [d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    (panel,) = [p for p in json.loads(cm["data"]["sigops.json"])["panels"]
                if p["title"].startswith("Signature error rate per target")]
    assert panel["targets"][0]["expr"] == want
    assert panel["targets"][0]["legendFormat"] == "{{kubernetes_namespace}}/{{app}}"
    assert cfg.error_query("ns", "be") == f'sum({cfg.error_rate_by_target("ns", "be")})'
    # The dashboard file itself holds the defaults' expression (it imports as it is).
    dash = json.loads((CHART / "files" / "dashboards" / "sigops.json").read_text())
    (panel,) = [p for p in dash["panels"]
                if p["title"].startswith("Signature error rate per target")]
    assert panel["targets"][0]["expr"] == Settings().error_rate_by_target()


def test_network_policy(rendered: dict[str, list[Doc]]) -> None:
    np = one(rendered["defaults"], "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["podSelector"]["matchLabels"] == one(
        rendered["defaults"], "Deployment")["spec"]["selector"]["matchLabels"]
    by_port = {r["ports"][0]["port"]: r["from"] for r in np["spec"]["ingress"]}
    assert set(by_port) == {"alerts", "metrics"}
    (am,) = by_port["alerts"]
    assert am["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}
    assert am["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}}
    (scraper,) = by_port["metrics"]
    assert "namespaceSelector" in scraper
    assert not kinds(rendered["no-network-policy"], "NetworkPolicy")


def test_multiple_target_namespaces(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["multi-namespace"]
    want = ["flk-a", "flk-b", "rotations"]
    assert env_of(docs)["SIGOPS_NAMESPACES"] == ",".join(want)
    targets = {r["metadata"]["namespace"] for r in kinds(docs, "Role")
               if r["metadata"]["name"] == "rel-sigops-target"}
    assert sorted(targets) == want
    bound = {b["metadata"]["namespace"] for b in kinds(docs, "RoleBinding")
             if b["roleRef"]["name"] == "rel-sigops-target"}
    assert sorted(bound) == want
    cfg = Settings.model_validate(config_of(docs))
    assert [(t.namespace, t.deployment, t.container, t.backend_url, t.default, t.profile,
             t.max_skew_seconds) for t in cfg.targets] == [
        ("flk-a", "backend-a", None, None, True, "python", None),
        ("flk-b", "backend-b", None, "http://backend-b.flk-b:8080", False, "go", 30.0),
        ("flk-a", "backend-a2", "api", None, False, "python", None)]
    assert cfg.default_target() is not None and cfg.default_target().deployment == "backend-a"


def test_node_labelling_off_grants_no_node_access(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["no-node-labelling"]
    assert not any("nodes" in r["resources"] for _, r in all_rules(docs))
    assert config_of(docs)["label_nodes"] is False


def test_cluster_wide(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cluster-wide"]
    assert "SIGOPS_NAMESPACES" not in env_of(docs)
    for res, verb in (("keyrotations", "watch"), ("signatureincidents", "create"),
                      ("keyrotations/status", "patch"), ("events", "create")):
        assert grants(docs, res, verb, kind="ClusterRole"), (res, verb)
    # kopf does not list namespaces when cluster-wide; Secrets stay per namespace.
    assert not grants(docs, "namespaces", "list")
    assert not grants(docs, "secrets", "get", kind="ClusterRole")
    assert grants(docs, "secrets", "get", kind="Role", namespace="fractal-lba")


def test_global_mode_and_prometheus(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dry-run"]
    assert config_of(docs)["modes"] == dict.fromkeys("ABCDE", "dryRun")
    assert env_of(docs)["SIGOPS_PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"


def test_existing_token_secret(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["existing-token"]
    assert not kinds(docs, "Secret")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "alerts-token")
    assert vol["secret"]["secretName"] == "my-token"
    assert env_of(docs)["SIGOPS_ALERTS_TOKEN_FILE"].endswith("/bearer")
    vol = next(v for v in pod["volumes"] if v["name"] == "wal-token")
    assert vol["secret"]["secretName"] == "my-wal-token"
    assert env_of(docs)["SIGOPS_WAL_TOKEN_FILE"].endswith("/wal")


@pytest.mark.parametrize("case", ["defaults", "multi-namespace"])
def test_the_wal_reader_token_is_one_secret_in_sigops_and_each_target_namespace(
        rendered: dict[str, list[Doc]], case: str) -> None:
    """sigops presents the token its Secret holds; each backend's WAL reader sidecar mounts
    the same Secret, same token, in its own namespace (runbooks/wal-reader-sidecar.yaml)."""
    docs = rendered[case]
    copies = [s for s in kinds(docs, "Secret") if s["metadata"]["name"] == "rel-sigops-wal-token"]
    want = {RELEASE_NS} | {t.get("namespace", "fractal-lba")
                           for t in CASES[case].get("targets", [{}])}
    assert sorted(s["metadata"]["namespace"] for s in copies) == sorted(want)
    assert len({s["data"]["token"] for s in copies}) == 1
    assert len(base64.b64decode(copies[0]["data"]["token"])) == 48
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "wal-token")
    vol = next(v for v in pod["volumes"] if v["name"] == "wal-token")
    assert vol["secret"]["secretName"] == "rel-sigops-wal-token" and mount["readOnly"]
    assert env_of(docs)["SIGOPS_WAL_TOKEN_FILE"] == (
        f"{mount['mountPath']}/{vol['secret']['items'][0]['path']}")
    # the token itself is nowhere but in the Secrets: not in the config, env or args
    token = base64.b64decode(copies[0]["data"]["token"]).decode()
    assert token not in json.dumps([d for d in docs if d["kind"] != "Secret"])


def test_every_config_value_reaches_the_operator(tmp_path: Path) -> None:
    """Each value that maps to a Settings field changes exactly that field."""
    values: Doc = {
        "scenarioA": {"mode": "approval"}, "scenarioB": {"mode": "dryRun", "labelNodes": False,
                                                         "ntpLabel": "chrony=on",
                                                         "skewMetric": "node_skew"},
        "scenarioC": {"mode": "approval"},
        "scenarioD": {"mode": "dryRun", "tokenRate": 20, "cooldown": "1h"},
        "scenarioE": {"mode": "auto", "autoWindow": "10m", "lastKnownGoodAfter": "90s"},
        "detection": {"alertName": "Spike", "signatureErrorMetric": "flk_signature_errors",
                      "errorRateQuery": "sum(rate({metric}{{namespace=\"{namespace}\"}}[1m]))",
                      "errorRateWindow": "3m",
                      "errorRateThreshold": 2.5, "alertPollInterval": 7,
                      "namespaceLabel": "ns", "deploymentLabel": "app"},
        "remediation": {"verifyTimeout": "2m", "escalateAfter": "45m", "escalatedHold": "90m",
                        "notificationURL": "https://hooks.example/x", "waitForRollout": False,
                        "rolloutTimeout": "3m", "probeTimeout": 1.5},
        "keyRotation": {"minOverlap": "24h", "reconcileInterval": 2, "overlapProbeGrace": "45s",
                        "overlapProbeRounds": 3},
        "signals": {"rateLimit": 5, "rateWindow": "30m", "serviceId": "sigops-eu"},
        "evidence": {"walExec": {"enabled": True, "dir": "/wal"},
                     "walReader": {"token": {"secretKey": "wal"}}},
        "audit": {"enabled": True, "maxParallelism": 9, "maxShards": 99, "backoffLimitPerIndex": 1,
                  "activeDeadline": "3h", "ttlAfterFinished": "10m", "firstN": 5,
                  "image": "sigops-audit:x", "cpu": "500m", "memory": "128Mi"},
    }
    cfg = Settings.model_validate(config_of(render(values, tmp=tmp_path)))
    default = Settings()
    want = {
        "modes": {"A": "approval", "B": "dryRun", "C": "approval", "D": "dryRun", "E": "auto"},
        "label_nodes": False, "ntp_label": "chrony=on", "skew_metric": "node_skew",
        "token_rate": "20", "cooldown": "1h", "e_auto_window": "10m",
        "last_known_good_after": "90s", "alert_name": "Spike",
        "signature_error_metric": "flk_signature_errors",
        "error_rate_query": "sum(rate({metric}{{namespace=\"{namespace}\"}}[1m]))",
        "error_rate_window": "3m",
        "error_rate_threshold": 2.5, "alert_poll_interval": 7.0, "namespace_label": "ns",
        "deployment_label": "app", "verify_timeout": "2m", "escalate_after": "45m",
        "escalated_hold": "90m",
        "notification_url": "https://hooks.example/x", "wait_for_rollout": False,
        "rollout_timeout": "3m", "probe_timeout": 1.5, "min_overlap": "24h",
        "overlap_probe_grace": "45s", "overlap_probe_rounds": 3,
        "reconcile_interval": 2.0, "signal_rate_limit": 5, "signal_rate_window": "30m",
        "service_id": "sigops-eu", "wal_exec": True, "wal_exec_dir": "/wal",
        "audit": {"enabled": True, "max_parallelism": 9, "max_shards": 99,
                  "backoff_limit_per_index": 1, "active_deadline": "3h",
                  "ttl_after_finished": "10m", "first_n": 5,
                  "image": "sigops-audit:x", "cpu": "500m", "memory": "128Mi",
                  "wal_token_secret": "rel-sigops-wal-token", "wal_token_key": "wal"},
    }
    got = cfg.model_dump()
    for field, value in want.items():
        assert got[field] == value, field
        assert getattr(default, field) != value, f"{field}: pick a non-default test value"
    assert set(want) | {"targets"} == set(Settings.model_fields), "a Settings field has no value"


def test_every_target_value_reaches_the_operator(tmp_path: Path) -> None:
    """Each field of a chart target changes exactly that field of the operator's Target."""
    target: Doc = {
        "namespace": "pay", "deployment": "be", "container": "server", "default": True,
        "backendURL": "https://be.pay.svc:8443", "profile": "go", "maxSkewSeconds": 30,
        "env": {"signAlg": "SIG_ALG", "hmacKey": "K", "hmacKeys": "KS", "ed25519Pub": "P",
                "ed25519Pubs": "PS", "tokenRate": "RATE"},
        "agentSecret": {"name": "agents", "key": "SIGNING_KEY"},
        "requestNamespaces": ["sre"], "allowErrorRateQuery": True, "samplesConfigMap": "failed",
        "walClaim": "backend-wal",
    }
    cfg = Settings.model_validate(config_of(render({"targets": [target]}, tmp=tmp_path)))
    got = cfg.targets[0].model_dump(by_alias=True)
    default = Target().model_dump(by_alias=True)
    for field, value in target.items():
        assert got[field] == (tuple(value) if isinstance(value, list) else value), field
        assert default[field] != got[field], f"{field}: pick a non-default test value"
    # walSource sidecar excludes walClaim: its own render below
    assert set(target) | {"walSource"} == set(Target.model_fields[f].alias or f
                                              for f in Target.model_fields), \
        "a Target field has no chart value"
    sidecar = {"namespace": "pay", "deployment": "be", "walSource": "sidecar"}
    cfg = Settings.model_validate(config_of(render({"targets": [sidecar]}, tmp=tmp_path)))
    assert cfg.targets[0].wal_source == "sidecar" != Target().wal_source


def test_extra_config_is_merged_and_validated(tmp_path: Path) -> None:
    docs = render({"extraConfig": {"signal_rate_limit": 9}}, tmp=tmp_path)
    assert Settings.model_validate(config_of(docs)).signal_rate_limit == 9
    from pydantic import ValidationError

    bad = render({"extraConfig": {"no_such_field": 1}}, tmp=tmp_path)
    with pytest.raises(ValidationError):
        Settings.model_validate(config_of(bad))


@pytest.mark.parametrize("values, message", [
    ({"scenarioA": {"mode": "yolo"}}, "scenarioA/mode"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "leaderElection"),
    ({"keyRotation": {"minOverlap": "one hour"}}, "minOverlap"),
    ({"targets": [], "extraNamespaces": []}, "minItems"),
])
def test_schema_rejects_bad_values(tmp_path: Path, values: Doc, message: str) -> None:
    vf = tmp_path / "bad.yaml"
    vf.write_text(yaml.safe_dump(values))
    p = helm("template", "rel", "--values", str(vf))
    assert p.returncode != 0 and message in p.stderr, p.stderr


# -- documentation ---------------------------------------------------------------------------------

def _documented_keys(lines: list[str]) -> list[str]:
    """Keys of values.yaml with no comment on them, on an ancestor, or on all their children."""
    key_re = re.compile(r"^(\s*)(- )?([A-Za-z][\w./-]*):")
    nodes: list[tuple[int, str, bool, int | None]] = []  # (indent, key, commented, parent)
    stack: list[int] = []
    prev = ""
    for line in lines:
        m = key_re.match(line)
        if m:
            indent = len(m.group(1)) + (2 if m.group(2) else 0)
            while stack and nodes[stack[-1]][0] >= indent:
                stack.pop()
            nodes.append((indent, m.group(3), prev.lstrip().startswith("#"),
                          stack[-1] if stack else None))
            stack.append(len(nodes) - 1)
        if line.strip():
            prev = line

    def ancestor_doc(i: int) -> bool:
        p = nodes[i][3]
        return p is not None and (nodes[p][2] or ancestor_doc(p))

    def doc(i: int) -> bool:
        kids = [j for j, n in enumerate(nodes) if n[3] == i]
        return nodes[i][2] or ancestor_doc(i) or (bool(kids) and all(doc(j) for j in kids))

    return [nodes[i][1] for i in range(len(nodes)) if not doc(i)]


def test_every_value_is_documented_inline() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert _documented_keys(lines) == []
    # The checker itself catches a bare key.
    assert _documented_keys(["# -- doc", "a: 1", "b:", "  c: 2"]) == ["b", "c"]


def test_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(v: Any, s: Doc, path: str) -> None:
        if not isinstance(v, dict) or s.get("additionalProperties") is not False:
            return
        for k, sub in v.items():
            assert k in s["properties"], f"{path}{k} is not in values.schema.json"
            walk(sub, s["properties"][k], f"{path}{k}.")

    walk(values, schema, "")


def _notes(tmp_path: Path, values: Doc | None = None) -> str:
    """NOTES.txt rendered (helm template skips it): the chart copied with a template that
    renders the notes into a ConfigMap."""
    chart = tmp_path / "sigops"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: notes
          labels: {app.kubernetes.io/instance: rel}
        data:
          notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}
        """))
    docs = render(values, chart=chart, tmp=tmp_path)
    cm = next(d for d in docs if d["metadata"]["name"] == "notes")
    text: str = cm["data"]["notes"]
    return text


def test_notes_show_a_working_alertmanager_receiver(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    assert "credentials_file" in notes and "type: Bearer" in notes
    assert "http://rel-sigops.sigops-system.svc:8080/v1/alerts" in notes
    assert "WARNING: prometheus.url is empty" in notes
    # The snippet after "alertmanager.yml:" is valid Alertmanager config.
    start = notes.index("alertmanager.yml:") + len("alertmanager.yml:")
    block: list[str] = []
    for line in notes[start:].splitlines()[1:]:
        if line.strip() and not line.startswith("     "):
            break
        block.append(line)
    snippet = yaml.safe_load(textwrap.dedent("\n".join(block)))
    rx = snippet["receivers"][0]["webhook_configs"][0]
    assert rx["http_config"]["authorization"]["type"] == "Bearer"
    assert rx["send_resolved"] is True
    tokenfile = tmp_path / "token"
    tokenfile.write_text("x")
    rx["http_config"]["authorization"]["credentials_file"] = str(tokenfile)
    cfg = {"route": {"receiver": "default", **snippet["route"]},
           "receivers": [{"name": "default"}, *snippet["receivers"]]}
    f = tmp_path / "alertmanager.yml"
    f.write_text(yaml.safe_dump(cfg))
    p = subprocess.run([require_tool("amtool"), "check-config", str(f)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_runbooks_exist_and_name_real_commands() -> None:
    spike = (REPO / "runbooks" / "signature-failures-spike.md").read_text()
    rotation = (REPO / "runbooks" / "key-rotation.md").read_text()
    assert "sigops signal verify --pubkeys" in spike and "sigops-signal-pubkeys" in spike
    # The everyday actions are the plugin's commands, not raw patches.
    assert "kubectl sigops approve si/flk-sig-x7k2p" in spike
    assert "kubectl sigops deny si/flk-sig-x7k2p" in spike
    assert "kubectl sigops verify si/flk-sig-x7k2p" in spike
    assert "kubectl sigops report si/flk-sig-x7k2p" in spike
    assert '"approve":' not in spike
    for phase in ("Pending", "Staged", "Overlapping", "Verified", "Promoted", "Retiring",
                  "Completed", "Aborted", "Failed", "Planned"):
        assert f"`{phase}`" in rotation, phase
    assert "kubectl sigops abort kr/backend-2026-11" in rotation
    assert '"abort":true' not in rotation
    # Every `kubectl sigops VERB` a runbook or the README names is a verb the plugin has, with
    # flags it takes.
    import re
    import shlex

    from sigops.cli.plugin import build_parser

    parser = build_parser()
    readme = (REPO / "README.md").read_text()
    named = re.findall(r"kubectl sigops ([a-z]+(?: [^`\n|#]*)?)", spike + rotation + readme)
    assert len(named) >= 10
    for cmd in named:
        argv = shlex.split(cmd.replace("\\", " ").strip())
        if argv[0] in ("is", "the"):  # prose ("kubectl sigops is ...")
            continue
        args = parser.parse_args(argv + ["-o", "x"] if argv[0] == "report"
                                 and "-o" not in argv else argv)
        assert args.verb == argv[0], cmd



# -- secure connections -----------------------------------------------------------------------

def _pod(docs: list[Doc]) -> tuple[Doc, dict[str, Doc], dict[str, Doc]]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    return c, {m["name"]: m for m in c["volumeMounts"]}, {v["name"]: v for v in pod["volumes"]}


def test_no_credentials_by_default(rendered: dict[str, list[Doc]]) -> None:
    env = env_of(rendered["defaults"])
    assert not [k for k in env if k.startswith(("SIGOPS_PROMETHEUS_", "SIGOPS_ALERTS_TLS"))]
    _, mounts, vols = _pod(rendered["defaults"])
    assert "prometheus-auth" not in vols and "alerts-tls" not in vols


def test_secure_connections_reach_the_operator_as_files(rendered: dict[str, list[Doc]]
                                                        ) -> None:
    docs = rendered["secure"]
    env = env_of(docs)
    _, mounts, vols = _pod(docs)
    # Every file the env names is in a mounted volume, under the key the values chose.
    prom_dir = mounts["prometheus-auth"]["mountPath"]
    sources = {s["secret"]["name"]: s["secret"]["items"]
               for s in vols["prometheus-auth"]["projected"]["sources"]}
    assert sources == {
        "prom-ca": [{"key": "ca.pem", "path": "ca.crt"}],
        "sigops-client": [{"key": "tls.crt", "path": "tls.crt"},
                          {"key": "tls.key", "path": "tls.key"}],
        "prom-pw": [{"key": "password", "path": "password"}]}
    assert env["SIGOPS_PROMETHEUS_CA_FILE"] == f"{prom_dir}/ca.crt"
    assert env["SIGOPS_PROMETHEUS_CERT_FILE"] == f"{prom_dir}/tls.crt"
    assert env["SIGOPS_PROMETHEUS_KEY_FILE"] == f"{prom_dir}/tls.key"
    assert env["SIGOPS_PROMETHEUS_BASIC_AUTH_USER"] == "sigops"
    assert env["SIGOPS_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE"] == f"{prom_dir}/password"
    assert "SIGOPS_PROMETHEUS_INSECURE_SKIP_VERIFY" not in env
    assert "SIGOPS_PROMETHEUS_BEARER_TOKEN_FILE" not in env
    tls_dir = mounts["alerts-tls"]["mountPath"]
    assert vols["alerts-tls"]["secret"]["secretName"] == "sigops-receiver-tls"
    assert env["SIGOPS_ALERTS_TLS_CERT_FILE"] == f"{tls_dir}/tls.crt"
    assert env["SIGOPS_ALERTS_TLS_KEY_FILE"] == f"{tls_dir}/tls.key"
    # The flags the env sets exist.
    from sigops.runtime.flags import RUN_FLAGS

    known = {f.env for f in RUN_FLAGS}
    assert {k for k in env if k.startswith("SIGOPS_")} <= known | {"SIGOPS_LOG_LEVEL"}
    bearer = env_of(rendered["prometheus-bearer"])
    assert bearer["SIGOPS_PROMETHEUS_BEARER_TOKEN_FILE"].endswith("/token")
    assert bearer["SIGOPS_PROMETHEUS_INSECURE_SKIP_VERIFY"] == "true"


def test_notes_with_receiver_tls(tmp_path: Path) -> None:
    notes = _notes(tmp_path, {"alerts": {"tls": {"secretName": "rx-tls"}}})
    assert "https://rel-sigops.sigops-system.svc:8080/v1/alerts" in notes
    assert "tls_config:" in notes and "ca_file:" in notes


def test_bearer_and_basic_auth_are_exclusive(tmp_path: Path) -> None:
    vf = tmp_path / "v.yaml"
    vf.write_text(yaml.safe_dump({"prometheus": {
        "bearerTokenSecret": {"name": "t"},
        "basicAuth": {"username": "u", "passwordSecret": {"name": "p"}}}}))
    p = helm("template", "rel", "--values", str(vf))
    assert p.returncode != 0 and "exclusive" in p.stderr


# -- watching sigops ---------------------------------------------------------------------------

def test_monitoring_objects_are_off_by_default(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["defaults"]
    assert not kinds(docs, "ServiceMonitor") and not kinds(docs, "PrometheusRule")
    assert not [d for d in kinds(docs, "ConfigMap") if "grafana_dashboard" in
                d["metadata"]["labels"]]


def test_service_monitor_scrapes_the_metrics_port(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["monitoring"]
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kps"
    selected = sm["spec"]["selector"]["matchLabels"]
    assert selected.items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]} and ep["port"] == "metrics"
    assert ep["path"] == "/metrics" and ep["interval"] == "30s" and ep["scrapeTimeout"] == "10s"


def test_health_rules_pass_promtool_and_select_sigops(rendered: dict[str, list[Doc]],
                                                      tmp_path: Path) -> None:
    rules = [d for d in kinds(rendered["monitoring"], "PrometheusRule")
             if d["metadata"]["name"].endswith("-health")]
    (rule,) = rules
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"SigopsDown", "SigopsAbsent", "SigopsStuck", "SigopsNotReady",
                           "SigopsIntakeRejecting", "SigopsIncidentEscalated",
                           "SigopsKeyRotationStuck", "SigopsSignalsRateLimited"}
    # The job is the Service's name, as a ServiceMonitor names it.
    svc = one(rendered["monitoring"], "Service")["metadata"]["name"]
    for r in alerts.values():
        assert f'job="{svc}",namespace="{RELEASE_NS}"' in r["expr"], r["alert"]
        assert r["labels"]["severity"] and r["annotations"]["runbook_url"]
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump(rule["spec"]))
    p = subprocess.run([require_tool("promtool"), "check", "rules", str(f)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 8 rules found" in p.stdout


def test_dashboard_config_map_for_the_grafana_sidecar(rendered: dict[str, list[Doc]]) -> None:
    (cm,) = [d for d in kinds(rendered["monitoring"], "ConfigMap")
             if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dash = json.loads(cm["data"]["sigops.json"])
    assert dash == json.loads((CHART / "files" / "dashboards" / "sigops.json").read_text())
    assert dash["uid"] == "sigops-operator"
    titles = " | ".join(p["title"] for p in dash["panels"])
    for topic in ("cause and scenario", "phases", "error rate per target", "Rotations",
                  "latency", "Rejections"):
        assert topic in titles, topic
    (marker,) = dash["annotations"]["list"]
    assert "sigops_remediation_actions_total" in marker["expr"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


# -- chart conventions ---------------------------------------------------------------------------

def _np_sources(docs: list[Doc]) -> dict[str, list[Doc]]:
    np = one(docs, "NetworkPolicy")
    return {r["ports"][0]["port"]: r["from"] for r in np["spec"]["ingress"]}


def test_network_policy_sources_are_configurable(tmp_path: Path) -> None:
    extra = [{"namespaceSelector": {"matchLabels": {"team": "sre"}},
              "podSelector": {"matchLabels": {"app": "am"}}},
             {"ipBlock": {"cidr": "10.20.0.0/16"}}]
    docs = render({"networkPolicy": {
        "alertmanager": {"namespaces": ["observability", "monitoring"], "extraFrom": extra},
        "metrics": {"namespaces": ["prom"],
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}}},
        tmp=tmp_path)
    src = _np_sources(docs)
    by_name = {"key": "kubernetes.io/metadata.name", "operator": "In"}
    am, *am_extra = src["alerts"]
    assert am["namespaceSelector"] == {"matchExpressions": [
        {**by_name, "values": ["observability", "monitoring"]}]}
    assert am["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}}
    assert am_extra == extra
    (scraper,) = src["metrics"]
    assert scraper == {"namespaceSelector": {"matchExpressions": [{**by_name,
                                                                    "values": ["prom"]}]},
                       "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    # Every pod of the namespaces chosen by a label (null drops the default pod selector).
    docs = render({"networkPolicy": {"alertmanager": {
        "namespaceSelector": {"matchLabels": {"monitoring": "true"}}, "podSelector": None}}},
        tmp=tmp_path)
    (am,) = _np_sources(docs)["alerts"]
    assert am == {"namespaceSelector": {"matchLabels": {"monitoring": "true"}},
                  "podSelector": {}}
    # No namespaces at all: the release namespace only (a peer without namespaceSelector).
    docs = render({"networkPolicy": {"metrics": {"namespaces": []}}}, tmp=tmp_path)
    (scraper,) = _np_sources(docs)["metrics"]
    assert scraper == {"podSelector": {}}


def test_network_policy_values_are_checked(tmp_path: Path) -> None:
    for bad in ({"alertmanager": {"namespaces": ["Not_A_Namespace"]}},
                {"alertmanager": {"extraFrom": [{}]}},
                {"metrics": {"extraFrom": [{"ipBlock": {"except": ["10.0.0.0/8"]}}]}},
                {"metrics": {"extraFrom": [{"nameSpaceSelector": {}}]}}):
        vf = tmp_path / "np.yaml"
        vf.write_text(yaml.safe_dump({"networkPolicy": bad}))
        p = helm("template", "rel", "--values", str(vf))
        assert p.returncode != 0 and "schema" in p.stderr.lower(), (bad, p.stderr[-300:])


def test_image_digest_pins_the_image(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render({"image": {"repository": "team/sigops", "tag": "9.9.9",
                             "digest": digest}}, tmp=tmp_path)
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"team/sigops@{digest}"  # the digest wins over the tag
    docs = render({"image": {"repository": "team/sigops"}}, tmp=tmp_path)
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert c["image"] == f"team/sigops:{chart['appVersion']}"
    vf = tmp_path / "bad.yaml"
    vf.write_text(yaml.safe_dump({"image": {"digest": "sha256:short"}}))
    assert helm("template", "rel", "--values", str(vf)).returncode != 0


def test_license_file_is_the_license_pyproject_names() -> None:
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["artifacthub.io/license"] == "Apache-2.0"


def test_two_copies_elect_a_leader(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    env = env_of(rendered["two-copies"])
    assert env["SIGOPS_LEASE_DURATION"] == "20"
    assert env_of(rendered["defaults"])["SIGOPS_LEADER_ELECTION"] == "true"
    vf = tmp_path / "v.yaml"
    vf.write_text(yaml.safe_dump({"replicaCount": 2, "leaderElection": {"enabled": False}}))
    p = helm("template", "rel", "--values", str(vf))
    assert p.returncode != 0 and "leaderElection" in p.stderr


def test_audit_jobs_run_the_operators_own_image_unless_the_chart_names_one(
        tmp_path: Path) -> None:
    cfg = Settings.model_validate(config_of(render({}, tmp=tmp_path)))
    deployment = next(d for d in render({}, tmp=tmp_path) if d.get("kind") == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert cfg.audit.image == image


def test_audit_rbac_only_when_audits_are_on(tmp_path: Path) -> None:
    def target_rules(values: Doc) -> set[tuple[str, str, str]]:
        role = next(r for r in kinds(render(values, tmp=tmp_path), "Role")
                    if r["metadata"]["name"].endswith("-target"))
        return {(g, res, v) for r in role["rules"] for g in r["apiGroups"]
                for res in r["resources"] for v in r["verbs"]}

    off, on = target_rules({}), target_rules({"audit": {"enabled": True}})
    crs = "sigops.fractal-lba.io"
    added = {(crs, "signatureaudits", v) for v in ("get", "list", "watch", "patch")}
    added |= {(crs, "signatureaudits/status", "patch")}
    added |= {("batch", "jobs", v) for v in ("create", "get", "patch")}
    added |= {("", "serviceaccounts", "create"), ("", "configmaps", "create"),
              ("", "configmaps", "update"), ("", "configmaps", "list")}
    added |= {("rbac.authorization.k8s.io", r, "create") for r in ("roles", "rolebindings")}
    assert on - off == added and not off & added
