"""The closed loop with real parts, one test per runbook scenario:

agents -> testbed backend (reads its config from its Deployment through the API) -> real
Prometheus (FLKSignatureFailuresSpike, shrunk to seconds) -> real Alertmanager -> sigops ->
API server -> the backend reloads -> the error rate falls -> the alert resolves -> Resolved.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devtools.promstack import PromStack, ScrapeTarget
from sigops.core.keys import HMAC, Key, generate_key
from sigops.testbed.agents import AgentPlan, AgentSimulator
from sigops.testbed.faults import parse_fault
from sigops.testbed.keysource import StaticKey
from sigops.testbed.manifests import backend_deployment, literal_env
from sigops.testbed.rules import ALERT_NAME, write_rule_file
from tests.support import BIN, REPO, wait_for

pytestmark = pytest.mark.skipif(not (BIN / "prometheus").exists(),
                                reason="prometheus/alertmanager not installed (make tools)")

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
THRESHOLD = 2.0  # errors/s: the rule's and sigops' threshold
QUERY = "sum(rate(flk_signature_err[10s]))"


def make_backend(api: Any, ns: str, key: Key, token_rate: str = "1000") -> None:
    env = literal_env(PCS_SIGN_ALG="hmac", PCS_HMAC_KEY=(key.secret or b"").decode(),
                      TOKEN_RATE=token_rate)
    client.AppsV1Api(api).create_namespaced_deployment(ns, backend_deployment(env))


@dataclass
class Loop:
    """Every moving part of one closed loop; stopped in reverse order."""

    cluster: Any
    api: Any
    ns: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stack: PromStack | None = None
    operator: Any = None
    backend_url: str = ""
    agents: list[tuple[AgentSimulator, threading.Thread]] = field(default_factory=list)

    def start_backend(self, *extra: str) -> None:
        log = open(self.workdir / "backend.log", "ab")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "sigops"), "testbed", "backend",
             "--listen", "127.0.0.1:0", "--namespace", self.ns,
             "--deployment", "fractal-lba-backend", "--poll-interval", "0.5", *extra],
            env=self.cluster.env, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self.procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline().decode()
        self.backend_url = json.loads(line)["url"]

    def start_stack_and_operator(self, operator_factory: Any, **settings: Any) -> None:
        token = secrets.token_urlsafe(24)
        (self.workdir / "token").write_text(token)
        rules = write_rule_file(self.workdir / "rules.yml", window="10s", for_="3s",
                                threshold=THRESHOLD)
        target = {"namespace": self.ns, "deployment": "fractal-lba-backend",
                  "backendURL": self.backend_url, **settings.pop("target_extra", {})}
        op = operator_factory({
            "targets": [target], "error_rate_query": QUERY, "error_rate_threshold": THRESHOLD,
            "verify_timeout": "90s", "cooldown": "3s", "alert_poll_interval": 2.0,
            **settings}, start=False, extra_env={"SIGOPS_ALERTS_TOKEN_FILE":
                                                 str(self.workdir / "token")})
        self.stack = PromStack(
            targets=[ScrapeTarget(self.backend_url.removeprefix("http://"),
                                  {"namespace": self.ns, "deployment": "fractal-lba-backend"})],
            rule_files=[rules], webhook_url=f"http://127.0.0.1:{op.alerts_port}/v1/alerts",
            webhook_token=token, workdir=self.workdir / "promstack").start()
        op.prometheus_url = self.stack.prometheus_url
        self.operator = op.start()
        wait_for(self.stack.targets_up, 20, what="the backend scraped")

    def agents_run(self, key: Key, rate: float = 20, **plan: Any) -> AgentSimulator:
        faults = tuple(parse_fault(f) for f in plan.pop("faults", ()))
        sim = AgentSimulator(AgentPlan(self.backend_url, rate=rate, agents=3, faults=faults,
                                       **plan), StaticKey(key, "e2e"))
        t = threading.Thread(target=sim.run, daemon=True)
        t.start()
        self.agents.append((sim, t))
        return sim

    def agents_stop(self) -> None:
        for sim, t in self.agents:
            sim.stop()
            t.join(timeout=15)
        self.agents.clear()

    def rate(self) -> float:
        assert self.stack is not None
        res = self.stack.query(QUERY)
        return float(res[0]["value"][1]) if res else 0.0

    def incident(self, *phases: str) -> dict[str, Any] | None:
        items = client.CustomObjectsApi(self.api).list_namespaced_custom_object(
            GROUP, VERSION, self.ns, "signatureincidents")["items"]
        real = [i for i in items if (i.get("status") or {}).get("phase") != "RateLimited"]
        if real and (real[0].get("status") or {}).get("phase") in phases:
            return real[0]
        return None

    def alert_state(self) -> str | None:
        assert self.stack is not None
        states = [a["state"] for a in self.stack.alerts(ALERT_NAME)]
        return "firing" if "firing" in states else (states[0] if states else None)

    def stop(self) -> None:
        self.agents_stop()
        if self.stack is not None:
            self.stack.stop()
        for p in self.procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def loop(cluster: Any, api: Any, namespace: str, tmp_path: Path) -> Iterator[Loop]:
    lp = Loop(cluster, api, namespace, tmp_path)
    yield lp
    lp.stop()


def signal_verifies(loop: Loop, signal: dict[str, Any]) -> None:
    """An observer's check, with the CLI and the published public keys."""
    cm = client.CoreV1Api(loop.api).read_namespaced_config_map("sigops-signal-pubkeys",
                                                               loop.operator.operator_ns)
    (loop.workdir / "pubkeys.json").write_text(cm.data["pubkeys.json"])
    (loop.workdir / "signal.json").write_text(json.dumps(signal))
    out = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), "signal", "verify",
                          "--pubkeys", str(loop.workdir / "pubkeys.json"),
                          str(loop.workdir / "signal.json")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["valid"] is True


