"""The operator's configuration (``--config`` YAML), validated once at start-up.

Every field has a safe default, so sigops runs with no config file at all. Unknown fields are
rejected: a typo in a threshold must not silently fall back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.scenarios import LETTERS, SCENARIOS
from ..core.timeparse import parse_duration

__all__ = ["Target", "TargetEnv", "AuditSettings", "AgentSecret", "TargetRefused", "Settings",
           "load_settings", "Mode", "REQUESTER_FIELDS", "pod_pattern", "POD_OF_DEPLOYMENT"]

Mode = Literal["auto", "approval", "dryRun"]
DEFAULT_MODES: dict[str, Mode] = {
    s.letter: cast(Mode, s.default_mode) for s in SCENARIOS.values()}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TargetEnv(_Model):
    """Names of the backend's environment variables (upstream defaults). Only the config names
    them: a requester naming a variable could make sigops read or write any env of the pod."""

    sign_alg: str = Field(default="PCS_SIGN_ALG", alias="signAlg")
    hmac_key: str = Field(default="PCS_HMAC_KEY", alias="hmacKey")
    hmac_keys: str = Field(default="PCS_HMAC_KEYS", alias="hmacKeys")
    ed25519_pub: str = Field(default="PCS_ED25519_PUB_B64", alias="ed25519Pub")
    ed25519_pubs: str = Field(default="PCS_ED25519_PUBS_B64", alias="ed25519Pubs")
    token_rate: str = Field(default="TOKEN_RATE", alias="tokenRate")

    @field_validator("*")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_NAME.fullmatch(v):
            raise ValueError(f"not an environment variable name: {v!r}")
        return v


class AgentSecret(_Model):
    """The Secret (in the target's namespace) the agents sign with; a KeyRotation switches it to
    the new key on promotion."""

    name: str
    key: str | None = None
    """Key in the Secret (default PCS_HMAC_KEY for HMAC, PCS_ED25519_PRIV_B64 for Ed25519)."""


class Target(_Model):
    """A backend sigops looks after: the one model of a target, decided by whoever writes the
    operator config (the chart's ``targets``). KeyRotations and SignatureIncidents select a
    target by namespace and Deployment; everything else about it comes from here."""

    namespace: str = "fractal-lba"
    deployment: str = "fractal-lba-backend"
    container: str | None = None
    default: bool = False
    backend_url: str | None = Field(default=None, alias="backendURL")
    """Base URL of the backend (probe submits, failed-sample endpoint, Date header)."""
    max_skew_seconds: float | None = Field(default=None, alias="maxSkewSeconds")
    """The backend's freshness tolerance, if it checks sent_at (diagnoses clock skew)."""
    profile: Literal["python", "go", "fixed9"] = "python"
    """The canonical profile agents sign with; every probe sigops sends is signed in it."""
    env: TargetEnv = Field(default_factory=TargetEnv)
    agent_secret: AgentSecret | None = Field(default=None, alias="agentSecret")
    request_namespaces: tuple[str, ...] = Field(default=(), alias="requestNamespaces")
    """Namespaces besides the target's own whose KeyRotations and SignatureIncidents may act on
    it (where people request rotations of a backend they do not run)."""
    allow_error_rate_query: bool = Field(default=False, alias="allowErrorRateQuery")
    """Whether a KeyRotation may bring its own ``spec.errorRateQuery`` (run with sigops'
    Prometheus credentials); off: the configured query for this target."""
    samples_config_map: str | None = Field(default=None, alias="samplesConfigMap")
    """A ConfigMap of failed samples (in the target's namespace) that evidence may read; a
    requester's ``spec.samples.configMapRef`` is read only when it names this one."""
    wal_claim: str | None = Field(default=None, alias="walClaim")
    """A PersistentVolumeClaim in the target's namespace holding its backends' inbox WAL
    files (any tree of ``inbox-*.wal*``), which SignatureAudit Jobs mount read-only. Unset:
    the target cannot be audited from a volume."""
    wal_source: Literal["volume", "sidecar"] = Field(default="volume", alias="walSource")
    """Where a SignatureAudit reads the target's WAL. ``volume`` (the default: nothing is read
    over the network unless the admin says so): the files of ``walClaim``. ``sidecar``: each
    ready pod of the Deployment's own ReplicaSets through its ``sigops wal serve`` sidecar
    (port ``flk-wal``, the WAL token Secret), one index per pod; the sidecar serves at most
    its ``--max-window`` (24h) back, and the NetworkPolicy of the WAL port must admit the
    audit Job's pods. ``walClaim`` must then be unset."""

    @model_validator(mode="after")
    def _one_wal_source(self) -> Target:
        if self.wal_source == "sidecar" and self.wal_claim:
            raise ValueError(f"target {self.namespace}/{self.deployment}: walSource sidecar "
                             "reads the pods, walClaim names a volume: set one of them")
        return self

    @field_validator("backend_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ValueError(f"backendURL must be an http:// or https:// URL: {v!r}")
        return v.rstrip("/") if v else v

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.deployment}"

    def requestable_from(self, namespace: str) -> bool:
        return namespace == self.namespace or namespace in self.request_namespaces

    def submit_url(self) -> str | None:
        """The configured backend's PCS submit endpoint, if a backend URL is configured."""
        return f"{self.backend_url}/v1/pcs/submit" if self.backend_url else None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

REQUESTER_FIELDS = ("container", "env", "agentSecret", "probeURL")
"""Fields a KeyRotation's ``spec.target`` once carried and the config now owns: a spec naming one
is refused (the CRD's own validation refuses it at admission too)."""


class AuditSettings(_Model):
    """Limits of SignatureAudit Jobs (one Indexed Job per audit, in the target's namespace)."""

    enabled: bool = False
    """Act on SignatureAudits (the chart then grants the operator Jobs, ServiceAccounts, Roles,
    RoleBindings and ConfigMap writes in the target namespaces). Off: they are not watched."""
    max_parallelism: int = Field(default=4, ge=1, le=1000, alias="maxParallelism")
    """The most indexes of one audit that run at once; a spec asking for more gets this."""
    max_shards: int = Field(default=64, ge=1, le=10000, alias="maxShards")
    """The most indexes (completions) one audit may have."""
    backoff_limit_per_index: int = Field(default=2, ge=0, le=10, alias="backoffLimitPerIndex")
    """Retries of one failing index (the others are not rerun)."""
    active_deadline: str = Field(default="6h", alias="activeDeadline")
    """How long the whole Job may run."""
    ttl_after_finished: str = Field(default="1h", alias="ttlAfterFinished")
    """How long a finished Job (and, through its owner references, its RBAC and inputs) is
    kept."""
    first_n: int = Field(default=20, ge=0, le=1000, alias="firstN")
    """Records kept per finding by each index (and in the merged status)."""
    image: str | None = None
    """The image the Jobs run (the operator's own; the chart sets it)."""
    cpu: str = "1"
    memory: str = "256Mi"
    """Requests and limits of one index: it streams its files, so memory stays flat."""
    wal_token_secret: str = Field(default="sigops-wal-token", alias="walTokenSecret")
    """The Secret (in the target's namespace) whose token the WAL reader sidecars accept: the
    Jobs of ``walSource: sidecar`` targets mount it (the chart's WAL token Secret)."""
    wal_token_key: str = Field(default="token", alias="walTokenKey")
    """The token's key in that Secret."""

    @field_validator("active_deadline", "ttl_after_finished")
    @classmethod
    def _durations(cls, v: str) -> str:
        return _dur(v)


class TargetRefused(ValueError):
    """A requested target that sigops will not act on; ``reason`` becomes the condition reason.
    The message names namespaces, Deployments and field names only, never a value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    overlap_probe_rounds: int = Field(default=4, ge=2, le=20)
    """How many rounds of live probes (one PCS signed with each key per ready pod) fit in the
    grace: rounds are spaced ``overlap_probe_grace / (rounds - 1)`` apart, so sigops' own
    refused probes stay a handful per pod (each counts in the backend's error metric)."""
    verify_timeout: str = "10m"
    """How long to wait after an action for the error rate to fall / the alert to resolve."""
    escalate_after: str = "30m"
    escalated_hold: str = "4h"
    """How long an escalated incident keeps its still-firing alerts (and the same alert of
    another pod of its target) from opening another incident: a person has it. Its alerts
    resolving ends the hold sooner."""
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
    audit: AuditSettings = Field(default_factory=AuditSettings)
    """SignatureAudit Jobs: parallelism, shards, retries, deadline, TTL, image."""

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
                     "escalate_after", "escalated_hold", "cooldown", "e_auto_window",
                     "signal_rate_window", "last_known_good_after")
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

    def resolve_target(self, requester_namespace: str, spec_target: object,
                       kind: str = "KeyRotation") -> Target:
        """The configured target a KeyRotation or SignatureIncident in ``requester_namespace``
        asks for (``spec.target``: namespace, default the requester's, and Deployment), or
        :class:`TargetRefused`. Nothing about the target is taken from the spec.

        >>> s = Settings(targets=[{"namespace": "be", "requestNamespaces": ["ops"]}])
        >>> s.resolve_target("ops", {"namespace": "be"}).ref
        'be/fractal-lba-backend'
        >>> try:
        ...     s.resolve_target("mallory", {"namespace": "be"})
        ... except TargetRefused as e:
        ...     print(e.reason)
        NamespaceNotAllowed
        """
        t = spec_target if isinstance(spec_target, dict) else {}
        extra = [f for f in REQUESTER_FIELDS if t.get(f) not in (None, "", {})]
        if extra:
            raise TargetRefused("FieldNotAllowed", (
                f"spec.target.{extra[0]} is not accepted: a target's "
                f"{', '.join(extra)} come{'s' if len(extra) == 1 else ''} from the operator "
                "config (targets[]); remove it from the spec"))
        ns = t.get("namespace") or requester_namespace
        dep = t.get("deployment") or "fractal-lba-backend"
        if not isinstance(ns, str) or not isinstance(dep, str):
            raise TargetRefused("TargetNotConfigured", "spec.target.namespace and "
                                                       "spec.target.deployment must be strings")
        for c in self.targets:
            if c.namespace == ns and c.deployment == dep:
                if not c.requestable_from(requester_namespace):
                    allowed = ", ".join(c.request_namespaces) or "none"
                    raise TargetRefused("NamespaceNotAllowed", (
                        f"a {kind} in namespace {requester_namespace} may not act on {c.ref} "
                        f"(the config's requestNamespaces for it: {allowed})"))
                return c
        configured = ", ".join(c.ref for c in self.targets) or "none"
        raise TargetRefused("TargetNotConfigured", (
            f"{_printable(ns)}/{_printable(dep)} is not a target of the operator config "
            f"(configured: {configured})"))

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


def _printable(value: str, limit: int = 63) -> str:
    """A requester's name as shown in a message: printable, cut to a DNS label's length."""
    out = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return out + ("..." if len(value) > limit else "")


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
