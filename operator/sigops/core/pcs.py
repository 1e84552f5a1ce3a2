"""Proof-of-Computation Summaries: parse, sign and verify, exactly as the FLK stack does.

- HMAC-SHA256 is computed over the canonical bytes; Ed25519 signs SHA-256(canonical bytes).
- ``pcs_id`` must equal hex SHA-256 of ``merkle_root|epoch|shard_id``.
- Records arrive as a bare PCS or as an envelope ``{"pcs": {...}, "received_at", "source"}``.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from .canonical import FLOAT_FIELDS, SIGNED_FIELDS, canonical_bytes
from .errors import MalformedInput
from .keys import ED25519, HMAC, SIG_LEN, Key, b64decode_strict
from .strictjson import MAX_SAFE_INTEGER, safe_repr
from .timeparse import parse_time

__all__ = [
    "PCS",
    "Sample",
    "parse_pcs",
    "parse_record",
    "typed_subset",
    "typed_values",
    "content_key",
    "content_of",
    "expected_pcs_id",
    "sign_pcs",
    "signing_message",
]

_STR_FIELDS = ("pcs_id", "merkle_root", "shard_id")
_MAX_STR = 1024
_CONTENT = itemgetter(*SIGNED_FIELDS)


def expected_pcs_id(merkle_root: str, epoch: int, shard_id: str) -> str:
    """hex SHA-256 of ``merkle_root|epoch|shard_id``."""
    return hashlib.sha256(f"{merkle_root}|{epoch}|{shard_id}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PCS:
    """A type-checked PCS: the signed subset, the decoded signature and a few unsigned hints."""

    subset: Mapping[str, Any]
    sig: bytes
    sent_at: datetime | None
    version: str | None
    agent_version: str | None

    @property
    def pcs_id(self) -> str:
        v: str = self.subset["pcs_id"]
        return v

    @property
    def alg(self) -> str:
        return HMAC if len(self.sig) == SIG_LEN[HMAC] else ED25519

    def pcs_id_ok(self) -> bool:
        s = self.subset
        return bool(s["pcs_id"] == expected_pcs_id(s["merkle_root"], s["epoch"], s["shard_id"]))

    def content_key(self) -> tuple[Any, ...]:
        """Identity of the signed content, to spot one pcs_id carrying two contents."""
        return content_key(self.subset)


@dataclass(frozen=True, slots=True)
class Sample:
    """One record to judge: a PCS plus where and when it was received, if known."""

    pcs: PCS
    received_at: datetime | None = None
    source: str | None = None


def content_key(subset: Mapping[str, Any]) -> tuple[Any, ...]:
    """Identity of a signed subset: its values in SIGNED_FIELDS order (pcs_id first).

    ``0``, ``0.0`` and ``-0.0`` (and ``1`` and ``1.0``) are equal in Python but canonicalize to
    different bytes, so they are different contents: unless all four numbers are non-zero
    floats (the common case, where equality is exact), their ``repr`` is appended too. The two
    forms differ in length, so they never compare equal."""
    return content_of(_CONTENT(subset))


def content_of(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`content_key` of the subset's values in SIGNED_FIELDS order."""
    d, c, r, b = values[4:]
    if type(d) is float and type(c) is float and type(r) is float and type(b) is float \
            and d and c and r and b:
        return values
    return values + (repr(d), repr(c), repr(r), repr(b))


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _in_range(v: float) -> bool:
    # Every profile scales by 1e9 to round (the Go backend literally computes x*1e9); a value
    # whose scaled form overflows has no canonical form there, so it is rejected, not signed.
    try:
        return math.isfinite(v * 1e9)
    except OverflowError:  # an int too large for a float
        return False