def run_to_end(loop: Loop, final: str = "Resolved", on_applied: Any = None
               ) -> tuple[float, dict[str, Any]]:
    """Wait for the alert, the incident, the action and the final phase; returns the error
    rate measured while the alert fired and the final incident."""
    wait_for(lambda: loop.alert_state() == "firing", 60, 0.5, what="the alert to fire")
    before = loop.rate()
    assert before > THRESHOLD
    inc = wait_for(lambda: loop.incident("Verifying", "Resolved", "Escalated"), 60, 0.5,
                   what="the incident to act")
    if on_applied:
        on_applied(inc)
    inc = wait_for(lambda: loop.incident(final, "Escalated"), 120, 1.0, what=final)
    assert inc["status"]["phase"] == final, inc["status"].get("conditions")
    return before, inc


def test_e2e_a_agents_on_a_key_the_backend_dropped(loop, api, namespace, operator_factory):
    old, new = generate_key(HMAC, kid="old"), generate_key(HMAC, kid="new")
    make_backend(api, namespace, new)
    # The old key retiring, its window open: the backend dropped it too early. (A key a
    # finished rotation retired is never re-admitted: tests/integration/test_incidents.py.)
    window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    ring = {"keys": [{**old.to_entry(), "state": "retiring", "overlap_until": window},
                     {**new.to_entry(), "state": "active"}],
            "profile": "python", "backend_accepts": ["new"], "primary": "new", "lock": None}
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="sigops-keyring-fractal-lba-backend"),
        string_data={"keyring.json": json.dumps(ring)}))
    loop.start_backend()
    loop.start_stack_and_operator(operator_factory)
    loop.agents_run(old)  # agents still sign with the key the backend dropped
    before, inc = run_to_end(loop)
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("KeyRotationInProgress", "A")
    assert st["actions"][0]["payload"]["action"] == "accept-agent-keys"
    assert loop.rate() < THRESHOLD < before
    assert loop.alert_state() != "firing"
    signal_verifies(loop, st["signal"])


