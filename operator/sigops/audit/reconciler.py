"""The SignatureAudit reconciler: one step per tick.

Open audit without a Job: resolve the target (config only), plan the Job (for a ``walSource:
sidecar`` target, list the Deployment's own ready pods first: one index per pod), launch it
(with a fresh audit key), record the Job in status. Open audit with a Job: read the Job and its
indexes' result ConfigMaps, verify each partial with the audit's public key read from the
audit's Secret in the target's namespace (never from status, which a requester who may patch
status could rewrite), and write the merged status; once the Job has finished, the status
holds a summary signed by the operator and the audit is done.

Registered (``runtime/operator.py``) only with ``audit.enabled``, which also makes the chart
grant the RBAC it needs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any

from ..backend.keyring import keyring_secret_name
from ..core.keys import ED25519, generate_key, key_from_entry
from ..core.timeparse import format_time
from ..kube.api import Kube, secret_strings
from ..kube.conditions import set_condition
from ..settings import Settings, TargetRefused
from ..signing.records import Signer, subject_of
from .job import (
    LABEL_AUDIT_UID,
    AuditJob,
    AuditRefused,
    plan_job,
    pods_config_map,
    result_config_map,
    with_pods,
)
from .launch import launch
from .sidecar import PODS_KEY, WalReadError, parse_pods, pods_digest, wal_pods
from .status import audit_status, digest_of

__all__ = ["AuditReconciler", "PLURAL", "TERMINAL", "Phase", "Reason"]

log = logging.getLogger("sigops.audit")
PLURAL = "signatureaudits"


class Phase:
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REFUSED = "Refused"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.REFUSED})


class Reason:
    """Condition reasons of a SignatureAudit (besides :class:`AuditRefused` and
    :class:`TargetRefused` reasons, which a refused audit carries)."""

    JOB_CREATED = "JobCreated"
    RUNNING = "IndexesRunning"
    DONE = "AuditComplete"
    FAILED = "AuditFailed"
    JOB_GONE = "JobGone"


def _arg(job: dict[str, Any], flag: str) -> str | None:
    """The value of ``flag`` in the Job's container arguments (its template cannot change)."""
    args = list(job["spec"]["template"]["spec"]["containers"][0].get("args") or [])
    return args[args.index(flag) + 1] if flag in args[:-1] else None


