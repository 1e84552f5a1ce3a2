"""The operator's configuration (``--config`` YAML), validated once at start-up.

Every field has a safe default, so sigops runs with no config file at all. Unknown fields are
rejected: a typo in a threshold must not silently fall back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.scenarios import LETTERS, SCENARIOS
from ..core.timeparse import parse_duration

__all__ = ["Target", "Settings", "load_settings", "Mode", "pod_pattern",
           "POD_OF_DEPLOYMENT"]

Mode = Literal["auto", "approval", "dryRun"]
DEFAULT_MODES: dict[str, Mode] = {
    s.letter: cast(Mode, s.default_mode) for s in SCENARIOS.values()}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Target(_Model):
    """A backend sigops looks after."""

    namespace: str = "fractal-lba"
    deployment: str = "fractal-lba-backend"
    container: str | None = None
    default: bool = False
    backend_url: str | None = Field(default=None, alias="backendURL")
    """Base URL of the backend (probe submits, failed-sample endpoint, Date header)."""
    max_skew_seconds: float | None = Field(default=None, alias="maxSkewSeconds")
    """The backend's freshness tolerance, if it checks sent_at (diagnoses clock skew)."""
    profile: str = "python"
    """The canonical profile agents sign with."""


def _dur(v: str) -> str:
    parse_duration(v)
    return v


