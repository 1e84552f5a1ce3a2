"""``sigops run``: the kopf operator, its alert receiver and its metrics endpoint."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import kopf

from ..incident.reconciler import TERMINAL_INCIDENT
from ..kube.api import GROUP, VERSION, Kube
from ..kube.lease import Lease
from ..prometheus.client import Prom, PromAuth, PromConfigError
from ..rotation.model import DEFAULT_OVERLAP, window_seconds
from ..rotation.model import TERMINAL as KR_TERMINAL
from ..settings import Settings, load_settings
from ..signing.records import Signer
from ..signing.store import ensure_signing_key
from ..telemetry.metrics import (
    ACTIONS,
    HEARTBEAT_AGE,
    INCIDENT_PHASES,
    LEADER,
    LIVE,
    READY,
    ROTATION_OVERDUE,
    ROTATION_STEPS,
    ROTATIONS_OPEN,
    UP,
)
from .health import PARTS, Health

__all__ = ["main", "Operator", "register"]

log = logging.getLogger("sigops")
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_MAX_AGE = 60.0
"""A part whose heartbeat is older than this is stuck (liveness fails)."""


class Operator:
    """Everything the handlers share: API access, Prometheus, settings, the signing key."""

    def __init__(self, kube: Kube, prom: Prom, settings: Settings, signer: Signer,
                 operator_namespace: str, health: Health | None = None) -> None:
        from ..incident.reconciler import IncidentReconciler
        from ..rotation.reconciler import RotationReconciler

        self.kube, self.prom, self.settings, self.signer = kube, prom, settings, signer
        self.operator_namespace = operator_namespace
        self.rotations = RotationReconciler(kube, prom, settings, signer,
                                            operator_namespace=operator_namespace)
        self.incidents = IncidentReconciler(kube, prom, settings, signer,
                                            operator_namespace=operator_namespace)
        from ..audit.reconciler import AuditReconciler

        self.audits = AuditReconciler(kube, settings, signer)
        self.health = health or Health()
        self.stop = threading.Event()
        self.leading: Callable[[], bool] = lambda: True
        """False while this copy cannot be sure it still holds the leader Lease."""

    def require_leading(self) -> None:
        if not self.leading():
            raise kopf.TemporaryError("this copy is not sure it still leads; later", delay=5)

    def check_api_forever(self, interval: float = 10.0) -> None:
        """Readiness: ask the API server for its version every ``interval`` seconds."""
        while True:
            error = self.kube.reachable()
            self.health.api_result(error is None, error or "")
            if self.stop.wait(interval):
                return

    def keep_last_known_good(self) -> None:
        """Snapshot each configured target's template while it is healthy (for scenario E)."""
        from ..backend.lkg import take_snapshot
        from ..incident.reconciler import OPEN

        while not self.stop.wait(max(self.settings.reconcile_interval, 1.0) * 4):
            for t in self.settings.targets:
                try:
                    self.sign_revocations(t)
                except Exception:  # noqa: BLE001 - keep looking after other targets
                    log.exception("signing the revocations of %s/%s failed", t.namespace,
                                  t.deployment)
                try:
                    open_incidents = [
                        i for i in self.kube.list_cr(t.namespace, "signatureincidents")
                        if ((i.get("status") or {}).get("phase") or "Detected") in OPEN
                        and ((i.get("spec") or {}).get("target") or {}).get("deployment")
                        == t.deployment]
                    if open_incidents:
                        continue
                    if self.prom.configured:
                        rate = self.prom.scalar(self.settings.error_query(t.namespace,
                                                                          t.deployment))
                        if rate is None or rate >= self.settings.error_rate_threshold:
                            continue
                    take_snapshot(self.kube, t.namespace, t.deployment,
                                  self.settings.seconds("last_known_good_after"))
                except Exception:  # noqa: BLE001 - keep snapshotting other targets
                    log.exception("last-known-good snapshot of %s/%s failed", t.namespace,
                                  t.deployment)


    def sign_revocations(self, target: Any) -> int:
        """Sign each revocation a person recorded in a target's key ring (``kubectl sigops
        revoke`` writes it with her own rights): the ring entry gains ``revocation_record``, a
        record signed by the operator naming the key, when and by whom, and an Event on the
        Deployment says so. Returns how many were signed."""
        from ..backend.config import EnvNames
        from ..backend.deployment import Backend
        from ..kube.api import Conflict

        backend = Backend(self.kube, target.namespace, target.deployment, target.container,
                          EnvNames.from_spec(target.env.model_dump(by_alias=True)))
        ring, existing = backend.read_ring()
        fresh = [e for e in (ring.entries if ring else [])
                 if e.get("state") == "revoked" and not e.get("revocation_record")]
        if ring is None or not fresh:
            return 0
        for e in fresh:
            key = ring.key(e.get("kid"))
            e["revocation_record"] = self.signer.record(
                [], "keyring.revocation", f"{target.namespace}/{target.deployment}",
                kid=e.get("kid"), fingerprint=key.fingerprint if key else None,
                revoked_at=e.get("revoked_at"), revoked_by=e.get("revoked_by"),
                reason=e.get("revoked_reason"))
        primary = ring.key(ring.primary) or (ring.key(fresh[0].get("kid")))
        try:
            backend.write_ring(ring, primary.alg if primary else "hmac-sha256", existing)
        except Conflict:
            return 0  # written in between: the next pass signs it
        dep = backend.deployment()
        for e in fresh:
            msg = (f"key {e.get('kid')} revoked at {e.get('revoked_at')} by "
                   f"{e.get('revoked_by')}: signed into the key ring's record")
            log.info("%s/%s: %s", target.namespace, target.deployment, msg,
                     extra={"target": f"{target.namespace}/{target.deployment}"})
            if dep is not None:
                self.kube.event({"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": dep["metadata"]}, "KeyRevoked", msg, "Warning")
        return len(fresh)


