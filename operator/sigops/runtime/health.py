"""Liveness and readiness that mean something.

Liveness fails when a part of the operator is stuck, not only when it is dead:

- ``reconcile``: a heartbeat the kopf event loop renews by running a no-op in kopf's handler
  thread pool (a blocked loop or a pool whose threads all hang both stop it), and no
  reconcile step (a timer or delete handler) running longer than ``stuck_after``;
- ``intake``: a heartbeat the receiver's event loop renews through its worker pool the same
  way, and no alert post in the works longer than ``stuck_after``.

Readiness: kopf has started (or this copy stands by for the active one) and the API server
answered within ``api_max_age``.

A restart is what liveness buys: kopf re-runs an interrupted step, so a stuck step is retried
in a fresh process rather than waited on for ever.

>>> t = [0.0]
>>> h = Health(stuck_after=60, clock=lambda: t[0])
>>> h.expect("reconcile", max_age=30)
>>> h.live()
(True, 'reconcile, intake fine')
>>> t[0] = 31.0
>>> h.live()
(False, 'reconcile: no heartbeat for 31s')
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Health", "PARTS"]

PARTS = ("reconcile", "intake")


class Health:
    """Heartbeats, work in flight and the API server's last answer; thread-safe."""

    def __init__(self, stuck_after: float = 300.0, api_max_age: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_after, self.api_max_age, self.clock = stuck_after, api_max_age, clock
        self.started = threading.Event()
        self.standby = threading.Event()
        """Set while another copy holds the leader Lease and this one waits."""
        self._lock = threading.Lock()
        self._beats: dict[str, tuple[float, float]] = {}  # part -> (last beat, max age)
        self._work: dict[int, tuple[str, str, float]] = {}  # id -> (part, what, since)
        self._ids = itertools.count()
        self._api_ok: float | None = None
        self._api_error = "not checked yet"

    # -- what the parts report -------------------------------------------------------------

    def expect(self, part: str, max_age: float) -> None:
        """``part`` must :meth:`beat` at least every ``max_age`` seconds from now on."""
        with self._lock:
            self._beats[part] = (self.clock(), max_age)

    def beat(self, part: str) -> None:
        with self._lock:
            if part in self._beats:
                self._beats[part] = (self.clock(), self._beats[part][1])

    @contextmanager
    def working(self, part: str, what: str) -> Iterator[None]:
        """Mark one piece of work of ``part`` (a reconcile step, an alert post) in flight."""
        key = next(self._ids)
        with self._lock:
            self._work[key] = (part, what, self.clock())
        try:
            yield
        finally:
            with self._lock:
                del self._work[key]

    def api_result(self, ok: bool, error: str = "") -> None:
        """The outcome of a check of the API server (only the error's kind, no details)."""
        with self._lock:
            if ok:
                self._api_ok = self.clock()
            else:
                self._api_error = error or "unreachable"

    # -- the probes -----------------------------------------------------------------------

    def ages(self) -> dict[str, float]:
        """Seconds since each expected heartbeat (for /metrics)."""
        now = self.clock()
        with self._lock:
            return {p: now - last for p, (last, _) in self._beats.items()}

    def live(self) -> tuple[bool, str]:
        now = self.clock()
        problems: list[str] = []
        with self._lock:
            for part, (last, max_age) in sorted(self._beats.items()):
                if now - last > max_age:
                    problems.append(f"{part}: no heartbeat for {now - last:.0f}s")
            for part, what, since in sorted(self._work.values(), key=lambda w: w[2]):
                if now - since > self.stuck_after:
                    problems.append(f"{part}: {what} running for {now - since:.0f}s")
                    break  # the oldest says enough
        if problems:
            return False, "; ".join(problems)
        return True, f"{', '.join(PARTS)} fine"

    def ready(self) -> tuple[bool, str]:
        if not self.started.is_set() and not self.standby.is_set():
            return False, "starting"
        now = self.clock()
        with self._lock:
            ok, error = self._api_ok, self._api_error
        if ok is None or now - ok > self.api_max_age:
            return False, f"API server: {error}"
        if self.standby.is_set():
            return True, "standing by for the active copy, API server answering"
        return True, "started, API server answering"

    def healthz(self) -> tuple[bool, str]:
        """Started (or standing by) and live (what ``/healthz`` has always meant)."""
        if not self.started.is_set() and not self.standby.is_set():
            return False, "starting"
        return self.live()
