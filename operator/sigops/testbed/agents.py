"""The agent simulator: N agents submitting signed PCS at a set rate, with injected faults.

Requests are paced open-loop (request *i* is due at ``start + i / rate``) and sent by a small
pool of workers over keep-alive connections; agent ids go out as ``X-Agent-Id``. A fraction
of the requests (``fault_fraction``) carries one of the chosen faults, in turn. The report
counts answers by HTTP status, overall and per fault (``"error"`` for transport failures).

>>> plan = AgentPlan("http://127.0.0.1:9", count=2, rate=0)
>>> plan.faults, plan.agents
((), 3)
"""

from __future__ import annotations

import http.client
import logging
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from ..core.keys import Key, generate_key
from .backend import SUBMIT_PATH
from .faults import Fault, FaultContext, build_body
from .keysource import KeySource
from .pcsgen import make_pcs

__all__ = ["AgentPlan", "AgentSimulator", "run_agents"]

log = logging.getLogger("sigops.testbed")


@dataclass(frozen=True)
class AgentPlan:
    """What to send, how fast and for how long."""

    url: str
    """Base URL of the backend (``/v1/pcs/submit`` is appended unless the path is given)."""
    rate: float = 10.0
    """Requests per second over all agents; 0 = as fast as the workers go."""
    duration: float | None = None
    """Seconds to run; with neither this nor ``count``, run until :meth:`stop`."""
    count: int | None = None
    agents: int = 3
    faults: tuple[Fault, ...] = ()
    fault_fraction: float = 1.0
    """Share of requests that carry a fault (when faults are given)."""
    profile: str = "python"
    seed: int | None = None
    """Makes PCS values and fault choices reproducible (and so pcs_ids repeat across runs)."""
    workers: int = 8
    timeout: float = 5.0
    agent_prefix: str = "agent"
    clock_offset_seconds: float = 0.0
    """Every agent's clock is this far off (``skew:S`` adds to it per request)."""


@dataclass
class _Tally:
    by_status: Counter[str] = field(default_factory=Counter)
    by_fault: dict[str, Counter[str]] = field(default_factory=dict)
    fingerprints: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: str, status: str, fp: str) -> None:
        with self.lock:
            self.by_status[status] += 1
            self.by_fault.setdefault(fault, Counter())[status] += 1
            self.fingerprints.add(fp)


