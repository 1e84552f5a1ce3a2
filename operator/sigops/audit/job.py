"""The Indexed Job of a SignatureAudit and everything it needs, as pure manifests.

One Job per audit, in the target's namespace (where the backends' WAL volume and key history
live): ``completionMode: Indexed``, one index per shard, at most the config's parallelism at
once, ``backoffLimitPerIndex`` so a failing shard is retried alone, a deadline and a TTL. It
is created suspended; its ServiceAccount, Role, RoleBinding, the audit's signing-key Secret
and one result ConfigMap per index are created next, each owned by the Job (so the TTL that
deletes the Job deletes them too), and only then is the Job resumed: no pod runs without its
RBAC.

Two WAL sources, chosen by the target's ``walSource`` in the operator config:

- ``volume`` (the default): index ``i`` reads every file of the ``walClaim`` volume whose
  position in the sorted listing is ``i`` modulo ``spec.shards``.
- ``sidecar``: one index per ready pod of the Deployment's own ReplicaSets, listed at launch
  (:mod:`.sidecar`): ``spec.shards`` is replaced by the pod count (pods come and go; a
  person cannot know it ahead). The list is the input ConfigMap ``<job>-pods``, owned by the
  Job and mounted; the WAL token Secret of the target's namespace is mounted too (never an
  argument). Index ``i`` reads pod ``i``'s window through its WAL reader sidecar.

Each index writes its signed partial to ConfigMap ``<job>-r<i>``: the Role grants
``get``/``update`` on exactly those ConfigMaps and nothing else (no Secrets, no pods: the
kubelet mounts them, the pod never reads them through the API).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..core.errors import MalformedInput
from ..core.timeparse import format_time, parse_duration, parse_time
from ..settings import AuditSettings, Target
from .sidecar import (
    PODS_KEY,
    WAL_MARGIN_SECONDS,
    WAL_WINDOW_SECONDS,
    WalPod,
    pods_digest,
    pods_json,
)

__all__ = ["AuditRefused", "AuditJob", "plan_job", "with_pods", "job_name", "result_config_map",
           "pods_config_map", "job_manifest", "owned_manifests", "LABEL_AUDIT",
           "LABEL_AUDIT_UID", "KEYRING_KEY", "WAL_TOKEN_PATH"]

LABEL_AUDIT = "sigops.fractal-lba.io/audit"
LABEL_AUDIT_UID = "sigops.fractal-lba.io/audit-uid"
KEYRING_KEY = "keyring.json"
"""The key history inside the target's managed keyring Secret (``sigops-keyring-<deployment>``)."""
_WAL, _HISTORY, _KEY = "/wal", "/etc/sigops/history", "/etc/sigops/audit-key"
_PODS, _WAL_TOKEN = "/etc/sigops/pods", "/etc/sigops/wal-token"
WAL_TOKEN_PATH = f"{_WAL_TOKEN}/token"
"""Where an index of a ``sidecar`` audit finds the WAL reader token (a mounted Secret)."""


class AuditRefused(ValueError):
    """A spec the operator will not run; ``reason`` becomes the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AuditJob:
    """What one audit's Job is made of, decided from its spec and the config."""

    audit_namespace: str
    audit_name: str
    audit_uid: str
    target: Target
    shards: int
    parallelism: int
    image: str
    keyring_secret: str
    limits: AuditSettings
    key_ids: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    accepted_invalid: bool = False
    all: bool = False
    since: str | None = None
    until: str | None = None
    want_parallelism: int = 1
    """``spec.parallelism`` as asked (``parallelism`` is it held to the limits)."""
    pods: tuple[WalPod, ...] = ()
    """``sidecar`` source: the pods read, one per index (:func:`with_pods`)."""

    @property
    def sidecar(self) -> bool:
        return self.target.wal_source == "sidecar"

    @property
    def name(self) -> str:
        return job_name(self.audit_name, self.audit_uid)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @property
    def ref(self) -> str:
        return f"{self.audit_namespace}/{self.audit_name}"


def job_name(audit_name: str, uid: str) -> str:
    """``audit-<name>-<uid prefix>``: a DNS label (pods are ``<job>-<index>-<id>``, and the
    Job's name is a label value), unique per audit object."""
    head = audit_name[:40].rstrip("-.")
    return f"audit-{head}-{uid.replace('-', '')[:8]}"


def result_config_map(job: str, index: int) -> str:
    return f"{job}-r{index}"


def pods_config_map(job: str) -> str:
    """The input ConfigMap of a ``sidecar`` audit: the pods, one per index."""
    return f"{job}-pods"


