"""The dedup cache: accepted ``pcs_id`` -> signed content, for the dedup TTL (14 days).

A replay of an accepted ``pcs_id`` with the same signed content is answered from here (200)
without verifying again, which is why a key rotation must overlap for the TTL.

>>> c = DedupCache(ttl=60.0, clock=lambda: 0.0)
>>> c.add("p1", ("x",))
>>> c.lookup("p1", ("x",)), c.lookup("p1", ("y",)), c.lookup("p2", ("x",))
('same', 'conflict', None)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["DedupCache", "DEFAULT_TTL"]

DEFAULT_TTL = 14 * 86400.0


class DedupCache:
    """Bounded (oldest evicted first), TTL-expiring, thread-safe."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[Hashable, float]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, pcs_id: str, content: Hashable) -> str | None:
        """``"same"`` (a replay), ``"conflict"`` (same id, other content) or None (unknown)."""
        with self._lock:
            hit = self._items.get(pcs_id)
            if hit is None:
                return None
            if hit[1] <= self._clock():
                del self._items[pcs_id]
                return None
            return "same" if hit[0] == content else "conflict"

    def add(self, pcs_id: str, content: Hashable) -> None:
        """Remember an accepted submission."""
        with self._lock:
            self._items[pcs_id] = (content, self._clock() + self.ttl)
            self._items.move_to_end(pcs_id)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
