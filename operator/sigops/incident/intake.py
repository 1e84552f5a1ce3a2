"""Alert intake: the Alertmanager webhook (``POST /v1/alerts``) and the Prometheus ``ALERTS``
poll, both deduped into one SignatureIncident per alert.

- The bearer token is compared in constant time; anything else is 401, counted and logged as a
  potential attack (source address and reason; never the token or the payload). The token file
  is re-read when it changes (:class:`TokenFile`), so a rotated Secret needs no restart.
- HTTP itself is served elsewhere (``sigops.runtime.web``): :func:`gate` and :func:`receive`
  say what to answer, whatever serves the socket.
- Dedupe on group key + fingerprint + status, and on the incident that holds a fingerprint, so
  1,000 identical posts (or a post and a poll) make one incident. An incident holds its alerts
  while it is worked on and, once escalated, until they resolve (:func:`holds`): the same
  alert still firing, or firing for another pod of the target, opens no second incident. The
  API calls for one alert run outside the intake lock, one alert per fingerprint at a time:
  duplicates of an alert in flight wait for its outcome (and take over if it failed), other
  alerts go on.
- An alert maps only to a configured target (:mod:`.alert_targets`); an alert for anything
  else opens nothing, is counted (``sigops_alerts_dropped_total{reason}``) and logged.
- A webhook alert uses its target's rate limit only once the configured Prometheus confirms
  it: the alert fires there for that target (its ``ALERTS`` series), or the target's error
  rate is over the threshold. Anyone who can post to Alertmanager can make it send an alert;
  without this, three forged alerts an hour would rate-limit a real spike of that target. The
  poll reads ``ALERTS`` from the configured Prometheus itself. Where that Prometheus cannot
  answer, the alert is taken as it comes (detection outlives a Prometheus outage).
- Each new incident is a signal of its target; more than 3 per hour per target are
  rate-limited: the first creates a ``SignalRateLimited`` record (Event + an incident in phase
  RateLimited, itself signed), later ones only count. The window survives restarts (ConfigMap).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.errors import MalformedInput
from ..core.ratelimit import Decision, SlidingWindowLimiter
from ..core.signals import rejection_record
from ..core.strictjson import loads
from ..core.timeparse import now_iso, parse_duration, parse_time
from ..kube.api import GROUP, VERSION, Conflict, Forbidden, Kube, KubeError, NotFound
from ..prometheus.client import Prom
from ..settings import Settings, Target
from ..settings.tokens import TokenFile
from ..signing.records import Signer
from ..telemetry.metrics import (
    ALERTS_DROPPED,
    ALERTS_RECEIVED,
    SIGNALS_RATE_LIMITED,
    SIGNALS_REJECTED,
)
from .alert_targets import UNCONFIRMED, AlertTarget, alert_target
from .alertmanager import AlertInfo, WebhookError, alert_fingerprint, parse_webhook
from .model import Phase
from .reconciler import OPEN, RATE_LIMITED_LABEL

__all__ = ["AlertIntake", "Admission", "admit", "gate", "receive", "Reply", "TokenFile",
           "read_token", "signal_source", "MAX_BODY"]

log = logging.getLogger("sigops.alerts")
attack_log = logging.getLogger("sigops.security")
MAX_BODY = 1 << 20
FP_LABEL = "sigops.fractal-lba.io/alert-fingerprint"
RATELIMIT_CM = "sigops-ratelimit"
SEQ_ANNOTATION = "sigops.fractal-lba.io/state-seq"


def signal_source(target: Target) -> str:
    """The rate limit's source of an alert signal: the backend it is about (namespace/name),
    so each backend has its own window whichever route the alert came by."""
    return f"{target.namespace}/{target.deployment}"


@dataclass(frozen=True)
class Admission:
    """What to do with one signal, as the limiter decided."""

    decision: Decision
    save: bool
    """Persist the limiter state before acting: what a restart must know is every accepted
    signal and that the rate-limited record exists. Later refusals only count up."""
    record: bool
    """Open the SignalRateLimited record (the first refusal of a window only)."""


# Labels that name one instance of a target (a pod, a scrape endpoint): an alert that differs
# from another only in these is the same alert of the same backend.
INSTANCE_LABELS = frozenset({"pod", "pod_name", "instance", "container", "endpoint", "node",
                             "kubernetes_pod_name"})


def _without_instance(labels: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in labels.items() if k not in INSTANCE_LABELS}


def admit(limiter: SlidingWindowLimiter, source: str) -> Admission:
    """Count one signal from ``source`` (the caller holds the intake's lock)."""
    d = limiter.check(source)
    return Admission(d, save=d.allowed or d.first_limited,
                     record=not d.allowed and d.first_limited)


class AlertIntake:
    """Turns alerts into SignatureIncidents, once each."""

    def __init__(self, kube: Kube, prom: Prom, settings: Settings, signer: Signer,
                 operator_namespace: str, token: str | TokenFile | None) -> None:
        self.kube, self.prom, self.settings, self.signer = kube, prom, settings, signer
        self.operator_namespace = operator_namespace
        # A file is re-read when it changes; a string (tests, in process) is fixed.
        self.token: bytes | TokenFile | None = None
        if isinstance(token, TokenFile):
            self.token = token
        elif token:
            self.token = token.encode()
        self.active = threading.Event()
        """Clear while this copy stands by for another (leader election): posts get 503."""
        self.active.set()
        self.lock = threading.Lock()  # held for in-memory state only, never across API calls
        self._saved_seq = 0  # sequence of the newest rate-limit state handed to a writer
        self.inflight: dict[str, threading.Event] = {}  # fingerprint -> done
        self.seen: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()
        self.open: dict[str, tuple[str, str]] = {}  # fingerprint -> (ns, incident name)
        self.poll_seen: set[str] = set()  # fingerprints the poll saw firing, until released
        self.poll_absent: dict[str, tuple[float, int]] = {}  # fp -> (absent since, polls)
        self.release_after = 300.0
        """Seconds an alert the poll saw must then be absent from it to count as resolved
        (as long as Alertmanager takes to resolve one Prometheus stopped sending)."""
        self.target_locks: dict[str, threading.Lock] = {}  # signal source -> its lock
        self.limiter = SlidingWindowLimiter(settings.signal_rate_limit,
                                            parse_duration(settings.signal_rate_window))
        self._load_limiter()

    # -- rate-limit state ------------------------------------------------------------------

    def become_active(self) -> None:
        """This copy now acts: take the rate-limit state the previous active copy saved."""
        self._load_limiter()
        self.active.set()

    def _load_limiter(self) -> None:
        try:
            cm = self.kube.read_config_map(self.operator_namespace, RATELIMIT_CM)
            if cm is not None:
                self.limiter.load_state(json.loads((cm.data or {}).get("state.json", "{}")))
                # Saves from here on must count as newer than the one loaded, whatever this
                # node's clock says.
                saved = (cm.metadata.annotations or {}).get(SEQ_ANNOTATION, "")
                if saved.isdigit():
                    self._saved_seq = int(saved)
        except KubeError as e:
            log.warning("cannot read rate-limit state: %s", e.status)
        except ValueError:
            log.warning("rate-limit state unreadable; starting empty")

    def _save_limiter(self) -> None:
        """Save the limiter state. The state and its sequence number are taken under the lock;
        the write happens outside it (a hung API server must not stall intake), and a write
        never replaces a newer state than its own (the sequence is in an annotation)."""
        with self.lock:
            self._saved_seq = max(time.time_ns(), self._saved_seq + 1)
            seq, state = self._saved_seq, json.dumps(self.limiter.to_state())
        self._write_limiter(state, seq)

    def _write_limiter(self, state: str, seq: int, attempts: int = 5) -> None:
        for attempt in range(attempts):
            cm = self.kube.read_config_map(self.operator_namespace, RATELIMIT_CM)
            saved = ((cm.metadata.annotations or {}) if cm is not None else {}).get(SEQ_ANNOTATION)
            if saved is not None and saved.isdigit() and int(saved) >= seq:
                return  # a newer state is saved already
            try:
                self.kube.write_config_map(self.operator_namespace, RATELIMIT_CM,
                                           {"state.json": state}, cm,
                                           annotations={SEQ_ANNOTATION: str(seq)})
                return
            except Conflict:
                if attempt == attempts - 1:
                    raise

    # -- targets ---------------------------------------------------------------------------

    def target_for(self, labels: dict[str, str]) -> AlertTarget:
        """The configured target the alert's labels name, or why there is none."""
        return alert_target(self.settings, labels)

    def confirmed(self, alert: AlertInfo, target: Target) -> bool | None:
        """Does the configured Prometheus confirm this alert of ``target``? True when the
        alert fires there for that target or the target's error rate is over the threshold;
        False when Prometheus answers neither; None when it is not configured or cannot
        answer (then nothing can be checked)."""
        if not self.prom.configured:
            return None
        firing = self.prom.firing(self.settings.alert_name)
        if firing is None:
            return None  # unreachable: do not wait out its retries a second time
        if any(self.target_for(_alert_labels(labels)).target == target for labels in firing):
            return True
        rate = self.prom.scalar(self.settings.error_query(target.namespace, target.deployment))
        if rate is None:
            return None
        return rate > self.settings.error_rate_threshold

    # -- incidents ---------------------------------------------------------------------------

    def _find_open(self, ns: str, alert: AlertInfo) -> dict[str, Any] | None:
        """The incident that holds this alert (:meth:`holds`), by its fingerprint."""
        fp = alert.fingerprint
        known = self.open.get(fp)
        if known:
            obj = self.kube.get_cr(known[0], "signatureincidents", known[1])
            if obj and self.holds(obj, alert):
                return obj
            self.open.pop(fp, None)
        items = self.kube.list_cr(ns, "signatureincidents", f"{FP_LABEL}={fp}")
        for obj in items:
            if self.holds(obj, alert):
                self.open[fp] = (ns, obj["metadata"]["name"])
                return obj
        # An alert that joined another alert's incident (after a restart: not in memory).
        for obj in self.kube.list_cr(ns, "signatureincidents"):
            st = obj.get("status") or {}
            if fp in (st.get("relatedAlerts") or []) and self.holds(obj, alert):
                self.open[fp] = (ns, obj["metadata"]["name"])
                return obj
        return None

    def holds(self, inc: dict[str, Any], alert: AlertInfo | None = None) -> bool:
        """:func:`holds` with this intake's clock and ``escalated_hold``."""
        return holds(inc, alert, now=datetime.now(UTC),
                     hold_seconds=self.settings.seconds("escalated_hold"))

    def _open_of_target(self, target: Target) -> dict[str, Any] | None:
        """The incident of ``target`` that holds its alerts (one still worked on first, then
        the oldest; never a rate-limited record), if any."""
        items = self.kube.list_cr(target.namespace, "signatureincidents")
        mine = [i for i in items
                if ((i.get("spec") or {}).get("target") or {}).get("deployment")
                == target.deployment
                and self.holds(i)
                and RATE_LIMITED_LABEL not in (i["metadata"].get("labels") or {})]
        # One still worked on before an escalated one that a person has.
        mine.sort(key=lambda i: (((i.get("status") or {}).get("phase") or Phase.DETECTED)
                                 not in OPEN, i["metadata"].get("creationTimestamp", ""),
                                 i["metadata"]["name"]))
        return mine[0] if mine else None

    def _join_open_of_target(self, target: Target, alert: AlertInfo) -> str | None:
        """The same alert of the same target from another instance (the rule firing for each
        backend pod: the labels differ only in ``pod``, ``instance`` ...) joins the open
        incident instead of opening a second one that would act on the same backend at the
        same time. The incident's alert counts as resolved only once every alert that joined
        it has resolved. Alerts that differ otherwise stay incidents of their own."""
        fp = alert.fingerprint
        inc = self._open_of_target(target)
        if inc is None:
            return None
        theirs = ((inc.get("spec") or {}).get("alert") or {}).get("labels") or {}
        if theirs == alert.labels or \
                _without_instance(theirs) != _without_instance(alert.labels):
            return None
        name = str(inc["metadata"]["name"])
        related = list((inc.get("status") or {}).get("relatedAlerts") or [])
        if fp not in related:
            self.kube.patch_status(target.namespace, "signatureincidents", name,
                                   {"relatedAlerts": [*related, fp]})
        self.open[fp] = (target.namespace, name)
        log.info("alert %s joined incident %s/%s (same target)", fp, target.namespace, name,
                 extra={"incident": f"{target.namespace}/{name}"})
        return name

    def _resolve(self, target: Target, name: str, *fps: str) -> None:
        inc = self.kube.get_cr(target.namespace, "signatureincidents", name) or {}
        st = inc.get("status") or {}
        alerts = alerts_of(inc)
        resolved = sorted({*(st.get("resolvedAlerts") or []), *fps})
        patch: dict[str, Any] = {"resolvedAlerts": resolved}
        if alerts <= set(resolved):
            patch["alertResolvedAt"] = now_iso()
        self.kube.patch_status(target.namespace, "signatureincidents", name, patch)

    def handle(self, alert: AlertInfo, path: str) -> str:
        """One alert: created, joined, duplicate, resolved, rate_limited, ignored, or a
        reason it opened nothing (:data:`.alert_targets.REASONS`).

        A duplicate of an alert whose API calls are in flight waits for them: then it is a
        duplicate, or (the first one failed) it is handled in its place, so a failure never
        turns the copies that Alertmanager sent alongside into acknowledged losses."""
        if alert.name != self.settings.alert_name:
            return "ignored"
        fp = alert.fingerprint
        while True:
            with self.lock:
                if alert.dedupe_key in self.seen:
                    self.seen.move_to_end(alert.dedupe_key)
                    return "duplicate"
                busy = self.inflight.get(fp)
                if busy is None:
                    done = self.inflight[fp] = threading.Event()
                    break
            busy.wait(30.0)  # the holder's API calls time out after 15 s each
        try:
            result = self._handle_alert(alert, path)
            if result != UNCONFIRMED:
                # An unconfirmed alert is not remembered: a copy sent later (Alertmanager's
                # repeat) is checked again. One with no configured target stays dropped.
                # The poll's are forgotten when the alert is gone from a poll (poll_once).
                with self.lock:
                    self.seen[alert.dedupe_key] = time.time()
                    while len(self.seen) > 50000:
                        self.seen.popitem(last=False)
            ALERTS_RECEIVED.labels(path, result).inc()
            return result
        finally:
            with self.lock:
                del self.inflight[fp]
            done.set()

    def _handle_alert(self, alert: AlertInfo, path: str) -> str:
        """The API side of one alert; only one per fingerprint runs at a time, and only one
        per target (two alerts of one target must not both open an incident)."""
        found = self.target_for(alert.labels)
        target = found.target
        if target is None:
            return self._drop(alert, path, found.reason)
        with self._target_lock(target):
            return self._handle_for_target(alert, target, path)

    def _target_lock(self, target: Target) -> threading.Lock:
        """The lock of ``target``'s incidents: one writer of them at a time in this copy."""
        with self.lock:
            return self.target_locks.setdefault(signal_source(target), threading.Lock())

    def _handle_for_target(self, alert: AlertInfo, target: Target, path: str) -> str:
        inc = self._find_open(target.namespace, alert)
        name = None if inc is None else str(inc["metadata"]["name"])
        if alert.status == "resolved":
            if name:
                self._resolve(target, name, alert.fingerprint)
                return "resolved"
            return "duplicate"
        if inc is not None and name:
            resolved = (inc.get("status") or {}).get("resolvedAlerts") or []
            if alert.fingerprint in resolved:
                # It resolved and fires again while the incident still holds the others: it
                # counts as firing again (else the incident's alert would count as resolved
                # once the others resolve, this one still firing).
                self.kube.patch_status(target.namespace, "signatureincidents", name, {
                    "resolvedAlerts": [f for f in resolved if f != alert.fingerprint]})
            return "duplicate"
        joined = self._join_open_of_target(target, alert)
        if joined:
            return "joined"
        if path != "prometheus-poll":
            confirmed = self.confirmed(alert, target)
            if confirmed is False:
                return self._drop(alert, path, UNCONFIRMED, target)
            if confirmed is None and self.prom.configured:
                log.warning("alert %s: Prometheus cannot confirm it now; taken as it came",
                            _shown(alert.fingerprint))
        with self.lock:
            adm = admit(self.limiter, signal_source(target))
        decision = adm.decision
        try:
            if adm.save:
                self._save_limiter()
            if not decision.allowed:
                if adm.record:
                    self._create(alert, target, path, rate_limited=decision.record())
                SIGNALS_RATE_LIMITED.inc()
                return "rate_limited"
            self._create(alert, target, path)
            return "created"
        except BaseException:
            # Nothing was opened for this signal: do not count it, or the sender's retry
            # would be counted twice.
            with self.lock:
                self.limiter.undo(decision)
            try:
                self._save_limiter()
            except Exception:  # noqa: BLE001 - best effort; the failure itself is raised
                log.warning("cannot save the rate-limit state after a failed signal")
            raise

    def _drop(self, alert: AlertInfo, path: str, reason: str,
              target: Target | None = None) -> str:
        """Count and log an alert that opens nothing (``reason`` is one of
        :data:`.alert_targets.REASONS`). The labels are the sender's: logged only as the
        target they name, cut short and escaped."""
        ALERTS_DROPPED.labels(path, reason).inc()
        named = (signal_source(target) if target is not None else
                 "/".join(_shown(alert.labels.get(k)) for k in (
                     self.settings.namespace_label, self.settings.deployment_label)))
        log.warning("alert %s (%s) opens nothing: %s (%s)", _shown(alert.fingerprint), path,
                    reason, named, extra={"reason": reason})
        return reason

    def _create(self, alert: AlertInfo, target: Target, path: str,
                rate_limited: dict[str, Any] | None = None) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
            "metadata": {"generateName": "flk-sig-", "namespace": target.namespace,
                         "labels": {FP_LABEL: alert.fingerprint[:63],
                                    "app.kubernetes.io/managed-by": "sigops",
                                    **({RATE_LIMITED_LABEL: "true"} if rate_limited else {})}},
            "spec": {"target": {"namespace": target.namespace,
                                "deployment": target.deployment},
                     "source": path,
                     "alert": {"name": alert.name, "fingerprint": alert.fingerprint,
                               "groupKey": alert.group_key[:1024], "startsAt": alert.starts_at,
                               "labels": alert.labels, "value": alert.value}},
        }
        obj = self.kube.create_cr(target.namespace, "signatureincidents", body)
        name = obj["metadata"]["name"]
        if rate_limited is None:
            self.open[alert.fingerprint] = (target.namespace, name)
            log.info("incident %s/%s opened from %s (alert %s)", target.namespace, name, path,
                     alert.fingerprint, extra={"incident": f"{target.namespace}/{name}",
                                               "target": signal_source(target)})
            return
        record = self.signer.record([], "signal.rate_limited",
                                    f"{target.namespace}/{target.deployment}", **rate_limited)
        msg = (f"more than {self.settings.signal_rate_limit} signals per "
               f"{self.settings.signal_rate_window} from {rate_limited['source']}: "
               "rate-limited, not remediated")
        self.kube.patch_status(target.namespace, "signatureincidents", name, {
            "phase": "RateLimited", "rateLimited": record,
            "conditions": [{"type": "Ready", "status": "False", "reason": "SignalRateLimited",
                            "message": msg, "lastTransitionTime": now_iso()}]})
        self.kube.event(obj, "SignalRateLimited", msg, "Warning")
        log.warning("SignalRateLimited: %s", msg)

    # -- the poll ----------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Open incidents for firing alerts Prometheus knows (Alertmanager may be down), and
        let an escalated incident go of alerts that stopped (the resolved notification may
        never come: Alertmanager down, or none at all): an alert this poll saw firing that has
        then been absent from every answer for :attr:`release_after` seconds (and at least
        two polls) counts as resolved. Each firing alert is handled once per episode: ALERTS
        carry no startsAt, so an episode here is the polls that saw it without a gap."""
        alerts = self.prom.firing(self.settings.alert_name)
        if alerts is None:
            return 0  # no answer: nothing is taken as resolved
        infos = []
        for labels in alerts:
            labels = _alert_labels(labels)
            infos.append(AlertInfo(labels.get("alertname", ""), "firing",
                                   alert_fingerprint(labels), labels,
                                   group_key="prometheus-poll"))
        firing = {a.fingerprint for a in infos}
        now = time.monotonic()
        released: set[str] = set()
        with self.lock:
            for fp in self.poll_seen - firing:
                # A gap: the next time it fires is another episode, handled again.
                self.seen.pop(("prometheus-poll", fp, "firing", ""), None)
                since, polls = self.poll_absent.get(fp, (now, 0))
                if polls + 1 >= 2 and now - since >= self.release_after:
                    released.add(fp)
                else:
                    self.poll_absent[fp] = (since, polls + 1)
            for fp in released:
                self.poll_seen.discard(fp)
                self.poll_absent.pop(fp, None)
            for fp in firing:
                self.poll_absent.pop(fp, None)
            self.poll_seen |= firing
        if released:
            self._release_escalated(released)
        return sum(self.handle(a, "prometheus-poll") == "created" for a in infos)

    def _release_escalated(self, released: set[str]) -> None:
        """Mark ``released`` resolved on each escalated incident of a configured target that
        still holds them (listed under the target's lock; :meth:`_resolve` reads it again)."""
        for t in self.settings.targets:
            with self._target_lock(t):
                for inc in self.kube.list_cr(t.namespace, "signatureincidents"):
                    st = inc.get("status") or {}
                    if ((inc.get("spec") or {}).get("target") or {}).get("deployment") \
                            != t.deployment or st.get("phase") != Phase.ESCALATED \
                            or st.get("alertResolvedAt"):
                        continue
                    gone = (alerts_of(inc) & released) - set(st.get("resolvedAlerts") or [])
                    if not gone:
                        continue
                    name = inc["metadata"]["name"]
                    self._resolve(t, name, *sorted(gone))
                    log.info("escalated incident %s/%s: %d of its alerts no longer fire in "
                             "Prometheus", t.namespace, name, len(gone),
                             extra={"incident": f"{t.namespace}/{name}"})

    def poll_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.alert_poll_interval):
            if not self.active.is_set():
                continue  # a copy that stands by (or lost its lease) writes nothing
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poll must outlive any one failure
                log.exception("ALERTS poll failed")

    # -- the webhook -------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self.token is None or not header or not header.startswith("Bearer "):
            return False
        presented = header[7:].strip().encode()
        if isinstance(self.token, TokenFile):
            return self.token.matches(presented)
        return hmac.compare_digest(presented, self.token)


