"""Baseline (b), the floor: ``json.loads`` plus one HMAC-SHA256 per record, nothing else.

No canonical form, no rounding, no checks: a verifier cannot do less work per record and
still read it and compute one MAC. Prints ``{"total"}``.

Usage: python floor_verify.py SECRET FILE.jsonl
"""

from __future__ import annotations

import hmac
import json
import sys


def main() -> int:
    key = sys.argv[1].encode("utf-8")
    total = 0
    digest, loads = hmac.digest, json.loads
    with open(sys.argv[2], "rb") as f:
        for line in f:
            loads(line)
            digest(key, line, "sha256")
            total += 1
    sys.stdout.write(json.dumps({"total": total}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
