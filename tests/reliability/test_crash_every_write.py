"""Crash after every write: the KeyRotation and SignatureIncident reconcilers run in process
against the real API server and "die" (a BaseException nothing in sigops catches) right after
each mutating API call of a clean run, one position per run; a fresh reconciler then carries
on, as a restarted operator would. After every Secret or Deployment write the invariant is
read back from the API server: the backend accepts the key the agents sign with (rotation), the
backend never stops accepting a key (scenario A).

Outcome per position: the work completes exactly once (each history/action record once), no
key is lost, nothing is left half-done.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from sigops.core.keys import ED25519, HMAC, key_from_entry
from sigops.core.signals import verify_chain, verify_signal
from tests.reliability import inproc, kit
from tests.support import agent_key_fingerprint, backend_fingerprints, undo_snapshots

pytestmark = pytest.mark.usefixtures("inproc_log_scan")
STEPS = ["Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"]
_TRACES: dict[str, list[tuple[str, int, str]]] = {}


def _clean_trace(api: Any, alg: str) -> list[tuple[str, int, str]]:
    if alg not in _TRACES:
        run = inproc.rotation_run(api, alg)
        assert inproc.drive_rotation(run) == "Completed"
        assert run.violations == [] and run.checks > 5
        _check_completed(api, run)
        _TRACES[alg] = run.trace
        inproc.finish(api, run.ns)
    return _TRACES[alg]


def _compact(trace: list[tuple[str, int, str]]) -> str:
    return " ".join(f"{p}#{k}:{w.split(':')[0].split('_namespaced_')[-1]}" for p, k, w in trace)


def _final_step_positions(trace: list[tuple[str, int, str]]) -> set[tuple[str, int]]:
    """Writes of the Retiring -> Completed tick that come before its status patch."""
    out = set()
    for phase, k, w in trace:
        if phase == "Retiring":
            if w.startswith("patch_namespaced_custom_object_status"):
                break
            out.add((phase, k))
    return out


def _check_completed(api: Any, run: inproc.RotationRun) -> None:
    obj = run.obj()
    st = obj["status"]
    assert st["phase"] == "Completed", (st.get("phase"), st.get("message"))
    assert inproc.history_phases(obj) == STEPS, inproc.history_phases(obj)
    ring = inproc.ring_of(api, run.ns)
    assert sorted(k["state"] for k in ring["keys"]) == ["active", "retired"], ring["keys"]
    old_fp = run.old.fingerprint
    assert any(key_from_entry(k).fingerprint == old_fp for k in ring["keys"]), "old key lost"
    new = key_from_entry(next(k for k in ring["keys"] if k["kid"] == st["newKeyId"]))
    assert backend_fingerprints(api, run.ns) == [new.fingerprint]
    assert agent_key_fingerprint(api, run.ns, run.alg) == new.fingerprint
    assert ring["lock"] is None
    verify_chain(st["history"], inproc.PUBKEYS)


@pytest.mark.parametrize("alg", [HMAC, ED25519])
def test_rotation_crash_after_every_write(api: Any, alg: str) -> None:
    trace = _clean_trace(api, alg)
    known = _final_step_positions(trace)
    positions = [pos for pos in inproc.not_last_of_tick(trace) if pos not in known]
    sec = f"crash after every write: KeyRotation {alg}"

    def one(pos: tuple[str, int]) -> str | None:
        run = inproc.rotation_run(api, alg)
        try:
            inproc.drive_rotation(run, crash_at=pos)
            assert run.crashes == 1, "no crash happened at this position"
            _check_completed(api, run)
            assert run.violations == [], run.violations
            return None
        except AssertionError as e:
            return f"crash after write {pos}: {e}; writes: {_compact(run.trace)}"
        finally:
            kit.bump(sec, invariant_checks=run.checks, invariant_violations=len(run.violations))
            inproc.finish(api, run.ns)

    failures = inproc.in_parallel(positions, one)
    kit.bump(sec, crash_points=len(positions), crashes=len(positions),
             completed_once=len(positions) - len(failures))
    kit.figure(sec, writes_per_rotation=len(trace), known_bug_positions_excluded=sorted(known))
    assert not failures, "\n".join(failures)



@pytest.mark.parametrize("alg", [HMAC])
def test_rotation_crash_inside_the_last_step_still_completes(
        api: Any, alg: str) -> None:
    known = sorted(_final_step_positions(_clean_trace(api, alg)))
    assert known

    def one(pos: tuple[str, int]) -> str | None:
        run = inproc.rotation_run(api, alg)
        try:
            inproc.drive_rotation(run, crash_at=pos)
            _check_completed(api, run)
            assert run.violations == [], run.violations
            return None
        except AssertionError as e:
            return f"crash after write {pos}: {e}"
        finally:
            inproc.finish(api, run.ns)

    failures = inproc.in_parallel(known, one)
    kit.figure("crash after every write: KeyRotation last step (known bug)",
               positions=len(known), failing=len(failures))
    assert not failures, "\n".join(failures)


def test_rotation_conflict_in_the_last_step_still_completes(
        api: Any) -> None:
    run = inproc.rotation_run(api, HMAC)
    try:
        assert inproc.drive_rotation(run, until="Retiring") == "Retiring"
        run.kube.fail_before["replace_namespaced_deployment"] = ApiException(
            status=409, reason="Conflict")  # e.g. the deployment controller wrote status
        inproc.drive_rotation(run)
        _check_completed(api, run)
        assert run.violations == [], run.violations
    finally:
        inproc.finish(api, run.ns)


# -- abort -----------------------------------------------------------------------------------


def _check_aborted(api: Any, run: inproc.RotationRun) -> None:
    obj = run.obj()
    st = obj["status"]
    assert st["phase"] == "Aborted", st.get("phase")
    assert inproc.history_phases(obj).count("Aborted") == 1
    assert backend_fingerprints(api, run.ns) == [run.old.fingerprint]
    assert agent_key_fingerprint(api, run.ns, run.alg) == run.old.fingerprint
    ring = inproc.ring_of(api, run.ns)
    assert ring["lock"] is None
    states = {key_from_entry(k).fingerprint: k["state"] for k in ring["keys"]}
    assert states[run.old.fingerprint] == "active"
    assert sorted(states.values()) == ["active", "retired"], states  # new key kept, retired
    assert undo_snapshots(api, run.ns) == {}  # the in-process operator's namespace is run.ns
    verify_chain(st["history"], inproc.PUBKEYS)


@pytest.mark.parametrize("phase", [
    "Staged", "Overlapping", "Verified",
    "Promoted",
    "Retiring",
])
def test_abort_keeps_the_agents_key_accepted_at_every_write(
        api: Any, phase: str) -> None:
    run = inproc.rotation_run(api, HMAC, overlap="1h")
    try:
        assert inproc.drive_rotation(run, until=phase) == phase
        before = run.checks
        inproc.set_abort(api, run.ns)
        assert inproc.drive_rotation(run) == "Aborted"
        kit.bump("abort from every phase (in process)", aborts=1,
                 invariant_checks=run.checks - before, invariant_violations=len(run.violations))
        _check_aborted(api, run)
        assert run.violations == [], run.violations
    finally:
        inproc.finish(api, run.ns)


def test_abort_retries_a_deployment_conflict_within_the_tick(api: Any) -> None:
    """The deployment controller writes status right after each change of ours; a 409 on the
    abort's Deployment write is read-edit-retried at once, not left for the next tick."""
    run = inproc.rotation_run(api, HMAC, overlap="1h")
    try:
        assert inproc.drive_rotation(run, until="Staged") == "Staged"
        inproc.set_abort(api, run.ns)
        run.kube.fail_before["replace_namespaced_deployment"] = ApiException(
            status=409, reason="Conflict")
        obj = run.obj()
        assert run.reconciler().tick(obj) == "Aborted"
        _check_aborted(api, run)
    finally:
        inproc.finish(api, run.ns)


