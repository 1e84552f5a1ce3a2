"""Drive the real reconcilers in process against the real API server, one ``tick`` at a time,
with a :class:`kit.CrashingKube` that can die after any write: the deterministic counterpart
of SIGKILLing ``sigops run`` (which only lands between writes by luck).

Each run gets its own namespace (the shared helpers name the backend ``fractal-lba-backend``
and the agents' Secret ``agent-key``), leak-scanned and deleted by :func:`finish`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.core.signals import pubkeys_document
from sigops.incident.reconciler import IncidentReconciler
from sigops.kube.api import GROUP, VERSION
from sigops.prometheus.client import Prom
from sigops.rotation.model import TERMINAL
from sigops.rotation.reconciler import RotationReconciler
from sigops.settings import Settings, Target
from sigops.signing.records import Signer
from tests.reliability import kit
from tests.support import backend as literal_backend
from tests.support import backend_fingerprints, envelope, keyrotation, make_backend, pcs, secret

SIGNER_KEY = generate_key(ED25519, kid="reliability-inproc-signer", state="active")
kit.REGISTRY.add_key(SIGNER_KEY)
SIGNER = Signer(SIGNER_KEY)
PUBKEYS = {SIGNER_KEY.kid: SIGNER_KEY.public or b""}
assert pubkeys_document([SIGNER_KEY])["keys"]
ROT_SETTINGS = Settings(min_overlap="1s", wait_for_rollout=False)


def rotation_settings_of(ns: str) -> Settings:
    """ROT_SETTINGS with the backend of ``ns`` as its one target (agents' Secret agent-key)."""
    return ROT_SETTINGS.model_copy(update={"targets": (Target.model_validate(
        {"namespace": ns, "agentSecret": {"name": "agent-key"}}),)})


def new_namespace(api: Any) -> str:
    name = f"t-rel-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def finish(api: Any, ns: str) -> None:
    """Harvest the namespace's key material, leak-scan its objects, delete it. (Log records of
    in-process reconcilers are scanned by the ``inproc_log_scan`` fixture.)"""
    kit.REGISTRY.harvest_secrets(api, ns)
    n, size, found = kit.scan(kit.cluster_documents(api, [ns]))
    kit.bump("leak scan (per test)", documents=n, bytes=size, findings=len(found))
    client.CoreV1Api(api).delete_namespace(ns)
    assert not found, f"key material leaked: {found[:10]}"


# -- KeyRotation ------------------------------------------------------------------------------


@dataclass
class RotationRun:
    api: Any
    ns: str
    alg: str
    old: Key
    kube: kit.CrashingKube
    clock: kit.FakeClock = field(default_factory=kit.FakeClock)
    violations: list[str] = field(default_factory=list)
    checks: int = 0
    crashes: int = 0
    trace: list[tuple[str, int, str]] = field(default_factory=list)  # (phase, k, write)
    settle: bool = True

    def reconciler(self) -> RotationReconciler:
        return RotationReconciler(self.kube, Prom(None), rotation_settings_of(self.ns), SIGNER,
                                  clock=self.clock, operator_namespace=self.ns)

    def obj(self) -> dict[str, Any]:
        o = self.kube.get_cr(self.ns, "keyrotations", "rot")
        assert o is not None
        return o

    def phase(self) -> str:
        return str((self.obj().get("status") or {}).get("phase") or "Pending")


def rotation_run(api: Any, alg: str, overlap: str = "1s") -> RotationRun:
    """A fresh backend and a KeyRotation ``rot`` on it; the invariant (the backend accepts the
    key the agents sign with) is checked after every Secret or Deployment write."""
    ns = new_namespace(api)
    old = make_backend(api, ns, alg)
    kit.REGISTRY.add_key(old)
    raw = kit.RawApi(api)
    run: RotationRun

    def check(what: str) -> None:
        if not what.startswith(("replace_namespaced_secret", "create_namespaced_secret",
                                "replace_namespaced_deployment", "delete_namespaced_secret")):
            return
        run.checks += 1
        agent = raw.agent_fingerprint(ns, alg)
        accepted = raw.backend_fingerprints(ns)
        if agent not in accepted:
            run.violations.append(f"after {what}: agents sign with {agent}, "
                                  f"backend accepts {accepted}")

    run = RotationRun(api, ns, alg, old, kit.CrashingKube(api, check))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "keyrotations", keyrotation("rot", alg, overlap=overlap))
    return run