def test_e2e_b_skewed_agent_clocks(loop, api, namespace, operator_factory):
    key = generate_key(HMAC, kid="k")
    make_backend(api, namespace, key)
    core = client.CoreV1Api(api)
    node = f"node-{namespace}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
    try:
        loop.start_backend("--max-skew", "30")
        loop.start_stack_and_operator(operator_factory, target_extra={"maxSkewSeconds": 30})
        loop.agents_run(key, clock_offset_seconds=-600)

        def ntp_fixes_clocks(_: dict[str, Any]) -> None:
            # The NTP DaemonSet would now sync the labelled nodes: agents' clocks come right.
            wait_for(lambda: core.read_node(node).metadata.labels.get("ntp") == "enabled", 30,
                     what="node labelled for NTP")
            loop.agents_stop()
            loop.agents_run(key)

        before, inc = run_to_end(loop, on_applied=ntp_fixes_clocks)
        st = inc["status"]
        assert (st["cause"], st["scenario"]) == ("ClockSkew", "B")
        skew = st["evidence"]["samples"]["report"]["skew"]
        assert abs(skew["offset_seconds"] - 600) < 30
        assert loop.rate() < THRESHOLD < before
        signal_verifies(loop, st["signal"])
    finally:
        core.delete_node(node)


def test_e2e_c_other_profile_escalates_changes_nothing(loop, api, namespace,
                                                       operator_factory):
    key = generate_key(HMAC, kid="k")
    make_backend(api, namespace, key)
    apps = client.AppsV1Api(api)
    gen = apps.read_namespaced_deployment("fractal-lba-backend", namespace).metadata.generation
    loop.start_backend()
    loop.start_stack_and_operator(operator_factory)
    loop.agents_run(key, profile="fixed9")  # agents on the 9-fixed-decimals form
    before, inc = run_to_end(loop, final="Escalated")
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("CanonicalizationDrift", "C")
    action = st["actions"][0]["payload"]
    assert "fixed9" in action["driftingProfiles"] and action["backendAccepts"] == ["python"]
    assert apps.read_namespaced_deployment("fractal-lba-backend",
                                           namespace).metadata.generation == gen
    assert before > THRESHOLD
    signal_verifies(loop, st["signal"])


def test_e2e_d_tamper_flood_tightens_then_restores_rate(loop, api, namespace,
                                                        operator_factory):
    key = generate_key(HMAC, kid="k")
    make_backend(api, namespace, key, token_rate="1000")
    loop.start_backend()
    loop.start_stack_and_operator(operator_factory, token_rate="1")
    loop.agents_run(key, rate=5)  # honest agents
    loop.agents_run(key, rate=20, faults=("tamper",), agent_prefix="attacker")

    def token_rate() -> str | None:
        dep = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", namespace)
        return next((e.value for e in dep.spec.template.spec.containers[0].env
                     if e.name == "TOKEN_RATE"), None)

    before, inc = run_to_end(loop)
    st = inc["status"]
    assert (st["cause"], st["scenario"]) == ("MaliciousActivity", "D")
    tighten = st["actions"][0]["payload"]
    assert (tighten["previous"], tighten["value"]) == ("1000", "1")
    assert st["actions"][1]["payload"]["sources"][0]["source"].startswith("attacker")
    assert loop.rate() < THRESHOLD < before
    wait_for(lambda: token_rate() == "1000", 30, what="TOKEN_RATE restored after cool-down")
    signal_verifies(loop, st["signal"])


def test_e2e_e_bad_signing_config_rolled_back(loop, api, namespace, operator_factory):
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    make_backend(api, namespace, good)
    loop.start_backend()
    loop.start_stack_and_operator(operator_factory)
    loop.agents_run(good)
    core = client.CoreV1Api(api)

    def snapshot() -> bool:
        try:
            core.read_namespaced_secret("sigops-lkg-fractal-lba-backend", namespace)
            return True
        except client.ApiException:
            return False

    wait_for(snapshot, 30, what="a last-known-good snapshot while healthy")
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment("fractal-lba-backend", namespace)
    for e in dep.spec.template.spec.containers[0].env:
        if e.name == "PCS_HMAC_KEY":
            e.value = (bad.secret or b"").decode()  # a bad signing config rolls out
    apps.replace_namespaced_deployment("fractal-lba-backend", namespace, dep)
    before, inc = run_to_end(loop)
    st = inc["status"]
    assert st["scenario"] == "E" and st["evidence"]["recentSigningChange"] is True
    assert st["actions"][0]["payload"]["action"] == "rollback-template"
    env = apps.read_namespaced_deployment("fractal-lba-backend",
                                          namespace).spec.template.spec.containers[0].env
    assert next(e.value for e in env if e.name == "PCS_HMAC_KEY") == good.secret.decode()
    assert loop.rate() < THRESHOLD < before
    signal_verifies(loop, st["signal"])