def _strings(v: Any, what: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise AuditRefused("InvalidSpec", f"spec.lookFor.{what} must be a list of strings")
    return tuple(sorted(set(v)))


def plan_job(meta: Mapping[str, Any], spec: Mapping[str, Any], target: Target,
             limits: AuditSettings, keyring_secret: str) -> AuditJob:
    """The Job of an audit (``meta``, ``spec`` of the SignatureAudit; ``target`` already
    resolved with :meth:`Settings.resolve_target`), or :class:`AuditRefused`.
    ``spec.parallelism`` is held to the config's limit; more shards than it allows, an audit
    that looks for nothing, or a target without a WAL volume are refused."""
    if target.wal_source == "volume" and not target.wal_claim:
        raise AuditRefused("NoWalSource", f"target {target.ref} names no walClaim (nor "
                                          "walSource: sidecar) in the operator config: "
                                          "there is no WAL to audit")
    if not limits.image:
        raise AuditRefused("NoImage", "the operator config sets no audit.image")
    look = spec.get("lookFor") or {}
    if not isinstance(look, Mapping):
        raise AuditRefused("InvalidSpec", "spec.lookFor must be an object")
    key_ids, fps = _strings(look.get("keyIds"), "keyIds"), _strings(
        look.get("fingerprints"), "fingerprints")
    accepted_invalid, everything = bool(look.get("acceptedInvalid")), bool(look.get("all"))
    if not (key_ids or fps or accepted_invalid or everything):
        raise AuditRefused("NothingToLookFor", "spec.lookFor asks for nothing: name keyIds "
                                               "or fingerprints, or set acceptedInvalid or all")
    shards = spec.get("shards", 1)
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise AuditRefused("InvalidSpec", "spec.shards must be a positive integer")
    if shards > limits.max_shards and target.wal_source == "volume":
        raise AuditRefused("TooManyShards", f"spec.shards {shards} is above the config's "
                                            f"audit.maxShards ({limits.max_shards})")
    want = spec.get("parallelism", 1)
    if not isinstance(want, int) or isinstance(want, bool) or want < 1:
        raise AuditRefused("InvalidSpec", "spec.parallelism must be a positive integer")
    since, until = spec.get("since"), spec.get("until")
    return AuditJob(
        audit_namespace=str(meta["namespace"]), audit_name=str(meta["name"]),
        audit_uid=str(meta["uid"]), target=target, shards=shards,
        parallelism=min(want, limits.max_parallelism, shards), image=limits.image,
        keyring_secret=keyring_secret, limits=limits, key_ids=key_ids, fingerprints=fps,
        accepted_invalid=accepted_invalid, all=everything,
        since=str(since) if since else None, until=str(until) if until else None,
        want_parallelism=want)


def with_pods(plan: AuditJob, pods: Sequence[WalPod], now: datetime) -> AuditJob:
    """A ``sidecar`` audit's plan once its pods are listed: one index per pod (``spec.shards``
    is replaced by their number), and its window decided once, at the launch ``now``, for
    every index however late it starts: ``since`` is ``spec.since`` but at most
    :data:`~.sidecar.WAL_WINDOW_SECONDS` minus :data:`~.sidecar.WAL_MARGIN_SECONDS` back,
    ``until`` is ``spec.until`` but at most ``now``. No pods, more than ``audit.maxShards``,
    or a window wholly before what the sidecars serve is refused."""
    if not pods:
        raise AuditRefused("NoPodsToRead", f"target {plan.target.ref} has walSource sidecar "
                                           "but no ready pod of its own ReplicaSets has a "
                                           "flk-wal port")
    if len(pods) > plan.limits.max_shards:
        raise AuditRefused("TooManyShards", f"{len(pods)} pods to read is above the config's "
                                            f"audit.maxShards ({plan.limits.max_shards})")
    try:
        asked_since = parse_time(plan.since) if plan.since else None
        until = min(parse_time(plan.until), now) if plan.until else now
    except MalformedInput:
        raise AuditRefused("InvalidSpec", "spec.since and spec.until must be RFC 3339 "
                                          "times") from None
    earliest = now - timedelta(seconds=WAL_WINDOW_SECONDS - WAL_MARGIN_SECONDS)
    since = earliest if asked_since is None else max(asked_since, earliest)
    if until <= since:
        raise AuditRefused("WindowNotServed", "the audit window lies wholly before what the "
                                              "WAL sidecars serve (the last "
                                              f"{WAL_WINDOW_SECONDS // 3600}h)")
    return dataclasses.replace(
        plan, pods=tuple(pods), shards=len(pods),
        parallelism=min(plan.want_parallelism, plan.limits.max_parallelism, len(pods)),
        since=format_time(since), until=format_time(until))


def _labels(plan: AuditJob) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "sigops", "app.kubernetes.io/component": "audit",
            LABEL_AUDIT: plan.audit_name[:63].rstrip("-._"), LABEL_AUDIT_UID: plan.audit_uid}


def _meta(plan: AuditJob, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": plan.namespace, "labels": _labels(plan),
            "annotations": {LABEL_AUDIT: plan.ref}}


