"""SignatureIncident: diagnose a signature-failure spike, run the runbook's scenario, check
that it worked, escalate when it did not.

Like KeyRotation, one step per tick from the phase in status. Before a scenario changes
anything its plan (with the values it replaces) is saved in status; after a restart the same
plan is applied again (idempotently) and recorded once, so a scenario runs once, not twice.
Every action is a signed, hash-chained record in ``status.actions``.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..backend.config import EnvNames
from ..backend.deployment import Backend
from ..core.timeparse import now_iso, parse_duration
from ..kube.api import Conflict
from ..kube.conditions import set_condition
from ..kube.door import KubeDoor
from ..prometheus.client import Prom
from ..settings import Settings, Target, TargetRefused
from ..signing.checkpoints import publish
from ..signing.records import Signer, subject_of
from ..telemetry.metrics import ACTIONS, INCIDENTS, REMEDIATION_SECONDS
from .decide import (
    INCIDENT_CAUSE_OF,
    candidates,
    communication,
    decided,
    effective_mode,
    needs_approval,
)
from .evidence import Evidence, gather
from .model import OPEN as OPEN_PHASES
from .model import TERMINAL, Phase
from .scenarios import ScenarioContext, ScenarioError, scenario_for

__all__ = ["IncidentReconciler", "TERMINAL_INCIDENT", "REFUSED", "target_of", "decided_by",
           "decision_step"]

log = logging.getLogger("sigops.incident")
PLURAL = "signatureincidents"
REFUSED = Phase.REFUSED
"""The phase of an incident whose target sigops will not act on (not a configured target, or
not requestable from the incident's namespace): nothing was read, nothing changed."""
TERMINAL_INCIDENT = TERMINAL
RATE_LIMITED_LABEL = "sigops.fractal-lba.io/rate-limited"
OPEN = OPEN_PHASES


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def target_of(obj: dict[str, Any], settings: Settings) -> Target:
    """The configured target the incident asks for (``spec.target``: namespace, default the
    incident's own, and Deployment), or :class:`~sigops.settings.TargetRefused` when it is not
    a target of the config or not requestable from the incident's namespace."""
    return settings.resolve_target(obj["metadata"]["namespace"],
                                   (obj.get("spec") or {}).get("target"), "SignatureIncident")


class IncidentReconciler:
    def __init__(self, kube: KubeDoor, prom: Prom, settings: Settings, signer: Signer,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 operator_namespace: str = "sigops-system") -> None:
        self.kube, self.prom, self.settings, self.signer, self.clock = (
            kube, prom, settings, signer, clock)
        self.operator_namespace = operator_namespace
        self._evidence: dict[str, Evidence] = {}

    # -- status helpers ----------------------------------------------------------------------

    def _patch(self, obj: dict[str, Any], patch: dict[str, Any], phase: str | None = None,
               condition: tuple[str, str, str, str] | None = None) -> None:
        st = obj.setdefault("status", {})
        now = now_iso(self.clock())
        if phase:
            patch["phase"] = phase
        if condition:
            patch["conditions"] = set_condition(st.get("conditions"), *condition,
                                                obj["metadata"].get("generation"), now)
        merged = {**st, **patch}
        patch["communication"] = communication(
            phase=merged.get("phase", Phase.DETECTED), cause=merged.get("cause"),
            scenario=merged.get("scenario"),
            actions=[a.get("payload", {}) for a in merged.get("actions") or []],
            error_rate=_float(merged.get("errorRate")),
            next_update=now_iso(self.clock() + timedelta(minutes=15)),
            target=self._target_id(obj))
        patch["observedGeneration"] = obj["metadata"].get("generation")
        self.kube.patch_status(obj["metadata"]["namespace"], PLURAL, obj["metadata"]["name"],
                               patch)
        if patch.get("actions"):
            publish(self.kube, self.operator_namespace, self.signer, PLURAL, obj["metadata"],
                    "status.actions", patch["actions"])
        if phase and phase != st.get("phase"):
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            log.info("incident %s/%s: %s%s", ns, name, phase,
                     f" ({condition[2]})" if condition else "",
                     extra={"incident": f"{ns}/{name}", "target": self._target_id(obj),
                            "phase": phase})
        st.update(patch)

    def _actions(self, obj: dict[str, Any], steps: list[dict[str, Any]], scenario: str,
                 result: str) -> list[dict[str, Any]]:
        chain = list((obj.get("status") or {}).get("actions") or [])
        target = self._target_id(obj)
        for step in steps:
            chain = self.signer.append(chain, "incident.action", target, limit=200,
                                       subject=subject_of(obj), scenario=scenario, result=result,
                                       incident=obj["metadata"]["name"], **step)
        return chain

    def _target_id(self, obj: dict[str, Any]) -> str:
        try:
            return target_of(obj, self.settings).ref
        except TargetRefused:
            return "(no configured target)"

    # -- entry point ---------------------------------------------------------------------------

    def tick(self, obj: dict[str, Any]) -> str:
        st = obj.get("status") or {}
        phase = st.get("phase") or Phase.DETECTED
        if phase in TERMINAL_INCIDENT:
            return phase
        if (obj["metadata"].get("labels") or {}).get(RATE_LIMITED_LABEL) == "true":
            return Phase.RATE_LIMITED  # a record of a rate-limited signal: never remediated
        try:
            target_of(obj, self.settings)
        except TargetRefused as e:
            return self._refuse(obj, e)
        if phase == Phase.RESOLVED:
            self._after_resolution(obj)
            return phase
        now = self.clock()
        created = _t(obj["metadata"]["creationTimestamp"])
        escalate_at = _t(st["escalateAt"]) if st.get("escalateAt") else (
            created + timedelta(seconds=self.settings.seconds("escalate_after")))
        if now >= escalate_at:
            self._escalate(obj, "Unresolved", f"unresolved after "
                                              f"{self.settings.escalate_after}")
            return Phase.ESCALATED
        if (phase in (Phase.DETECTED, Phase.DIAGNOSING, Phase.AWAITING_APPROVAL)
                and st.get("alertResolvedAt")):
            self._patch(obj, {}, Phase.VERIFYING,
                        ("Ready", "False", "AlertResolved", "the alert resolved; verifying"))
            return Phase.VERIFYING
        step = {"Detected": self._detected, Phase.DIAGNOSING: self._diagnose,
                Phase.AWAITING_APPROVAL: self._awaiting, Phase.REMEDIATING: self._remediate,
                Phase.VERIFYING: self._verify}[phase]
        return step(obj)

    def _refuse(self, obj: dict[str, Any], refused: TargetRefused) -> str:
        """Stop before anything of the backend is read (no Secret, pod, log or URL): the
        target is not one sigops looks after, or not for this namespace."""
        message = f"{refused}; nothing was read or changed"
        self._patch(obj, {}, REFUSED, ("Ready", "False", refused.reason, message))
        self.kube.event(obj, refused.reason, message, "Warning")
        return REFUSED

    def _detected(self, obj: dict[str, Any]) -> str:
        created = _t(obj["metadata"]["creationTimestamp"])
        esc = created + timedelta(seconds=self.settings.seconds("escalate_after"))
        self._patch(obj, {"escalateAt": now_iso(esc)}, Phase.DIAGNOSING,
                    ("Ready", "False", Phase.DIAGNOSING, "gathering evidence"))
        self.kube.event(obj, Phase.DETECTED, f"signature failure spike on {self._target_id(obj)}")
        return Phase.DIAGNOSING

    def _ctx(self, obj: dict[str, Any], ev: Evidence) -> ScenarioContext:
        t = target_of(obj, self.settings)
        names = EnvNames.from_spec(t.env.model_dump(by_alias=True))
        return ScenarioContext(self.kube, self.prom, self.settings,
                               Backend(self.kube, t.namespace, t.deployment, t.container, names),
                               t, obj, ev, self.clock())

    def _evidence_for(self, obj: dict[str, Any]) -> Evidence:
        uid = obj["metadata"]["uid"]
        ev = self._evidence.get(uid)
        if ev is None:
            ev = gather(self.kube, self.prom, self.settings, obj,
                        target_of(obj, self.settings), self.clock())
            if len(self._evidence) > 256:
                self._evidence.clear()
            self._evidence[uid] = ev
        return ev

    def _diagnose(self, obj: dict[str, Any]) -> str:
        ev = gather(self.kube, self.prom, self.settings, obj, target_of(obj, self.settings),
                    self.clock())
        self._evidence[obj["metadata"]["uid"]] = ev
        report = ev.report or {}
        cands = candidates(report, rotation_in_progress=ev.rotation_in_progress,
                           recent_signing_change=ev.recent_signing_change,
                           skew_metric_seconds=ev.skew_metric)
        scenario = cands[0] if cands else None
        cause = (report.get("incident_cause") if report.get("scenario") == scenario
                 else INCIDENT_CAUSE_OF.get(scenario or "", "Unknown")) or "Unknown"
        if not report and scenario:
            cause = INCIDENT_CAUSE_OF[scenario]
        confidence = float(report.get("confidence", 0.0)) if report else (0.5 if cands else 0.0)
        target = self._target_id(obj)
        spec = obj.get("spec") or {}
        signal = self.signer.record(
            [], "detection", target, uid=subject_of(obj)["uid"],
            namespace=subject_of(obj)["namespace"], cause=cause, scenario=scenario,
            evidence=ev.summary(), incident=obj["metadata"]["name"],
            alert_fingerprint=(spec.get("alert") or {}).get("fingerprint"),
            source=spec.get("source"), confidence=confidence)
        INCIDENTS.labels(cause, scenario or "none").inc()
        patch = {"cause": cause, "confidence": confidence, "scenario": scenario,
                 "candidates": cands, "evidence": ev.summary(), "signal": signal,
                 "errorRate": _rate(ev.error_rate)}
        if scenario is None:
            self._patch(obj, patch)
            self._escalate(obj, "NoScenario", "no runbook scenario matches the evidence")
            return Phase.ESCALATED
        self.kube.event(obj, "Diagnosed", f"cause {cause} (confidence {confidence:.2f}); "
                                          f"scenario {scenario}")
        self._patch(obj, patch, Phase.DIAGNOSING,
                    ("Ready", "False", "Diagnosed", f"cause {cause}, scenario {scenario}"))
        return self._gate(obj)

    def _mode(self, obj: dict[str, Any], scenario: str) -> str:
        """The configured mode, or the requester's ``spec.mode`` where it is more careful."""
        return effective_mode(self.settings.modes.get(scenario, "auto"),
                              (obj.get("spec") or {}).get("mode"))

    def _gate(self, obj: dict[str, Any]) -> str:
        """Plan the current scenario; run it now or wait for a person."""
        st = obj["status"]
        scenario = st["scenario"]
        ev = self._evidence_for(obj)
        try:
            steps = scenario_for(scenario).plan(self._ctx(obj, ev))
        except ScenarioError as e:
            return self._next_candidate(obj, f"scenario {scenario} cannot run: {e}")
        approved = decided(obj.get("spec") or {}, "approve")
        mode = self._mode(obj, scenario)
        self._patch(obj, {"pendingActions": {"scenario": scenario, "steps": steps}})
        if needs_approval(scenario, mode, approved,
                          recent_signing_change=ev.recent_signing_change):
            name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
            why = "dry run: plan in status.pendingActions" if mode == "dryRun" else (
                f"scenario {scenario} needs approval: kubectl sigops approve si/{name} -n {ns} "
                f"(or deny si/{name})")
            self._patch(obj, {}, Phase.AWAITING_APPROVAL,
                        ("Ready", "False",
                         "DryRun" if mode == "dryRun" else Phase.AWAITING_APPROVAL, why))
            self.kube.event(obj, Phase.AWAITING_APPROVAL, why)
            return Phase.AWAITING_APPROVAL
        patch: dict[str, Any] = {}
        if scenario in approved and needs_approval(
                scenario, mode, [], recent_signing_change=ev.recent_signing_change):
            # Approved before it was asked: the signed history still says who let it run.
            who = decided_by(obj.get("spec") or {}, scenario, "approve")
            patch["actions"] = self._actions(obj, [decision_step("approve", scenario, who)],
                                             scenario, "approved")
        self._patch(obj, patch, Phase.REMEDIATING,
                    ("Ready", "False", Phase.REMEDIATING, f"running scenario {scenario}"))
        return self._remediate(obj)

    def _awaiting(self, obj: dict[str, Any]) -> str:
        st = obj["status"]
        scenario = st.get("scenario")
        spec = obj.get("spec") or {}
        if scenario in decided(spec, "deny"):
            who = decided_by(spec, scenario, "deny")
            # Recorded in the same status write that moves the incident on, so a restart in
            # between neither loses nor repeats it.
            denied = self._actions(obj, [decision_step("deny", scenario, who)], scenario,
                                   "denied")
            self.kube.event(obj, "Denied", f"scenario {scenario} denied by {who['user']}")
            return self._next_candidate(obj, f"scenario {scenario} denied by {who['user']}",
                                        {"actions": denied})
        if scenario in decided(spec, "approve") and self._mode(obj, scenario) != "dryRun":
            who = decided_by(spec, scenario, "approve")
            self._patch(obj, {"actions": self._actions(
                obj, [decision_step("approve", scenario, who)], scenario, "approved")},
                Phase.REMEDIATING, ("Ready", "False", "Approved",
                                f"scenario {scenario} approved by {who['user']}"))
            return self._remediate(obj)
        return Phase.AWAITING_APPROVAL

    def _remediate(self, obj: dict[str, Any]) -> str:
        st = obj["status"]
        pending = st.get("pendingActions") or {}
        scenario = pending.get("scenario") or st["scenario"]
        steps = pending.get("steps")
        ctx = self._ctx(obj, self._evidence_for(obj))
        impl = scenario_for(scenario)
        try:
            if steps is None:
                steps = impl.plan(ctx)
                self._patch(obj, {"pendingActions": {"scenario": scenario, "steps": steps}})
            impl.apply(ctx, steps)
        except ScenarioError as e:
            return self._next_candidate(obj, f"scenario {scenario} failed: {e}")
        except Conflict:
            return Phase.REMEDIATING  # someone wrote concurrently: the next tick tries again
        # Labels from the configured target only: a requester's string never becomes a label.
        t = ctx.target
        ACTIONS.labels(t.namespace, t.deployment, scenario).inc()
        actions = self._actions(obj, steps, scenario, "applied")
        patch: dict[str, Any] = {"actions": actions, "pendingActions": None,
                                 "verifyStartedAt": now_iso(self.clock())}
        held = impl.held(steps)
        if held is not None:  # taken back once resolved, after the cool-down
            patch["restore"] = {**held, "scenario": scenario}
        patch["confirm"] = {"scenario": scenario, "steps": steps}
        self.kube.event(obj, f"Scenario{scenario}", "; ".join(s["summary"] for s in steps))
        if impl.escalation is not None:
            self._patch(obj, patch)
            self._escalate(obj, *impl.escalation)
            return Phase.ESCALATED
        self._patch(obj, patch, Phase.VERIFYING,
                    ("Ready", "False", Phase.VERIFYING, f"scenario {scenario} applied; verifying"))
        return Phase.VERIFYING

    def _confirm(self, obj: dict[str, Any]) -> str | None:
        """Run the applied scenario's live confirmation, if it has one. None: confirmed (or
        nothing to confirm); else the phase to stay in or move to."""
        pending = obj["status"].get("confirm")
        if not pending:
            return None
        scenario, steps = pending["scenario"], pending["steps"]
        impl = scenario_for(scenario)
        ctx = self._ctx(obj, self._evidence_for(obj))
        try:
            waiting = impl.confirm(ctx, steps)
        except ScenarioError as e:
            try:
                impl.undo(ctx, steps)
            except Conflict:
                return Phase.VERIFYING  # undo again next tick
            undone = [{"action": "undo", "summary": f"scenario {scenario} not confirmed by the "
                                                    f"live backend, its changes undone: {e}"}]
            self._patch(obj, {"confirm": None,
                              "actions": self._actions(obj, undone, scenario, "undone")})
            return self._next_candidate(obj, f"scenario {scenario} failed: {e}; its changes "
                                             "were undone")
        if waiting:
            ready: dict[str, Any] = next((c for c in obj["status"].get("conditions") or []
                                          if c.get("type") == "Ready"), {})
            if ready.get("message") != waiting:
                self._patch(obj, {}, None, ("Ready", "False", "Confirming", waiting))
            return Phase.VERIFYING
        self._patch(obj, {"confirm": None})
        return None

    def _verify(self, obj: dict[str, Any]) -> str:
        unconfirmed = self._confirm(obj)
        if unconfirmed is not None:
            return unconfirmed
        st = obj["status"]
        t = target_of(obj, self.settings)
        rate = self.prom.scalar(self.settings.error_query(t.namespace, t.deployment))
        firing = None
        if self.prom.configured:
            alerts = self.prom.firing(self.settings.alert_name)
            if alerts is not None:
                fp = ((obj.get("spec") or {}).get("alert") or {}).get("fingerprint")
                # Alerts that joined this incident (the rule firing for each pod) count too.
                fps = {fp, *(st.get("relatedAlerts") or [])} if fp else set()
                from .alertmanager import alert_fingerprint

                firing = any(alert_fingerprint({k: v for k, v in a.items()
                                                if k not in ("__name__", "alertstate")}) in fps
                             or not fp for a in alerts)
        resolved_alert = bool(st.get("alertResolvedAt")) or firing is False
        under = rate is not None and rate < self.settings.error_rate_threshold
        if rate is not None:
            self._patch(obj, {"errorRate": _rate(rate)})
        if (under and resolved_alert) or (rate is None and st.get("alertResolvedAt")):
            created = _t(obj["metadata"]["creationTimestamp"])
            REMEDIATION_SECONDS.observe((self.clock() - created).total_seconds())
            self._patch(obj, {"resolvedAt": now_iso(self.clock())}, Phase.RESOLVED,
                        ("Ready", "True", Phase.RESOLVED,
                         "error rate under threshold and alert resolved"))
            self.kube.event(obj, Phase.RESOLVED, f"signature errors back to {_rate(rate)}/s")
            return Phase.RESOLVED
        started = _t(st.get("verifyStartedAt") or now_iso(self.clock()))
        if (self.clock() - started).total_seconds() > self.settings.seconds("verify_timeout"):
            return self._next_candidate(obj, f"scenario {st.get('scenario')} did not bring the "
                                             "error rate down")
        return Phase.VERIFYING

    def _next_candidate(self, obj: dict[str, Any], why: str,
                        extra: dict[str, Any] | None = None) -> str:
        st = obj["status"]
        cands = list(st.get("candidates") or [])
        tried = list(st.get("tried") or []) + [st.get("scenario")]
        rest = [c for c in cands if c not in tried]
        self.kube.event(obj, "ScenarioFailed", why, "Warning")
        if not rest:
            self._escalate(obj, "RemediationFailed", why,
                           {"tried": tried, "pendingActions": None, **(extra or {})})
            return Phase.ESCALATED
        self._patch(obj, {"tried": tried, "scenario": rest[0], "pendingActions": None,
                          "cause": INCIDENT_CAUSE_OF.get(rest[0], st.get("cause")),
                          **(extra or {})},
                    Phase.DIAGNOSING, ("Ready", "False", "NextCandidate",
                                   f"{why}; trying scenario {rest[0]}"))
        return self._gate(obj)

    def _escalate(self, obj: dict[str, Any], reason: str, message: str,
                  extra: dict[str, Any] | None = None) -> None:
        self._patch(obj, {"escalatedAt": now_iso(self.clock()), **(extra or {})}, Phase.ESCALATED,
                    ("Ready", "False", reason, message))
        self.kube.event(obj, Phase.ESCALATED, message, "Warning")
        url = self.settings.notification_url
        if url:
            body = json.dumps({"incident": obj["metadata"]["name"],
                               "namespace": obj["metadata"]["namespace"], "reason": reason,
                               "message": message, "target": self._target_id(obj),
                               "cause": obj["status"].get("cause"),
                               "scenario": obj["status"].get("scenario")}).encode()
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=5).close()
            except OSError as e:
                log.warning("escalation notification failed: %s", type(e).__name__)

    def _after_resolution(self, obj: dict[str, Any]) -> None:
        """Take back what the scenario held only for the incident (D: the tightened
        TOKEN_RATE) once the cool-down after resolution has passed."""
        st = obj.get("status") or {}
        step = st.get("restore")
        if not step or not st.get("resolvedAt"):
            return
        due = _t(st["resolvedAt"]) + timedelta(seconds=parse_duration(step["restoreAfter"]))
        if self.clock() < due:
            return
        # Older statuses (before the scenario was recorded with the step) came from D.
        scenario = str(step.get("scenario") or "D")
        impl = scenario_for(scenario)
        if impl.restore is None:  # pragma: no cover - held() without restore() is a bug
            raise RuntimeError(f"scenario {scenario} holds a change it cannot restore")
        ctx = self._ctx(obj, Evidence())
        try:
            restored = impl.restore(ctx, step)
        except Conflict:
            return
        self._patch(obj, {"actions": self._actions(obj, [restored], scenario, "restored"),
                          "restore": None})
        self.kube.event(obj, f"Scenario{scenario}Restored", restored["summary"])


UNKNOWN_USER = "unknown (spec changed without kubectl sigops)"


def decided_by(spec: dict[str, Any], scenario: str, decision: str) -> dict[str, Any]:
    """Who approved or denied ``scenario``: the last matching entry of ``spec.decisions``
    (``kubectl sigops approve|deny`` writes the user the API server named), else unknown.

    >>> decided_by({"decisions": [{"scenario": "E", "decision": "approve", "user": "ann"}]},
    ...            "E", "approve")["user"]
    'ann'
    """
    for d in reversed(spec.get("decisions") or []):
        if isinstance(d, dict) and d.get("scenario") == scenario \
                and d.get("decision") == decision and d.get("user"):
            return {k: d[k] for k in ("user", "uid", "groups", "at") if d.get(k)}
    return {"user": UNKNOWN_USER}


def decision_step(decision: str, scenario: str, who: dict[str, Any]) -> dict[str, Any]:
    """The signed action record of a person's decision on a scenario."""
    verb = "approved" if decision == "approve" else "denied"
    return {"action": decision, "by": who,
            "summary": f"Scenario {scenario} {verb} by {who['user']}"}


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