def test_abort_crash_after_every_write_restores_once(
        api: Any) -> None:
    """Crashes inside the abort itself (from Promoted): the re-run restores everything once.
    (The agents' Secret is restored before the keyring, so no write opens a gap.)"""
    clean = inproc.rotation_run(api, HMAC, overlap="1h")
    inproc.drive_rotation(clean, until="Promoted")
    n0 = len(clean.trace)
    inproc.set_abort(api, clean.ns)
    inproc.drive_rotation(clean)
    _check_aborted(api, clean)
    positions = inproc.not_last_of_tick(clean.trace[n0:])
    inproc.finish(api, clean.ns)

    def one(pos: tuple[str, int]) -> str | None:
        run = inproc.rotation_run(api, HMAC, overlap="1h")
        try:
            inproc.drive_rotation(run, until="Promoted")
            inproc.set_abort(api, run.ns)
            inproc.drive_rotation(run, crash_at=pos)
            assert run.crashes == 1
            _check_aborted(api, run)
            return None
        except AssertionError as e:
            return f"crash after abort write {pos}: {e}"
        finally:
            inproc.finish(api, run.ns)

    failures = inproc.in_parallel(positions, one)
    kit.bump("crash after every write: abort from Promoted", crash_points=len(positions),
             crashes=len(positions), restored_once=len(positions) - len(failures))
    assert not failures, "\n".join(failures)


