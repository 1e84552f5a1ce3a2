"""Baseline for Ed25519: the ``cryptography`` verify loop alone, over pre-parsed messages.

Reading the JSONL, canonicalising and hashing happen first and are not timed; the timed loop is
``public_key.verify(sig, sha256(canonical))`` per record. Prints
``{"total", "valid", "seconds", "cpu_seconds", "per_second", "per_cpu_second"}``.

Usage: python ed25519_raw.py PUBLIC_B64 FILE.jsonl [PROFILE]   (default profile: python)
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sigops.core.canonical import SIGNED_FIELDS, canonical_bytes


def main() -> int:
    pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(sys.argv[1]))
    profile = sys.argv[3] if len(sys.argv) > 3 else "python"
    pairs = []
    with open(sys.argv[2], "rb") as f:
        for line in f:
            pcs = json.loads(line)
            subset = {k: pcs[k] for k in SIGNED_FIELDS}
            msg = hashlib.sha256(canonical_bytes(subset, profile)).digest()
            pairs.append((base64.b64decode(pcs["sig"]), msg))
    verify, valid = pub.verify, 0
    t0, c0 = time.perf_counter(), time.process_time()
    for sig, msg in pairs:
        try:
            verify(sig, msg)
            valid += 1
        except InvalidSignature:
            pass
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    sys.stdout.write(json.dumps({"total": len(pairs), "valid": valid, "seconds": dt,
                                 "cpu_seconds": cpu, "per_second": len(pairs) / dt,
                                 "per_cpu_second": len(pairs) / cpu}) + "\n")
    return 0 if valid == len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
