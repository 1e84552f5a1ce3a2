"""KeyRotation's safety decisions, driven step by step on the in-memory door (``tests/memkube.py``,
held to the real API server by ``tests/integration/test_kube_contract.py``).

The invariant, checked after every write: the backend accepts the key the agents sign with.
Each decision (switch agents only after the backend accepts both keys, restore agents before
the backend, take the ring over only from a finished holder, restore only one's own snapshot,
Completed only once the old key is refused live) has a test that fails when it is inverted;
the "mutant" tests show the invariant check catches an inverted order."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.memkube import MemoryKube

from sigops.backend.config import EnvNames, backend_config, find_container, resolve_env
from sigops.backend.probe import OverlapProbe
from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.prometheus.client import Prom
from sigops.rotation import reconciler as rec_mod
from sigops.rotation.model import UNDO_SECRET, Phase
from sigops.rotation.reconciler import RotationReconciler
from sigops.settings import Settings
from sigops.signing.records import Signer
from sigops.testbed.manifests import backend_deployment, literal_env, secret_env

pytestmark = pytest.mark.unit
NS, OPNS = "payments", "sigops-system"
SIGNER = Signer(generate_key(ED25519, kid="safety-signer", state="active"))
POD = {"metadata": {"name": "be-1", "ownerReferences": [
    {"kind": "ReplicaSet", "name": "fractal-lba-backend-rs", "controller": True}]}, "status": {
    "phase": "Running", "podIP": "10.0.0.7",
    "conditions": [{"type": "Ready", "status": "True"}]}}


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class World:
    """A backend, its agents' Secret and a KeyRotation ``rot`` in memory; ``violations`` lists
    every write after which the backend did not accept the agents' key."""

    def __init__(self, alg: str = HMAC, *, pods: bool = False, profile: str = "python",
                 **settings: Any) -> None:
        self.alg = alg
        self.kube = MemoryKube(on_write=self.check)
        self.violations: list[str] = []
        self.old = generate_key(alg, kid="original", state="active")
        e = self.old.to_entry()
        if alg == HMAC:
            data, agent = {"PCS_HMAC_KEY": e["secret"]}, {"PCS_HMAC_KEY": e["secret"]}
            env = [*literal_env(PCS_SIGN_ALG="hmac"), secret_env("PCS_HMAC_KEY", "backend-key")]
        else:
            data = {"PCS_ED25519_PUB_B64": e["public_b64"]}
            agent = {"PCS_ED25519_PRIV_B64": e["private_b64"]}
            env = [*literal_env(PCS_SIGN_ALG="ed25519"),
                   secret_env("PCS_ED25519_PUB_B64", "backend-key")]
        self.kube.on_write = None
        self.kube.write_secret(NS, "backend-key", data, None)
        self.kube.write_secret(NS, "agent-key", agent, None)
        dep = backend_deployment(env, replicas=1)
        dep["spec"]["template"]["spec"]["containers"][0]["ports"] = [
            {"name": "http", "containerPort": 8080}]
        self.kube.add_deployment(NS, dep)
        self.kube.on_write = self.check
        if pods:
            self.kube.pods[NS] = [POD]
        self.clock = Clock()
        self.settings = Settings.model_validate({
            "targets": [{"namespace": NS, "deployment": "fractal-lba-backend",
                         "agentSecret": {"name": "agent-key"}, "profile": profile}],
            "min_overlap": "1s", **settings})
        self.rec = RotationReconciler(self.kube, Prom(None), self.settings, SIGNER,
                                      clock=self.clock, operator_namespace=OPNS)
        self.kube.add_cr(NS, "keyrotations", {
            "apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
            "metadata": {"name": "rot"},
            "spec": {"target": {"deployment": "fractal-lba-backend"}, "algorithm": alg,
                     "overlap": "10s"}})

    def agent_fingerprint(self) -> str:
        if self.alg == HMAC:
            v = self.kube.secret_value(NS, "agent-key", "PCS_HMAC_KEY") or ""
            return Key("a", HMAC, secret=v.encode()).fingerprint
        v = self.kube.secret_value(NS, "agent-key", "PCS_ED25519_PRIV_B64") or ""
        return Key("a", ED25519, private_seed=base64.b64decode(v)).fingerprint

    def backend_fingerprints(self) -> list[str]:
        dep = self.kube.read_deployment(NS, "fractal-lba-backend")
        assert dep is not None
        env = resolve_env(find_container(dep, None),
                          lambda name, key: self.kube.secret_value(NS, name, key))
        return backend_config(env, EnvNames()).fingerprints

    def check(self, what: str) -> None:
        if not (what.startswith(("secret", "deployment"))):
            return
        if self.agent_fingerprint() not in self.backend_fingerprints():
            self.violations.append(f"after {what}")

    def obj(self) -> dict[str, Any]:
        o = self.kube.get_cr(NS, "keyrotations", "rot")
        assert o is not None
        return o

    def tick(self, seconds: float = 1.0) -> str | None:
        self.clock.advance(seconds)
        return self.rec.tick(self.obj())

    def run(self, until: frozenset[str] | None = None, limit: int = 60) -> str:
        stop = until or frozenset({"Completed", "Aborted", "Failed"})
        for _ in range(limit):
            phase = self.tick()
            if phase in stop:
                return str(phase)
        raise AssertionError(f"still {self.obj()['status']['phase']} after {limit} ticks")

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.obj()["status"]["conditions"] if c["type"] == kind)


