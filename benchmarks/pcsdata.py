"""Generated inputs for the benchmarks: upstream-shaped, signed PCS records and key rings.

The records follow upstream's golden ``pcs_tiny_case_1.json``: every field of the upstream
agent's PCS, the four signed floats already rounded to 9 decimals (as the agent sends them),
``v_star`` at full float precision, ``pcs_id`` = sha256(merkle_root|epoch|shard_id). Other
record shapes (:data:`SHAPES`) change only the four signed floats. Everything is deterministic
(seeded), so two runs verify the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sigops.core.keys import ED25519, HMAC, Key
from sigops.core.pcs import expected_pcs_id, sign_pcs

__all__ = ["HMAC_SECRET", "hmac_key", "ed_key", "upstream_pcs", "write_jsonl", "write_keyring",
           "SENT_AT", "SHAPES", "signed_records"]

HMAC_SECRET = "bench-hmac-secret-0123456789abcdef"
SENT_AT = datetime(2025, 1, 19, 12, 0, 0, tzinfo=UTC)
_SCALES = [2, 4, 8, 16]


def hmac_key(kid: str = "bench-hmac", state: str = "active", secret: str = HMAC_SECRET) -> Key:
    return Key(kid, HMAC, state, secret=secret.encode())


def ed_key(kid: str = "bench-ed25519", state: str = "active", seed: int = 7) -> Key:
    return Key(kid, ED25519, state, private_seed=bytes((seed + i) % 256 for i in range(32)))


def upstream_pcs(rng: random.Random, seq: int, shard: int = 0) -> dict[str, Any]:
    """One unsigned PCS shaped like the upstream agent's (field order and types included)."""
    shard_id = f"shard-{shard:03d}"
    epoch = 1 + seq // 1000
    merkle = hashlib.sha256(f"{shard_id}|{seq}|{rng.random()!r}".encode()).hexdigest()
    d_hat = round(rng.uniform(0.3, 1.95), 9)
    coh = round(rng.uniform(0.01, 0.95), 9)
    sent = SENT_AT + timedelta(milliseconds=seq * 37)
    return {
        "pcs_id": expected_pcs_id(merkle, epoch, shard_id),
        "schema": "fractal-lba-kakeya",
        "version": "0.1",
        "shard_id": shard_id,
        "epoch": epoch,
        "attempt": 1,
        "sent_at": sent.strftime("%Y-%m-%dT%H:%M:%S.") + f"{sent.microsecond // 1000:03d}Z",
        "seed": rng.randint(0, 2**31 - 1),
        "scales": list(_SCALES),
        "N_j": {str(s): 4 + i * 3 + rng.randint(0, 3) for i, s in enumerate(_SCALES)},
        "coh_star": coh,
        "v_star": [rng.uniform(-1, 1) for _ in range(3)],
        "D_hat": d_hat,
        "r": round(rng.uniform(0.05, 1.0), 9),
        "regime": rng.choice(("sticky", "mixed", "non_sticky")),
        "budget": round(0.1 + 0.5 * (1 - coh) + 0.05 * rng.random(), 9),
        "merkle_root": merkle,
        "sig": "",
        "ft": {"outbox_seq": seq, "degraded": False, "fallbacks": [], "clock_skew_ms": 0},
    }


def _full(rng: random.Random, x: float) -> float:
    """Full double precision (17 significant digits mostly): an agent that does not pre-round."""
    return x + rng.uniform(-1e-3, 1e-3)


def _integral(rng: random.Random, x: float) -> float:
    """Integral floats (``2.0``; ``2`` in the go form)."""
    return float(round(x * 4))


def _negative_tiny(rng: random.Random, x: float) -> float:
    """Negative full-precision values and tiny ones written with an exponent (``-3.1e-07``,
    ``4.2e-11``, which rounds to zero)."""
    if rng.random() < 0.5:
        return -_full(rng, x)
    return rng.choice((-1.0, 1.0)) * rng.uniform(1.0, 9.99) * 10.0 ** -rng.randint(5, 12)


SHAPES: dict[str, Any] = {
    "nine": None,  # as the upstream agent sends them: rounded to 9 decimals
    "full": _full,
    "integral": _integral,
    "negative_tiny": _negative_tiny,
}
"""Record shapes by name: how the four signed floats look (None: as generated)."""


def signed_records(n: int, key: Key, seed: int = 1, profile: str = "python",
                   shards: int = 16, shape: str = "nine") -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    reshape = SHAPES[shape]
    shape_rng = random.Random(seed + 1_000_003)  # the nine-decimal records stay as they were
    for i in range(n):
        pcs = upstream_pcs(rng, i, i % shards)
        if reshape is not None:
            for k in ("D_hat", "coh_star", "r", "budget"):
                pcs[k] = reshape(shape_rng, pcs[k])
        yield sign_pcs(pcs, key, profile)