class AuditReconciler:
    def __init__(self, kube: Kube, settings: Settings, signer: Signer) -> None:
        self.kube, self.settings, self.signer = kube, settings, signer

    def _plan(self, obj: dict[str, Any]) -> AuditJob:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        target = self.settings.resolve_target(meta["namespace"], spec.get("target"),
                                              "SignatureAudit")
        return plan_job(meta, spec, target, self.settings.audit,
                        keyring_secret_name(target.deployment))

    def _write(self, obj: dict[str, Any], status: dict[str, Any], ready: str, reason: str,
               message: str) -> None:
        meta = obj["metadata"]
        old = obj.get("status") or {}
        now = format_time(datetime.now(UTC))
        status["conditions"] = set_condition(old.get("conditions"), "Ready", ready, reason,
                                             message, meta.get("generation"), now)
        status["observedGeneration"] = meta.get("generation")
        self.kube.patch_status(meta["namespace"], PLURAL, meta["name"], status)

    def tick(self, obj: dict[str, Any]) -> str | None:
        """One step; the phase after it."""
        status = obj.get("status") or {}
        if status.get("phase") in TERMINAL:
            return str(status["phase"])
        try:
            plan = self._plan(obj)
        except (TargetRefused, AuditRefused) as e:
            self._write(obj, {"phase": Phase.REFUSED, "message": str(e)}, "False", e.reason,
                        str(e))
            return Phase.REFUSED
        if not status.get("job"):
            note, skipped = "", None
            if plan.sidecar:
                try:
                    plan, note, skipped = self._with_pods(plan)
                except (AuditRefused, WalReadError) as e:
                    reason = getattr(e, "reason", "PodsUnreadable")
                    self._write(obj, {"phase": Phase.REFUSED, "message": str(e)}, "False",
                                reason, str(e))
                    return Phase.REFUSED
            key = generate_key(ED25519, f"audit-{plan.audit_uid.replace('-', '')[:8]}",
                               state="active")
            try:
                job, public = launch(self.kube, plan, key)
            except AuditRefused as e:
                self._write(obj, {"phase": Phase.FAILED, "message": str(e)}, "False", e.reason,
                            str(e))
                return Phase.FAILED
            self._write(obj, {
                "phase": Phase.RUNNING,
                "job": {"namespace": plan.namespace, "name": plan.name, "shards": plan.shards,
                        "parallelism": plan.parallelism,
                        **({} if skipped is None else {"podsNotRead": skipped})},
                "auditKey": {"kid": public.kid, "fingerprint": public.fingerprint},
                "progress": {"summary": f"0/{plan.shards}"},
            }, "False", Reason.JOB_CREATED, f"job {plan.namespace}/{plan.name} started with "
                                            f"{plan.shards} index(es), {plan.parallelism} at "
                                            f"once{note}")
            return Phase.RUNNING
        return self._follow(obj, plan)

    def _with_pods(self, plan: AuditJob) -> tuple[AuditJob, str, int | None]:
        """A sidecar audit's pods: those its Job was made for if it exists (a rerun of an
        interrupted launch), else the Deployment's own ready pods now; a note for the
        condition message; how many pods were not ready (None: not known on a rerun)."""
        ns, name, now = plan.namespace, plan.name, datetime.now(UTC)
        job = self.kube.read_job(ns, name)
        if job is not None:
            cm = self.kube.read_config_map(ns, pods_config_map(name))
            text = ((cm.data or {}) if cm is not None else {}).get(PODS_KEY)
            if text:
                if pods_digest(text) != _arg(job, "--pods-sha256"):
                    raise AuditRefused("PodsTampered", f"configmap {ns}/"
                                       f"{pods_config_map(name)} is not the pods list job "
                                       f"{ns}/{name} was made with: delete the audit")
                return with_pods(plan, parse_pods(text), now), "", None
        pods, not_ready, no_port = wal_pods(self.kube, ns, plan.target.deployment)
        if no_port:
            raise AuditRefused("NoWalSidecar", f"{no_port} ready pod(s) of {plan.target.ref} "
                                               "have no flk-wal port (no WAL reader sidecar): "
                                               "their WAL cannot be read")
        planned = with_pods(plan, pods, now)
        if job is not None and job["spec"].get("completions") != planned.shards:
            raise AuditRefused("PodsChanged", f"job {ns}/{name} was made for "
                                              f"{job['spec'].get('completions')} pod(s) and "
                                              "its pods list is gone: delete the audit and "
                                              "create it again")
        note = (f"; one index per ready pod ({planned.shards}: spec.shards is not used with "
                "walSource sidecar)")
        if not_ready:
            note += f"; {not_ready} pod(s) not ready, not read"
        return planned, note, not_ready

    def _follow(self, obj: dict[str, Any], plan: AuditJob) -> str:
        ns, name = plan.namespace, plan.name
        job = self.kube.read_job(ns, name)
        secret = self.kube.read_secret(ns, name)
        if job is None or secret is None:
            msg = f"job {ns}/{name} or its key is gone before the audit finished"
            self._write(obj, {"phase": Phase.FAILED, "message": msg}, "False",
                        Reason.JOB_GONE, msg)
            return Phase.FAILED
        if plan.sidecar:  # one index per pod listed at launch: the Job says how many
            plan = dataclasses.replace(plan, shards=int(job["spec"]["completions"]))
        stored = key_from_entry(json.loads(secret_strings(secret)["key.json"]))
        partials: dict[int, Any] = {}
        # One LIST per tick, whatever the number of indexes (not a GET per index).
        mine = {cm.metadata.name: cm for cm in self.kube.list_config_maps(
            ns, f"{LABEL_AUDIT_UID}={plan.audit_uid}")}
        for i in range(plan.shards):
            cm = mine.get(result_config_map(name, i))
            text = ((cm.data or {}) if cm is not None else {}).get("partial.json")
            if text:
                try:
                    partials[i] = json.loads(text)
                except ValueError:
                    partials[i] = {}  # not a signal: rejected as malformed, index fails
        subject = {**subject_of(obj), "spec_digest": digest_of(obj.get("spec") or {})}
        st = audit_status(plan.ref, job, partials, {stored.kid: stored.public or b""},
                          plan.limits.first_n, self.signer, subject, plan.target.ref)
        phase = str(st["phase"])
        if phase == Phase.RUNNING:
            ready, reason = "False", Reason.RUNNING
            msg = f"{st['progress']['summary']} indexes done"
        elif phase == Phase.SUCCEEDED:
            ready, reason = "True", Reason.DONE
            msg = f"{st['totals']['total']} records audited, {st['findingsCount']} finding(s)"
        else:
            ready, reason = "False", Reason.FAILED
            msg = str(st.get("message") or "the audit Job failed")
        self._write(obj, st, ready, reason, msg)
        return phase
