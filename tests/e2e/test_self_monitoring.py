"""sigops watched by the real Prometheus: the chart's health rules (PrometheusRule) and its
Grafana dashboard, every PromQL expression of both run against a Prometheus scraping a real
``sigops run`` that has done the things they are about.

The operator answers an alert with scenario D (an action: a marker on the dashboard), the
incident escalates, a post with a wrong token is refused, a fourth signal of one target is
rate-limited, a KeyRotation is in progress; a stub backend exports ``flk_signature_err``.
Then each expression returns data (an alert's expression without its threshold, what
``absent()`` watches for ``absent(...)``), the rules load and evaluate in Prometheus without
error, and the alerts without a ``for`` that these events should fire do fire.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.dashboard import dashboard_queries, grafana_to_promql
from devtools.promstack import PromStack
from devtools.stub import StubServer
from sigops.core.keys import HMAC, Key
from tests.reliability.test_webhook_hostile import alert_doc
from tests.support import (
    BIN,
    TOKEN,
    SampleServer,
    alert_post,
    backend,
    envelope,
    incidents,
    keyrotation,
    make_backend,
    pcs,
    require_tool,
    rotation_target,
    start,
    wait_for,
)
from tests.unit.test_chart import CHART, one, render

pytestmark = pytest.mark.skipif(not (BIN / "prometheus").exists(),
                                reason="prometheus not installed (make tools)")

JOB = "rel-sigops"  # the Service name of release "rel", as a ServiceMonitor names the job
RELEASE_NS = "sigops-system"
GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"


def signal_of(expr: str) -> str:
    """What an alert expression watches: without its threshold, inside ``absent()``."""
    m = re.fullmatch(r"absent\((.*)\)", expr.strip())
    if m:
        return m.group(1)
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+\s*$", "", expr.strip())


def query(stack: PromStack, promql: str) -> list[dict[str, Any]]:
    return stack.query(promql)


def tampered_samples(key: Key) -> list[dict[str, Any]]:
    bad = []
    for i in range(30):
        p = pcs(key, 100 + i)
        p["merkle_root"] = "f" * 64  # changed after signing: scenario D's evidence
        bad.append(envelope(p, "10.9.9.9"))
    return [envelope(pcs(key, i), "agent-1") for i in range(5)] + bad


def test_health_rules_and_dashboard_answer_from_a_real_prometheus(
        api, namespace, operator_factory, tmp_path):
    docs = render({"healthRules": {"enabled": True}, "grafanaDashboard": {"enabled": True},
                   "serviceMonitor": {"enabled": True}}, tmp=tmp_path)
    rule = next(d for d in docs if d["kind"] == "PrometheusRule"
                and d["metadata"]["name"].endswith("-health"))
    rules_file = tmp_path / "health-rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    p = subprocess.run([require_tool("promtool"), "check", "rules", str(rules_file)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    one(docs, "ServiceMonitor")
    dash = json.loads(cm["data"]["sigops.json"])
    assert dash == json.loads((CHART / "files" / "dashboards" / "sigops.json").read_text())

    # A backend whose tampered samples make scenario D act, and a rotation elsewhere.
    key = Key("k", HMAC, secret=b"self-monitoring-backend-key-0001")
    backend(api, namespace, key, token_rate="100")
    samples = SampleServer()
    samples.samples = tampered_samples(key)
    rot_ns = f"{namespace}-kr"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=rot_ns)))
    errors = {"n": 0.0}

    def exporter() -> bytes:
        errors["n"] += 7
        return f"# TYPE flk_signature_err counter\nflk_signature_err {errors['n']}\n".encode()

    flk = StubServer(exporter, "text/plain; version=0.0.4")
    try:
        op = start(operator_factory, tmp_path, namespace, samples.url, verify_timeout="3s",
                   escalate_after="20s", targets=[
                       {"namespace": namespace, "deployment": "fractal-lba-backend",
                        "backendURL": samples.url}, rotation_target(rot_ns)])
        scrape = [
            {"job_name": JOB, "static_configs": [{
                "targets": [f"127.0.0.1:{op.metrics_port}"],
                "labels": {"namespace": RELEASE_NS}}]},
            {"job_name": "flk-backend", "static_configs": [{
                "targets": [flk.address], "labels": {"namespace": namespace}}]},
        ]
        with PromStack(scrape_configs=scrape, rule_files=[rules_file],
                       workdir=tmp_path / "promstack") as stack:
            # Counters seen at 0 first: increase() counts from there.
            wait_for(stack.targets_up, timeout=30, what="both targets scraped")
            wait_for(lambda: query(stack, f'sigops_signals_rate_limited_total{{job="{JOB}"}}'),
                     timeout=30, what="a first scrape of sigops")
            # What the rules and panels are about.
            assert alert_post(op, namespace)[0] == 200  # incident 1: scenario D acts
            assert alert_post(op, namespace, token="not-the-token")[0] == 401
            for i in range(2, 5):  # incidents 2 and 3, then the 4th signal is rate-limited
                doc = alert_doc(namespace, f"{i:016x}", case=str(i))
                req = urllib.request.Request(
                    f"http://127.0.0.1:{op.alerts_port}/v1/alerts",
                    data=json.dumps(doc).encode(), method="POST",
                    headers={"Authorization": f"Bearer {TOKEN}",
                             "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    assert r.status == 200
            make_backend(api, rot_ns, HMAC)
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, rot_ns, "keyrotations", keyrotation("kr1", HMAC, overlap="1h"))
            wait_for(lambda: any((i.get("status") or {}).get("phase") == "Escalated"
                                 for i in incidents(api, namespace)), timeout=90,
                     what="an incident escalated")
            wait_for(lambda: any((i.get("status") or {}).get("phase") == "RateLimited"
                                 for i in incidents(api, namespace)), timeout=30,
                     what="the rate-limited record")

            exprs = [("rule " + r["alert"], r["expr"]) for g in rule["spec"]["groups"]
                     for r in g["rules"]]
            exprs += [("dashboard", grafana_to_promql(e, JOB)) for e in dashboard_queries(dash)]
            answered: dict[str, int] = {}
            for what, expr in exprs:
                query(stack, expr)  # the whole expression is valid PromQL here
                found = wait_for(lambda e=expr: query(stack, signal_of(e)), timeout=60,
                                 interval=1.0, what=f"data for {what}: {signal_of(expr)}")
                answered[expr] = len(found)
            assert len(answered) == len(exprs)

            # The rules load and evaluate cleanly; those without `for` fire on what happened.
            groups = stack._get(f"{stack.prometheus_url}/api/v1/rules")["data"]["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            assert len(loaded) == len(exprs) - len(dashboard_queries(dash))
            wait_for(lambda: all(r.get("health") == "ok" for r in stack._get(
                f"{stack.prometheus_url}/api/v1/rules")["data"]["groups"][0]["rules"]),
                     timeout=30, what="every rule evaluated without error")
            for name in ("SigopsIncidentEscalated", "SigopsSignalsRateLimited"):
                wait_for(lambda n=name: [a for a in stack.alerts(n) if a["state"] == "firing"],
                         timeout=60, what=f"{name} firing")
            quiet = {a["labels"]["alertname"] for a in stack.alerts()}
            assert not quiet & {"SigopsDown", "SigopsAbsent", "SigopsStuck", "SigopsNotReady"}
    finally:
        flk.close()
        samples.close()
        client.CoreV1Api(api).delete_namespace(rot_ns)
