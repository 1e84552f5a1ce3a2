"""A real ``sigops run`` SIGKILLed at each step of a KeyRotation and started again: Ed25519 (the
HMAC case is tests/integration/test_keyrotation.py) and an abort through ``spec.abort``.
While it runs, a watcher checks over and over that the backend accepts the key the agents
sign with. (test_crash_every_write.py does the same deterministically, write by write.)
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from kubernetes import client

from sigops.core.keys import ED25519, HMAC, key_from_entry
from tests.reliability import kit
from tests.support import (
    GROUP,
    VERSION,
    AcceptanceWatch,
    agent_key_fingerprint,
    backend_fingerprints,
    get_kr,
    keyrotation,
    kill_on_each_new_phase,
    make_backend,
    phase,
    rotation_settings,
    secret,
    undo_snapshots,
    verify_history,
)

STEPS = ("Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed")


def _kill_at_each_new_phase(api: Any, ns: str, name: str, op: Any, rng: random.Random,
                            stop: tuple[str, ...], timeout: float = 120) -> list[str]:
    return kill_on_each_new_phase(lambda: phase(api, ns, name), op, rng, stop, timeout)


def test_ed25519_rotation_sigkilled_at_every_step_completes_once(api, namespace,
                                                                 operator_factory):
    t0 = time.monotonic()
    old = make_backend(api, namespace, ED25519)
    kit.REGISTRY.add_key(old)
    op = operator_factory(rotation_settings(namespace))
    with AcceptanceWatch(api, namespace, ED25519) as watch:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "keyrotations",
            keyrotation("crash", ED25519, overlap="4s"))
        kills = _kill_at_each_new_phase(api, namespace, "crash", op, random.Random(11),
                                        ("Completed", "Aborted", "Failed"))
        wait = time.monotonic() + 60
        while phase(api, namespace, "crash") not in ("Completed", "Aborted", "Failed") \
                and time.monotonic() < wait:
            time.sleep(0.2)
    kr = get_kr(api, namespace, "crash")
    st = kr["status"]
    assert st["phase"] == "Completed", (st.get("phase"), st.get("message"))
    assert len(kills) >= 5, kills
    assert watch.checks > 20 and watch.violations == [], watch.violations[:3]
    ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")["keyring.json"])
    # One new key however often the operator died; the old one kept (retired), nothing lost.
    assert sorted(k["state"] for k in ring["keys"]) == ["active", "retired"]
    assert any(k.get("public_b64") == old.to_entry()["public_b64"] for k in ring["keys"])
    new = key_from_entry(next(k for k in ring["keys"] if k["kid"] == st["newKeyId"]))
    assert backend_fingerprints(api, namespace) == [new.fingerprint]
    assert agent_key_fingerprint(api, namespace, ED25519) == new.fingerprint
    phases = [h["payload"]["phase"] for h in st["history"]]
    assert [phases.count(p) for p in STEPS] == [1] * 6, phases
    verify_history(api, op.operator_ns, kr)
    kit.bump("SIGKILL at every step: KeyRotation ed25519", rotations=1, kills=len(kills),
             restarts=len(kills), completed_once=1, acceptance_checks=watch.checks,
             acceptance_violations=len(watch.violations),
             seconds=round(time.monotonic() - t0, 1))


def test_abort_via_spec_sigkilled_at_every_step_restores_once(api, namespace,
                                                              operator_factory):
    t0 = time.monotonic()
    old = make_backend(api, namespace, HMAC)
    kit.REGISTRY.add_key(old)
    agent_before = secret(api, namespace, "agent-key")
    op = operator_factory(rotation_settings(namespace))
    rng = random.Random(5)
    co = client.CustomObjectsApi(api)
    with AcceptanceWatch(api, namespace, HMAC) as watch:
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations",
                                           keyrotation("undo", HMAC, overlap="1h"))
        kills = _kill_at_each_new_phase(api, namespace, "undo", op, rng,
                                        ("Retiring", "Completed", "Aborted", "Failed"))
        assert phase(api, namespace, "undo") == "Retiring"
        new_kid = get_kr(api, namespace, "undo")["status"]["newKeyId"]
        # A person aborts; the operator dies right after, and again while undoing.
        co.patch_namespaced_custom_object(GROUP, VERSION, namespace, "keyrotations", "undo",
                                          {"spec": {"abort": True}})
        for _ in range(3):
            time.sleep(rng.uniform(0.0, 0.3))
            op.kill()
            kills.append(f"abort:{phase(api, namespace, 'undo')}")
            op.start()
        wait = time.monotonic() + 60
        while phase(api, namespace, "undo") != "Aborted" and time.monotonic() < wait:
            time.sleep(0.1)
    kr = get_kr(api, namespace, "undo")
    st = kr["status"]
    assert st["phase"] == "Aborted", (st.get("phase"), st.get("message"))
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "AbortRequested"
    phases = [h["payload"]["phase"] for h in st["history"]]
    assert phases.count("Aborted") == 1, phases
    # Everything is as before the rotation: the agents' Secret, the backend's key...
    assert secret(api, namespace, "agent-key") == agent_before
    assert backend_fingerprints(api, namespace) == [old.fingerprint]
    ring = json.loads(secret(api, namespace, "sigops-keyring-fractal-lba-backend")["keyring.json"])
    states = {k["kid"]: k["state"] for k in ring["keys"]}
    # ...and the new key is kept on record, retired, so a diagnosis can still name it.
    assert states[new_kid] == "retired" and list(states.values()).count("active") == 1
    assert ring["lock"] is None
    assert undo_snapshots(api, op.operator_ns) == {}  # the snapshot dropped after the undo
    verify_history(api, op.operator_ns, kr)
    assert watch.checks > 0 and watch.violations == []  # agents restored before the keyring
    kit.bump("SIGKILL at every step: KeyRotation abort via spec.abort", rotations=1,
             kills=len(kills), restarts=len(kills), restored_once=1,
             acceptance_checks=watch.checks, acceptance_violations_seen=len(watch.violations),
             seconds=round(time.monotonic() - t0, 1))