class Settings(_Model):
    """Thresholds, windows, modes and names. Durations are strings like ``30m``."""

    targets: tuple[Target, ...] = ()
    modes: dict[str, Mode] = Field(default_factory=lambda: dict(DEFAULT_MODES))
    signature_error_metric: str = "flk_signature_err"
    error_rate_query: str = "sum({by_target})"
    """PromQL for one target's error rate (the error-rate guard); filled in: ``{by_target}``
    (:meth:`error_rate_by_target` narrowed to the target: the alert rule's own expression, so
    rule, dashboard and guard read one number), ``{window}``, ``{metric}``, ``{metric_alt}``
    (the other upstream name of the counter: ``flk_signature_err`` / ``flk_signature_errors``),
    ``{namespace}``, ``{deployment}``, ``{scope}`` (``namespace="…"``, with
    :attr:`namespace_label`), ``{match}`` (``__name__=~"<metric>|<metric_alt>"`` and
    ``{scope}``), ``{pod_match}`` (``{match}`` and ``pod=~"<deployment>-<hash>-<id>"``: the
    Deployment's pods) and ``{pod_any_match}`` (``{match}`` and ``pod!=""``). The default
    counts the target's own pods under either counter name; only where the namespace's series
    carry no ``pod`` label at all does it count the namespace (a matcher on a missing label
    alone would make the guard blind, and borrowing a neighbour Deployment's errors would
    mislead it)."""
    error_rate_window: str = "5m"
    """The rate window of :meth:`error_rate_by_target`: the alert rule's, the dashboard's and
    the default guard's."""
    error_rate_threshold: float = 10.0
    """Errors per second under which a spike counts as over (the alert's threshold)."""
    skew_metric: str = "node_timex_offset_seconds"
    reconcile_interval: float = 5.0
    min_overlap: str = "1h"
    wait_for_rollout: bool = True
    rollout_timeout: str = "10m"
    probe_timeout: float = 5.0
    overlap_probe_grace: str = "2m"
    """After the overlap config is applied (and rolled out), how long the live backend may
    still refuse one of the two keys before the rotation stops as BackendRejectsOverlap."""
    verify_timeout: str = "10m"
    """How long to wait after an action for the error rate to fall / the alert to resolve."""
    escalate_after: str = "30m"
    cooldown: str = "15m"
    """How long after resolution a tightened TOKEN_RATE stays before it is restored."""
    e_auto_window: str = "30m"
    """E runs without approval when the spike began within this window after a signing change."""
    last_known_good_after: str = "5m"
    """A template becomes scenario E's last known good only once its rollout has run this long
    while healthy: a bad change is not snapshotted before its errors show."""
    wal_exec: bool = False
    """Read the backend's inbox WAL with ``pods/exec`` (``tail -c`` in the backend container)
    from pods that have no ``sigops wal serve`` sidecar. Off by default: exec is a strong
    permission (the chart grants it only with ``evidence.walExec.enabled``)."""
    wal_exec_dir: str = "data/wal"
    """The backend's ``WAL_DIR`` as its container sees it (relative to its working
    directory, upstream's default)."""
    token_rate: str = "50"
    ntp_label: str = "ntp=enabled"
    label_nodes: bool = True
    notification_url: str | None = None
    namespace_label: str = "namespace"
    deployment_label: str = "deployment"
    alert_name: str = "FLKSignatureFailuresSpike"
    alert_poll_interval: float = 30.0
    signal_rate_limit: int = 3
    signal_rate_window: str = "1h"
    service_id: str = "sigops"

    @field_validator("namespace_label", "deployment_label")
    @classmethod
    def _label_name(cls, v: str) -> str:
        if not _LABEL_NAME.fullmatch(v):
            raise ValueError(f"{v[:40]!r} is not a Prometheus label name")
        return v

    @field_validator("error_rate_window")
    @classmethod
    def _prom_duration(cls, v: str) -> str:
        if not _PROM_DURATION.fullmatch(v):
            raise ValueError(f"error_rate_window: {v[:20]!r} is not a Prometheus duration "
                             "(e.g. 5m, 30s)")
        return v

    @field_validator("min_overlap", "rollout_timeout", "overlap_probe_grace", "verify_timeout",
                     "escalate_after", "cooldown", "e_auto_window", "signal_rate_window",
                     "last_known_good_after")
    @classmethod
    def _durations(cls, v: str) -> str:
        return _dur(v)

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, Mode]) -> dict[str, Mode]:
        bad = set(v) - set(LETTERS)
        if bad:
            raise ValueError(f"modes: unknown scenario(s) {sorted(bad)}; use "
                             f"{LETTERS[0]}-{LETTERS[-1]}")
        return v

    def seconds(self, name: str) -> float:
        return parse_duration(getattr(self, name))

    def default_target(self) -> Target | None:
        marked = [t for t in self.targets if t.default]
        if marked:
            return marked[0]
        return self.targets[0] if len(self.targets) == 1 else None

    def _names(self) -> str:
        """The matcher on the counter's names: this one and upstream's other name."""
        metric = self.signature_error_metric
        alt = UPSTREAM_COUNTER_NAMES.get(metric, metric)
        names = metric if alt == metric else f"{metric}|{alt}"
        return f'__name__=~"{_promql_string(names)}"'

    def error_rate_by_target(self, namespace: str = "", deployment: str = "") -> str:
        r"""The errors per second of each target: one series per backend, labelled with
        :attr:`namespace_label` and :attr:`deployment_label`. The chart's
        ``FLKSignatureFailuresSpike`` rule, its dashboard and the default error-rate guard all
        read this expression (the chart renders the same text; a unit test holds them equal).

        A series with a ``pod`` label counts for the Deployment its pod name says
        (``<deployment>-<template hash>-<id>``); where a namespace's series carry no ``pod``
        label at all, the namespace's errors are one series with no Deployment label (the
        scrape cannot tell its backends apart). Either counter name counts. Given a
        ``namespace`` (and ``deployment``), only that target's series are read.

        >>> s = Settings(signature_error_metric="m", error_rate_window="1m")
        >>> for part in re.split(r" (?=or |unless )|(?<=\]\)), ", s.error_rate_by_target()):
        ...     print(part)
        sum by (namespace, deployment) (label_replace(rate({__name__=~"m",pod!=""}[1m])
        "deployment", "$1", "pod", "(.+)-[a-z0-9]+-[a-z0-9]+"))
        or (sum by (namespace) (rate({__name__=~"m"}[1m]))
        unless on(namespace) count by (namespace) ({__name__=~"m",pod!=""}))
        """
        ns, dep, w = self.namespace_label, self.deployment_label, self.error_rate_window
        names = self._names()
        scope = f',{ns}="{_promql_string(namespace)}"' if namespace else ""
        pods = f",{_pods_of(deployment)}" if deployment else ',pod!=""'
        return (f"sum by ({ns}, {dep}) (label_replace(rate({{{names}{scope}{pods}}}[{w}]), "
                f'"{dep}", "$1", "pod", "{POD_OF_DEPLOYMENT}")) '
                f"or (sum by ({ns}) (rate({{{names}{scope}}}[{w}])) "
                f'unless on({ns}) count by ({ns}) ({{{names}{scope},pod!=""}}))')

    def error_query(self, namespace: str = "", deployment: str = "") -> str:
        r"""The error-rate query for one target (an empty name is not matched on).

        >>> s = Settings(signature_error_metric="m")
        >>> s.error_query("ns", "be") == f'sum({s.error_rate_by_target("ns", "be")})'
        True
        >>> print(s.error_rate_by_target("ns", "be")[:80])
        sum by (namespace, deployment) (label_replace(rate({__name__=~"m",namespace="ns"
        >>> Settings().error_query().startswith('sum(sum by (namespace, deployment) (')
        True
        """
        metric = self.signature_error_metric
        alt = UPSTREAM_COUNTER_NAMES.get(metric, metric)
        scope = f'{self.namespace_label}="{_promql_string(namespace)}"' if namespace else ""
        match = ",".join(m for m in (self._names(), scope) if m)
        return self.error_rate_query.format(
            metric=metric, metric_alt=alt, scope=scope, namespace=namespace,
            deployment=deployment, match=match, window=self.error_rate_window,
            by_target=self.error_rate_by_target(namespace, deployment),
            pod_match=f"{match},{_pods_of(deployment)}" if deployment else match,
            pod_any_match=f'{match},pod!=""')


