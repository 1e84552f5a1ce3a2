"""A token bucket: ``TOKEN_RATE`` requests per second, bursts of one second's worth.

>>> b = TokenBucket(2.0, clock=lambda: 0.0)
>>> [b.take() for _ in range(3)]
[True, True, False]
>>> TokenBucket(0).take()  # 0 or unset means unlimited
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket", "parse_rate"]


def parse_rate(value: str | None) -> float:
    """``TOKEN_RATE`` as requests/s; unset, empty or 0 means unlimited (0.0)."""
    if value is None or not value.strip():
        return 0.0
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"TOKEN_RATE={value[:20]!r} is not a number") from None
    if rate != rate or rate < 0 or rate == float("inf"):
        raise ValueError(f"TOKEN_RATE={value[:20]!r} must be a finite number >= 0")
    return rate


class TokenBucket:
    """Thread-safe token bucket; ``rate`` <= 0 admits everything."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token if there is one."""
        if self.rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