def write_jsonl(path: Path, records: Iterator[dict[str, Any]]) -> int:
    """One JSON document per line, in the agent's own ``json.dumps`` form."""
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            n += 1
    return n


def write_keyring(path: Path, keys: list[Key], profile: str = "python", **extra: Any) -> Path:
    path.write_text(json.dumps({"keys": [k.to_entry() for k in keys], "profile": profile,
                                "max_skew_seconds": None, **extra}))
    return path


# -- mixed failing samples for diagnosis ------------------------------------------------------

CAUSES = ("malformed", "valid", "clock_skew", "stale_key", "pending_key",
          "canonicalization_drift", "tampered", "unverifiable")
MAX_SKEW = 300.0


def diagnosis_keys() -> dict[str, Key]:
    """The ring's keys by role, and one key the ring does not know (``unknown``)."""
    return {
        "active": hmac_key("active-1", "active", "active-secret-0123456789"),
        "retired": hmac_key("retired-0", "retired", "retired-secret-0123456789"),
        "pending": hmac_key("pending-2", "pending", "pending-secret-0123456789"),
        "unknown": hmac_key("stranger", "active", "attacker-secret-0123456789"),
    }


def _envelope(pcs: dict[str, Any], source: str, skew_s: float = 0.0) -> dict[str, Any]:
    sent = datetime.strptime(pcs["sent_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    received = sent + timedelta(seconds=skew_s)
    return {"pcs": pcs, "received_at": received.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "source": source}


_MALFORMED = (
    lambda line: line.replace('"epoch": ', '"epoch": 1, "epoch": ', 1),  # duplicate key
    lambda line: line.replace('"coh_star": ', '"coh_star": NaN, "x": ', 1),
    lambda line: line[: len(line) // 2],  # truncated
    lambda line: line.replace('"sig": "', '"sig": "%', 1),  # bad base64
    lambda line: line.replace('"epoch": ', '"epoch": "', 1).replace(', "attempt"',
                                                                     '", "attempt"', 1),
)


def mixed_lines(n: int, seed: int = 11, causes: tuple[str, ...] = CAUSES,
                keys: dict[str, Key] | None = None) -> list[tuple[str, str]]:
    """``n`` JSONL lines, each made to have one cause (round-robin over ``causes``, then
    shuffled); returns (intended cause, line) pairs. Every sample is distinct, so the
    diagnoser's replay memo never short-cuts. Half the tampered ones break the pcs_id rule;
    the other half replay the pcs_id of a valid sample earlier in the stream with other
    signed content."""
    keys = keys or diagnosis_keys()
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    replays = 0
    for i in range(n):
        cause = causes[i % len(causes)]
        pcs = upstream_pcs(rng, i, i % 16)
        src = f"agent-{i % 16}"
        if cause == "malformed":
            base = json.dumps(_envelope(sign_pcs(pcs, keys["active"]), src))
            line = _MALFORMED[(i // len(causes)) % len(_MALFORMED)](base)
        elif cause in ("valid", "clock_skew"):
            skew = 900.0 if cause == "clock_skew" else 0.0
            line = json.dumps(_envelope(sign_pcs(pcs, keys["active"]), src, skew))
        elif cause == "stale_key":
            line = json.dumps(_envelope(sign_pcs(pcs, keys["retired"]), src))
        elif cause == "pending_key":
            line = json.dumps(_envelope(sign_pcs(pcs, keys["pending"]), src))
        elif cause == "canonicalization_drift":
            pcs["D_hat"] = 1.0  # integral: the go profile writes "1", python "1.0"
            line = json.dumps(_envelope(sign_pcs(pcs, keys["active"], "go"), src))
        elif cause == "tampered" and (i // len(causes)) % 2 and "valid" in causes:
            replays += 1
            continue  # made below, once the valid samples have their places
        elif cause == "tampered":
            signed = sign_pcs(pcs, keys["active"])
            signed["merkle_root"] = "0" * 64  # changed after signing: pcs_id rule broken
            line = json.dumps(_envelope(signed, src))
        else:  # unverifiable: signed by a key the ring does not know
            line = json.dumps(_envelope(sign_pcs(pcs, keys["unknown"]), src))
        out.append((cause, line))
    rng.shuffle(out)
    half = len(out) // 2
    early_valid = [line for cause, line in out[:half] if cause == "valid"]
    for j in range(replays):
        doc = json.loads(rng.choice(early_valid))
        doc["pcs"]["budget"] = round(doc["pcs"]["budget"] + 1e-6 * (j + 1), 9)  # after signing
        out.insert(rng.randrange(half, len(out) + 1), ("tampered", json.dumps(doc)))
    return out
