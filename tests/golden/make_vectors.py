"""Generate sigops' own golden vectors into this directory (or ``--out DIR``).

    python tests/golden/make_vectors.py            # rewrite the committed vectors
    python tests/golden/make_vectors.py --check    # exit 1 if they differ from the committed ones

Everything is deterministic: fixed HMAC secret strings, fixed Ed25519 seeds (SHA-256 of a fixed
label; Ed25519 signatures are deterministic), fixed record contents. These keys exist only for
the vectors and must never be used anywhere else. ``sigops golden tests/golden`` checks them.

Kinds (see ``sigops.core.golden``):
- ``canonical_<profile>_<case>.json`` -- a signature subset and its exact canonical bytes;
- ``pcs_<profile>_<alg>.json`` -- a full PCS that verifies under exactly that profile with the
  keys of ``keyring.json``;
- ``verdict_<cause>[_<variant>].json`` -- a record (or records), an inline key ring and the
  expected diagnosis.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from sigops.core.canonical import PROFILE_NAMES, canonical_bytes
from sigops.core.keys import ED25519, HMAC, Key
from sigops.core.pcs import expected_pcs_id, sign_pcs

HERE = Path(__file__).resolve().parent
PROFILES = PROFILE_NAMES  # python, go, fixed9


def hmac_key(name: str, state: str = "active") -> Key:
    return Key(f"golden-hmac-{name}", HMAC, state, secret=f"sigops-golden-hmac-{name}-v1".encode())


def ed_key(name: str, state: str = "active") -> Key:
    seed = hashlib.sha256(f"sigops-golden-ed25519-{name}-v1".encode()).digest()
    return Key(f"golden-ed25519-{name}", ED25519, state, private_seed=seed)


def public(key: Key) -> dict[str, Any]:
    """A key ring entry without private material (what a verifier needs)."""
    entry = key.to_entry()
    entry.pop("private_b64", None)
    return entry


def pcs(shard: str = "golden-shard-\u00e4<1>&", epoch: int = 42, **over: Any) -> dict[str, Any]:
    """An unsigned PCS whose canonical bytes differ under every profile."""
    merkle = over.pop("merkle_root", hashlib.sha256(f"golden|{shard}|{epoch}".encode()).hexdigest())
    d: dict[str, Any] = {
        "pcs_id": expected_pcs_id(merkle, epoch, shard),
        "schema": "fractal-lba-kakeya",
        "version": "0.1",
        "shard_id": shard,
        "epoch": epoch,
        "attempt": 1,
        "sent_at": "2025-01-19T12:00:00Z",
        "merkle_root": merkle,
        "D_hat": 1.0,             # python 1.0, go 1, fixed9 1.000000000
        "coh_star": 0.2,
        "r": 0.1278756055,        # Go's float rounding and decimal half-up disagree here
        "budget": 1e-7,           # python 1e-07, go 1e-7, fixed9 0.000000100
        "regime": "mixed",
    }
    d.update(over)
    return d


def subset(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("pcs_id", "merkle_root", "epoch", "shard_id",
                              "D_hat", "coh_star", "r", "budget")}


CANONICAL_CASES: dict[str, dict[str, Any]] = {
    "basic": subset(pcs(shard="shard-001", epoch=1, D_hat=1.234567890, coh_star=0.75, r=0.5,
                        budget=0.35)),
    "edge": {
        "pcs_id": "id<&>\u2028\u2029", "merkle_root": "caf\u00e9 \U0001f600 \"q\" \\ /",
        "epoch": 9007199254740992, "shard_id": "ctl\x00\x01\x1f\n\t\x7f",
        "D_hat": -0.0, "coh_star": 1e21, "r": 0.1278756055, "budget": 1.5e-7,
    },
    "rounding": {
        "pcs_id": "p", "merkle_root": "m", "epoch": -3, "shard_id": "s",
        "D_hat": 2.0746415705, "coh_star": -2.5e-10, "r": 1e20, "budget": 1e-5,
    },
}


def vectors() -> dict[str, Any]:
    out: dict[str, Any] = {}
    hk, ek = hmac_key("active"), ed_key("active")
    out["keyring.json"] = {"keys": [public(hk), public(ek)], "profile": "python",
                           "max_skew_seconds": None}

    for case, sub in CANONICAL_CASES.items():
        for p in PROFILES:
            out[f"canonical_{p}_{case}.json"] = {
                "description": f"canonical bytes of the '{case}' subset under profile {p}",
                "profile": p,
                "input": sub,
                "expected_payload": canonical_bytes(sub, p).decode("utf-8"),
            }

    for p in PROFILES:
        for alg, key in ((HMAC, hk), (ED25519, ek)):
            short = "hmac" if alg == HMAC else "ed25519"
            out[f"pcs_{p}_{short}.json"] = dict(sign_pcs(pcs(epoch=100), key, p), profile=p)

    out.update(verdicts())
    return out


def verdict(record: Any, keys: list[Key], expect: dict[str, Any], *, profile: str = "python",
            max_skew: float | None = None, accepts: list[str] | None = None,
            description: str = "") -> dict[str, Any]:
    ring: dict[str, Any] = {"keys": [public(k) for k in keys], "profile": profile,
                            "max_skew_seconds": max_skew}
    if accepts is not None:
        ring["backend_accepts"] = accepts
    return {"description": description, "record": record, "keyring": ring, "expect": expect}


def verdicts() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for short, mk in (("hmac", hmac_key), ("ed25519", ed_key)):
        active, retiring = mk("active"), mk("retiring", "retiring")
        retired, pending = mk("retired", "retired"), mk("pending", "pending")
        stranger = mk("stranger")
        keys = [active, retiring, retired, pending]
        good = sign_pcs(pcs(epoch=7), active)

        out[f"verdict_valid_{short}.json"] = verdict(
            good, keys, {"cause": "valid", "kid": active.kid, "profile": "python"},
            description="signed by the active key under the ring's profile")
        out[f"verdict_valid_retiring_{short}.json"] = verdict(
            sign_pcs(pcs(epoch=8), retiring), keys,
            {"cause": "valid", "kid": retiring.kid},
            description="a retiring key is still accepted during the overlap")
        out[f"verdict_clock_skew_{short}.json"] = verdict(
            {"pcs": good, "received_at": "2025-01-19T12:10:00Z", "source": "agent-1"}, keys,
            {"cause": "clock_skew", "kid": active.kid}, max_skew=60,
            description="valid signature, sent_at 600 s before received_at, limit 60 s")
        out[f"verdict_stale_key_{short}.json"] = verdict(
            sign_pcs(pcs(epoch=9), retired), keys, {"cause": "stale_key", "kid": retired.kid},
            description="verifies only with a retired key")
        out[f"verdict_pending_key_{short}.json"] = verdict(
            sign_pcs(pcs(epoch=10), pending), keys, {"cause": "pending_key", "kid": pending.kid},
            description="verifies only with a pending key")
        out[f"verdict_pending_key_not_accepted_{short}.json"] = verdict(
            good, keys, {"cause": "pending_key", "kid": active.kid},
            accepts=[retiring.kid],
            description="an active key the backend does not accept (backend_accepts)")
        for p in ("go", "fixed9"):
            out[f"verdict_canonicalization_drift_{p}_{short}.json"] = verdict(
                sign_pcs(pcs(epoch=11), active, p), keys,
                {"cause": "canonicalization_drift", "kid": active.kid, "profile": p},
                description=f"verifies with a known key only under profile {p}")
        broken = dict(good, shard_id="golden-shard-other")
        out[f"verdict_tampered_pcs_id_{short}.json"] = verdict(
            broken, keys, {"cause": "tampered"},
            description="shard_id changed after signing: the pcs_id rule is broken")
        out[f"verdict_tampered_replay_{short}.json"] = verdict(
            [good, dict(good, D_hat=0.5)], keys, {"cause": "tampered"},
            description="the same pcs_id seen again with other signed content")
        out[f"verdict_unverifiable_{short}.json"] = verdict(
            sign_pcs(pcs(epoch=12), stranger), keys, {"cause": "unverifiable"},
            description="well-formed, signed by a key nobody knows")
        out[f"verdict_malformed_{short}.json"] = verdict(
            dict(good, epoch="7"), keys, {"cause": "malformed"},
            description="epoch is a string")
    out["verdict_malformed_sig.json"] = verdict(
        dict(pcs(), sig="not base64!"), [hmac_key("active")], {"cause": "malformed"},
        description="sig is not base64")
    return out


def render(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="directory to write (default: here)")
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    docs = {name: render(doc) for name, doc in vectors().items()}
    if args.check:
        stale = [n for n, text in docs.items()
                 if not (args.out / n).is_file() or (args.out / n).read_text() != text]
        extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in docs)
        for n in stale + extra:
            print(f"golden vector out of date: {n}", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (args.out / name).write_text(text)
    print(f"wrote {len(docs)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
