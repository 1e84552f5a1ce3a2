"""Issue 28 on the real parts: the chart's FLKSignatureFailuresSpike (rendered by helm, its
windows shrunk to seconds) in a real Prometheus, a real Alertmanager posting to sigops.

A spike spread evenly over 2 backend pods, each under the threshold and the backend over it,
opens an incident through Alertmanager. Upstream's per-pod rule stays silent on the same
traffic (the chart's `aggregation: pod` form, in the same Prometheus).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.promstack import PromStack, ScrapeTarget
from sigops.core.keys import HMAC, generate_key
from sigops.settings import Settings
from sigops.testbed.agents import AgentPlan, AgentSimulator
from sigops.testbed.keysource import StaticKey
from tests.e2e.test_closed_loop import GROUP, VERSION, make_backend
from tests.support import BIN, REPO, wait_for
from tests.unit.test_chart import HELM, one, render

pytestmark = pytest.mark.skipif(not (BIN / "prometheus").exists() or not HELM.exists(),
                                reason="prometheus/alertmanager/helm not installed (make tools)")

THRESHOLD = 2.0  # errors/s for the backend
PER_POD = 1.4  # errors/s each of the 2 pods fails: under THRESHOLD alone, over it together
PODS = ("fractal-lba-backend-5c54f8bbf4-h6c4v", "fractal-lba-backend-5c54f8bbf4-q8w2z")
DETECTION = {"errorRateWindow": "10s", "errorRateThreshold": THRESHOLD}


def chart_rule(tmp_path: Path, aggregation: str, alert: str) -> dict[str, Any]:
    """The chart's rule group with `aggregation`, for 3 s instead of 5 m, renamed `alert`."""
    docs = render({"prometheusRule": {"enabled": True, "for": "3s", "aggregation": aggregation},
                   "detection": DETECTION}, tmp=tmp_path)
    spec: dict[str, Any] = one(docs, "PrometheusRule")["spec"]
    (rule,) = spec["groups"][0]["rules"]
    rule["alert"] = alert
    spec["groups"][0]["name"] = f"flk-{aggregation}"
    return spec


def test_e2e_spike_over_two_pods_each_under_the_threshold_opens_an_incident(
        cluster: Any, api: Any, namespace: str, operator_factory: Any, tmp_path: Path) -> None:
    old, new = generate_key(HMAC, kid="old"), generate_key(HMAC, kid="new")
    make_backend(api, namespace, new)
    # What sigops reads is what the rule fires on (the chart renders Settings' text).
    per_target = chart_rule(tmp_path, "target", "FLKSignatureFailuresSpike")
    settings = Settings(error_rate_window="10s")
    assert per_target["groups"][0]["rules"][0]["expr"] == (
        f"({settings.error_rate_by_target()}) > {THRESHOLD:g}")
    per_pod = chart_rule(tmp_path, "pod", "UpstreamPerPodSpike")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": per_target["groups"] + per_pod["groups"]}))

    backends: list[subprocess.Popen[bytes]] = []
    agents: list[tuple[AgentSimulator, threading.Thread]] = []
    stack: PromStack | None = None
    try:
        urls = []
        for i in range(2):  # two copies of the backend: the Deployment's two pods
            log = open(tmp_path / f"backend-{i}.log", "ab")  # noqa: SIM115 - the child's
            p = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "sigops"), "testbed", "backend",
                 "--listen", "127.0.0.1:0", "--namespace", namespace,
                 "--deployment", "fractal-lba-backend", "--poll-interval", "0.5"],
                env=cluster.env, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True)
            backends.append(p)
            assert p.stdout is not None
            urls.append(json.loads(p.stdout.readline().decode())["url"])
        token = secrets.token_urlsafe(24)
        (tmp_path / "token").write_text(token)
        op = operator_factory({
            "targets": [{"namespace": namespace, "deployment": "fractal-lba-backend",
                         "backendURL": urls[0]}],
            "error_rate_window": "10s", "error_rate_threshold": THRESHOLD,
            "alert_poll_interval": 3600.0,  # the incident must come through Alertmanager
            "verify_timeout": "90s", "cooldown": "3s"},
            start=False, extra_env={"SIGOPS_ALERTS_TOKEN_FILE": str(tmp_path / "token")})
        stack = PromStack(
            targets=[ScrapeTarget(u.removeprefix("http://"), {"namespace": namespace, "pod": pod})
                     for u, pod in zip(urls, PODS, strict=True)],
            rule_files=[rules], webhook_url=f"http://127.0.0.1:{op.alerts_port}/v1/alerts",
            webhook_token=token, workdir=tmp_path / "promstack").start()
        op.prometheus_url = stack.prometheus_url
        op.start()
        wait_for(stack.targets_up, 20, what="both backend pods scraped")
        # Agents still on a key the backend dropped: every PCS fails, evenly on both pods.
        for u in urls:
            sim = AgentSimulator(AgentPlan(u, rate=PER_POD, agents=2), StaticKey(old, "e2e"))
            t = threading.Thread(target=sim.run, daemon=True)
            t.start()
            agents.append((sim, t))

        firing = wait_for(lambda: [a for a in stack.alerts("FLKSignatureFailuresSpike")
                                   if a["state"] == "firing"], 90, 0.5, what="the alert")
        assert [a["labels"]["deployment"] for a in firing] == ["fractal-lba-backend"]
        assert firing[0]["labels"]["namespace"] == namespace
        # Each pod alone is under the threshold; the backend is over it.
        each = stack.query("(rate(flk_signature_err[10s]) or rate(flk_signature_errors[10s]))")
        rates = sorted(float(s["value"][1]) for s in each)
        assert len(rates) == 2 and max(rates) < THRESHOLD < sum(rates), rates
        assert not [a for a in stack.alerts("UpstreamPerPodSpike") if a["state"] == "firing"]

        def opened() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = client.CustomObjectsApi(
                api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                   "signatureincidents")["items"]
            return items

        (inc,) = wait_for(opened, 60, 0.5, what="the incident")
        assert inc["spec"]["source"] == "alertmanager"
        assert inc["spec"]["target"] == {"namespace": namespace,
                                         "deployment": "fractal-lba-backend"}
        assert inc["spec"]["alert"]["labels"]["deployment"] == "fractal-lba-backend"
        # sigops' own guard reads the backend's rate, not one pod's.
        acted = wait_for(lambda: [i for i in opened() if (i.get("status") or {}).get(
            "errorRate") not in (None, "n/a")], 60, 0.5, what="the incident's error rate")
        assert float(acted[0]["status"]["errorRate"]) > THRESHOLD
    finally:
        for sim, t in agents:
            sim.stop()
            t.join(timeout=15)
        if stack is not None:
            stack.stop()
        for p in backends:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