POD_OF_DEPLOYMENT = "(.+)-[a-z0-9]+-[a-z0-9]+"
"""A Deployment's pod name is ``<deployment>-<pod-template hash>-<id>``: the regex whose
group is the Deployment (Prometheus anchors it; the last two parts hold no dash)."""
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PROM_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def pod_pattern(deployment: str) -> str:
    """The regex (fully anchored, as PromQL's ``=~``) of ``deployment``'s pod names.

    >>> import re
    >>> bool(re.fullmatch(pod_pattern("be"), "be-7d4b9c-x2k9p"))
    True
    >>> bool(re.fullmatch(pod_pattern("be"), "be-canary-7d4b9c-x2k9p"))
    False
    """
    name = re.sub(r"[^a-z0-9.-]", "", deployment)
    if len(name) <= 46:
        return name.replace(".", "\\.") + "-[a-z0-9]+-[a-z0-9]+"
    return name[:47].replace(".", "\\.") + ".*"


def _pods_of(deployment: str) -> str:
    """A matcher on the Deployment's pods (:func:`pod_pattern`): ``<name>-<template
    hash>-<id>``, or, for a name so long that Kubernetes cuts the generated pod names, the
    name's head (names are DNS labels: only a dot is a regex character in them)."""
    return f'pod=~"{_promql_string(pod_pattern(deployment))}"'


UPSTREAM_COUNTER_NAMES = {"flk_signature_err": "flk_signature_errors",
                          "flk_signature_errors": "flk_signature_err"}
"""Upstream's code registers ``flk_signature_errors``; its alert rule and runbook say
``flk_signature_err``. Each name's other one."""


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def load_settings(path: str | Path | None) -> Settings:
    """Read and validate the YAML config; no path means all defaults."""
    if not path:
        return Settings()
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read config {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} must be a YAML mapping")
    return Settings.model_validate(raw)
