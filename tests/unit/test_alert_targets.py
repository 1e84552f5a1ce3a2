"""An alert's target comes from the config only: labels naming anything else map to nothing,
with a bounded reason (issue 25); the chart's per-target rule labels map without guessing
(issue 28)."""

from __future__ import annotations

import doctest

import pytest

from sigops.incident import alert_targets
from sigops.incident.alert_targets import (
    AMBIGUOUS_TARGET,
    NO_TARGET,
    REASONS,
    UNKNOWN_TARGET,
    alert_target,
)
from sigops.settings import Settings, Target
from sigops.telemetry.metrics import ALERTS_DROPPED, REGISTRY

A = Target(namespace="flk", deployment="backend")
CANARY = Target(namespace="flk", deployment="backend-canary")
B = Target(namespace="flk-b", deployment="backend")
SETTINGS = Settings(targets=(A, CANARY, B))


def test_doctests() -> None:
    assert doctest.testmod(alert_targets).failed == 0


@pytest.mark.parametrize("labels, want", [
    # The chart's rule: namespace and Deployment labels.
    ({"namespace": "flk", "deployment": "backend"}, A),
    ({"namespace": "flk", "deployment": "backend-canary"}, CANARY),
    ({"namespace": "flk-b", "deployment": "backend"}, B),
    # Upstream's per-pod rule: the pod's name says its Deployment, as the error query reads it.
    ({"namespace": "flk", "pod": "backend-5c54f8bbf4-h6c4v"}, A),
    ({"namespace": "flk", "pod": "backend-canary-7d9f8b6c5-x2x9k"}, CANARY),
    ({"namespace": "flk-b", "pod": "backend-5c54f8bbf4-h6c4v", "instance": "10.0.0.1:8080"}, B),
    # A Deployment label wins over the pod (the scrape or the rule said so).
    ({"namespace": "flk", "deployment": "backend", "pod": "backend-canary-7d9f8b6c5-x2x9k"}, A),
])
def test_alert_maps_to_the_configured_target(labels: dict[str, str], want: Target) -> None:
    found = alert_target(SETTINGS, labels)
    assert (found.target, found.reason) == (want, "")


@pytest.mark.parametrize("labels, reason", [
    # Today's code made up Target(namespace="kube-system", deployment="coredns") here.
    ({"namespace": "kube-system", "deployment": "coredns"}, UNKNOWN_TARGET),
    ({"namespace": "flk", "deployment": "other"}, UNKNOWN_TARGET),
    ({"namespace": "elsewhere", "deployment": "backend"}, UNKNOWN_TARGET),
    ({"namespace": "flk", "pod": "redis-0"}, UNKNOWN_TARGET),
    ({"namespace": "flk", "pod": "backend-extra-5c54f8bbf4-h6c4v"}, UNKNOWN_TARGET),
    ({"namespace": "flk"}, AMBIGUOUS_TARGET),
    ({"deployment": "backend"}, AMBIGUOUS_TARGET),  # in flk and in flk-b
    ({}, NO_TARGET),  # three targets and none marked default
    ({"namespace": "", "deployment": ""}, NO_TARGET),
])
def test_alert_for_anything_else_maps_to_nothing(labels: dict[str, str], reason: str) -> None:
    found = alert_target(SETTINGS, labels)
    assert (found.target, found.reason) == (None, reason)


def test_default_and_single_target() -> None:
    one = Settings(targets=(A,))
    assert alert_target(one, {}).target == A
    assert alert_target(one, {"namespace": "flk"}).target == A
    assert alert_target(one, {"namespace": "other"}).reason == UNKNOWN_TARGET
    marked = Settings(targets=(A, CANARY.model_copy(update={"default": True})))
    assert alert_target(marked, {}).target is not None
    assert alert_target(marked, {}).target.deployment == "backend-canary"
    assert alert_target(Settings(), {"namespace": "flk"}).reason == UNKNOWN_TARGET


def test_configured_label_names_are_used() -> None:
    s = Settings(targets=(A, CANARY), namespace_label="kubernetes_namespace",
                 deployment_label="app")
    assert alert_target(s, {"kubernetes_namespace": "flk", "app": "backend"}).target == A
    assert alert_target(s, {"namespace": "flk", "deployment": "backend"}).reason == NO_TARGET


def test_the_dropped_metric_has_one_series_per_path_and_reason_from_the_start() -> None:
    """The reason label is bounded: the REASONS, nothing taken from an alert's labels."""
    assert set(REASONS) == {NO_TARGET, UNKNOWN_TARGET, AMBIGUOUS_TARGET, "unconfirmed"}
    seen = {(s.labels["path"], s.labels["reason"])
            for m in REGISTRY.collect() if m.name == "sigops_alerts_dropped"
            for s in m.samples if s.name == "sigops_alerts_dropped_total"}
    assert seen == {(p, r) for p in ("alertmanager", "prometheus-poll") for r in REASONS}
    assert ALERTS_DROPPED._labelnames == ("path", "reason")
