"""Per-source sliding-window rate limit for incoming signals (default: 3 per hour).

The first signal over the limit in a window is flagged ``first_limited`` (the caller records a
``SignalRateLimited`` event once); later ones only count. The state is a plain dict so it can be
stored (e.g. in a ConfigMap) and survive restarts.

>>> t = [0.0]
>>> rl = SlidingWindowLimiter(limit=3, window_seconds=3600, clock=lambda: t[0])
>>> [rl.check("a").allowed for _ in range(4)]
[True, True, True, False]
>>> rl.check("b").allowed        # sources are independent
True
>>> t[0] = 3601.0; rl.check("a").allowed   # the window slides
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .timeparse import format_time

__all__ = ["Decision", "LogBudget", "SlidingWindowLimiter"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check; the fields of a ``SignalRateLimited`` record."""

    allowed: bool
    source: str
    count: int
    window_start: float
    window_seconds: float
    at: float
    first_limited: bool = False

    def record(self) -> dict[str, Any]:
        def iso(t: float) -> str:
            return format_time(datetime.fromtimestamp(t, UTC))

        return {"source": self.source, "signal_count": self.count,
                "window_start": iso(self.window_start),
                "window_seconds": self.window_seconds, "rate_limited_at": iso(self.at)}


@dataclass
class _Source:
    accepted: list[float] = field(default_factory=list)
    limited: int = 0


class SlidingWindowLimiter:
    """``limit`` signals per ``window_seconds`` per source; injectable clock."""

    def __init__(self, limit: int = 3, window_seconds: float = 3600.0,
                 clock: Callable[[], float] = time.time, max_sources: int = 10000) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("limit must be >= 1 and window_seconds > 0")
        self.limit = limit
        self.window_seconds = float(window_seconds)
        self.clock = clock
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}

    def check(self, source: str) -> Decision:
        now = self.clock()
        st = self._sources.get(source)
        if st is None:
            self._evict(now)
            st = self._sources[source] = _Source()
        horizon = now - self.window_seconds
        st.accepted = [t for t in st.accepted if t > horizon]
        if len(st.accepted) < self.limit:
            st.accepted.append(now)
            st.limited = 0
            return Decision(True, source, len(st.accepted), st.accepted[0],
                            self.window_seconds, now)
        st.limited += 1
        return Decision(False, source, len(st.accepted) + st.limited, st.accepted[0],
                        self.window_seconds, now, first_limited=st.limited == 1)

    def undo(self, decision: Decision) -> None:
        """Take back a check whose signal was not acted on (say, its incident could not be
        created), so that the retry of the same signal is counted once."""
        st = self._sources.get(decision.source)
        if st is None:
            return
        if decision.allowed:
            if decision.at in st.accepted:
                st.accepted.remove(decision.at)
        elif st.limited > 0:
            st.limited -= 1

    def _evict(self, now: float) -> None:
        if len(self._sources) < self.max_sources:
            return
        horizon = now - self.window_seconds
        for s in [s for s, v in self._sources.items() if not any(t > horizon for t in v.accepted)]:
            del self._sources[s]
        while len(self._sources) >= self.max_sources:
            del self._sources[next(iter(self._sources))]

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "limit": self.limit, "window_seconds": self.window_seconds,
                "sources": {s: {"accepted": v.accepted, "limited": v.limited}
                            for s, v in self._sources.items()}}

    def load_state(self, state: Any) -> None:
        """Restore a saved state; a malformed state is ignored field by field, never fatal."""
        if not isinstance(state, dict) or not isinstance(state.get("sources"), dict):
            return
        for s, v in state["sources"].items():
            if not isinstance(s, str) or not isinstance(v, dict):
                continue
            acc = [float(t) for t in v.get("accepted", []) if isinstance(t, int | float)]
            lim = v.get("limited", 0)
            self._sources[s] = _Source(sorted(acc)[-self.limit:],
                                       lim if isinstance(lim, int) and lim >= 0 else 0)


class LogBudget:
    """At most one log line per key (say, a client and a reason) per ``interval`` seconds: a
    flood of refusals makes a line a minute per client, not a line per request. The lines held
    back are counted, and the key's next line says how many. At most ``max_keys`` keys are
    remembered (the least recently logged are forgotten, with what they held back: a forgotten
    key logs again at once). :meth:`flush` says what is held back.

    >>> t = [0.0]
    >>> b = LogBudget(interval=60, clock=lambda: t[0])
    >>> [b.take("10.0.0.7") for _ in range(3)]
    [0, None, None]
    >>> b.take("10.0.0.8")      # keys are independent
    0
    >>> t[0] = 60.0; b.take("10.0.0.7")   # a line again, saying 2 were held back
    2
    """

    def __init__(self, interval: float = 60.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or max_keys < 1:
            raise ValueError("interval must be > 0 and max_keys >= 1")
        self.interval, self.max_keys, self.clock = float(interval), max_keys, clock
        self._keys: dict[str, tuple[float, int]] = {}  # key -> (last line at, held back)

    def take(self, key: str) -> int | None:
        """None: hold this line back (it is counted). Else log it now, with the number of
        lines of ``key`` held back since its last line."""
        now = self.clock()
        last = self._keys.get(key)
        if last is not None and now - last[0] < self.interval:
            self._keys[key] = (last[0], last[1] + 1)
            return None
        self._keys.pop(key, None)
        while len(self._keys) >= self.max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = (now, 0)
        return 0 if last is None else last[1]

    def flush(self) -> list[tuple[str, int]]:
        """The keys with lines held back and how many, each count then reset (a flood that
        stopped is still told, by whoever calls this now and then).

        >>> b = LogBudget(clock=lambda: 0.0)
        >>> [b.take("a") for _ in range(3)], b.flush(), b.flush()
        ([0, None, None], [('a', 2)], [])
        """
        held = [(k, n) for k, (_, n) in self._keys.items() if n]
        for k, _ in held:
            self._keys[k] = (self._keys[k][0], 0)
        return held