def alerts_of(inc: dict[str, Any]) -> set[str]:
    """The fingerprints of an incident's alert and of those that joined it."""
    own = ((inc.get("spec") or {}).get("alert") or {}).get("fingerprint")
    related = (inc.get("status") or {}).get("relatedAlerts") or []
    return {a for a in [own, *related] if a}


def holds(inc: dict[str, Any], alert: AlertInfo | None = None, *,
          now: datetime | None = None, hold_seconds: float | None = None) -> bool:
    """Whether the incident ``inc`` still holds its alerts, so that a copy of one of them
    (Alertmanager's repeat, the poll, a restarted operator) or the same rule firing for
    another pod of its target is this incident's and opens no other: while it is worked on,
    and once escalated until its alerts resolve (a person has it now; a new incident for the
    same still-firing alert would only diagnose it again and use up the target's signals).

    What ends an escalated incident's hold: its alerts resolved (Alertmanager's resolved
    notifications, or the poll no longer seeing them fire: :meth:`AlertIntake.poll_once`),
    ``hold_seconds`` since it escalated (``escalated_hold``, at ``now``; one with no
    ``escalatedAt`` holds nothing), or ``alert`` being the incident's own alert of a later
    episode (a later ``startsAt``; Alertmanager may move an episode's start earlier when it
    merges, so an earlier one is the same episode). A resolved notification belongs to the
    incident of its own episode only (the same ``startsAt``), whatever the phase."""
    st = inc.get("status") or {}
    phase = st.get("phase") or Phase.DETECTED
    own = ((inc.get("spec") or {}).get("alert") or {})
    resolved = alert is not None and alert.status == "resolved"
    other_episode = bool(alert is not None and alert.starts_at and own.get("startsAt")
                         and own.get("fingerprint") == alert.fingerprint
                         and (alert.starts_at != own["startsAt"] if resolved
                              else _later(alert.starts_at, own["startsAt"])))
    if phase in OPEN:
        return not (other_episode and resolved)
    if phase != Phase.ESCALATED or st.get("alertResolvedAt") or other_episode:
        return False
    if hold_seconds is not None:
        try:
            at = parse_time(st["escalatedAt"])
        except (KeyError, MalformedInput):
            return False
        if (now or datetime.now(UTC)) - at > timedelta(seconds=hold_seconds):
            return False
    return True


