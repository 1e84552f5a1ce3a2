"""The audit against what the real upstream backend accepted (``../shared/interop/
kakeya-backend-accepted/``, read from there): every vector verifies under the backend's
profile with a key of the history, so a window that ends before it was received makes it
``accepted_invalid`` -- and a search by the Ed25519 key's fingerprint finds exactly the
Ed25519 vectors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sigops.core.audit import AuditQuery, ShardInput, audit_shard, history_ring
from sigops.core.keys import ED25519, HMAC, Key, KeyRing

ACCEPTED = Path(__file__).resolve().parents[2].parent / "shared" / "interop" / \
    "kakeya-backend-accepted"
FILES = sorted(ACCEPTED.glob("backend_accepted_*.json")) if ACCEPTED.is_dir() else []
RECEIVED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not FILES, reason=f"vectors not found at {ACCEPTED}")


def wal() -> bytes:
    out = []
    for i, f in enumerate(FILES):
        doc = json.loads(f.read_bytes())
        assert doc["real_backend_status"] in (200, 202)
        body = json.dumps(doc["pcs"]).encode()
        stamp = (RECEIVED + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
        out.append(f"{stamp}|{len(body)}|".encode() + body + b"\n")
    return b"".join(out)


def test_what_the_backend_accepted_is_accepted_and_a_revoked_key_makes_it_a_finding() -> None:
    revoked = Key("vector-hmac", HMAC, "retired", secret=b"flk-backend-vector-key",
                  not_after=RECEIVED - timedelta(minutes=1))
    ed = Key("vector-ed25519", ED25519, private_seed=bytes(range(32)))
    ring = history_ring(KeyRing((revoked, ed), "go"))
    got = audit_shard(ring, [ShardInput("vectors.wal", wal())],
                      AuditQuery(fingerprints=frozenset({ed.fingerprint}),
                                 accepted_invalid=True, first_n=10))
    n_hmac = sum("hmac" in f.name for f in FILES)
    assert got["total"] == len(FILES) and got["by_profile"] == {"go": len(FILES)}
    assert got["by_verdict"] == {"stale_key": n_hmac, "valid": len(FILES) - n_hmac}
    assert got["findings"]["accepted_invalid"]["count"] == n_hmac
    assert {f["kid"] for f in got["findings"]["accepted_invalid"]["first"]} == {"vector-hmac"}
    assert got["findings"]["searched_key"]["count"] == len(FILES) - n_hmac
