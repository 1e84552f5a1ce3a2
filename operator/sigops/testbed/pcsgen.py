"""Upstream-shaped PCS documents (unsigned), as the FLK Python agent sends them.

>>> import random
>>> from datetime import UTC, datetime
>>> p = make_pcs(random.Random(1), "shard-001", 7, datetime(2025, 1, 19, tzinfo=UTC), seq=0)
>>> p["pcs_id"] == expected_pcs_id(p["merkle_root"], 7, "shard-001"), p["schema"]
(True, 'fractal-lba-kakeya')
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime
from typing import Any

from ..core.pcs import expected_pcs_id

__all__ = ["make_pcs", "iso", "SCALES"]

SCALES = (2, 4, 8, 16, 32)


def iso(t: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix (what the agent writes in ``sent_at``)."""
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _regime(coh: float, d_hat: float) -> str:
    if coh >= 0.7 and d_hat <= 1.5:
        return "sticky"
    return "non_sticky" if d_hat >= 1.8 else "mixed"


def make_pcs(rng: random.Random, shard_id: str, epoch: int, sent_at: datetime, *, seq: int,
             attempt: int = 1, version: str = "0.1") -> dict[str, Any]:
    """One PCS with plausible values; ``pcs_id`` = sha256(merkle_root|epoch|shard_id)."""
    merkle = hashlib.sha256(f"{shard_id}|{epoch}|{seq}|{rng.random()!r}".encode()).hexdigest()
    d_hat = round(rng.uniform(1.05, 1.95), 4)
    coh = round(rng.uniform(0.5, 0.95), 4)
    budget = round(0.1 + 0.5 * (1 - coh) + 0.05 * rng.random(), 6)
    n_j = {str(s): max(1, int(s ** (d_hat / 1.0) // 2) + rng.randint(0, 2)) for s in SCALES}
    return {
        "pcs_id": expected_pcs_id(merkle, epoch, shard_id),
        "schema": "fractal-lba-kakeya",
        "version": version,
        "shard_id": shard_id,
        "epoch": epoch,
        "attempt": attempt,
        "sent_at": iso(sent_at),
        "seed": rng.randint(0, 2**31 - 1),
        "scales": list(SCALES),
        "N_j": n_j,
        "coh_star": coh,
        "v_star": [round(rng.uniform(-1, 1), 4) for _ in range(3)],
        "D_hat": d_hat,
        "r": round(rng.uniform(0.6, 1.0), 6),
        "regime": _regime(coh, d_hat),
        "budget": budget,
        "merkle_root": merkle,
        "sig": "",
        "ft": {"outbox_seq": seq, "degraded": False, "fallbacks": [], "clock_skew_ms": 0},
    }
