"""A real ``sigops run`` SIGKILLed at each phase of a SignatureIncident (scenarios A and D) and
started again: the remediation runs exactly once, the backend never loses a key it accepted
(A), TOKEN_RATE is tightened once and restored once (D). The real incident's
``status.actions`` is then attacked (removed, reordered, replayed actions) and
``verify_chain`` must notice.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from kubernetes import client

from sigops.core.keys import HMAC, Key, generate_key, key_from_entry
from sigops.core.signals import load_pubkeys
from tests.reliability import kit
from tests.reliability.test_signals import chain_attacks
from tests.support import (
    BackgroundCheck,
    SampleServer,
    alert_post,
    backend,
    backend_fingerprints,
    envelope,
    incidents,
    kill_on_each_new_phase,
    only_incident,
    pcs,
    secret,
    start,
    token_rate,
    verify_records,
)


class Monotonic(BackgroundCheck):
    """Watches that the backend's accepted keys only ever grow (scenario A adds, never drops)."""

    def __init__(self, api: Any, ns: str) -> None:
        self.raw, self.ns = kit.RawApi(api), ns
        self.seen: set[str] = set(self.raw.backend_fingerprints(ns))
        super().__init__()

    def check(self) -> object:
        now = set(self.raw.backend_fingerprints(self.ns))
        lost = sorted(self.seen - now)
        self.seen |= now
        return lost or None


def _phase(api: Any, ns: str) -> str | None:
    items = [i for i in incidents(api, ns) if (i.get("status") or {}).get("phase")
             != "RateLimited"]
    return ((items[0].get("status") or {}).get("phase") or "Detected") if items else None


def _kill_on_each_new_phase(api: Any, ns: str, op: Any, rng: random.Random,
                            until: tuple[str, ...], timeout: float = 60) -> list[str]:
    return kill_on_each_new_phase(lambda: _phase(api, ns), op, rng, until, timeout,
                                  jitter=0.15, poll=0.02, skip=(None,))


def _pubkeys(api: Any, op: Any) -> dict[str, bytes]:
    cm = client.CoreV1Api(api).read_namespaced_config_map("sigops-signal-pubkeys",
                                                           op.operator_ns)
    return load_pubkeys(json.loads(cm.data["pubkeys.json"]))


def test_scenario_a_sigkilled_at_every_phase_acts_once(api, namespace, operator_factory,
                                                       tmp_path):
    t0 = time.monotonic()
    old = Key("old", HMAC, secret=b"reliability-old-agent-key-000001")
    new = generate_key(HMAC, kid="new", state="active")
    for k in (old, new):
        kit.REGISTRY.add_key(k)
    backend(api, namespace, new)
    # The old key retiring, its overlap window open (the backend dropped it too early): the
    # key scenario A may re-admit (a retired one it refuses).
    window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    ring = {"keys": [{**old.to_entry(), "state": "retiring", "overlap_until": window},
                     new.to_entry()],
            "profile": "python", "backend_accepts": ["new"], "primary": "new", "lock": None}
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="sigops-keyring-fractal-lba-backend"),
        string_data={"keyring.json": json.dumps(ring)}))
    srv = SampleServer()
    srv.samples = [envelope(pcs(old, i)) for i in range(20)]
    try:
        op = start(operator_factory, tmp_path, namespace, srv.url)
        with Monotonic(api, namespace) as mono:
            assert alert_post(op, namespace)[0] == 200
            kills = _kill_on_each_new_phase(api, namespace, op, random.Random(3),
                                            ("Verifying", "Resolved", "Escalated"))
            op.kill()  # once more, in Verifying
            kills.append("Verifying")
            op.start()
            assert alert_post(op, namespace, status="resolved")[0] == 200
            inc = kit.wait_until(lambda: _phase(api, namespace) in ("Resolved", "Escalated"),
                                 30)
            assert inc
        inc = only_incident(api, namespace)
        st = inc["status"]
        assert st["phase"] == "Resolved", st.get("conditions")
        actions = [a["payload"]["action"] for a in st["actions"]]
        assert actions == ["accept-agent-keys"], actions
        fps = backend_fingerprints(api, namespace)
        assert old.fingerprint in fps and new.fingerprint in fps
        ring_now = json.loads(secret(api, namespace,
                                     "sigops-keyring-fractal-lba-backend")["keyring.json"])
        ring_fps = [key_from_entry(k).fingerprint for k in ring_now["keys"]]
        assert len(ring_fps) == len(set(ring_fps)) == 2, ring_now["keys"]  # nothing twice
        assert mono.violations == [] and mono.checks > 10
        verify_records(api, op, inc)
        kit.bump("SIGKILL at every phase: scenario A", incidents=1, kills=len(kills),
                 restarts=len(kills), acted_once=1, monotonic_checks=mono.checks,
                 keys_dropped=len(mono.violations), seconds=round(time.monotonic() - t0, 1))
    finally:
        srv.close()


def test_scenario_d_sigkilled_at_every_phase_acts_and_restores_once(
        api, namespace, operator_factory, tmp_path):
    t0 = time.monotonic()
    key = Key("k", HMAC, secret=b"reliability-backend-key-for-d-01")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key, token_rate="100")
    bad = []
    for i in range(20):
        p = pcs(key, i)
        p["merkle_root"] = "d" * 64  # changed after signing
        bad.append(envelope(p, "10.4.4.4"))
    srv = SampleServer()
    srv.samples = [envelope(pcs(key, 100 + i), "agent-1") for i in range(3)] + bad
    try:
        op = start(operator_factory, tmp_path, namespace, srv.url, cooldown="3s")
        assert alert_post(op, namespace)[0] == 200
        rng = random.Random(4)
        kills = _kill_on_each_new_phase(api, namespace, op, rng,
                                        ("Verifying", "Resolved", "Escalated"))
        assert alert_post(op, namespace, status="resolved")[0] == 200
        assert kit.wait_until(lambda: _phase(api, namespace) == "Resolved", 30)
        # Die during the cool-down, before TOKEN_RATE is restored, and once more.
        for _ in range(2):
            time.sleep(rng.uniform(0.2, 1.0))
            op.kill()
            kills.append("Resolved (cool-down)")
            op.start()
        assert kit.wait_until(lambda: token_rate(api, namespace) == "100", 30)
        assert kit.wait_until(lambda: not (only_incident(api, namespace)["status"]
                                           .get("restore")), 10)
        inc = only_incident(api, namespace)
        st = inc["status"]
        actions = [a["payload"]["action"] for a in st["actions"]]
        assert actions == ["tighten-token-rate", "list-failing-sources",
                           "restore-token-rate"], actions
        assert st["actions"][0]["payload"]["previous"] == "100"
        assert st["actions"][1]["payload"]["sources"][0]["source"] == "10.4.4.4"
        verify_records(api, op, inc)
        kit.bump("SIGKILL at every phase: scenario D", incidents=1, kills=len(kills),
                 restarts=len(kills), acted_once=1, restored_once=1,
                 seconds=round(time.monotonic() - t0, 1))
        # The real chain, attacked (item 8).
        results = chain_attacks(st["actions"], _pubkeys(api, op))
        undetected = [k for k, v in results.items() if v is None]
        assert undetected == [], undetected
        kit.bump("signals: hash chain from a real incident's status.actions",
                 chain_length=len(st["actions"]), chain_attacks=len(results),
                 detected=len(results) - len(undetected))
    finally:
        srv.close()