def drive_rotation(run: RotationRun, *, until: str | None = None,
                   crash_at: tuple[str, int] | None = None, max_ticks: int = 60) -> str:
    """Tick until a terminal phase (or ``until``); with ``crash_at=(phase, k)`` the k-th write
    of the first tick that starts in ``phase`` is followed by a crash, and a new reconciler
    (a restarted operator) carries on."""
    rec = run.reconciler()
    armed = crash_at is not None
    for _ in range(max_ticks):
        obj = run.obj()
        phase = str((obj.get("status") or {}).get("phase") or "Pending")
        if phase in TERMINAL or phase == until:
            return phase
        if run.settle and phase == "Retiring":
            # The last step replaces the Deployment right after Promoted did (the fake clock):
            # let the controller's status write land first (see the xfail on 409s there).
            settle(run.api, run.ns)
            obj = run.obj()
        rec, armed = _tick(run, rec, obj, phase, armed, crash_at)
    raise AssertionError(f"rotation did not finish: {run.phase()}")


def _tick(run: Any, rec: Any, obj: dict[str, Any], phase: str, armed: bool,
          crash_at: tuple[str, int] | None) -> tuple[Any, bool]:
    """One reconcile tick, crashing at write ``crash_at[1]`` of phase ``crash_at[0]`` (once,
    while ``armed``); a crash restarts the reconciler. Returns (reconciler, still armed)."""
    if armed and crash_at is not None and crash_at[0] == phase:
        run.kube.arm(crash_at[1])
    start = len(run.kube.writes)
    try:
        rec.tick(obj)
    except kit.Crash:
        run.crashes += 1
        armed = False
        rec = run.reconciler()
    finally:
        run.trace += [(phase, i + 1, w) for i, w in enumerate(run.kube.writes[start:])]
        run.kube.arm(None)
    return rec, armed


def settle(api: Any, ns: str, timeout: float = 10.0) -> None:
    """Wait until the deployment controller has observed the Deployment's latest generation, so
    its status write does not race the next tick's replace (a real rotation's steps are
    minutes apart; the fake clock makes them milliseconds apart)."""
    raw = kit.RawApi(api)

    def caught_up() -> bool:
        d = raw.deployment(ns, "fractal-lba-backend") or {}
        return bool((d.get("status") or {}).get("observedGeneration", 0)
                    >= d["metadata"].get("generation", 0))

    assert kit.wait_until(caught_up, timeout, 0.02), "deployment controller did not catch up"