def answers(*codes: tuple[int | None, int]) -> Any:
    """A stand-in for probe_overlap answering with these (old, new) codes, counting calls."""
    calls: list[int] = []
    profiles: list[str] = []

    def probe(urls: list[str], timeout: float, old: Key | None, new: Key,
              profile: str) -> list[OverlapProbe]:
        calls.append(len(urls))
        profiles.append(profile)
        i = min(len(calls), len(codes)) - 1
        return [OverlapProbe(u, codes[i][0] if old is not None else None, codes[i][1])
                for u in urls]

    probe.calls = calls  # type: ignore[attr-defined]
    probe.profiles = profiles  # type: ignore[attr-defined]
    return probe


@pytest.mark.parametrize("profile", ["python", "go", "fixed9"])
@pytest.mark.parametrize("alg", [HMAC, ED25519])
def test_a_rotation_never_leaves_agents_on_a_key_the_backend_refuses(alg: str,
                                                                     profile: str) -> None:
    """In every canonical profile: the golden probe of the Verified step is signed and
    verified in the target's form (a go target's probe checked as python fails as drift)."""
    w = World(alg, profile=profile)
    assert w.run() == "Completed"
    assert w.violations == []
    assert len(w.kube.writes) > 5
    new_fp = w.obj()["status"]["newKeyFingerprint"]
    assert w.backend_fingerprints() == [new_fp] and w.agent_fingerprint() == new_fp
    assert _snapshots(w.kube) == {}  # the undo snapshot dropped once complete


def test_mutant_switching_agents_before_the_overlap_is_caught(monkeypatch) -> None:
    """Inverted order (agents switched while the backend still holds only the old key): the
    invariant check above sees it. Without this, the test above could pass vacuously."""
    monkeypatch.setattr(RotationReconciler, "_overlap",
                        lambda self, ctx: self._set(ctx, Phase.OVERLAPPING) or "Overlapping")
    monkeypatch.setattr(RotationReconciler, "_verify",
                        lambda self, ctx: self._set(ctx, Phase.VERIFIED) or "Verified")
    w = World(HMAC)
    w.run(until=frozenset({"Promoted", "Aborted", "Failed"}))
    assert w.violations, "an inverted order must break the invariant"


def test_an_abort_restores_agents_before_the_backend() -> None:
    w = World(HMAC)
    w.run(until=frozenset({"Promoted"}))
    assert w.agent_fingerprint() != w.old.fingerprint  # agents switched
    w.kube.crs[(NS, "keyrotations", "rot")]["spec"]["abort"] = True
    start = len(w.kube.writes)
    assert w.tick() == "Aborted"
    order = [x for x in w.kube.writes[start:] if x.startswith(("secret", "deployment"))]
    assert order.index(f"secret {NS}/agent-key") < order.index(
        f"secret {NS}/sigops-keyring-fractal-lba-backend"), order
    assert w.violations == []
    assert w.agent_fingerprint() == w.old.fingerprint
    assert w.backend_fingerprints() == [w.old.fingerprint]
    assert _snapshots(w.kube) == {}


