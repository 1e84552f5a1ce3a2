"""Which configured target an alert is about, from its labels alone.

An alert names its backend with the labels of ``Settings.namespace_label`` and
``Settings.deployment_label`` (the chart's rule groups by both), or, for upstream's per-pod
rule, with the namespace and the ``pod`` label (a Deployment's pod is
``<deployment>-<template hash>-<id>``, the pattern the error-rate query matches). It maps to a
target of the config or to nothing: a name that no configured target has, or labels that fit
several, open nothing and are counted with a :data:`REASONS` reason. Nothing is invented from
the labels: a requester's or a forger's strings never become a namespace or Deployment that
sigops acts on.

>>> from sigops.settings import Target
>>> s = Settings(targets=(Target(namespace="flk", deployment="be"),
...                       Target(namespace="flk", deployment="be-canary")))
>>> alert_target(s, {"namespace": "flk", "deployment": "be"}).target.deployment
'be'
>>> alert_target(s, {"namespace": "flk", "pod": "be-canary-7d4b9c-x2k9p"}).target.deployment
'be-canary'
>>> alert_target(s, {"namespace": "flk"}).reason
'ambiguous_target'
>>> alert_target(s, {"namespace": "kube-system", "deployment": "coredns"}).reason
'unknown_target'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..settings import Settings, Target, pod_pattern

__all__ = ["AlertTarget", "alert_target", "REASONS", "NO_TARGET", "UNKNOWN_TARGET",
           "AMBIGUOUS_TARGET", "UNCONFIRMED"]

NO_TARGET = "no_target"
"""No namespace or Deployment label, and the config has no single default target."""
UNKNOWN_TARGET = "unknown_target"
"""The labels name a namespace, Deployment or pod of no configured target."""
AMBIGUOUS_TARGET = "ambiguous_target"
"""The labels fit more than one configured target (e.g. a namespace alone, with two)."""
UNCONFIRMED = "unconfirmed"
"""A webhook alert for a configured target that the configured Prometheus does not confirm:
neither its ALERTS series fires for that target nor is the target's error rate over the
threshold (see ``sigops.incident.intake``)."""
REASONS = (NO_TARGET, UNKNOWN_TARGET, AMBIGUOUS_TARGET, UNCONFIRMED)
"""Every reason an alert opens nothing: the bounded values of the metric's label."""


@dataclass(frozen=True)
class AlertTarget:
    """The configured target of an alert, or the reason it has none."""

    target: Target | None
    reason: str = ""


def alert_target(settings: Settings, labels: dict[str, str]) -> AlertTarget:
    """The configured target the alert's labels name (an empty label counts as absent).

    No namespace or Deployment label: the config's default target (a single target, or the
    one marked ``default``). Otherwise every label given must fit the target; without a
    Deployment label, a ``pod`` label must be one of the target's pods, and without either the
    namespace must hold exactly one configured target."""
    ns = labels.get(settings.namespace_label) or None
    dep = labels.get(settings.deployment_label) or None
    pod = labels.get("pod") or None
    if ns is None and dep is None:
        default = settings.default_target()
        return AlertTarget(default, "" if default else NO_TARGET)
    fits = [t for t in settings.targets
            if (ns is None or t.namespace == ns) and (dep is None or t.deployment == dep)]
    if dep is None and pod is not None:
        fits = [t for t in fits if re.fullmatch(pod_pattern(t.deployment), pod)]
    if not fits:
        return AlertTarget(None, UNKNOWN_TARGET)
    if len(fits) > 1:
        return AlertTarget(None, AMBIGUOUS_TARGET)
    return AlertTarget(fits[0])
