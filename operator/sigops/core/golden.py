"""Golden vectors: known answers that pin the canonical forms and the verdicts.

Three kinds of vector file are understood (JSON, one vector per file):

- canonical: ``{"input": subset, "expected_payload": str, "hmac_key"?: str, "profile"?: str}``
  -- the canonical bytes under some profile (the declared one, else any) must equal
  ``expected_payload``. The upstream ``signature_test_case_*.json`` files are of this kind.
- pcs: a full PCS with ``sig`` -- it must verify under some profile (the declared one, else any)
  with a key of the ring or an ``hmac_key`` found in the same directory.
- verdict: ``{"record": pcs-or-envelope, "keyring": {...}, "expect": {"cause": ..., ...}}`` --
  the diagnosis of the record must give the expected cause (and kid/profile when named).
- accepted: ``{"pcs": {...}, "canonical_payload": str, "real_backend_status"?: int}`` -- a PCS
  that a real backend accepted, with the exact bytes its signature covers: the canonical bytes
  under a profile must equal ``canonical_payload`` *and* the signature must verify under that
  profile with a key of the ring. The profiles where both hold are reported.

Files named ``keyring*.json`` are key rings, not vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .canonical import PROFILES, canonical_bytes
from .diagnose import Diagnoser
from .errors import KeyringError, MalformedInput
from .keys import HMAC, Key, KeyRing, keyring_from_dict
from .pcs import _check_subset, parse_pcs, signing_message
from .strictjson import loads

__all__ = ["VectorResult", "run_golden"]


@dataclass(frozen=True, slots=True)
class VectorResult:
    file: str
    kind: str
    ok: bool
    profiles: tuple[str, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "kind": self.kind, "ok": self.ok,
                "profiles": list(self.profiles), "detail": self.detail}


def _kind(doc: Any) -> str:
    if isinstance(doc, Mapping):
        if "input" in doc and "expected_payload" in doc:
            return "canonical"
        if "record" in doc and "expect" in doc:
            return "verdict"
        if "pcs" in doc and "canonical_payload" in doc:
            return "accepted"
        if "sig" in doc:
            return "pcs"
    return "unknown"


def _check_canonical(name: str, doc: Mapping[str, Any], want: str | None) -> VectorResult:
    subset = _check_subset(doc["input"])
    expected = doc["expected_payload"]
    if not isinstance(expected, str):
        raise MalformedInput("expected_payload must be a string")
    matches = tuple(p for p in PROFILES if canonical_bytes(subset, p) == expected.encode())
    want = doc.get("profile", want)
    ok = want in matches if want else bool(matches)
    detail = f"canonical bytes match {', '.join(matches) or 'no profile'}"
    return VectorResult(name, "canonical", ok, matches, detail)


def _check_pcs(name: str, doc: Mapping[str, Any], keys: list[Key],
               want: str | None) -> VectorResult:
    pcs = parse_pcs(doc)
    if not keys:
        return VectorResult(name, "pcs", False, (), "no key to verify with (give --keyring)")
    matches = []
    for p in PROFILES:
        msg = signing_message(canonical_bytes(pcs.subset, p), pcs.alg)
        if any(k.alg == pcs.alg and k.verify(msg, pcs.sig) for k in keys):
            matches.append(p)
    want = doc.get("profile", want) if isinstance(doc.get("profile"), str) else want
    ok = (want in matches if want else bool(matches)) and pcs.pcs_id_ok()
    detail = f"verifies under {', '.join(matches) or 'no profile'}"
    if not pcs.pcs_id_ok():
        detail += "; pcs_id rule broken"
    return VectorResult(name, "pcs", ok, tuple(matches), detail)


def _check_accepted(name: str, doc: Mapping[str, Any], keys: list[Key],
                    want: str | None) -> VectorResult:
    pcs = parse_pcs(doc["pcs"])
    payload = doc["canonical_payload"]
    if not isinstance(payload, str):
        raise MalformedInput("canonical_payload must be a string")
    if not keys:
        return VectorResult(name, "accepted", False, (), "no key to verify with (give --keyring)")
    same = [p for p in PROFILES if canonical_bytes(pcs.subset, p) == payload.encode()]
    signed = [p for p in PROFILES
              if any(k.alg == pcs.alg and k.verify(signing_message(
                  canonical_bytes(pcs.subset, p), pcs.alg), pcs.sig) for k in keys)]
    matches = tuple(p for p in same if p in signed)
    ok = (want in matches if want else bool(matches)) and pcs.pcs_id_ok()
    detail = (f"canonical payload matches {', '.join(same) or 'no profile'}; "
              f"signature verifies under {', '.join(signed) or 'no profile'}")
    if not pcs.pcs_id_ok():
        detail += "; pcs_id rule broken"
    return VectorResult(name, "accepted", ok, matches, detail)


def _check_verdict(name: str, doc: Mapping[str, Any], ring: KeyRing | None) -> VectorResult:
    expect = doc["expect"]
    if not isinstance(expect, Mapping) or "cause" not in expect:
        raise MalformedInput("expect must name a cause")
    vring = keyring_from_dict(doc["keyring"]) if "keyring" in doc else ring
    if vring is None:
        return VectorResult(name, "verdict", False, (), "no keyring in vector or --keyring")
    d = Diagnoser(vring)
    records = doc["record"] if isinstance(doc["record"], list) else [doc["record"]]
    v = None
    for i, rec in enumerate(records):  # earlier records set context (e.g. a replayed pcs_id)
        v = d.classify_obj(rec, i)
    assert v is not None
    got = {"cause": v.cause, "kid": v.kid, "profile": v.profile}
    ok = all(got.get(k) == expect[k] for k in ("cause", "kid", "profile") if k in expect)
    return VectorResult(name, "verdict", ok, (v.profile,) if v.profile else (),
                        f"got {v.cause}" + (f" ({v.detail})" if v.detail else ""))


def run_golden(directory: str | Path, ring: KeyRing | None = None,
               profile: str | None = None) -> list[VectorResult]:
    """Check every vector file of ``directory``; never raises for a bad vector file."""
    root = Path(directory)
    if not root.is_dir():
        raise KeyringError(f"golden vector directory {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix == ".json" and p.is_file())
    docs: dict[str, Any] = {}
    results: list[VectorResult] = []
    local_ring = ring
    for p in files:
        try:
            doc = loads(p.read_bytes())
        except (MalformedInput, OSError) as e:
            reason = e.reason if isinstance(e, MalformedInput) else str(e)
            results.append(VectorResult(p.name, "unknown", False, (), reason))
            continue
        if p.name.startswith("keyring"):
            if local_ring is None:
                local_ring = keyring_from_dict(doc)
            continue
        docs[p.name] = doc
    keys: list[Key] = list(local_ring.keys) if local_ring else []
    for name, doc in docs.items():
        if _kind(doc) == "canonical" and isinstance(doc.get("hmac_key"), str):
            keys.append(Key(f"golden:{name}", HMAC, secret=doc["hmac_key"].encode()))
    for name, doc in docs.items():
        kind = _kind(doc)
        try:
            if kind == "canonical":
                results.append(_check_canonical(name, doc, profile))
            elif kind == "pcs":
                results.append(_check_pcs(name, doc, keys, profile))
            elif kind == "verdict":
                results.append(_check_verdict(name, doc, local_ring))
            elif kind == "accepted":
                results.append(_check_accepted(name, doc, keys, profile))
            else:
                results.append(VectorResult(name, "unknown", False, (), "not a golden vector"))
        except (MalformedInput, KeyringError) as e:
            results.append(VectorResult(name, kind, False, (), str(e)))
    return sorted(results, key=lambda r: r.file)