def _later(a: str, b: str) -> bool:
    """``a`` is a later time than ``b`` (two startsAt); either unreadable: they differ."""
    try:
        return parse_time(a) > parse_time(b)
    except MalformedInput:
        return a != b


def _alert_labels(series: dict[str, str]) -> dict[str, str]:
    """An alert's labels from its ``ALERTS`` series."""
    return {k: v for k, v in series.items() if k not in ("__name__", "alertstate")}


def _shown(value: object, limit: int = 63) -> str:
    """A sender's string as a log may show it: escaped, cut at ``limit`` characters."""
    text = json.dumps(str(value) if value is not None else "", ensure_ascii=True)[1:-1]
    return text[:limit] + ("..." if len(text) > limit else "")


def reject(reason: str, source: str, raw: Any = None) -> None:
    SIGNALS_REJECTED.labels(reason).inc()
    attack_log.warning(json.dumps(rejection_record(reason, source, raw)))


@dataclass(frozen=True)
class Reply:
    """The answer to one webhook request, whatever serves HTTP."""

    code: int
    body: dict[str, Any]


def gate(intake: AlertIntake, path: str, authorization: str | None, length: int | None,
         source: str) -> Reply | None:
    """What to answer before the body is read (wrong path, no or wrong token, a declared body
    too large), or None to read the body and :func:`receive` it. The token is checked first:
    an unauthenticated client learns nothing else."""
    if path != "/v1/alerts":
        return Reply(404, {"error": "not found"})
    if not intake.authorized(authorization):
        reject("unauthorized" if authorization else "no_token", source)
        return Reply(401, {"error": "unauthorized"})
    if not intake.active.is_set():
        # Another copy acts: Alertmanager retries a 5xx (and the Service may pick that one).
        return Reply(503, {"error": "standby: another sigops copy is active; retry"})
    if length is not None and not 0 <= length <= MAX_BODY:
        return too_large(source)
    return None


