"""Baseline (a): the upstream FLK agent's own Python verify path, as a standalone process.

Per line: ``json.loads``, Decimal half-up rounding of the four float fields at 9 decimals,
``json.dumps(sort_keys=True, separators=(",", ":"))`` of the signed subset, HMAC-SHA256,
base64 decode of ``sig``, ``hmac.compare_digest``. Prints ``{"total", "valid"}``.

Usage: python upstream_verify.py SECRET FILE.jsonl
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from decimal import ROUND_HALF_UP, Decimal

SIGNED = ("pcs_id", "merkle_root", "epoch", "shard_id", "D_hat", "coh_star", "r", "budget")
FLOATS = ("D_hat", "coh_star", "r", "budget")
Q9 = Decimal("1e-9")


def round9(x: float) -> float:
    return float(Decimal(repr(x)).quantize(Q9, rounding=ROUND_HALF_UP))


def verify(pcs: dict, key: bytes) -> bool:
    subset = {k: pcs[k] for k in SIGNED}
    for k in FLOATS:
        subset[k] = round9(subset[k])
    msg = json.dumps(subset, sort_keys=True, separators=(",", ":")).encode("utf-8")
    expected = hmac.new(key, msg, hashlib.sha256).digest()
    return hmac.compare_digest(expected, base64.b64decode(pcs["sig"]))


def main() -> int:
    key = sys.argv[1].encode("utf-8")
    total = valid = 0
    with open(sys.argv[2], "rb") as f:
        for line in f:
            if not line.strip():
                continue
            total += 1
            valid += verify(json.loads(line), key)
    sys.stdout.write(json.dumps({"total": total, "valid": valid}) + "\n")
    return 0 if total == valid else 1


if __name__ == "__main__":
    sys.exit(main())