def _args(plan: AuditJob) -> list[str]:
    if plan.sidecar:
        source = ["--pods", f"{_PODS}/{PODS_KEY}",
                  "--pods-sha256", pods_digest(pods_json(plan.pods)),
                  "--wal-token-file", WAL_TOKEN_PATH]
    else:
        source = ["--dir", _WAL, "--shards-of", str(plan.shards)]
    args = ["audit", "shard", "--keyring", f"{_HISTORY}/{KEYRING_KEY}",
            "--profile", plan.target.profile, "--key", f"{_KEY}/key.json", *source,
            "--audit", plan.ref, "--target", plan.target.ref,
            "--first", str(plan.limits.first_n),
            "--publish-configmap", f"{plan.name}-r", "--namespace", plan.namespace]
    for kid in plan.key_ids:
        args += ["--key-id", kid]
    for fp in plan.fingerprints:
        args += ["--fingerprint", fp]
    if plan.accepted_invalid:
        args.append("--accepted-invalid")
    if plan.all:
        args.append("--all")
    if plan.since:
        args += ["--since", plan.since]
    if plan.until:
        args += ["--until", plan.until]
    return args


def _wal_volumes(plan: AuditJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes) of the WAL source: the claim, or the pods list and the token."""
    if not plan.sidecar:
        return ([{"name": "wal", "mountPath": _WAL, "readOnly": True}],
                [{"name": "wal", "persistentVolumeClaim": {
                    "claimName": plan.target.wal_claim, "readOnly": True}}])
    key = plan.limits.wal_token_key
    return ([{"name": "pods", "mountPath": _PODS, "readOnly": True},
             {"name": "wal-token", "mountPath": _WAL_TOKEN, "readOnly": True}],
            [{"name": "pods", "configMap": {"name": pods_config_map(plan.name),
                                            "items": [{"key": PODS_KEY, "path": PODS_KEY}]}},
             {"name": "wal-token", "secret": {"secretName": plan.limits.wal_token_secret,
                                              "items": [{"key": key, "path": "token"}]}}])


def job_manifest(plan: AuditJob) -> dict[str, Any]:
    """The Indexed Job, suspended (resume it once :func:`owned_manifests` exist)."""
    limits = plan.limits
    if plan.sidecar and len(plan.pods) != plan.shards:
        raise ValueError("a sidecar audit's Job is built once its pods are listed (with_pods)")
    mounts, volumes = _wal_volumes(plan)
    resources = {"cpu": limits.cpu, "memory": limits.memory}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(plan, plan.name),
        "spec": {
            "completionMode": "Indexed",
            "completions": plan.shards,
            "parallelism": plan.parallelism,
            "backoffLimitPerIndex": limits.backoff_limit_per_index,
            "activeDeadlineSeconds": int(parse_duration(limits.active_deadline)),
            "ttlSecondsAfterFinished": int(parse_duration(limits.ttl_after_finished)),
            "suspend": True,
            "template": {
                "metadata": {"labels": _labels(plan)},
                "spec": {
                    "restartPolicy": "Never",  # required by backoffLimitPerIndex
                    "serviceAccountName": plan.name,
                    "automountServiceAccountToken": True,  # to write its own result
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "audit",
                        "image": plan.image,
                        "args": _args(plan),
                        "resources": {"requests": resources, "limits": resources},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [
                            *mounts,
                            {"name": "history", "mountPath": _HISTORY, "readOnly": True},
                            {"name": "audit-key", "mountPath": _KEY, "readOnly": True},
                        ],
                    }],
                    "volumes": [
                        *volumes,
                        {"name": "history", "secret": {
                            "secretName": plan.keyring_secret,
                            "items": [{"key": KEYRING_KEY, "path": KEYRING_KEY}]}},
                        {"name": "audit-key", "secret": {"secretName": plan.name}},
                    ],
                },
            },
        },
    }


def owned_manifests(plan: AuditJob, job_uid: str, key_json: str) -> list[dict[str, Any]]:
    """The Job's ServiceAccount, Role, RoleBinding, the Secret with the audit's signing key
    (``key_json``: an Ed25519 key entry), a ``sidecar`` audit's pods ConfigMap and one empty
    result ConfigMap per index, each owned by the Job (uid ``job_uid``)."""
    owner = [{"apiVersion": "batch/v1", "kind": "Job", "name": plan.name, "uid": job_uid,
              "controller": True, "blockOwnerDeletion": False}]

    def meta() -> dict[str, Any]:
        return {**_meta(plan, plan.name), "ownerReferences": owner}

    results = [result_config_map(plan.name, i) for i in range(plan.shards)]
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(),
         "automountServiceAccountToken": False},  # the Job's pods ask for it themselves
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": results, "verbs": ["get", "update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": meta(),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": plan.name},
         "subjects": [{"kind": "ServiceAccount", "name": plan.name,
                       "namespace": plan.namespace}]},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta(), "type": "Opaque",
         "stringData": {"key.json": key_json}},
    ]
    if plan.sidecar:  # the input: which pod each index reads
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {**_meta(plan, pods_config_map(plan.name)),
                                 "ownerReferences": owner},
                    "data": {PODS_KEY: pods_json(plan.pods)}})
    for name in results:
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {**_meta(plan, name), "ownerReferences": owner}, "data": {}})
    return out