def _snapshots(kube: MemoryKube) -> dict[str, str]:
    sec = kube.read_secret(OPNS, UNDO_SECRET)
    return {k: base64.b64decode(v).decode() for k, v in ((sec.data or {}) if sec else {}).items()}


def test_only_its_own_snapshot_is_ever_restored() -> None:
    """A snapshot entry under the rotation's UID that names another rotation or target (a
    copy, a plant) is refused; nothing is restored from it."""
    w = World(HMAC)
    w.run(until=frozenset({"Promoted"}))
    uid = w.obj()["metadata"]["uid"]
    sec = w.kube.read_secret(OPNS, UNDO_SECRET)
    snaps = _snapshots(w.kube)
    forged = json.loads(snaps[uid])
    forged["rotation"] = "mallory/rot"
    forged["env"] = [{"name": "EVIL", "value": "1"}]
    w.kube.on_write = None
    w.kube.write_secret(OPNS, UNDO_SECRET, {**snaps, uid: json.dumps(forged)}, sec)
    w.kube.crs[(NS, "keyrotations", "rot")]["spec"]["abort"] = True
    with pytest.raises(rec_mod.StepError) as e:
        w.tick()
    assert e.value.reason == "SnapshotUnverified"
    dep = w.kube.read_deployment(NS, "fractal-lba-backend")
    assert dep is not None
    assert not any(v.get("name") == "EVIL"
                   for v in dep["spec"]["template"]["spec"]["containers"][0]["env"])


def test_the_ring_is_taken_over_only_from_a_finished_holder() -> None:
    """The lock names its holder's namespace and UID: a live holder elsewhere keeps it (the
    old code looked it up in the requester's namespace, found nothing and took over)."""
    w = World(HMAC, targets=[{"namespace": NS, "agentSecret": {"name": "agent-key"},
                              "requestNamespaces": ["sre"]}])
    w.run(until=frozenset({"Staged"}))
    holder_uid = w.obj()["metadata"]["uid"]
    w.kube.add_cr("sre", "keyrotations", {
        "metadata": {"name": "rot"},
        "spec": {"target": {"namespace": NS}, "algorithm": HMAC, "overlap": "10s"}})
    other = w.kube.get_cr("sre", "keyrotations", "rot")
    assert w.rec.tick(other) == "Failed"
    ready = next(c for c in w.kube.get_cr("sre", "keyrotations", "rot")["status"]["conditions"]
                 if c["type"] == "Ready")
    assert ready["reason"] == "TargetBusy" and f"{NS}/rot" in ready["message"]
    ring = json.loads(w.kube.secret_value(NS, "sigops-keyring-fractal-lba-backend",
                                          "keyring.json") or "{}")
    assert ring["lock"]["uid"] == holder_uid
    # Once the holder is finished, a new rotation may take the ring over.
    w.kube.crs[(NS, "keyrotations", "rot")]["status"]["phase"] = "Aborted"
    w.kube.add_cr("sre", "keyrotations", {
        "metadata": {"name": "rot2"},
        "spec": {"target": {"namespace": NS}, "algorithm": HMAC, "overlap": "10s"}})
    assert w.rec.tick(w.kube.get_cr("sre", "keyrotations", "rot2")) == "Staged"


def test_a_single_key_backend_stops_the_rotation_at_the_first_round(monkeypatch) -> None:
    """Rollout done, every pod accepts the old key and refuses the new: BackendRejectsOverlap
    at once (not after the grace), agents untouched, one probe round, in the target's form."""
    probe = answers((200, 401))
    monkeypatch.setattr(rec_mod, "probe_overlap", probe)
    w = World(HMAC, pods=True, overlap_probe_grace="2m", profile="go")
    agent0 = w.agent_fingerprint()
    assert w.run() == "Aborted"
    ready = w.condition("Ready")
    assert ready["reason"] == "BackendRejectsOverlap" and "ignores PCS_HMAC_KEYS" in ready[
        "message"]
    assert probe.calls == [1] and w.obj()["status"]["probeRounds"] == 1
    assert probe.profiles == ["go"]
    assert w.agent_fingerprint() == agent0 and w.violations == []


