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
from typing import Any

from kubernetes import client

from sigops.core.keys import ED25519, generate_key
from sigops.incident.alertmanager import AlertInfo
from sigops.incident.intake import FP_LABEL, RATELIMIT_CM, AlertIntake
from sigops.kube.api import GROUP, VERSION, Kube, KubeError
from sigops.prometheus.client import Prom
from sigops.settings import Settings, Target
from sigops.signing.records import Signer

SIGNER = Signer(generate_key(ED25519, kid="intake-test-signer", state="active"))
ALERT = "FLKSignatureFailuresSpike"


def intake(api: Any, ns: str) -> AlertIntake:
    settings = Settings(targets=[Target(namespace=ns, deployment="fractal-lba-backend")])
    return AlertIntake(Kube(api), Prom(None), settings, SIGNER, ns, token="t")


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