def typed_values(obj: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The signed values (SIGNED_FIELDS order) of the common, well-typed record, checked in
    one expression; None for anything else (including every record with a problem:
    :func:`parse_pcs` gives reasons)."""
    get = obj.get
    pid, root, shard, e = get("pcs_id"), get("merkle_root"), get("shard_id"), get("epoch")
    d, c, r, b = get("D_hat"), get("coh_star"), get("r"), get("budget")
    isfinite = math.isfinite
    if (type(pid) is str and type(root) is str and type(shard) is str
            and len(pid) <= _MAX_STR and len(root) <= _MAX_STR and len(shard) <= _MAX_STR
            and pid.isascii() and root.isascii() and shard.isascii()
            and type(e) is int and -MAX_SAFE_INTEGER <= e <= MAX_SAFE_INTEGER
            and type(d) is float and type(c) is float and type(r) is float and type(b) is float
            # One test for four: a product that overflows is an infinity, and a sum with an
            # infinity in it is an infinity or NaN (a large sum that overflows only sends the
            # record to parse_pcs, which checks each value).
            and isfinite(d * 1e9 + c * 1e9 + r * 1e9 + b * 1e9)):
        return pid, root, e, shard, d, c, r, b
    return None


def typed_subset(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """:func:`typed_values` as a subset mapping."""
    values = typed_values(obj)
    return None if values is None else dict(zip(SIGNED_FIELDS, values, strict=True))


def _check_subset(obj: Mapping[str, Any]) -> dict[str, Any]:
    fast = typed_subset(obj)
    if fast is not None:
        return fast
    subset: dict[str, Any] = {}
    for k in _STR_FIELDS:
        v = obj.get(k)
        if not isinstance(v, str):
            raise MalformedInput(f"{k} must be a string" if k in obj else f"missing field {k}")
        if len(v) > _MAX_STR:
            raise MalformedInput(f"{k} longer than {_MAX_STR} characters")
        if not v.isascii() and not _utf8_ok(v):
            raise MalformedInput(f"{k} holds a lone surrogate (not valid Unicode)")
        subset[k] = v
    e = obj.get("epoch")
    if type(e) is not int:
        raise MalformedInput(
            "epoch must be an integer" if "epoch" in obj else "missing field epoch")
    if abs(e) > MAX_SAFE_INTEGER:  # strictjson refuses these already; decoded objects too
        raise MalformedInput("epoch beyond 2^53 is not allowed")
    subset["epoch"] = e
    for k in FLOAT_FIELDS:
        num: Any = obj.get(k)
        t = type(num)
        if t is not float and t is not int:
            raise MalformedInput(f"{k} must be a number" if k in obj else f"missing field {k}")
        if t is int and abs(num) > MAX_SAFE_INTEGER:
            raise MalformedInput(f"{k}: integer beyond 2^53 is not allowed")
        if not _in_range(num):
            raise MalformedInput(f"{k} is out of range: |{k}| * 1e9 must be a finite float64")
        subset[k] = num
    return subset


def parse_pcs(obj: Any) -> PCS:
    """Type-check a decoded PCS object; raise :class:`MalformedInput` with a reason."""
    if not isinstance(obj, dict):
        raise MalformedInput("PCS must be a JSON object")
    subset = _check_subset(obj)
    if "sig" not in obj:
        raise MalformedInput("missing field sig")
    sig = b64decode_strict(obj["sig"], "sig")
    if len(sig) not in (32, 64):
        raise MalformedInput(
            f"sig decodes to {len(sig)} bytes; expected 32 (hmac-sha256) or 64 (ed25519)")
    sent_at = None
    if obj.get("sent_at") is not None:
        try:
            sent_at = parse_time(obj["sent_at"])
        except MalformedInput as e:
            raise MalformedInput(f"sent_at: {e.reason}") from None
    version = obj.get("version")
    agent = obj.get("agent_version")
    return PCS(subset, sig, sent_at,
               version if isinstance(version, str) else None,
               agent if isinstance(agent, str) else None)


def parse_record(obj: Any) -> Sample:
    """A bare PCS or an envelope ``{"pcs", "received_at", "source"}``."""
    if isinstance(obj, dict) and "pcs" in obj and isinstance(obj["pcs"], dict):
        received = None
        if obj.get("received_at") is not None:
            try:
                received = parse_time(obj["received_at"])
            except MalformedInput as e:
                raise MalformedInput(f"received_at: {e.reason}") from None
        src = obj.get("source")
        if src is not None and not isinstance(src, str):
            raise MalformedInput("source must be a string")
        pcs = parse_pcs(obj["pcs"])
        agent = obj.get("agent_version")
        if isinstance(agent, str) and pcs.agent_version is None:
            pcs = PCS(pcs.subset, pcs.sig, pcs.sent_at, pcs.version, agent)
        return Sample(pcs, received, None if src is None else src[:253])
    return Sample(parse_pcs(obj))


def signing_message(canonical: bytes, alg: str) -> bytes:
    """What the key signs: the canonical bytes (HMAC) or their SHA-256 (Ed25519)."""
    return canonical if alg == HMAC else hashlib.sha256(canonical).digest()


def sign_pcs(pcs: Mapping[str, Any], key: Key, profile: str = "python") -> dict[str, Any]:
    """Return a copy of ``pcs`` with ``sig`` set, signed by ``key`` under ``profile``."""
    subset = _check_subset(pcs)
    msg = signing_message(canonical_bytes(subset, profile), key.alg)
    out = dict(pcs)
    out["sig"] = base64.b64encode(key.sign(msg)).decode("ascii")
    return out


def describe(obj: Any) -> str:
    """A short, safe description of an untrusted record for log lines."""
    return safe_repr(str(obj), 80)