def test_probe_rounds_are_spaced_whatever_the_reconcile_rate(monkeypatch) -> None:
    """Mixed answers (a pod not yet serving the new config): the rotation waits, but probes
    only once per spacing (grace 2m, 4 rounds: every 40 s), not at every 1 s tick."""
    probe = answers((503, 401), (503, 401), (200, 200))
    monkeypatch.setattr(rec_mod, "probe_overlap", probe)
    w = World(HMAC, pods=True, overlap_probe_grace="2m", overlap_probe_rounds=4)
    w.run(until=frozenset({"Overlapping"}))
    assert w.tick(1.0) == "Overlapping" and len(probe.calls) == 1  # the first round
    for _ in range(39):
        assert w.tick(1.0) == "Overlapping"
    assert len(probe.calls) == 1
    w.tick(1.0)  # 40 s after the first round
    assert len(probe.calls) == 2
    assert w.condition("Progressing")["reason"] == "WaitingForBackend"
    w.tick(40.0)
    assert len(probe.calls) == 3 and w.obj()["status"]["phase"] == "Verified"


def test_completed_only_once_the_old_key_is_refused_live(monkeypatch) -> None:
    """After the retirement every pod must refuse the old key: while one accepts it the phase
    stays Retiring (OldKeyStillAccepted); then Completed."""
    probe = answers((200, 200), (200, 200), (401, 200))
    monkeypatch.setattr(rec_mod, "probe_overlap", probe)
    w = World(HMAC, pods=True, overlap_probe_grace="30s", overlap_probe_rounds=4)
    w.run(until=frozenset({"Retiring"}))
    w.tick(20.0)  # overlap (10 s) over: the old key is dropped from the config
    assert w.obj()["status"].get("retiredAt") and w.obj()["status"]["phase"] == "Retiring"
    w.tick(1.0)  # second round after the overlap's: the old key still accepted
    assert w.obj()["status"]["phase"] == "Retiring"
    assert w.condition("Progressing")["reason"] == "OldKeyStillAccepted"
    assert w.tick(10.0) == "Completed"
    done = w.obj()["status"]["history"][-1]["payload"]["step"]
    assert "every live endpoint refuses the old key" in done
    assert w.violations == []


def test_a_stalled_final_rollout_is_named_and_never_completed() -> None:
    w = World(HMAC, rollout_timeout="1m")
    w.run(until=frozenset({"Retiring"}))
    w.tick(20.0)
    assert w.obj()["status"].get("retiredAt")
    dep = w.kube.deployments[(NS, "fractal-lba-backend")]
    dep["status"]["updatedReplicas"] = 0  # the new pods never become ready
    w.tick(30.0)
    assert w.condition("Progressing")["reason"] == "WaitingForRollout"
    w.tick(40.0)
    prog = w.condition("Progressing")
    assert prog["reason"] == "RolloutStalled" and "may still accept the retired key" in prog[
        "message"]
    assert w.obj()["status"]["phase"] == "Retiring"
    dep["status"]["updatedReplicas"] = 1
    assert w.tick(1.0) == "Completed"


def test_a_look_alike_pod_gets_no_probe(monkeypatch) -> None:
    """A pod that matches the Deployment's selector but no ReplicaSet of it controls (anyone
    with rights in the namespace can make one) is never sent a PCS signed with the keys."""
    probe = answers((200, 200))
    monkeypatch.setattr(rec_mod, "probe_overlap", probe)
    w = World(HMAC, pods=True)
    w.kube.pods[NS] = [{**POD, "metadata": {"name": "look-alike", "labels": {"app": "x"}}}]
    w.run(until=frozenset({"Verified", "Aborted"}))
    assert probe.calls == []
    verified = w.obj()["status"]["history"][-1]["payload"]["step"]
    assert "no live probe" in verified
