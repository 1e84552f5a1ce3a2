"""Faults an agent run can inject, and the request body each one produces.

Each fault is a row of :data:`FAULTS` (a builder function), not a branch of an if-chain.

============== ================================================ ===============================
fault          what the agent does                              backend verdict (status)
============== ================================================ ===============================
old-key        signs with the given old key                     unverifiable (401) once the
                                                                backend dropped it
new-key-early  signs with the given new key                     unverifiable (401) until the
                                                                backend accepts it
skew:S         ``sent_at`` S seconds off (agent clock)          clock_skew (401) if |S| exceeds
                                                                the backend's ``--max-skew``
profile:P      signs under canonical profile P (go, fixed9)     canonicalization_drift (401)
tamper[:F]     changes signed field F after signing             tampered (401) for merkle_root,
               (default merkle_root)                            pcs_id, epoch, shard_id;
                                                                unverifiable for the floats
wrong-key      signs with a random key                          unverifiable (401)
malformed      bad JSON or a bad PCS shape (cycles kinds)       malformed (400)
replay         resends this agent's last accepted PCS           dedup hit (200)
============== ================================================ ===============================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..core.canonical import FLOAT_FIELDS, PROFILES, SIGNED_FIELDS, canonical_bytes
from ..core.keys import Key
from ..core.pcs import sign_pcs
from .pcsgen import iso

__all__ = ["Fault", "FaultContext", "FAULTS", "parse_fault", "build_body", "EXPECTED_CAUSE"]


@dataclass(frozen=True)
class Fault:
    """A fault kind and its argument (``skew:30`` -> kind ``skew``, arg ``30``)."""

    kind: str
    arg: str | None = None

    @property
    def label(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


@dataclass
class FaultContext:
    """What a builder needs for one request."""

    pcs: dict[str, Any]
    """The unsigned PCS of this request."""
    key: Key
    profile: str
    sent_at: datetime
    seq: int
    old_key: Key | None = None
    new_key: Key | None = None
    wrong_key: Key | None = None
    last_accepted: bytes | None = None


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _normal(ctx: FaultContext, arg: str | None) -> bytes:
    return _dump(sign_pcs(ctx.pcs, ctx.key, ctx.profile))


def _with_key(attr: str) -> Callable[[FaultContext, str | None], bytes]:
    def build(ctx: FaultContext, arg: str | None) -> bytes:
        key = getattr(ctx, attr)
        if key is None:
            raise ValueError(f"fault needs {attr.replace('_', '-')}")
        return _dump(sign_pcs(ctx.pcs, key, ctx.profile))
    return build


def _skew(ctx: FaultContext, arg: str | None) -> bytes:
    pcs = dict(ctx.pcs)
    pcs["sent_at"] = iso(ctx.sent_at + timedelta(seconds=float(arg or 0)))
    pcs["ft"] = {**pcs.get("ft", {}), "clock_skew_ms": int(float(arg or 0) * 1000)}
    return _dump(sign_pcs(pcs, ctx.key, ctx.profile))


def _profile(ctx: FaultContext, arg: str | None) -> bytes:
    prof = arg or "go"
    pcs = dict(ctx.pcs)
    subset = {k: pcs[k] for k in SIGNED_FIELDS}
    if canonical_bytes(subset, prof) == canonical_bytes(subset, ctx.profile):
        # Most floats print alike in python and go; a whole number (1.0 vs 1) does not.
        pcs["D_hat"] = float(round(pcs["D_hat"]))
    return _dump(sign_pcs(pcs, ctx.key, prof))


def _tamper(ctx: FaultContext, arg: str | None) -> bytes:
    field = arg or "merkle_root"
    pcs = sign_pcs(ctx.pcs, ctx.key, ctx.profile)
    v = pcs[field]
    if field in FLOAT_FIELDS:
        pcs[field] = round(v + 0.125, 6)
    elif field == "epoch":
        pcs[field] = v + 1
    else:  # a hex string or an id: change its last character
        pcs[field] = v[:-1] + ("0" if v[-1:] != "0" else "1")
    return _dump(pcs)


_MALFORMED: tuple[Callable[[dict[str, Any]], bytes], ...] = (
    lambda p: _dump(p)[:-7],                                          # truncated JSON
    lambda p: _dump(p)[:-1] + b',"epoch":1}',                         # duplicate key
    lambda p: _dump({**p, "D_hat": 0}).replace(b'"D_hat":0', b'"D_hat":NaN'),  # NaN
    lambda p: _dump({k: v for k, v in p.items() if k != "sig"}),      # missing sig
    lambda p: _dump({**p, "sig": "not base64!"}),                     # bad base64
    lambda p: _dump({**p, "epoch": str(p["epoch"])}),                 # wrong type
    lambda p: b"[]",                                                  # not an object
)


def _malformed(ctx: FaultContext, arg: str | None) -> bytes:
    signed = sign_pcs(ctx.pcs, ctx.key, ctx.profile)
    return _MALFORMED[ctx.seq % len(_MALFORMED)](signed)


def _replay(ctx: FaultContext, arg: str | None) -> bytes:
    return ctx.last_accepted if ctx.last_accepted is not None else _normal(ctx, arg)


FAULTS: Mapping[str, Callable[[FaultContext, str | None], bytes]] = {
    "old-key": _with_key("old_key"),
    "new-key-early": _with_key("new_key"),
    "skew": _skew,
    "profile": _profile,
    "tamper": _tamper,
    "wrong-key": _with_key("wrong_key"),
    "malformed": _malformed,
    "replay": _replay,
}
"""Fault kind -> body builder."""

EXPECTED_CAUSE: Mapping[str, str] = {
    "old-key": "unverifiable", "new-key-early": "unverifiable", "skew": "clock_skew",
    "profile": "canonicalization_drift", "tamper": "tampered", "wrong-key": "unverifiable",
    "malformed": "malformed", "replay": "valid",
}
"""The backend verdict each fault produces (skew: only beyond ``--max-skew``)."""

_NEEDS_ARG = {"skew"}
_TAKES_ARG = {"skew", "profile", "tamper"}


def parse_fault(text: str) -> Fault:
    """Parse ``old-key``, ``skew:30``, ``profile:go``, ``tamper:D_hat``, ...; ValueError if bad."""
    kind, sep, arg = text.strip().partition(":")
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind[:30]!r}; known: {', '.join(FAULTS)}")
    if sep and kind not in _TAKES_ARG:
        raise ValueError(f"fault {kind} takes no argument")
    if kind in _NEEDS_ARG and not arg:
        raise ValueError(f"fault {kind} needs an argument, e.g. {kind}:30")
    if kind == "skew":
        try:
            float(arg)
        except ValueError:
            raise ValueError(f"skew:{arg[:20]} is not a number of seconds") from None
    if kind == "profile" and arg and arg not in PROFILES:
        raise ValueError(f"unknown profile {arg[:20]!r}; known: {', '.join(PROFILES)}")
    if kind == "tamper" and arg and arg not in SIGNED_FIELDS:
        raise ValueError(f"tamper:{arg[:20]} is not a signed field "
                         f"({', '.join(SIGNED_FIELDS)})")
    return Fault(kind, arg or None)


def build_body(fault: Fault | None, ctx: FaultContext) -> bytes:
    """The request body for this request: normal, or with ``fault`` injected."""
    if fault is None:
        return _normal(ctx, None)
    return FAULTS[fault.kind](ctx, fault.arg)
