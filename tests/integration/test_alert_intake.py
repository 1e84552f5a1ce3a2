"""Alert intake under concurrency, in process against the real API server.

The receiver makes its API calls outside the intake lock, one alert per fingerprint at a time:
a copy of an alert in flight waits for its outcome and takes over when it failed (nothing is
acknowledged and then lost), a failed signal is not counted against the rate limit, and other
alerts never wait for a slow one.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devtools.promstack import PromStack, ScrapeTarget
from devtools.stub import StubServer
from sigops.core.keys import ED25519, generate_key
from sigops.core.timeparse import now_iso
from sigops.incident.alertmanager import AlertInfo
from sigops.incident.intake import FP_LABEL, RATELIMIT_CM, AlertIntake
from sigops.kube.api import GROUP, VERSION, Kube, KubeError
from sigops.prometheus.client import Prom
from sigops.settings import Settings, Target
from sigops.signing.records import Signer
from tests.support import BIN, wait_for

SIGNER = Signer(generate_key(ED25519, kid="intake-test-signer", state="active"))
ALERT = "FLKSignatureFailuresSpike"


def intake(api: Any, ns: str, prom: Prom | None = None, **settings: Any) -> AlertIntake:
    """Two configured targets in ``ns``: fractal-lba-backend (the default) and other-backend."""
    config = Settings(targets=[Target(namespace=ns, deployment="fractal-lba-backend",
                                      default=True),
                               Target(namespace=ns, deployment="other-backend")], **settings)
    return AlertIntake(Kube(api), prom or Prom(None), config, SIGNER, ns, token="t")


def alert(fp: str, group: str = "g1", status: str = "firing", **labels: str) -> AlertInfo:
    return AlertInfo(ALERT, status, fp, {"alertname": ALERT, **labels}, group_key=group)


def incidents(api: Any, ns: str, fp: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents",
        label_selector=f"{FP_LABEL}={fp}")["items"]
    return items


def saved_accepted(api: Any, ns: str) -> list[float]:
    cm = client.CoreV1Api(api).read_namespaced_config_map(RATELIMIT_CM, ns)
    sources = json.loads(cm.data["state.json"])["sources"]
    return list(sources[f"{ns}/fractal-lba-backend"]["accepted"])


def test_a_copy_in_flight_waits_and_takes_over_after_a_failure(api: Any, namespace: str
                                                                ) -> None:
    it = intake(api, namespace)
    real_create = it._create
    calls: list[str] = []

    def failing_once(*a: Any, **kw: Any) -> None:
        calls.append("create")
        if len(calls) == 1:
            time.sleep(0.5)  # the copy arrives while this one is in flight
            raise KubeError(500, "injected")
        real_create(*a, **kw)

    it._create = failing_once  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}

    def first() -> None:
        try:
            outcome["first"] = it.handle(alert("f00d"), "alertmanager")
        except KubeError as e:
            outcome["first"] = e.status

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.15)
    outcome["copy"] = it.handle(alert("f00d"), "alertmanager")
    t.join(10)
    assert outcome == {"first": 500, "copy": "created"}
    assert len(incidents(api, namespace, "f00d")) == 1
    assert it.handle(alert("f00d"), "alertmanager") == "duplicate"
    # The failed attempt was taken back: one signal counted, in memory and in the ConfigMap.
    assert len(saved_accepted(api, namespace)) == 1
    assert len(it.limiter.to_state()["sources"][f"{namespace}/fractal-lba-backend"]
               ["accepted"]) == 1


def test_other_alerts_do_not_wait_for_a_slow_one(api: Any, namespace: str) -> None:
    it = intake(api, namespace)
    real_create = it._create
    release = threading.Event()

    def slow_for_one(a: AlertInfo, *rest: Any, **kw: Any) -> None:
        if a.fingerprint == "5104":
            release.wait(20)
        real_create(a, *rest, **kw)

    it._create = slow_for_one  # type: ignore[method-assign]
    slow: dict[str, str] = {}
    t = threading.Thread(target=lambda: slow.update(r=it.handle(alert("5104"), "alertmanager")))
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    other = alert("fa57", namespace=namespace, deployment="other-backend")
    assert it.handle(other, "alertmanager") == "created"
    assert time.monotonic() - t0 < 5, "an alert of another target went ahead"
    assert t.is_alive(), "while the slow one is still in flight"
    # Copies of the slow alert wait for it and then are duplicates.
    waiters = [threading.Thread(target=lambda: slow.setdefault(
        "copy", it.handle(alert("5104"), "alertmanager"))) for _ in range(5)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    assert "copy" not in slow
    release.set()
    t.join(10)
    for w in waiters:
        w.join(10)
    assert slow == {"r": "created", "copy": "duplicate"}
    assert len(incidents(api, namespace, "5104")) == 1
    assert len(incidents(api, namespace, "fa57")) == 1


def test_alerts_of_one_target_share_one_incident_until_all_resolve(api: Any, namespace: str
                                                                   ) -> None:
    """The upstream rule fires once per backend pod: one incident for the target, which
    counts its alert resolved only when every joined alert has resolved."""
    it = intake(api, namespace)
    pod_a, pod_b = alert("a0a0", pod="backend-a"), alert("b0b0", pod="backend-b")
    results: list[str] = []
    threads = [threading.Thread(target=lambda a=a: results.append(it.handle(a, "alertmanager")))
               for a in (pod_a, pod_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == ["created", "joined"]
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "signatureincidents")["items"]
    assert len(items) == 1
    # An alert that differs in more than the instance (another severity) is its own incident.
    assert it.handle(alert("c0c0", pod="backend-a", severity="critical"),
                     "alertmanager") == "created"
    items = [i for i in client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "signatureincidents")["items"]
        if i["spec"]["alert"]["fingerprint"] != "c0c0"]
    inc = items[0]
    first = inc["spec"]["alert"]["fingerprint"]
    second = "b0b0" if first == "a0a0" else "a0a0"
    assert inc["status"]["relatedAlerts"] == [second]
    name = inc["metadata"]["name"]

    def status() -> dict[str, Any]:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "signatureincidents", name)
        return dict(obj.get("status") or {})

    # A fresh intake (a restarted operator) still finds the joined alert's incident.
    it2 = intake(api, namespace)
    assert it2.handle(alert(second, group="g2"), "alertmanager") == "duplicate"
    assert it2.handle(alert(first, status="resolved"), "alertmanager") == "resolved"
    assert "alertResolvedAt" not in status(), "one of its alerts still fires"
    assert it2.handle(alert(second, status="resolved"), "alertmanager") == "resolved"
    st = status()
    assert st["alertResolvedAt"] and sorted(st["resolvedAlerts"]) == ["a0a0", "b0b0"]



def escalate(api: Any, ns: str, name: str, hours_ago: float = 0.0) -> None:
    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, "signatureincidents", name,
        {"status": {"phase": "Escalated", "escalatedAt": now_iso(at)}})


def test_an_escalated_incident_keeps_its_alerts_until_they_resolve(api: Any, namespace: str
                                                                   ) -> None:
    """Escalated is where a person takes over, not the end of the spike: the same alert still
    firing (Alertmanager's repeat, the poll, a restarted operator) or firing for another pod
    of the target opens no second incident that would diagnose it again and use up the
    target's signals. Seen on the node: the second pod's alert fired after the first
    incident escalated and opened another. Once its alerts resolved, or for the incident's
    own alert of a later episode, a spike is a new incident again."""
    it = intake(api, namespace)
    first = AlertInfo(ALERT, "firing", "e0a0", {"alertname": ALERT, "pod": "backend-a"},
                      group_key="g1", starts_at="2026-12-06T10:00:00Z")
    assert it.handle(first, "alertmanager") == "created"
    name = all_incidents(api, namespace)[0]["metadata"]["name"]
    escalate(api, namespace, name)
    for restarted in (False, True):  # in memory, then from the API alone
        it = intake(api, namespace) if restarted else it
        assert it.handle(alert("e0a0", group=f"poll{restarted}"), "prometheus-poll") == \
            "duplicate"
        assert it.handle(alert(f"e0b{int(restarted)}", pod="backend-b"),
                         "alertmanager") == "joined"
    assert len(all_incidents(api, namespace)) == 1
    inc = all_incidents(api, namespace)[0]
    assert inc["status"]["phase"] == "Escalated"
    assert inc["status"]["relatedAlerts"] == ["e0b0", "e0b1"]
    # Alertmanager may merge an episode to an earlier start: the same episode.
    merged = AlertInfo(ALERT, "firing", "e0a0", first.labels, group_key="g1",
                       starts_at="2026-12-06T09:59:00Z")
    assert it.handle(merged, "alertmanager") == "duplicate"
    # The same fingerprint of a later episode (a later startsAt) is a new spike; and another
    # pod's alert now joins the incident being worked on, not the escalated one.
    later = AlertInfo(ALERT, "firing", "e0a0", first.labels, group_key="g1",
                      starts_at="2026-12-06T11:00:00Z")
    assert it.handle(later, "alertmanager") == "created"
    assert len(all_incidents(api, namespace)) == 2
    second = next(i for i in all_incidents(api, namespace) if i["metadata"]["name"] != name)
    assert it.handle(alert("e0c0", pod="backend-c"), "alertmanager") == "joined"
    # Resolved notifications of the first episode end its hold once all it holds resolved,
    # and leave the later episode's incident alone.
    for fp in ("e0a0", "e0b0", "e0b1"):
        assert it.handle(AlertInfo(ALERT, "resolved", fp, {"alertname": ALERT}, group_key="g1",
                                   starts_at=first.starts_at), "alertmanager") == "resolved"
    objs = {i["metadata"]["name"]: i.get("status") or {} for i in all_incidents(api, namespace)}
    st = objs[name]
    assert st["alertResolvedAt"] and st["phase"] == "Escalated"
    assert st["relatedAlerts"] == ["e0b0", "e0b1"]
    later_st = objs[second["metadata"]["name"]]
    assert later_st.get("relatedAlerts") == ["e0c0"], later_st
    assert "resolvedAlerts" not in later_st and "alertResolvedAt" not in later_st, later_st


def test_an_escalated_incident_holds_its_alerts_for_escalated_hold_at_most(
        api: Any, namespace: str) -> None:
    """An escalated incident whose alerts never resolve (their resolved notification lost,
    no Prometheus to tell) does not swallow the target's alerts for ever: after
    ``escalated_hold`` (default 4h) the same alert of another pod opens a new incident."""
    it = intake(api, namespace)
    assert it.handle(alert("h0a0", pod="backend-a"), "alertmanager") == "created"
    name = all_incidents(api, namespace)[0]["metadata"]["name"]
    escalate(api, namespace, name, hours_ago=3.9)
    assert it.handle(alert("h0b0", pod="backend-b"), "alertmanager") == "joined"
    escalate(api, namespace, name, hours_ago=4.1)
    assert it.handle(alert("h0c0", pod="backend-c"), "alertmanager") == "created"
    assert it.handle(alert("h0a0", group="g2", pod="backend-a"), "alertmanager") == "joined"
    assert len(all_incidents(api, namespace)) == 2



def test_an_alert_that_fires_again_after_its_incident_resolved_opens_a_new_one(
        api: Any, namespace: str) -> None:
    """Alertmanager sends a later episode of an alert with the same group key, fingerprint
    and status, only another startsAt: it used to be taken for a copy of the first
    notification, and the second spike of an alert opened nothing."""
    it = intake(api, namespace)
    labels = {"alertname": ALERT, "pod": "backend-a"}
    first = AlertInfo(ALERT, "firing", "f1f1", labels, group_key="g1",
                      starts_at="2026-12-06T10:00:00Z")
    assert [it.handle(first, "alertmanager") for _ in range(3)] == ["created", "duplicate",
                                                                   "duplicate"]
    assert it.handle(AlertInfo(ALERT, "resolved", "f1f1", labels, group_key="g1",
                               starts_at=first.starts_at), "alertmanager") == "resolved"
    name = all_incidents(api, namespace)[0]["metadata"]["name"]
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "signatureincidents", name,
        {"status": {"phase": "Resolved"}})
    again = AlertInfo(ALERT, "firing", "f1f1", labels, group_key="g1",
                      starts_at="2026-12-06T12:00:00Z")
    assert it.handle(again, "alertmanager") == "created"
    assert it.handle(again, "alertmanager") == "duplicate"
    assert len(all_incidents(api, namespace)) == 2


@pytest.mark.skipif(not (BIN / "prometheus").exists(), reason="prometheus not installed")
def test_the_poll_lets_an_escalated_incident_go_of_alerts_that_stopped(
        api: Any, namespace: str, tmp_path: Path) -> None:
    """Without Alertmanager (or with its resolved notification lost) the poll is what tells
    that an escalated incident's alerts stopped firing in the real Prometheus: it marks them
    resolved, and the next spike opens a new incident."""
    errors = {"backend-a": 0.0, "backend-b": 0.0}
    stubs = {pod: StubServer(lambda pod=pod: (
        f"# TYPE flk_signature_err gauge\nflk_signature_err {errors[pod]}\n").encode(),
        "text/plain; version=0.0.4") for pod in errors}
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [{
        "alert": ALERT, "expr": "flk_signature_err > 0",
        "labels": {"deployment": "fractal-lba-backend"}}]}]}))
    try:
        with PromStack(targets=[ScrapeTarget(stub.address, {"namespace": namespace, "pod": pod})
                                for pod, stub in stubs.items()],
                       rule_files=[rules], workdir=tmp_path / "prom") as stack:
            prom = Prom(stack.prometheus_url)
            it = intake(api, namespace, prom, alert_poll_interval=0.1)
            it.release_after = 0.0  # two polls without the alert are enough here

            def firing_pods() -> set[str]:
                return {a.get("pod", "") for a in prom.firing(ALERT) or []}

            errors.update({"backend-a": 1.0, "backend-b": 1.0})
            wait_for(lambda: firing_pods() == set(errors), 30, what="both pods' alerts")
            # A copy that stands by (no lease) polls nothing into the cluster.
            it.active.clear()
            stop = threading.Event()
            poller = threading.Thread(target=it.poll_forever, args=(stop,))
            poller.start()
            time.sleep(1.0)
            stop.set()
            poller.join(10)
            assert all_incidents(api, namespace) == []
            it.active.set()
            assert it.poll_once() == 1
            inc = all_incidents(api, namespace)
            assert len(inc) == 1 and len(inc[0]["status"]["relatedAlerts"]) == 1
            name = inc[0]["metadata"]["name"]
            escalate(api, namespace, name)

            def status() -> dict[str, Any]:
                return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "signatureincidents", name)["status"])

            errors["backend-b"] = 0.0
            wait_for(lambda: firing_pods() == {"backend-a"}, 30, what="b's alert to stop")
            assert it.poll_once() == 0
            assert "resolvedAlerts" not in status(), "one poll without it is not enough"
            assert it.poll_once() == 0
            assert len(status()["resolvedAlerts"]) == 1 and "alertResolvedAt" not in status()
            errors["backend-b"] = 1.0  # b again while a still fires: still this incident's
            wait_for(lambda: firing_pods() == set(errors), 30, what="b's alert again")
            assert it.poll_once() == 0 and len(all_incidents(api, namespace)) == 1
            assert status()["resolvedAlerts"] == [], "b fires again: no longer resolved"
            errors.update({"backend-a": 0.0, "backend-b": 0.0})
            wait_for(lambda: firing_pods() == set(), 30, what="both alerts to stop")
            assert it.poll_once() == 0 and it.poll_once() == 0
            assert status()["alertResolvedAt"] and status()["phase"] == "Escalated"
            errors["backend-a"] = 1.0
            wait_for(lambda: firing_pods() == {"backend-a"}, 30, what="a new spike")
            assert it.poll_once() == 1 and len(all_incidents(api, namespace)) == 2
    finally:
        for stub in stubs.values():
            stub.close()


# -- alerts map only to configured targets (issue 25) -------------------------------------------

def dropped(path: str, reason: str) -> float:
    from sigops.telemetry.metrics import REGISTRY

    return REGISTRY.get_sample_value("sigops_alerts_dropped_total",
                                     {"path": path, "reason": reason}) or 0.0


def all_incidents(api: Any, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents")["items"]
    return items


def test_an_alert_for_anything_not_configured_opens_nothing_and_is_counted(
        api: Any, namespace: str, caplog: Any) -> None:
    """Today's intake made a target up from any namespace/deployment labels (an incident
    against kube-system's coredns, or another Deployment of the namespace)."""
    it = intake(api, namespace)
    before = dropped("alertmanager", "unknown_target")
    forged = [alert(f"bad{i}", namespace=namespace, deployment=f"not-configured-{i}")
              for i in range(5)]
    forged += [alert("c0de", namespace="kube-system", deployment="coredns"),
               alert("e5c4", namespace=namespace, pod="redis-0"),
               alert("10a9", namespace=namespace, deployment='x"\n\x1b[31mFAKE LOG LINE')]
    with caplog.at_level("WARNING", logger="sigops.alerts"):
        results = [it.handle(a, "alertmanager") for a in forged]
    assert results == ["unknown_target"] * len(forged)
    assert all_incidents(api, namespace) == []
    assert dropped("alertmanager", "unknown_target") - before == len(forged)
    warnings = [r.getMessage() for r in caplog.records if "opens nothing" in r.getMessage()]
    assert len(warnings) == len(forged)
    assert all("\n" not in w and "\x1b" not in w for w in warnings), warnings
    # Nothing was counted against any rate limit, and no state was written for it.
    assert it.limiter.to_state()["sources"] == {}
    assert client.CoreV1Api(api).list_namespaced_config_map(
        namespace, field_selector=f"metadata.name={RATELIMIT_CM}").items == []
    # A copy is a duplicate (counted once); the configured targets still open incidents.
    assert it.handle(forged[0], "alertmanager") == "duplicate"
    assert it.handle(alert("0001", namespace=namespace, deployment="fractal-lba-backend"),
                     "alertmanager") == "created"
    assert it.handle(alert("0002", namespace=namespace, pod="other-backend-5c54f8bbf4-h6c4v"),
                     "alertmanager") == "created"
    targets = sorted(i["spec"]["target"]["deployment"] for i in all_incidents(api, namespace))
    assert targets == ["fractal-lba-backend", "other-backend"]
    # Labels that fit both configured targets name neither.
    assert it.handle(alert("0003", namespace=namespace), "alertmanager") == "ambiguous_target"
    assert len(all_incidents(api, namespace)) == 2


@pytest.mark.skipif(not (BIN / "prometheus").exists(), reason="prometheus not installed")
def test_forged_alerts_do_not_use_up_a_real_targets_rate_limit(api: Any, namespace: str,
                                                                tmp_path: Path) -> None:
    """Anyone who can post to Alertmanager can make it send sigops an alert naming a real
    target. Today three such posts an hour rate-limited that target's real spike. An alert
    of the webhook counts only once the configured (real) Prometheus confirms it; the poll
    reads the ALERTS of that Prometheus and maps them to configured targets only."""
    errors = {"n": 0.0, "step": 0.0}

    def metrics() -> bytes:
        errors["n"] += errors["step"]
        return f"# TYPE flk_signature_err counter\nflk_signature_err {errors['n']}\n".encode()

    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [{
        "alert": "SomethingElse", "expr": "vector(1)"}, {
        "alert": ALERT, "expr": "vector(1)",
        "labels": {"namespace": "kube-system", "deployment": "coredns"}}]}]}))
    backend = StubServer(metrics, "text/plain; version=0.0.4")
    pod = "fractal-lba-backend-5c54f8bbf4-h6c4v"
    try:
        with PromStack(targets=[ScrapeTarget(backend.address, {"namespace": namespace,
                                                               "pod": pod})],
                       rule_files=[rules], workdir=tmp_path / "prom") as stack:
            prom = Prom(stack.prometheus_url)
            it = intake(api, namespace, prom, error_rate_window="10s",
                        error_rate_threshold=5.0)
            query = it.settings.error_query(namespace, "fractal-lba-backend")
            wait_for(lambda: prom.scalar(query) == 0.0, 30, what="the backend scraped")
            before = dropped("alertmanager", "unconfirmed")
            forged = [alert(f"f0{i}", namespace=namespace, deployment="fractal-lba-backend")
                      for i in range(6)]
            assert [it.handle(a, "alertmanager") for a in forged] == ["unconfirmed"] * 6
            assert all_incidents(api, namespace) == []
            assert it.limiter.to_state()["sources"] == {}
            assert dropped("alertmanager", "unconfirmed") - before == 6
            # The poll: Prometheus' own ALERTS, here for a target that is not configured.
            poll_before = dropped("prometheus-poll", "unknown_target")
            wait_for(lambda: prom.firing(ALERT), 30, what="the rule to fire")
            assert it.poll_once() == 0
            assert dropped("prometheus-poll", "unknown_target") - poll_before == 1
            assert all_incidents(api, namespace) == []
            # A real spike: the same alert now confirmed, with the whole limit left for it.
            errors["step"] = 100.0  # per scrape (1 s): ~100 errors/s
            wait_for(lambda: (prom.scalar(query) or 0.0) > 5.0, 30, what="the spike")
            assert it.handle(forged[0], "alertmanager") == "created"
            assert [it.handle(alert(f"r{i}", namespace=namespace, severity=f"s{i}",
                                    deployment="fractal-lba-backend"), "alertmanager")
                    for i in range(3)] == ["created", "created", "rate_limited"]
    finally:
        backend.close()
    assert len(saved_accepted(api, namespace)) == 3