class AgentSimulator:
    """Runs an :class:`AgentPlan`; ``old_key`` / ``new_key`` feed the key faults."""

    def __init__(self, plan: AgentPlan, key: KeySource, *, old_key: KeySource | None = None,
                 new_key: KeySource | None = None) -> None:
        if plan.rate < 0 or plan.agents < 1 or plan.workers < 1:
            raise ValueError("rate must be >= 0, agents and workers >= 1")
        if not 0.0 <= plan.fault_fraction <= 1.0:
            raise ValueError("fault fraction must be within [0, 1]")
        for f in plan.faults:
            if f.kind == "old-key" and old_key is None:
                raise ValueError("fault old-key needs an old key (--old-key)")
            if f.kind == "new-key-early" and new_key is None:
                raise ValueError("fault new-key-early needs a new key (--new-key)")
        self.plan = plan
        self.key, self.old_key, self.new_key = key, old_key, new_key
        u = urlsplit(plan.url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"url {plan.url[:80]!r} must be http://host:port")
        self._host, self._port = u.hostname, u.port or 80
        self._path = u.path if u.path not in ("", "/") else SUBMIT_PATH
        alg = key.current().alg
        self._wrong: Key = generate_key(alg, kid="wrong-key", state="active")
        self._nonce = random.Random(plan.seed).getrandbits(64) if plan.seed is not None \
            else secrets.randbits(64)
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_ok: dict[int, bytes] = {}
        self._tally = _Tally()

    def stop(self) -> None:
        """Stop sending (workers finish their request in flight)."""
        self._stop.set()

    # -- one request --------------------------------------------------------------------

    def _take(self) -> int | None:
        with self._lock:
            i = self._next
            if self.plan.count is not None and i >= self.plan.count:
                return None
            self._next += 1
            return i

    def _body(self, i: int) -> tuple[str, bytes, Key, int]:
        plan = self.plan
        rng = random.Random(f"{self._nonce}:{i}")
        agent = i % plan.agents
        seq = i // plan.agents
        fault: Fault | None = None
        if plan.faults and rng.random() < plan.fault_fraction:
            fault = plan.faults[i % len(plan.faults)]
        sent = datetime.now(UTC) + timedelta(seconds=plan.clock_offset_seconds)
        key = self.key.current()
        ctx = FaultContext(
            pcs=make_pcs(rng, f"shard-{agent:03d}", seq + 1, sent, seq=seq), key=key,
            profile=plan.profile, sent_at=sent, seq=seq,
            old_key=self.old_key.current() if self.old_key else None,
            new_key=self.new_key.current() if self.new_key else None,
            wrong_key=self._wrong, last_accepted=self._last_ok.get(agent))
        return (fault.label if fault else "none"), build_body(fault, ctx), key, agent

    def _worker(self, t0: float) -> None:
        plan = self.plan
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set():
                i = self._take()
                if i is None:
                    return
                due = t0 + (i / plan.rate if plan.rate > 0 else 0.0)
                if plan.duration is not None and (
                        max(due, time.monotonic()) - t0 >= plan.duration):
                    return
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                label, body, key, agent = self._body(i)
                if conn is None:
                    conn = http.client.HTTPConnection(self._host, self._port,
                                                      timeout=plan.timeout)
                status, conn = self._post(conn, body, f"{plan.agent_prefix}-{agent:03d}")
                if status == "200" and label == "none":
                    self._last_ok[agent] = body
                self._tally.add(label, status, key.fingerprint)
        finally:
            if conn is not None:
                conn.close()

    def _post(self, conn: http.client.HTTPConnection, body: bytes, agent_id: str
              ) -> tuple[str, http.client.HTTPConnection | None]:
        headers = {"Content-Type": "application/json", "X-Agent-Id": agent_id}
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._stop.wait(0.05)  # do not spin on a dead backend
            return "error", None
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            return str(resp.status), None
        return str(resp.status), conn

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Send until the count, the duration or :meth:`stop`; return the report."""
        plan = self.plan
        log.info("agents: %d agent(s) -> %s at %s req/s, faults=%s (fraction %g), key %s",
                 plan.agents, plan.url, plan.rate or "max",
                 ",".join(f.label for f in plan.faults) or "none", plan.fault_fraction,
                 self.key.describe())
        t0 = time.monotonic()
        threads = [threading.Thread(target=self._worker, args=(t0,), daemon=True,
                                    name=f"agent-worker-{n}") for n in range(plan.workers)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        except KeyboardInterrupt:
            self.stop()
            for t in threads:
                t.join(timeout=plan.timeout + 1)
        return self.report(time.monotonic() - t0)

    def report(self, elapsed: float) -> dict[str, Any]:
        """Counts by status (overall and per fault); no key material, fingerprints only."""
        t = self._tally
        with t.lock:
            sent = sum(t.by_status.values())
            return {
                "url": self.plan.url,
                "sent": sent,
                "elapsed_seconds": round(elapsed, 3),
                "rate_achieved": round(sent / elapsed, 2) if elapsed > 0 else None,
                "by_status": dict(sorted(t.by_status.items())),
                "by_fault": {f: dict(sorted(c.items())) for f, c in sorted(t.by_fault.items())},
                "key_fingerprints": sorted(t.fingerprints),
            }


def run_agents(plan: AgentPlan, key: KeySource, **kw: KeySource | None) -> dict[str, Any]:
    """Build an :class:`AgentSimulator` and run it to the end."""
    return AgentSimulator(plan, key, **kw).run()