def in_parallel(items: list[Any], fn: Callable[[Any], str | None], workers: int = 6
                ) -> list[str]:
    """Run ``fn`` over ``items`` on a few threads (each run has its own namespace); returns
    the failure messages ``fn`` returned."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return [r for r in pool.map(fn, items) if r]


def not_last_of_tick(trace: list[tuple[str, int, str]]) -> list[tuple[str, int]]:
    """Crash positions worth trying for a stateless reconciler: a crash after the last write
    of a tick leaves the API exactly as no crash does."""
    out = []
    for i, (phase, k, _) in enumerate(trace):
        last = i + 1 == len(trace) or trace[i + 1][1] == 1
        if not last:
            out.append((phase, k))
    return out


def set_abort(api: Any, ns: str) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "keyrotations", "rot", {"spec": {"abort": True}})


def ring_of(api: Any, ns: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        secret(api, ns, "sigops-keyring-fractal-lba-backend")["keyring.json"])
    return doc


def history_phases(obj: dict[str, Any]) -> list[str]:
    return [h["payload"]["phase"] for h in (obj.get("status") or {}).get("history") or []]


# -- SignatureIncident ---------------------------------------------------------------------------


@dataclass
class IncidentRun:
    api: Any
    ns: str
    scenario: str
    kube: kit.CrashingKube
    settings: Settings
    keys: dict[str, Key]
    clock: kit.FakeClock = field(default_factory=kit.FakeClock)
    violations: list[str] = field(default_factory=list)
    crashes: int = 0
    trace: list[tuple[str, int, str]] = field(default_factory=list)

    def reconciler(self) -> IncidentReconciler:
        return IncidentReconciler(self.kube, Prom(None), self.settings, SIGNER,
                                  clock=self.clock)

    def obj(self) -> dict[str, Any]:
        o = self.kube.get_cr(self.ns, "signatureincidents", "inc")
        assert o is not None
        return o


def _samples_configmap(api: Any, ns: str, records: list[dict[str, Any]]) -> None:
    client.CoreV1Api(api).create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="samples"),
        data={"samples.jsonl": "".join(json.dumps(r) + "\n" for r in records)}))


def incident_run(api: Any, scenario: str) -> IncidentRun:
    """Scenario A (agents on a key the backend dropped) or D (a tamper flood), with the failed
    samples in a ConfigMap, and a SignatureIncident ``inc`` a person opened in mode auto."""
    ns = new_namespace(api)
    keys: dict[str, Key] = {}
    if scenario == "A":
        # The old key retiring, its overlap window open (the backend dropped it too early):
        # the key scenario A may re-admit (a retired one it refuses and escalates).
        keys["old"] = generate_key(HMAC, kid="old", state="retiring")
        keys["new"] = generate_key(HMAC, kid="new", state="active")
        literal_backend(api, ns, keys["new"])
        window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
        ring = {"keys": [{**keys["old"].to_entry(), "overlap_until": window},
                         keys["new"].to_entry()], "profile": "python",
                "backend_accepts": ["new"], "primary": "new", "lock": None}
        client.CoreV1Api(api).create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="sigops-keyring-fractal-lba-backend"),
            string_data={"keyring.json": json.dumps(ring)}))
        _samples_configmap(api, ns, [envelope(pcs(keys["old"], i)) for i in range(12)])
    else:
        keys["k"] = generate_key(HMAC, kid="k", state="active")
        literal_backend(api, ns, keys["k"], token_rate="100")
        good = [envelope(pcs(keys["k"], i), "agent-1") for i in range(4)]
        bad = []
        for i in range(20):
            p = pcs(keys["k"], 100 + i)
            p["merkle_root"] = "f" * 64  # changed after signing
            bad.append(envelope(p, "10.9.9.9"))
        _samples_configmap(api, ns, good + bad)
    for k in keys.values():
        kit.REGISTRY.add_key(k)
    settings = Settings(targets=(Target(namespace=ns, samplesConfigMap="samples"),),
                        cooldown="1s", reconcile_interval=0.5)
    accepted_before: set[str] = set()
    raw = kit.RawApi(api)

    def check(what: str) -> None:
        # Scenario A only ever adds keys: the backend never stops accepting one it accepted.
        if scenario != "A" or not what.startswith(("replace_namespaced_secret",
                                                   "create_namespaced_secret",
                                                   "replace_namespaced_deployment")):
            return
        now = set(raw.backend_fingerprints(ns))
        if not accepted_before <= now:
            run.violations.append(f"after {what}: backend dropped {accepted_before - now}")
        accepted_before.update(now)

    run = IncidentRun(api, ns, scenario, kit.CrashingKube(api, check), settings, keys)
    accepted_before.update(backend_fingerprints(api, ns))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
            "metadata": {"name": "inc"},
            "spec": {"source": "person", "mode": "auto",
                     "target": {"deployment": "fractal-lba-backend"},
                     "samples": {"configMapRef": {"name": "samples"}}}})
    return run


def incident_done(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    return st.get("phase") in ("Escalated", "RateLimited") or (
        st.get("phase") == "Resolved" and not st.get("restore"))


def drive_incident(run: IncidentRun, *, crash_at: tuple[str, int] | None = None,
                   max_ticks: int = 40, on_tick: Callable[[IncidentRun], None] | None = None
                   ) -> dict[str, Any]:
    """Tick until Resolved (with any TOKEN_RATE restored) or Escalated; the alert is reported
    resolved as soon as the incident is Verifying."""
    rec = run.reconciler()
    armed = crash_at is not None
    settle(run.api, run.ns)
    for _ in range(max_ticks):
        obj = run.obj()
        st = obj.get("status") or {}
        phase = str(st.get("phase") or "Detected")
        if incident_done(obj):
            return obj
        if phase == "Verifying" and not st.get("alertResolvedAt"):
            run.kube.patch_status(run.ns, "signatureincidents", "inc",
                                  {"alertResolvedAt": "2026-01-01T00:00:00Z"})
            continue
        if phase == "Resolved":  # the restore replaces the Deployment again: no 409 race
            settle(run.api, run.ns)
            obj = run.obj()
        rec, armed = _tick(run, rec, obj, phase, armed, crash_at)
        if on_tick:
            on_tick(run)
    raise AssertionError(f"incident did not finish: {run.obj().get('status')}")


def token_rate_of(api: Any, ns: str) -> str | None:
    dep = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", ns)
    return next((e.value for e in dep.spec.template.spec.containers[0].env
                 if e.name == "TOKEN_RATE"), None)


ALGS = (HMAC, ED25519)