def register(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Attach the handlers to a kopf registry (one place, so tests can build their own)."""

    @kopf.on.login(registry=registry)
    def login(**kw: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as the kubernetes client: KUBECONFIG or in-cluster.
        return kopf.login_via_client(**kw)

    @kopf.on.startup(registry=registry)
    def startup(**kw: Any) -> None:
        settings: kopf.OperatorSettings = kw["settings"]
        # Timeouts: a dead API server must not hang a watch or a request forever.
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 30
        settings.posting.level = logging.WARNING
        settings.persistence.finalizer = "sigops.fractal-lba.io/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="sigops.fractal-lba.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="sigops.fractal-lba.io", key="last-handled-spec")

    beats: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def reconcile_heartbeat(**kw: Any) -> None:
        # The beat goes through kopf's own handler pool: a blocked event loop, or a pool whose
        # threads all hang in handlers, stops it and liveness fails.
        executor = kw["settings"].execution.executor
        loop = asyncio.get_running_loop()
        op.health.expect("reconcile", HEARTBEAT_MAX_AGE)

        async def beat_forever() -> None:
            while True:
                await loop.run_in_executor(executor, op.health.beat, "reconcile")
                await asyncio.sleep(HEARTBEAT_INTERVAL)

        beats.append(loop.create_task(beat_forever()))
        op.health.started.set()

    @kopf.on.cleanup(registry=registry)
    async def stop_heartbeat(**_: Any) -> None:
        for task in beats:
            task.cancel()

    # Finished objects have no timer at all: kopf stops a timer when its `when` filter stops
    # matching (re-checked on every change of the object), so many finished rotations and
    # incidents cost nothing while idle. The checks inside stay for the tick in flight.
    def rotation_open(status: Any, **_: Any) -> bool:
        return (status or {}).get("phase") not in KR_TERMINAL

    def incident_open(status: Any, **_: Any) -> bool:
        st = status or {}
        return not (st.get("phase") in TERMINAL_INCIDENT
                    or (st.get("phase") == "Resolved" and not st.get("restore")))

    @kopf.timer(GROUP, VERSION, "keyrotations", interval=op.settings.reconcile_interval,
                sharp=False, backoff=5, registry=registry, id="reconcile", when=rotation_open)
    def keyrotation_tick(**kw: Any) -> None:
        name, namespace = kw["name"], kw["namespace"]
        if not rotation_open(kw["status"]):
            return  # final: no API call at all
        op.require_leading()
        with op.health.working("reconcile", f"a step of keyrotation {namespace}/{name}"):
            # Read the object fresh: kopf's body may predate our own status patches.
            obj = op.kube.get_cr(namespace, "keyrotations", name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            before = (obj.get("status") or {}).get("phase")
            after = op.rotations.tick(obj)
        if after != before and after:
            ROTATION_STEPS.labels(after).inc()
        rotation_gauges(op.settings, obj, before, after)

    # Only an open rotation has something to undo: kopf adds the finalizer while the filter
    # matches and takes it off when the rotation ends, so a finished KeyRotation (or its
    # namespace) can be deleted even with no operator running.
    @kopf.on.delete(GROUP, VERSION, "keyrotations", registry=registry, id="undo",
                    when=rotation_open)
    def keyrotation_delete(**kw: Any) -> None:
        op.require_leading()
        with op.health.working("reconcile", f"undoing keyrotation {kw['namespace']}/"
                                            f"{kw['name']}"):
            obj = op.kube.get_cr(kw["namespace"], "keyrotations", kw["name"])
            if obj is not None:
                op.rotations.delete(obj)
                rotation_gauges(op.settings, obj, (obj.get("status") or {}).get("phase"),
                                "Aborted")

    @kopf.timer(GROUP, VERSION, "signatureincidents", interval=op.settings.reconcile_interval,
                sharp=False, backoff=5, registry=registry, id="reconcile", when=incident_open)
    def incident_tick(**kw: Any) -> None:
        if not incident_open(kw["status"]):
            return  # nothing left to do: no API call
        op.require_leading()
        with op.health.working("reconcile", f"a step of signatureincident {kw['namespace']}/"
                                            f"{kw['name']}"):
            obj = op.kube.get_cr(kw["namespace"], "signatureincidents", kw["name"])
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            # (tick patches obj's status in place: take what it was first)
            before = (obj.get("status") or {}).get("phase") or "Detected"
            after = op.incidents.tick(obj)
        if after and after != before:
            INCIDENT_PHASES.labels(after).inc()

    # SignatureAudits only when the config turns them on (the chart then grants the RBAC):
    # without it there is no watch on them at all.
    if op.settings.audit.enabled:
        from ..audit.reconciler import TERMINAL as AUDIT_TERMINAL

        def audit_open(status: Any, **_: Any) -> bool:
            return (status or {}).get("phase") not in AUDIT_TERMINAL

        @kopf.timer(GROUP, VERSION, "signatureaudits", interval=op.settings.reconcile_interval,
                    sharp=False, backoff=5, registry=registry, id="reconcile", when=audit_open)
        def audit_tick(**kw: Any) -> None:
            if not audit_open(kw["status"]):
                return
            op.require_leading()
            with op.health.working("reconcile", f"a step of signatureaudit {kw['namespace']}/"
                                                f"{kw['name']}"):
                obj = op.kube.get_cr(kw["namespace"], "signatureaudits", kw["name"])
                if obj is None or obj["metadata"].get("deletionTimestamp"):
                    return
                op.audits.tick(obj)


def rotation_gauges(settings: Settings, obj: dict[str, Any], before: str | None,
                    after: str | None) -> None:
    """``sigops_keyrotation_open{phase}`` and ``..._overdue_seconds`` of one rotation after a
    step; a finished rotation leaves both."""
    meta = obj["metadata"]
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    if before and before != after:
        try:
            ROTATIONS_OPEN.remove(ns, name, before)
        except KeyError:
            pass
    if after is None or after in KR_TERMINAL:
        for gauge, labels in ((ROTATIONS_OPEN, (ns, name, after or "")),
                              (ROTATION_OVERDUE, (ns, name))):
            try:
                gauge.remove(*labels)
            except KeyError:
                pass
        return
    ROTATIONS_OPEN.labels(ns, name, after).set(1)
    from datetime import UTC, datetime

    try:
        created = datetime.fromisoformat(str(meta.get("creationTimestamp")).replace(
            "Z", "+00:00"))
        window = window_seconds(str((obj.get("spec") or {}).get("overlap") or DEFAULT_OVERLAP),
                                settings.seconds("rollout_timeout"),
                                settings.seconds("overlap_probe_grace"))
    except ValueError:
        return
    age = (datetime.now(UTC) - created).total_seconds()
    ROTATION_OVERDUE.labels(ns, name).set(max(0.0, age - window))


def identity() -> str:
    """Who this operator is to kopf: the pod name in a cluster, else host and pid. kopf's own
    default asks the password database for the user, which fails for a UID with no entry (the
    chart's 65532, random-UID platforms)."""
    import socket

    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def main(args: argparse.Namespace) -> int:
    from .logs import configure

    try:
        configure(args.log_format or "text", os.environ.get("SIGOPS_LOG_LEVEL", "INFO"))
    except ValueError as e:
        sys.stderr.write(f"sigops: {e}\n")
        return 2
    # kopf logs every successful timer run at INFO: with many resources that is hundreds of
    # lines a second of noise. Failures (WARNING and up) still show.
    logging.getLogger("kopf.objects").setLevel(os.environ.get("SIGOPS_KOPF_LOG_LEVEL",
                                                              "WARNING"))
    from pydantic import ValidationError

    from .flags import overrides

    try:
        settings = load_settings(args.config)
        extra = overrides(args)
        if extra:
            settings = Settings.model_validate({**settings.model_dump(by_alias=True), **extra})
    except (ValueError, ValidationError) as e:
        log.error("invalid configuration: %s", e)
        return 2
    try:
        kube = Kube.connect(args.kubeconfig)
    except Exception as e:  # noqa: BLE001 - no kubeconfig and not in a cluster
        log.error("no Kubernetes credentials (KUBECONFIG or in-cluster): %s", e)
        return 2
    key = ensure_signing_key(kube, args.operator_namespace)
    signer = Signer(key, settings.service_id)
    try:
        prom = Prom(args.prometheus_url, auth=prom_auth(args))
    except PromConfigError as e:
        log.error("%s", e)
        return 2
    if not prom.configured:
        log.warning("no --prometheus-url: KeyRotations run unguarded, no ALERTS poll")
    try:
        stuck_after = float(args.stuck_after)
    except ValueError:
        log.error("--stuck-after must be a number of seconds")
        return 2
    election = (args.leader_election or "true").strip().lower()
    if election not in ("true", "false"):
        log.error("--leader-election must be true or false")
        return 2
    election_on = election == "true"
    try:
        lease_duration = float(args.lease_duration)
        if lease_duration < 3:
            raise ValueError
    except ValueError:
        log.error("--lease-duration must be a number of seconds, at least 3")
        return 2
    health = Health(stuck_after=stuck_after)
    op = Operator(kube, prom, settings, signer, args.operator_namespace, health)
    registry = kopf.OperatorRegistry()
    register(registry, op)
    from ..incident.intake import AlertIntake, read_token
    from .web import Endpoints, TLSFiles

    try:
        token = read_token(args.alerts_token_file)
    except (OSError, ValueError) as e:
        log.error("cannot read the alerts token: %s", e)
        return 2
    intake = AlertIntake(kube, prom, settings, signer, args.operator_namespace, token)
    if token is None:
        log.warning("no --alerts-token-file: every alert post is refused (401)")
    from ..incident.backendpods import use_wal_token
    from ..settings.tokens import TokenFile

    try:
        use_wal_token(TokenFile(args.wal_token_file, what="WAL reader token file")
                      if args.wal_token_file else None)
    except (OSError, ValueError) as e:
        log.error("cannot read the WAL reader token: %s", type(e).__name__)
        return 2
    if not args.wal_token_file:
        log.warning("no --wal-token-file: the backends' WAL reader sidecars are not asked")
    tls: TLSFiles | None = None
    if bool(args.alerts_tls_cert_file) != bool(args.alerts_tls_key_file):
        log.error("--alerts-tls-cert-file and --alerts-tls-key-file go together")
        return 2
    if args.alerts_tls_cert_file:
        try:
            tls = TLSFiles(args.alerts_tls_cert_file, args.alerts_tls_key_file)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            log.error("cannot load the receiver's certificate and key: %s",
                      type(e).__name__)
            return 2
    endpoints = Endpoints(intake, args.alerts_listen, args.metrics_listen, health=health,
                          tls=tls, heartbeat_max_age=HEARTBEAT_MAX_AGE)
    # The action counter of each configured target from the start at 0, so the dashboard's
    # markers (increase() > 0) see the first action too.
    from ..core.scenarios import LETTERS

    for t in settings.targets:
        for letter in LETTERS:
            ACTIONS.labels(t.namespace, t.deployment, letter)
    LIVE.set_function(lambda: float(health.live()[0]))
    READY.set_function(lambda: float(health.ready()[0]))
    for part in PARTS:
        HEARTBEAT_AGE.labels(part).set_function(
            lambda part=part: health.ages().get(part, 0.0))  # type: ignore[misc]
    try:
        endpoints.start()
    except OSError as e:
        log.error("cannot listen: %s", e)
        return 2
    log.info("alert receiver on %s:%d (POST /v1/alerts, %s)", *endpoints.alerts_address,
             "TLS" if tls else "plain HTTP")
    log.info("metrics and health on %s:%d (/metrics, /livez, /readyz, /healthz)",
             *endpoints.metrics_address)
    threading.Thread(target=op.check_api_forever, daemon=True, name="api-check").start()
    UP.set(1)
    lease: Lease | None = None
    if election_on:
        lease = Lease(kube, args.operator_namespace, identity(), duration=lease_duration)
        intake.active.clear()
        wait_to_lead(lease, health.standby.set)
        intake.become_active()
        health.standby.clear()
        leading = Leadership(lease, lambda ok: intake.active.set() if ok
                             else intake.active.clear())
        op.leading = leading.fresh
        threading.Thread(target=leading.keep, daemon=True, name="lease").start()
    LEADER.set(1)
    if prom.configured:
        threading.Thread(target=intake.poll_forever, args=(op.stop,), daemon=True,
                         name="alerts-poll").start()
    threading.Thread(target=op.keep_last_known_good, daemon=True, name="lkg").start()
    namespaces = [n.strip() for n in (args.namespace or "").split(",") if n.strip()]
    try:
        kopf.run(registry=registry, standalone=True, clusterwide=not namespaces,
                 namespaces=namespaces,
                 # kopf's Identity is a NewType of str that it does not export.
                 identity=cast(Any, identity()))
    finally:
        op.stop.set()
        if lease is not None:
            lease.release()  # a standby takes over at once instead of after the duration
        endpoints.stop()
    return 0


def wait_to_lead(lease: Lease, standing_by: Callable[[], None]) -> None:
    """Stand by until this copy holds the leader Lease; ``standing_by`` is called once it
    has to wait (a copy that gets the Lease at once never reports standing by)."""
    said: str | None = None
    while not lease.try_acquire():
        standing_by()
        if lease.holder != said:
            said = lease.holder
            log.info("standing by: sigops copy %s is active (Lease %s/%s)", said or "unknown",
                     lease.namespace, lease.name)
        time.sleep(min(2.0, lease.duration / 5))
    log.info("this copy is now the active sigops (Lease %s/%s)", lease.namespace, lease.name)


class Leadership:
    """This copy's hold on the leader Lease, renewed every third of its duration.

    ``fresh()`` is False once the Lease has gone unrenewed for two thirds of its duration (a
    standby may take over when the whole duration has passed): reconcile handlers then retry
    later instead of acting, and the receiver answers 503, so this copy acts only while no
    other can. Seeing another copy hold the Lease ends this process at once; kopf re-runs the
    interrupted step in whichever copy leads. An API server that nobody reaches is no reason
    to exit: nobody can take over, and this copy leads on when it comes back."""

    def __init__(self, lease: Lease, on_change: Callable[[bool], None]) -> None:
        self.lease, self.on_change = lease, on_change
        self.last_ok = time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() - self.last_ok < self.lease.duration * 2 / 3

    def keep(self) -> None:
        was = True
        while True:
            time.sleep(self.lease.duration / 3)
            if self.lease.try_acquire():
                self.last_ok = time.monotonic()
            elif self.lease.holder not in (None, self.lease.identity):
                log.error("lost the leader Lease to %s; exiting so that only one copy acts",
                          self.lease.holder)
                logging.shutdown()
                os._exit(3)
            now = self.fresh()
            if now != was:
                log.warning("leader Lease %s", "renewed again: acting" if now else
                            "not renewed in time: not acting until it is")
                self.on_change(now)
                was = now


def prom_auth(args: argparse.Namespace) -> PromAuth:
    """The Prometheus connection settings of the flags, checked (PromConfigError)."""
    skip = (args.prometheus_insecure_skip_verify or "false").strip().lower()
    if skip not in ("true", "false"):
        raise PromConfigError("--prometheus-insecure-skip-verify must be true or false")
    auth = PromAuth(ca_file=args.prometheus_ca_file or None,
                    cert_file=args.prometheus_cert_file or None,
                    key_file=args.prometheus_key_file or None,
                    bearer_token_file=args.prometheus_bearer_token_file or None,
                    basic_auth_user=args.prometheus_basic_auth_user or None,
                    basic_auth_password_file=args.prometheus_basic_auth_password_file or None,
                    insecure_skip_verify=skip == "true")
    auth.check()
    if auth.insecure_skip_verify:
        log.warning("Prometheus certificate verification is OFF "
                    "(--prometheus-insecure-skip-verify)")
    return auth
