"""KeyRotation: rotate a backend's PCS signing key with an overlap window.

One reconcile step per tick, driven by the phase stored in status (so a restarted operator
resumes where it was; timers come from status, not memory). Every step is idempotent: it
computes the desired state and writes only what differs. During every step the signature error
rate is read; above ``spec.abortOnErrorRate`` the rotation is undone from the snapshot taken
before its first change, and the phase becomes ``Aborted``.

Key material is only ever written to Secrets; status, Events and logs carry key ids and
fingerprints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..backend.config import EnvNames, find_container
from ..backend.deployment import Backend, rollout_done
from ..backend.keyring import REVISION_ANNOTATION, ManagedRing, keyring_secret_name, revision_of
from ..backend.probe import ACCEPTED, OverlapProbe, probe_overlap, probe_pcs
from ..core.diagnose import Diagnoser
from ..core.errors import KeyringError, MalformedInput, SigopsError
from ..core.keys import HMAC, Key, b64decode_strict, generate_key
from ..core.timeparse import now_iso, parse_duration, parse_time
from ..kube.api import MANAGED, Conflict, secret_strings
from ..kube.conditions import set_condition
from ..kube.door import KubeDoor
from ..prometheus.client import Prom
from ..settings import AgentSecret, Settings, Target, TargetRefused
from ..signing.checkpoints import publish
from ..signing.records import Signer, subject_of
from .model import (
    DEFAULT_OVERLAP,
    TERMINAL,
    UNDO_SECRET,
    Phase,
    Reason,
    agent_secret_key,
    agent_secret_value,
    alg_of,
    plan,
    spec_problem,
)

__all__ = ["RotationReconciler", "StepError", "abort_requested_by"]

log = logging.getLogger("sigops.keyrotation")
PLURAL = "keyrotations"


class StepError(SigopsError):
    """A step cannot go on; ``reason`` becomes the condition reason."""

    def __init__(self, reason: str, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent


@dataclass
class _Ctx:
    obj: dict[str, Any]
    ns: str
    name: str
    uid: str
    spec: dict[str, Any]
    status: dict[str, Any]
    target: Target
    alg: str

    @property
    def target_ns(self) -> str:
        return self.target.namespace

    @property
    def deployment(self) -> str:
        return self.target.deployment

    @property
    def container(self) -> str | None:
        return self.target.container

    @property
    def names(self) -> EnvNames:
        return EnvNames.from_spec(self.target.env.model_dump(by_alias=True))

    @property
    def ref(self) -> str:
        return self.target.ref

    @property
    def agent(self) -> AgentSecret | None:
        return self.target.agent_secret

    @property
    def agent_key(self) -> str:
        return agent_secret_key(self.target.agent_secret, self.alg)

    @property
    def ring_secret(self) -> str:
        return keyring_secret_name(self.deployment)


class RotationReconciler:
    """Drives KeyRotations; one :meth:`tick` advances one step."""

    def __init__(self, kube: KubeDoor, prom: Prom, settings: Settings, signer: Signer,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 operator_namespace: str = "sigops-system") -> None:
        self.kube, self.prom, self.settings, self.signer, self.clock = (
            kube, prom, settings, signer, clock)
        self.operator_namespace = operator_namespace

    # -- entry point ---------------------------------------------------------------------------

    def tick(self, obj: dict[str, Any]) -> str | None:
        """Advance ``obj`` by at most one step; returns the phase after the tick."""
        status = dict(obj.get("status") or {})
        phase = status.get("phase") or Phase.PENDING
        if phase in TERMINAL:
            return phase
        try:
            ctx = self._ctx(obj, status)
        except TargetRefused as e:
            return self._refuse(obj, status, e)
        try:
            if ctx.spec.get("abort"):
                who = abort_requested_by(ctx.spec)
                self._abort(ctx, Reason.ABORT_REQUESTED, f"abort requested by {who['user']}",
                            requested_by=who)
                return Phase.ABORTED
            if phase != Phase.PENDING:
                self._guard(ctx)
            step = {
                Phase.PENDING: self._pending,
                Phase.STAGED: self._overlap,
                Phase.OVERLAPPING: self._verify,
                Phase.VERIFIED: self._promote,
                Phase.PROMOTED: self._retiring,
                Phase.RETIRING: self._complete,
            }[phase]
            return step(ctx)
        except StepError as e:
            if not e.permanent:
                self._set(ctx, phase, progressing=("True", e.reason, str(e)))
                return phase
            if phase == Phase.PENDING:
                self._set(ctx, Phase.FAILED, ready=("False", e.reason, str(e)),
                          progressing=("False", e.reason, str(e)), message=str(e))
                self.kube.event(obj, e.reason, str(e), "Warning")
                return Phase.FAILED
            self._abort(ctx, e.reason, str(e))
            return Phase.ABORTED

    def _ctx(self, obj: dict[str, Any], status: dict[str, Any]) -> _Ctx:
        """The rotation and the configured target it asks for (:class:`TargetRefused` when the
        config has no such target for the rotation's namespace)."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        target = self.settings.resolve_target(meta["namespace"], spec.get("target"))
        if spec.get("errorRateQuery") and not target.allow_error_rate_query:
            raise TargetRefused("FieldNotAllowed", (
                f"spec.errorRateQuery is not accepted for {target.ref}: the configured query "
                "is used (the config's allowErrorRateQuery lets a rotation bring its own)"))
        return _Ctx(obj, meta["namespace"], meta["name"], meta["uid"], spec, status, target,
                    alg_of(spec.get("algorithm", HMAC)))

    def _refuse(self, obj: dict[str, Any], status: dict[str, Any], e: TargetRefused) -> str:
        """A rotation whose target the config does not allow: Failed before anything was read
        (no Secret, no Deployment), with the reason in a condition and a Warning Event."""
        meta = obj["metadata"]
        now = now_iso(self.clock())
        gen = meta.get("generation")
        msg = f"refused: {e}"
        conds = set_condition(status.get("conditions"), "Ready", "False", e.reason, msg, gen, now)
        conds = set_condition(conds, "Progressing", "False", e.reason, msg, gen, now)
        self.kube.patch_status(meta["namespace"], PLURAL, meta["name"], {
            "phase": Phase.FAILED, "conditions": conds, "observedGeneration": gen, "message": msg})
        self.kube.event(obj, e.reason, msg, "Warning")
        log.warning("keyrotation %s/%s refused: %s", meta["namespace"], meta["name"], e,
                    extra={"rotation": f"{meta['namespace']}/{meta['name']}",
                           "reason": e.reason})
        return Phase.FAILED

    def profile_of(self, ctx: _Ctx) -> str:
        """The canonical profile agents sign with: the configured target's. A probe in another
        form is refused by a real backend for the wrong reason (and counts in its errors)."""
        return ctx.target.profile

    # -- status -----------------------------------------------------------------------------

    def _set(self, ctx: _Ctx, phase: str, *, ready: tuple[str, str, str] | None = None,
             progressing: tuple[str, str, str] | None = None, step: str | None = None,
             signed: dict[str, Any] | None = None, **fields: Any) -> None:
        now = now_iso(self.clock())
        gen = ctx.obj["metadata"].get("generation")
        st = ctx.status
        conds = st.get("conditions") or []
        if ready is None and progressing is not None and phase not in TERMINAL:
            # Ready tells where the rotation is, in the words of the step under way, not the
            # first step's message for every later phase.
            ready = ("False", Reason.ROTATING, f"{phase}: {progressing[2]}")
        if ready:
            conds = set_condition(conds, "Ready", *ready, gen, now)
        if progressing:
            conds = set_condition(conds, "Progressing", *progressing, gen, now)
        patch: dict[str, Any] = {"phase": phase, "conditions": conds, "observedGeneration": gen}
        patch.update(fields)
        if step:
            patch["history"] = self.signer.append(
                st.get("history") or [], "keyrotation.step", ctx.ref, step=step,
                subject=subject_of(ctx.obj), phase=phase, rotation=f"{ctx.ns}/{ctx.name}",
                new_key=st.get("newKeyId") or fields.get("newKeyId"),
                previous_key=st.get("previousKeyId") or fields.get("previousKeyId"),
                fingerprint=st.get("newKeyFingerprint") or fields.get("newKeyFingerprint"),
                **(signed or {}))
        self.kube.patch_status(ctx.ns, PLURAL, ctx.name, patch)
        st.update(patch)
        if step:
            publish(self.kube, self.operator_namespace, self.signer, PLURAL,
                    ctx.obj["metadata"], "status.history", patch["history"])
            self.kube.event(ctx.obj, f"Rotation{phase}", step)
            log.info("keyrotation %s/%s: %s -> %s", ctx.ns, ctx.name, step, phase,
                     extra={"rotation": f"{ctx.ns}/{ctx.name}", "target": ctx.ref,
                            "phase": phase})

    # -- guard -------------------------------------------------------------------------------

    def _guard(self, ctx: _Ctx) -> None:
        threshold = ctx.spec.get("abortOnErrorRate")
        if not self.prom.configured:
            self._guard_condition(ctx, "False", Reason.NO_PROMETHEUS,
                                  "no Prometheus configured: the error rate is not watched")
            return
        query = (ctx.target.allow_error_rate_query and ctx.spec.get("errorRateQuery")
                 or self.settings.error_query(ctx.target_ns, ctx.deployment))
        rate = self.prom.scalar(query)
        if rate is None:
            self._guard_condition(ctx, "False", Reason.PROMETHEUS_UNAVAILABLE,
                                  "Prometheus did not answer: proceeding unguarded")
            return
        if threshold is not None and rate > float(threshold):
            raise StepError(Reason.ERROR_RATE_ABOVE_THRESHOLD,
                            f"signature error rate {rate:.2f}/s above abortOnErrorRate "
                            f"{float(threshold):g}/s")
        self._guard_condition(ctx, "True", Reason.WATCHING,
                              f"error rate {rate:.2f}/s (abort above {threshold})")

    def _guard_condition(self, ctx: _Ctx, status: str, reason: str, message: str) -> None:
        conds = set_condition(ctx.status.get("conditions"), "Guarded", status, reason, message,
                              ctx.obj["metadata"].get("generation"), now_iso(self.clock()))
        if conds != ctx.status.get("conditions"):
            self.kube.patch_status(ctx.ns, PLURAL, ctx.name, {"conditions": conds})
            ctx.status["conditions"] = conds

    # -- reading the world -------------------------------------------------------------------

    def _deployment(self, ctx: _Ctx) -> dict[str, Any]:
        d = self.kube.read_deployment(ctx.target_ns, ctx.deployment)
        if d is None:
            raise StepError(Reason.DEPLOYMENT_NOT_FOUND,
                            f"deployment {ctx.ref} not found", permanent=True)
        return d

    def _backend(self, ctx: _Ctx) -> Backend:
        return Backend(self.kube, ctx.target_ns, ctx.deployment, ctx.container, ctx.names)

    def _read_ring(self, ctx: _Ctx) -> tuple[ManagedRing | None, Any]:
        return self._backend(ctx).read_ring()

    def _write_ring(self, ctx: _Ctx, ring: ManagedRing, existing: Any) -> None:
        try:
            self._backend(ctx).write_ring(ring, ctx.alg, existing)
        except Conflict as e:
            raise StepError(Reason.CONFLICT, f"{e}; retrying", permanent=False) from None

    def _effective(self, ctx: _Ctx, deployment: dict[str, Any]) -> Any:
        return self._backend(ctx).effective(deployment)

    # -- steps -------------------------------------------------------------------------------

    def _validate(self, ctx: _Ctx) -> None:
        problem = spec_problem(ctx.spec, self.settings.min_overlap)
        if problem is not None:
            raise StepError(Reason.INVALID_SPEC, problem)

    def _busy(self, ctx: _Ctx) -> str | None:
        """Another unfinished KeyRotation on the same target, older than this one."""
        mine = (ctx.obj["metadata"].get("creationTimestamp", ""), ctx.name)
        for other in self.kube.list_cr(ctx.ns, PLURAL):
            om = other["metadata"]
            if om["uid"] == ctx.uid:
                continue
            try:
                theirs = self.settings.resolve_target(
                    om["namespace"], (other.get("spec") or {}).get("target"))
            except TargetRefused:
                continue  # refused: it never acts on any target
            if theirs.ref != ctx.ref:
                continue
            ophase = (other.get("status") or {}).get("phase") or Phase.PENDING
            if ophase in TERMINAL or (other.get("spec") or {}).get("dryRun"):
                continue
            if (om.get("creationTimestamp", ""), om["name"]) < mine or ophase != Phase.PENDING:
                return str(om["name"])
        return None

    def _import_ring(self, ctx: _Ctx, deployment: dict[str, Any]) -> ManagedRing:
        """First rotation of a target: adopt the keys the backend uses today."""
        try:
            return self._backend(ctx).import_ring(ctx.alg, deployment)
        except KeyringError as e:
            raise StepError(Reason.BACKEND_CONFIG_INVALID, str(e)) from None

    def _pending(self, ctx: _Ctx) -> str:
        self._validate(ctx)
        deployment = self._deployment(ctx)
        find_container_or_fail(deployment, ctx.container)
        other = self._busy(ctx)
        if other:
            raise StepError(Reason.TARGET_BUSY, f"KeyRotation {other} is already rotating "
                                          f"{ctx.ref}; refusing a second one")
        ring, existing = self._read_ring(ctx)
        if ring is None:
            ring = self._import_ring(ctx, deployment)
        previous = ring.key(ring.primary)
        guarded = self.prom.configured
        if ctx.spec.get("dryRun"):
            steps = plan(ctx.alg, ctx.ref, previous, ctx.spec.get("overlap", DEFAULT_OVERLAP),
                         ctx.agent.name if ctx.agent else None, guarded)
            self._set(ctx, Phase.PLANNED,
                ready=("False", Reason.DRY_RUN, "dry run: nothing changed"),
                progressing=("False", Reason.DRY_RUN, "plan in status.plan"), plan=steps,
                previousKeyId=ring.primary or "",
                previousKeyFingerprint=previous.fingerprint if previous else "",
                step="dry run planned; nothing changed")
            return Phase.PLANNED
        if ring.lock and ring.lock.get("uid") != ctx.uid:
            # The holder is looked up where it lives (its namespace in the lock; a lock written
            # before namespaces were recorded is the target's own), and by UID: a namesake
            # elsewhere, or a new object of the same name, does not release it.
            hns = str(ring.lock.get("namespace") or ctx.target_ns)
            holder = self.kube.get_cr(hns, PLURAL, str(ring.lock.get("name", "")))
            hphase = ((holder or {}).get("status") or {}).get("phase")
            if (holder is not None and holder["metadata"].get("uid") == ring.lock.get("uid")
                    and hphase not in TERMINAL):
                raise StepError(Reason.TARGET_BUSY, f"keyring of {ctx.ref} is locked by "
                                              f"KeyRotation {hns}/{ring.lock.get('name')}")
        self._snapshot(ctx, ring, deployment)
        entry = ring.for_rotation(ctx.uid)
        if entry is None:
            new = generate_key(ctx.alg, state="pending")
            entry = {**new.to_entry(), "created_at": now_iso(self.clock()), "rotation": ctx.uid}
            ring.entries.append(entry)
        ring.lock = {"uid": ctx.uid, "name": ctx.name, "namespace": ctx.ns}
        self._write_ring(ctx, ring, existing)
        new_key = ring.key(entry["kid"])
        assert new_key is not None
        self._set(ctx, Phase.STAGED, ready=("False", Reason.ROTATING, "Staged: new key staged"),
                  progressing=("True", Phase.STAGED, f"new key {new_key.kid} generated"),
                  newKeyId=new_key.kid, newKeyFingerprint=new_key.fingerprint,
                  previousKeyId=ring.primary or "",
                  previousKeyFingerprint=previous.fingerprint if previous else "",
                  step=f"staged new key {new_key.kid} ({new_key.fingerprint})")
        return Phase.STAGED

    def _snapshot(self, ctx: _Ctx, ring: ManagedRing, deployment: dict[str, Any]) -> None:
        """Everything an abort restores, saved once before the first change: the entry of this
        rotation's UID in the operator's undo Secret (a requester cannot read or plant it
        there), naming the rotation's UID, namespace, name and target."""
        sec = self.kube.read_secret(self.operator_namespace, UNDO_SECRET)
        data = secret_strings(sec)
        if ctx.uid in data:
            return
        container = find_container(deployment, ctx.container)
        annotations = (deployment["spec"]["template"].get("metadata") or {}).get(
            "annotations") or {}
        agent_value = None
        if ctx.agent is not None:
            agent_value = self.kube.secret_value(ctx.target_ns, ctx.agent.name, ctx.agent_key)
        data[ctx.uid] = json.dumps({
            "uid": ctx.uid, "rotation": f"{ctx.ns}/{ctx.name}", "target": ctx.ref,
            "container": container.get("name"), "ring": ring.to_json(),
            "env": container.get("env") or [],
            "revision": annotations.get(REVISION_ANNOTATION),
            "agent": agent_value, "agent_existed": agent_value is not None})
        self._write_snapshots(data, sec)

    def _write_snapshots(self, data: dict[str, str], existing: Any) -> None:
        try:
            self.kube.write_secret(self.operator_namespace, UNDO_SECRET, data, existing,
                                   labels=MANAGED)
        except Conflict:
            raise StepError(Reason.CONFLICT, f"undo Secret {self.operator_namespace}/{UNDO_SECRET} "
                                        "changed concurrently; retrying",
                            permanent=False) from None

    def _drop_snapshot(self, ctx: _Ctx) -> None:
        sec = self.kube.read_secret(self.operator_namespace, UNDO_SECRET)
        data = secret_strings(sec)
        if sec is not None and data.pop(ctx.uid, None) is not None:
            self._write_snapshots(data, sec)

    def _read_snapshot(self, ctx: _Ctx) -> dict[str, Any] | None:
        """This rotation's undo snapshot, or None when there is none. One that does not name
        this very rotation (UID, namespace, name) and target is never restored: StepError."""
        text = secret_strings(self.kube.read_secret(self.operator_namespace,
                                                    UNDO_SECRET)).get(ctx.uid)
        if text is None:
            return None
        try:
            snap = json.loads(text)
            bound = (snap["uid"], snap["rotation"], snap["target"])
        except (KeyError, TypeError, ValueError):
            bound = None
        if bound != (ctx.uid, f"{ctx.ns}/{ctx.name}", ctx.ref):
            raise StepError(Reason.SNAPSHOT_UNVERIFIED, (
                f"the undo snapshot of UID {ctx.uid} in {self.operator_namespace}/{UNDO_SECRET} "
                f"does not belong to KeyRotation {ctx.ns}/{ctx.name} on {ctx.ref}; nothing "
                "restored"))
        return dict(snap)

    def _apply_backend(self, ctx: _Ctx, ring: ManagedRing, existing: Any) -> None:
        """Write the ring, then point the Deployment at it and roll pods if needed."""
        self._deployment(ctx)  # a clear DeploymentNotFound rather than a conflict
        try:
            self._backend(ctx).apply(ring, ctx.alg, existing)
        except Conflict as e:
            raise StepError(Reason.CONFLICT, f"{e}; retrying", permanent=False) from None

    def _with_overlaps(self, ring: ManagedRing, kids: list[str | None]) -> list[str]:
        """``kids``, plus keys an incident's key overlap (scenario A) added whose window is still
        open: a rotation must never drop a key agents were found signing with. Never a retired
        or revoked key (a key revoked mid-rotation stays out)."""
        return ring.with_overlaps(kids, now_iso(self.clock()))

    def delete(self, obj: dict[str, Any]) -> None:
        """A KeyRotation deleted mid-rotation is undone first, never left half-applied."""
        status = dict(obj.get("status") or {})
        phase = status.get("phase") or Phase.PENDING
        if phase in TERMINAL or phase == Phase.PENDING:
            return
        try:
            self._abort(self._ctx(obj, status), Reason.DELETED, "KeyRotation deleted mid-rotation")
        except TargetRefused as e:  # it never acted: nothing of it to undo
            log.warning("keyrotation %s deleted; its target is refused: %s",
                        obj["metadata"]["name"], e)
        except StepError as e:  # e.g. the Deployment is gone too: nothing left to restore
            log.warning("keyrotation %s deleted; undo skipped: %s",
                        obj["metadata"]["name"], e)

    def _locked_ring(self, ctx: _Ctx) -> tuple[ManagedRing, Any]:
        ring, existing = self._read_ring(ctx)
        if ring is None or (ring.lock or {}).get("uid") != ctx.uid:
            raise StepError(Reason.KEYRING_LOST,
                f"keyring Secret {ctx.ring_secret} is missing or no "
                "longer held by this rotation")
        new_kid = ctx.status.get("newKeyId")
        if new_kid and ring.closed(new_kid) and ctx.status.get("phase") != Phase.RETIRING:
            # Revoked before it was promoted: never hand agents (or the backend) that key.
            raise StepError(Reason.KEY_REVOKED,
                f"the new key {new_kid} was {(ring.entry(new_kid) or {}).get('state')} "
                "before it was promoted; the rotation is undone")
        return ring, existing

    def _overlap(self, ctx: _Ctx) -> str:
        ring, existing = self._locked_ring(ctx)
        new, old = ctx.status["newKeyId"], ring.primary
        ring.accepts = self._with_overlaps(ring, [old, new])
        self._apply_backend(ctx, ring, existing)
        self._set(ctx, Phase.OVERLAPPING, progressing=("True", Phase.OVERLAPPING,
                                                   "backend accepts old and new keys"),
                  overlapStartedAt=now_iso(self.clock()),
                  step=f"backend accepts {', '.join(ring.accepts)}; pods rolling")
        return Phase.OVERLAPPING

    def _rollout_done(self, dep: dict[str, Any]) -> bool:
        return rollout_done(dep)

    def _verify(self, ctx: _Ctx) -> str:
        ring, _ = self._locked_ring(ctx)
        dep = self._deployment(ctx)
        if self.settings.wait_for_rollout and not self._rollout_done(dep):
            started = ctx.status.get("overlapStartedAt") or now_iso(self.clock())
            waited = self.clock() - parse_time(started)
            if waited.total_seconds() > self.settings.seconds("rollout_timeout"):
                raise StepError(Reason.ROLLOUT_TIMEOUT, f"backend rollout not done after "
                                                  f"{self.settings.rollout_timeout}")
            raise StepError(Reason.WAITING_FOR_ROLLOUT, "waiting for the backend rollout",
                            permanent=False)
        new = ring.key(ctx.status["newKeyId"])
        assert new is not None
        try:
            eff = self._effective(ctx, dep)
            backend_ring = eff.keyring(self.profile_of(ctx))
        except KeyringError as e:
            raise StepError(Reason.PROBE_FAILED, f"backend config unusable: {e}") from None
        d = Diagnoser(backend_ring, self.profile_of(ctx))
        verdict = d.classify_obj(probe_pcs(new, self.profile_of(ctx)), 0)
        if not verdict.valid:
            raise StepError(Reason.PROBE_FAILED,
                "a probe PCS signed with the new key does not verify "
                f"under the backend's effective config "
                f"({verdict.cause})")
        old = ring.key(ring.primary)
        if old is not None and old.fingerprint not in eff.fingerprints:
            raise StepError(Reason.PROBE_FAILED, "the backend no longer accepts the key agents use")
        live = self._live_overlap(ctx, ring, new, dep)
        self._set(ctx, Phase.VERIFIED, progressing=("True", Phase.VERIFIED, "new key verified"),
                  step="probe PCS signed with the new key verified under the backend's "
                       "effective config; " + live)
        return Phase.VERIFIED

    def _probe_urls(self, ctx: _Ctx, dep: dict[str, Any]) -> tuple[list[str], bool]:
        """Where live probes go: the target's configured backend URL, else its ready pods
        (those the Deployment's own ReplicaSets control: a look-alike pod matching its selector
        gets no PCS signed with production keys). Nothing a requester wrote. The flag:
        configured."""
        url = ctx.target.submit_url()
        if url:
            return [url], True
        backend = self._backend(ctx)
        return backend.pod_urls(dep, replica_sets=backend.own_replica_sets(dep)), False

    def _probe_round_due(self, ctx: _Ctx, since_key: str) -> bool:
        """Whether a round of live probes is due: the first at once, then one every
        ``overlap_probe_grace / (overlap_probe_rounds - 1)``. Every refused probe counts in the
        backend's own error metric, so sigops never probes at its reconcile rate."""
        last = ctx.status.get("lastProbeAt")
        if not last or ctx.status.get("lastProbeStep") != since_key:
            return True
        spacing = (self.settings.seconds("overlap_probe_grace")
                   / (self.settings.overlap_probe_rounds - 1))
        return (self.clock() - parse_time(str(last))).total_seconds() >= spacing

    def _probe_round(self, ctx: _Ctx, since_key: str, urls: list[str], old: Key | None,
                     new: Key) -> list[OverlapProbe]:
        answers = probe_overlap(urls, self.settings.probe_timeout, old, new, self.profile_of(ctx))
        patch = {"lastProbeAt": now_iso(self.clock()), "lastProbeStep": since_key,
                 "probeRounds": int(ctx.status.get("probeRounds") or 0) + 1}
        self.kube.patch_status(ctx.ns, PLURAL, ctx.name, patch)
        ctx.status.update(patch)
        return answers

    def _live_overlap(self, ctx: _Ctx, ring: ManagedRing, new: Key,
                      dep: dict[str, Any]) -> str:
        """Trust the running backend over its env: it must accept a PCS signed with the old
        key *and* one signed with the new key before any agent is switched. A backend that
        holds one key (the upstream server reads only the single-key variable) is refused here,
        and the rotation is undone. Returns the step text."""
        urls, configured = self._probe_urls(ctx, dep)
        if not urls:
            return ("no live probe (no backendURL configured for the target and no ready "
                    "backend pod)")
        started = ctx.status.get("overlapStartedAt") or now_iso(self.clock())
        waited = (self.clock() - parse_time(started)).total_seconds()
        grace = self.settings.seconds("overlap_probe_grace")
        if waited <= grace and not self._probe_round_due(ctx, "overlap"):
            raise StepError(Reason.WAITING_FOR_BACKEND,
                "live backend does not accept both keys yet; "
                "next probe round soon", permanent=False)
        old = self._old_signer(ctx, ring)
        answers = self._probe_round(ctx, "overlap", urls, old, new)
        if not configured:  # pod URLs: a pod without the submit endpoint says nothing
            answers = [a for a in answers if not a.no_submit_endpoint]
            if not answers:
                return (f"no live probe (the backend pods answer no submit endpoint at "
                        f"{urls[0]}; set the target's backendURL in the operator config)")
        seen = "; ".join(a.describe() for a in answers)
        if all(a.both_accepted for a in answers):
            return (f"live backend accepts {'both keys' if old else 'the new key'} "
                    f"({len(answers)} endpoint{'s' if len(answers) != 1 else ''})"
                    + ("" if old else "; the old key is public only here, so no old-key probe"))
        var = ctx.names.hmac_keys if ctx.alg == HMAC else ctx.names.ed25519_pubs
        single = ctx.names.hmac_key if ctx.alg == HMAC else ctx.names.ed25519_pub
        one_key = (f"the backend does not accept two keys at once: it reads {single} only and "
                   f"ignores {var}; switching agents would make every PCS of an agent not yet "
                   f"switched fail. Give the backend multi-key verification first (runbook "
                   f"key-rotation.md, 'Backend that accepts one key')")
        if any(a.refuses_old for a in answers):
            raise StepError(Reason.BACKEND_REJECTS_OVERLAP, f"{one_key} [{seen}]")
        if self.settings.wait_for_rollout and all(a.refuses_new for a in answers):
            # The rollout is done: every ready pod runs the overlap config, accepts the key
            # agents use and refuses the new one. Waiting longer only adds refused probes.
            raise StepError(Reason.BACKEND_REJECTS_OVERLAP,
                f"{one_key}; every ready pod of the new "
                f"revision refuses the new key [{seen}]")
        if waited <= grace:
            raise StepError(Reason.WAITING_FOR_BACKEND,
                f"live backend does not accept both keys yet "
                f"[{seen}]", permanent=False)
        if any(a.refuses_new for a in answers):
            raise StepError(Reason.BACKEND_REJECTS_OVERLAP,
                            f"{one_key}; it still refuses the new key "
                            f"{self.settings.overlap_probe_grace} after the overlap config "
                            f"[{seen}]")
        raise StepError(Reason.PROBE_FAILED, f"live backend did not accept both keys within "
                                       f"{self.settings.overlap_probe_grace} [{seen}]")

    def _old_signer(self, ctx: _Ctx, ring: ManagedRing) -> Key | None:
        """The key agents sign with today, able to sign (see :meth:`_signer_of`)."""
        return self._signer_of(ctx, ring, ring.primary)

    def _signer_of(self, ctx: _Ctx, ring: ManagedRing | None, kid: str | None) -> Key | None:
        """Key ``kid`` of the ring, able to sign: an HMAC key or an Ed25519 key sigops made;
        else the agents' Ed25519 private key (their Secret now, or as it was before this
        rotation, from its undo snapshot) when its public half is that key's."""
        known = ring.key(kid) if ring is not None and kid else None
        if known is None or known.can_sign:
            return known
        values = []
        if ctx.agent is not None:
            values.append(self.kube.secret_value(ctx.target_ns, ctx.agent.name, ctx.agent_key))
        try:
            snap = self._read_snapshot(ctx)
        except StepError:
            snap = None
        if snap and snap.get("agent"):
            values.append(str(snap["agent"]))
        for value in values:
            if not value:
                continue
            try:
                k = Key(known.kid, known.alg,
                        private_seed=b64decode_strict(value, "agent key", 32))
            except (MalformedInput, KeyringError):
                continue
            if k.fingerprint == known.fingerprint:
                return k
        return None

    def _promote(self, ctx: _Ctx) -> str:
        ring, existing = self._locked_ring(ctx)
        new_kid = ctx.status["newKeyId"]
        old_kid = ctx.status.get("previousKeyId") or None
        new = ring.key(new_kid)
        assert new is not None
        if ctx.agent is not None:
            key = ctx.agent_key
            sec = self.kube.read_secret(ctx.target_ns, ctx.agent.name)
            data = secret_strings(sec)
            if data.get(key) != agent_secret_value(new):
                data[key] = agent_secret_value(new)
                self.kube.write_secret(ctx.target_ns, ctx.agent.name, data, sec,
                                       labels=(sec.metadata.labels if sec else None))
        overlap = parse_duration(ctx.spec.get("overlap", DEFAULT_OVERLAP))
        until = self.clock() + timedelta(seconds=overlap)
        ring.set_state(new_kid, "active")
        old_entry = ring.entry(old_kid)
        if old_kid and ring.set_state(old_kid, "retiring") and old_entry is not None:
            # The window scenario A may re-admit it in (and no longer after).
            old_entry.setdefault("overlap_until", now_iso(until))
        ring.primary = new_kid
        ring.accepts = self._with_overlaps(ring, [new_kid, old_kid])
        self._apply_backend(ctx, ring, existing)
        self._set(ctx, Phase.PROMOTED,
            progressing=("True", Phase.PROMOTED, "agents use the new key"),
            overlapUntil=now_iso(until),
            step=("agents' Secret switched to " if ctx.agent is not None else
            "backend primary switched to ") + f"{new_kid}; old key retiring")
        return Phase.PROMOTED

    def _retiring(self, ctx: _Ctx) -> str:
        self._set(ctx, Phase.RETIRING, progressing=(
            "True", Phase.RETIRING, f"old key accepted until {ctx.status.get('overlapUntil')}"),
            step=f"overlap window until {ctx.status.get('overlapUntil')}")
        return Phase.RETIRING

    def _complete(self, ctx: _Ctx) -> str:
        """Retire the old key, then prove it: ``Completed`` only once the rollout is done and
        every ready pod refuses the old key and accepts the new one. Until then the phase stays
        ``Retiring`` and the Progressing condition says what it waits for."""
        until = parse_time(str(ctx.status["overlapUntil"]))
        if self.clock() < until:
            return Phase.RETIRING
        if not ctx.status.get("retiredAt"):
            return self._retire(ctx)
        ring, _ = self._read_ring(ctx)
        dep = self._deployment(ctx)
        if self.settings.wait_for_rollout and not self._rollout_done(dep):
            waited = (self.clock() - parse_time(str(ctx.status["retiredAt"]))).total_seconds()
            if waited > self.settings.seconds("rollout_timeout"):
                raise StepError(Reason.ROLLOUT_STALLED, (
                    f"the rollout that drops the old key from {ctx.ref} is not done after "
                    f"{self.settings.rollout_timeout}: old pods may still accept the retired "
                    "key; see the Deployment's pods (kubectl rollout status)"), permanent=False)
            raise StepError(Reason.WAITING_FOR_ROLLOUT,
                "old key dropped from the config; waiting for "
                "the backend rollout", permanent=False)
        proof = self._prove_retired(ctx, ring, dep)
        self._drop_snapshot(ctx)
        old_kid = ctx.status.get("previousKeyId") or "-"
        self._set(ctx, Phase.COMPLETED, ready=("True", Phase.COMPLETED, "rotation complete"),
                  progressing=("False", Phase.COMPLETED, "old key retired"),
                  step=f"old key {old_kid} retired and dropped from the backend: {proof}")
        return Phase.COMPLETED

    def _retire(self, ctx: _Ctx) -> str:
        """Drop the old key from the backend (state ``retired`` in the ring) and release the
        ring; the pods roll. Idempotent: an interrupted earlier attempt finishes here."""
        ring, existing = self._read_ring(ctx)
        # An interrupted earlier attempt may already have released the lock: the ring then has
        # this rotation's key as its primary, and finishing again changes nothing more.
        finished = (ring is not None and ring.lock is None
                    and ring.primary == ctx.status["newKeyId"])
        if not finished:
            ring, existing = self._locked_ring(ctx)
        assert ring is not None
        old_kid = ctx.status.get("previousKeyId") or None
        if old_kid:
            ring.set_state(old_kid, "retired", now_iso(self.clock()))
        ring.accepts = self._with_overlaps(ring, [ctx.status["newKeyId"]])
        ring.lock = None
        entry = ring.entry(ctx.status["newKeyId"])
        if entry is not None:
            entry.pop("rotation", None)
        self._apply_backend(ctx, ring, existing)
        # Signed once, in the Completed record, with the live proof; meanwhile an Event.
        self._set(ctx, Phase.RETIRING, progressing=(
            "True", Reason.PROVING_RETIREMENT,
                f"old key {old_kid or '-'} dropped from the backend's "
            "config; waiting for the rollout, then every ready pod must refuse it"),
            retiredAt=now_iso(self.clock()))
        self.kube.event(ctx.obj, "RotationRetiring", f"old key {old_kid or '-'} dropped from "
                        f"{ctx.ref}'s config; proving it refused once the pods rolled")
        return Phase.RETIRING

    def _prove_retired(self, ctx: _Ctx, ring: ManagedRing | None, dep: dict[str, Any]) -> str:
        """Every ready pod (or the configured backend URL) refuses a PCS signed with the old key
        and accepts one signed with the new; else StepError (waiting). Returns the proof."""
        new = ring.key(ctx.status["newKeyId"]) if ring else None
        if new is None:
            raise StepError(Reason.KEYRING_LOST,
                f"keyring Secret {ctx.ring_secret} no longer holds "
                f"the new key {ctx.status['newKeyId']}")
        urls, configured = self._probe_urls(ctx, dep)
        if not urls:
            return "no live proof (no backendURL configured and no ready backend pod)"
        if not self._probe_round_due(ctx, "retire"):
            raise StepError(Reason.OLD_KEY_STILL_ACCEPTED, "waiting to probe the backend again",
                            permanent=False)
        old = self._signer_of(ctx, ring, ctx.status.get("previousKeyId"))
        answers = self._probe_round(ctx, "retire", urls, old, new)
        if not configured:
            answers = [a for a in answers if not a.no_submit_endpoint]
            if not answers:
                return (f"no live proof (the backend pods answer no submit endpoint at "
                        f"{urls[0]})")
        seen = "; ".join(a.describe() for a in answers)
        n = f"{len(answers)} endpoint{'s' if len(answers) != 1 else ''}"
        if old is None:
            if all(a.new in ACCEPTED for a in answers):
                return (f"the live backend accepts the new key ({n}); the old key is public "
                        "only here, so its refusal was not probed")
        elif all(a.refuses_old for a in answers):
            return f"every live endpoint refuses the old key and accepts the new one ({n})"
        raise StepError(Reason.OLD_KEY_STILL_ACCEPTED,
            f"the live backend does not yet refuse the old "
            f"key and accept the new one [{seen}]",
            permanent=False)

    # -- abort -------------------------------------------------------------------------------

    def _abort(self, ctx: _Ctx, reason: str, message: str,
               requested_by: dict[str, Any] | None = None) -> None:
        """Undo every change from the snapshot, then mark the rotation Aborted. A person's
        abort names who asked in the signed history record."""
        snap = self._read_snapshot(ctx)
        kept = self._keep_forward(ctx, snap) if snap is not None else None
        if kept is not None:
            msg = f"{message}; {kept}"
            self._set(ctx, Phase.ABORTED, ready=("False", reason, msg),
                      progressing=("False", reason, msg), message=msg,
                      step=f"aborted ({reason}): {message}; {kept}",
                      signed={"requested_by": requested_by} if requested_by else None)
            self.kube.event(ctx.obj, "RotationAborted", msg, "Warning")
            return
        if snap is not None:
            # Agents first: the backend still accepts the old key until the ring is restored,
            # so no moment leaves agents on a key the backend rejects.
            if ctx.agent is not None:
                sec = self.kube.read_secret(ctx.target_ns, ctx.agent.name)
                data = secret_strings(sec)
                if snap["agent_existed"]:
                    data[ctx.agent_key] = snap["agent"]
                else:
                    data.pop(ctx.agent_key, None)
                if sec is not None:
                    self.kube.write_secret(ctx.target_ns, ctx.agent.name, data, sec,
                                           labels=sec.metadata.labels)
            restored = ManagedRing.from_json(snap["ring"])
            # Keep the new key on record (retired) so diagnosis can name it.
            current, existing = self._read_ring(ctx)
            mine = current.for_rotation(ctx.uid) if current else None
            if mine is not None and restored.entry(mine["kid"]) is None:
                restored.entries.append({**mine, "state": "retired",
                                         "retired_at": now_iso(self.clock())})
            # A key retired or revoked since the snapshot stays so: the restore never makes
            # the backend accept it again.
            if current is not None:
                restored.keep_closed_from(current)
            restored.lock = None
            self._write_ring(ctx, restored, existing)
            self._deployment(ctx)  # a missing Deployment is a StepError, as before

            def restore_env(dep: dict[str, Any]) -> bool:
                for c in dep["spec"]["template"]["spec"]["containers"]:
                    if c.get("name") == (snap.get("container")
                                         or find_container(dep, ctx.container).get("name")):
                        c["env"] = snap["env"]
                tmeta = dep["spec"]["template"].setdefault("metadata", {})
                ann = dict(tmeta.get("annotations") or {})
                ann[REVISION_ANNOTATION] = revision_of(restored) + "-undo"
                tmeta["annotations"] = ann
                return True

            self._backend(ctx).update(restore_env)
            self._drop_snapshot(ctx)
        msg = f"{message}; all changes undone"
        self._set(ctx, Phase.ABORTED, ready=("False", reason, msg),
                  progressing=("False", reason, msg), message=msg,
                  step=f"aborted ({reason}): {message}; restored the previous keyring, "
                       "Deployment env and agent Secret",
                  signed={"requested_by": requested_by} if requested_by else None)
        self.kube.event(ctx.obj, "RotationAborted", msg, "Warning")


    def _keep_forward(self, ctx: _Ctx, snap: dict[str, Any]) -> str | None:
        """When the key the undo would go back to was retired or revoked since (a person
        marked it compromised mid-rotation), undoing would make the backend and the agents use
        it again: instead keep them on the new key, release the ring and say so. None: undo as
        usual."""
        current, existing = self._read_ring(ctx)
        back_to = ManagedRing.from_json(snap["ring"]).primary
        new_kid = ctx.status.get("newKeyId")
        if (current is None or not back_to or not current.closed(back_to)
                or current.primary != new_kid):
            return None
        current.lock = None
        entry = current.entry(new_kid)
        if entry is not None:
            entry.pop("rotation", None)
        self._apply_backend(ctx, current, existing)
        self._drop_snapshot(ctx)
        state = (current.entry(back_to) or {}).get("state")
        return (f"not undone: the previous key {back_to} is {state}, so agents and backend "
                f"stay on the new key {new_kid}")


UNKNOWN_USER = "unknown (spec.abort set without kubectl sigops)"


def abort_requested_by(spec: dict[str, Any]) -> dict[str, Any]:
    """Who asked for the abort: ``spec.abortRequestedBy`` (``kubectl sigops abort`` writes the
    user the API server named), else unknown.

    >>> abort_requested_by({"abort": True})["user"]
    'unknown (spec.abort set without kubectl sigops)'
    """
    who = spec.get("abortRequestedBy")
    if isinstance(who, dict) and who.get("user"):
        return {k: who[k] for k in ("user", "uid", "groups", "at") if who.get(k)}
    return {"user": UNKNOWN_USER}


def find_container_or_fail(deployment: dict[str, Any], name: str | None) -> None:
    try:
        find_container(deployment, name)
    except KeyringError as e:
        raise StepError(Reason.INVALID_SPEC, str(e)) from None