def too_large(source: str) -> Reply:
    reject("oversized", source)
    return Reply(413, {"error": f"body must be 0..{MAX_BODY} bytes"})


def receive(intake: AlertIntake, raw: bytes, source: str) -> Reply:
    """An authorized webhook body: parse it and hand each alert to the intake. Blocking (API
    calls): run it off the server's event loop."""
    try:
        alerts = parse_webhook(loads(raw, MAX_BODY))
    except WebhookError as e:
        reject("bad_schema", source)
        return Reply(400, {"error": str(e)})
    except Exception as e:  # noqa: BLE001 - MalformedInput and anything odd
        reject("bad_json", source)
        return Reply(400, {"error": getattr(e, "reason", "invalid JSON")})
    results: dict[str, int] = {}
    try:
        for a in alerts:
            r = intake.handle(a, "alertmanager")
            results[r] = results.get(r, 0) + 1
    except KubeError as e:
        if isinstance(e, Forbidden | NotFound):
            # Not a transient failure: a retry would fail the same way.
            log.error("cannot open an incident (API %s): is the alert's namespace "
                      "one sigops has permissions in (a configured target)?", e.status)
            return Reply(422, {"error": "target namespace not managed by sigops"})
        log.error("API server error while opening an incident: %s", e.status)
        return Reply(503, {"error": "API server unavailable; Alertmanager will retry"})
    except Exception as e:  # noqa: BLE001 - API server unreachable (urllib3) and such
        log.error("cannot reach the API server to open an incident: %s", type(e).__name__)
        return Reply(503, {"error": "API server unavailable; Alertmanager will retry"})
    return Reply(200, {"results": results})


def read_token(path: str | None) -> TokenFile | None:
    """The token file of ``--alerts-token-file`` (None when not given); an unreadable or
    empty file at start-up is an error (OSError, ValueError)."""
    if not path:
        return None
    return TokenFile(path, what="alerts token file")
