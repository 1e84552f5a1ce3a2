"""Liveness and readiness logic (sigops.runtime.health), on a fake clock."""

from __future__ import annotations

import doctest

from sigops.runtime import health as health_mod
from sigops.runtime.health import Health


def test_doctests() -> None:
    assert doctest.testmod(health_mod).failed == 0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_heartbeat_must_be_renewed() -> None:
    c = Clock()
    h = Health(stuck_after=60, clock=c)
    h.expect("reconcile", 30)
    h.expect("intake", 30)
    c.t += 25
    h.beat("intake")
    c.t += 10
    ok, why = h.live()
    assert not ok and why == "reconcile: no heartbeat for 35s"
    h.beat("reconcile")
    assert h.live()[0]
    assert h.ages() == {"reconcile": 0.0, "intake": 10.0}
    h.beat("unknown part")  # not expected: ignored
    assert set(h.ages()) == {"reconcile", "intake"}


def test_work_in_flight_too_long_is_stuck_and_only_then() -> None:
    c = Clock()
    h = Health(stuck_after=60, clock=c)
    with h.working("intake", "an alert post from 10.0.0.1"):
        c.t += 60
        assert h.live()[0]
        c.t += 1
        with h.working("reconcile", "a step of keyrotation ns/r"):
            assert h.live() == (False, "intake: an alert post from 10.0.0.1 running for 61s")
    assert h.live()[0]  # done: no longer stuck


def test_readiness_needs_start_and_a_recent_api_answer() -> None:
    c = Clock()
    h = Health(api_max_age=30, clock=c)
    assert h.ready() == (False, "starting")
    assert h.healthz() == (False, "starting")
    h.started.set()
    assert h.ready() == (False, "API server: not checked yet")
    h.api_result(True)
    assert h.ready()[0] and h.healthz()[0]
    c.t += 20
    h.api_result(False, "ConnectionRefusedError")
    assert h.ready()[0]  # one failed check within the window does not flip it
    c.t += 11
    assert h.ready() == (False, "API server: ConnectionRefusedError")
    h.api_result(True)
    assert h.ready()[0]