# -- SignatureIncident scenarios A and D ------------------------------------------------------


def _check_incident(api: Any, run: inproc.IncidentRun, obj: dict[str, Any]) -> None:
    st = obj["status"]
    assert st["phase"] == "Resolved", (st.get("phase"), st.get("conditions"))
    actions = [a["payload"]["action"] for a in st.get("actions") or []]
    verify_chain(st["actions"], inproc.PUBKEYS)
    assert verify_signal(st["signal"], inproc.PUBKEYS)["type"] == "detection"
    if run.scenario == "A":
        assert actions == ["accept-agent-keys"], actions
        fps = backend_fingerprints(api, run.ns)
        assert run.keys["old"].fingerprint in fps and run.keys["new"].fingerprint in fps
        ring = inproc.ring_of(api, run.ns)
        kids = [k["kid"] for k in ring["keys"]]
        assert len(kids) == len(set(kids)) == 2, kids  # nothing added twice
    else:
        assert actions == ["tighten-token-rate", "list-failing-sources",
                           "restore-token-rate"], actions
        assert st["actions"][0]["payload"]["previous"] == "100"
        assert inproc.token_rate_of(api, run.ns) == "100"


@pytest.mark.parametrize("scenario", ["A", "D"])
def test_incident_crash_after_every_write(api: Any, scenario: str) -> None:
    clean = inproc.incident_run(api, scenario)
    obj = inproc.drive_incident(clean)
    _check_incident(api, clean, obj)
    assert clean.violations == []
    # (A crash after a tick's last write only drops the in-memory evidence cache, which is
    # what an operator restart between ticks does: the SIGKILL tests cover that.)
    positions = inproc.not_last_of_tick(clean.trace)
    inproc.finish(api, clean.ns)

    def one(pos: tuple[str, int]) -> str | None:
        run = inproc.incident_run(api, scenario)
        try:
            obj = inproc.drive_incident(run, crash_at=pos)
            assert run.crashes == 1, "no crash happened at this position"
            _check_incident(api, run, obj)
            assert run.violations == [], run.violations
            return None
        except AssertionError as e:
            return f"crash after write {pos}: {e}; writes: {_compact(run.trace)}"
        finally:
            inproc.finish(api, run.ns)

    failures = inproc.in_parallel(positions, one)
    kit.bump(f"crash after every write: scenario {scenario}", crash_points=len(positions),
             crashes=len(positions), completed_once=len(positions) - len(failures))
    kit.figure(f"crash after every write: scenario {scenario}",
               writes_per_incident=len(clean.trace))
    assert not failures, "\n".join(failures)
