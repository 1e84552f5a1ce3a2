"""Signed PCS records and the mutations the fuzzers apply to them, with the oracle that says
whether a mutated record may still verify: only if its signed bytes (the canonical form of the
signed subset under the ring's profile) and its decoded signature are unchanged. Anything else
that comes back ``valid`` is a forgery the verifier let through.

Shared by the hypothesis tests and the atheris script; no pytest, no cluster.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import unicodedata
from collections import Counter
from typing import Any

from sigops.core import accel
from sigops.core.canonical import (
    FLOAT_FIELDS,
    SIGNED_FIELDS,
    canonical_bytes,
    canonical_bytes_of,
    canonical_bytes_reference,
)
from sigops.core.diagnose import Diagnoser, short_fields
from sigops.core.errors import MalformedInput
from sigops.core.keys import ED25519, HMAC, Key, KeyRing
from sigops.core.pcs import expected_pcs_id, parse_record, sign_pcs
from sigops.core.strictjson import loads

PROFILES = ("python", "go", "fixed9")
ALGS = (HMAC, ED25519)
KEYS = {HMAC: Key("fuzz-hmac", HMAC, secret=b"reliability-fuzz-hmac-secret-000"),
        ED25519: Key("fuzz-ed", ED25519, private_seed=bytes(range(100, 132)))}
DIAGNOSERS = {(a, p): Diagnoser(KeyRing((KEYS[a],), profile=p)) for a in ALGS for p in PROFILES}

_SHAPES: list[dict[str, Any]] = [
    {"shard_id": "shard-001", "D_hat": 1.0, "coh_star": 0.2, "r": 0.318421053, "budget": 0.35},
    # non-ASCII, not NFC (e + combining acute), characters Go escapes, a float that rounds
    {"shard_id": "cafe\u0301-<&>\u2028-\u00df", "D_hat": 0.1234567895, "coh_star": 1e-7,
     "r": -2.5e-10, "budget": 12345.678901234},
    {"shard_id": "\u00e9\u00e9", "D_hat": 1e21, "coh_star": 0, "r": 5e-324, "budget": -0.0},
]


def base_record(shape: int, epoch: int = 7) -> dict[str, Any]:
    s = _SHAPES[shape % len(_SHAPES)]
    root = f"{shape:02x}" * 32
    rec: dict[str, Any] = {"pcs_id": expected_pcs_id(root, epoch, s["shard_id"]),
                           "merkle_root": root, "epoch": epoch, **s,
                           "version": "0.1", "sent_at": "2026-01-01T00:00:00Z",
                           "ft": {"outbox_seq": 3, "degraded": False}}
    return rec


def signed_record(alg: str, profile: str, shape: int, epoch: int = 7) -> dict[str, Any]:
    return sign_pcs(base_record(shape, epoch), KEYS[alg], profile)


def signed_view(obj: Any, profile: str) -> tuple[bytes, bytes] | None:
    """(signed bytes under ``profile``, decoded signature), or None when not a PCS."""
    try:
        sample = parse_record(obj)
    except MalformedInput:
        return None
    return canonical_bytes(sample.pcs.subset, profile), sample.pcs.sig


def view_of_bytes(raw: bytes, profile: str) -> tuple[bytes, bytes] | None:
    try:
        obj = loads(raw)
    except MalformedInput:
        return None
    return signed_view(obj, profile)


# -- mutations -------------------------------------------------------------------------------

STRUCTURAL = ("set_field", "drop_field", "add_field", "retype", "nudge_float", "swap_sig",
              "sig_padding_bits", "normalize", "case_hex", "envelope", "bool_for_int",
              "stringify_number")
TEXTUAL = ("dup_key", "reformat_number", "unicode_escape", "whitespace", "flip_byte",
           "insert_byte", "delete_byte", "truncate", "dup_slice", "nan_literal",
           "huge_integer", "invalid_utf8", "deep_nesting")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12 if depth < 2 else 9)
    if choice == 0:
        return rng.choice([0, 1, -1, 2**53, -(2**53), 2**31, 7, 8])
    if choice == 1:
        return rng.choice([0.0, -0.0, 1.0, 0.5, 1e-7, 1e21, 1e300, 5e-324, 0.1 + 0.2,
                           float(rng.randrange(-10**6, 10**6)) / 997])
    if choice == 2:
        return rng.choice(["", "x", "shard-001", "\u00e9", "e\u0301", "<>&", "\u2028",
                           "A" * 2000, "0" * 64, "\x00"])
    if choice == 3:
        return rng.choice([True, False])
    if choice == 4:
        return None
    if choice == 5:
        return "".join(rng.choice(_B64) for _ in range(rng.choice([0, 4, 43, 44, 86, 88])))
    if choice == 6:
        return rng.uniform(-1e6, 1e6)
    if choice == 7:
        return rng.randrange(-(10**6), 10**6)
    if choice == 8:
        return "2026-01-01T00:00:00Z"
    if choice == 9:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["a", "pcs", "sig", "epoch"]): _random_value(rng, depth + 1)
            for _ in range(rng.randrange(3))}


def _fields(rec: dict[str, Any]) -> list[str]:
    return list(rec.keys())


def mutate_struct(rec: dict[str, Any], op: str, rng: random.Random,
                  other_sig: str) -> dict[str, Any]:
    """One structural mutation of a PCS dict (a copy)."""
    r = json.loads(json.dumps(rec))  # deep copy of plain JSON
    inner = r["pcs"] if isinstance(r.get("pcs"), dict) else r
    field = rng.choice([*SIGNED_FIELDS, "sig", "sent_at", "version", "ft"])
    if op == "set_field":
        inner[field] = _random_value(rng)
    elif op == "drop_field":
        inner.pop(field, None)
    elif op == "add_field":
        inner[rng.choice(["extra", "note", "x_" + str(rng.randrange(100))])] = _random_value(rng)
    elif op == "retype":
        v = inner.get(field)
        if isinstance(v, bool):
            inner[field] = int(v)
        elif isinstance(v, int):
            inner[field] = float(v)
        elif isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            inner[field] = int(v)
        elif isinstance(v, str):
            inner[field] = [v]
        else:
            inner[field] = str(v)
    elif op == "nudge_float":
        f = rng.choice(FLOAT_FIELDS)
        v = inner.get(f)
        if isinstance(v, int | float) and not isinstance(v, bool):
            step = rng.choice(["ulp", "1e-12", "4e-10", "6e-10", "1e-9"])
            nv = (math.nextafter(float(v), math.inf) if step == "ulp"
                  else float(v) + float(step) * rng.choice([1, -1]))
            inner[f] = nv if math.isfinite(nv) else v
    elif op == "swap_sig":
        inner["sig"] = other_sig
    elif op == "sig_padding_bits":
        s = inner.get("sig")
        if isinstance(s, str) and s.endswith("=") and len(s) >= 2:
            i = s.rstrip("=")
            last = i[-1]
            if last in _B64:
                alt = _B64[_B64.index(last) ^ rng.choice([1, 2, 3])]
                inner["sig"] = i[:-1] + alt + s[len(i):]
    elif op == "normalize":
        form = rng.choice(["NFC", "NFD", "NFKC", "NFKD"])
        for k in ("shard_id", "merkle_root", "pcs_id"):
            if isinstance(inner.get(k), str):
                inner[k] = unicodedata.normalize(form, inner[k])
    elif op == "case_hex":
        for k in ("merkle_root", "pcs_id"):
            if isinstance(inner.get(k), str):
                inner[k] = inner[k].upper()
    elif op == "envelope" and r is inner:
        r = {"pcs": inner, "received_at": rng.choice(["2026-01-01T00:00:01Z", "garbage", None]),
             "source": rng.choice(["agent-1", 7, None, "\u00e9" * 300])}
    elif op == "bool_for_int":
        inner["epoch"] = rng.choice([True, False])
    elif op == "stringify_number":
        f = rng.choice(["epoch", *FLOAT_FIELDS])
        inner[f] = str(inner.get(f))
    return r


def mutate_text(raw: bytes, op: str, rng: random.Random) -> bytes:
    """One textual (byte-level) mutation of a serialized record."""
    b = bytearray(raw)
    text = raw.decode("utf-8", "surrogateescape")
    if op == "dup_key":
        field = rng.choice([*SIGNED_FIELDS, "sig"])
        m = re.search(r'"' + re.escape(field) + r'": ("[^"]*"|[^,}]*)', text)
        if m and text.endswith("}"):
            text = text[:-1] + f', "{field}": {m.group(1)}' + "}"
    elif op == "reformat_number":
        field = rng.choice(["epoch", *FLOAT_FIELDS])
        m = re.search(r'("' + field + r'": )(-?[0-9][0-9.eE+-]*)', text)
        if m:
            v = float(m.group(2))
            fmt = rng.choice(["{:.17g}", "{:e}", "{:.12f}", "{:.3f}", "{:E}", "{}0"])
            new = fmt.format(v) if fmt != "{}0" else (m.group(2) + ("0" if "." in m.group(2)
                                                                    else ".0"))
            text = text[:m.start(2)] + new + text[m.end(2):]
    elif op == "unicode_escape":
        idxs = [i for i, c in enumerate(text) if c.isalnum()]
        if idxs:
            i = rng.choice(idxs)
            # only escape inside a string: find whether an odd number of quotes precede it
            if text[:i].count('"') % 2 == 1:
                text = text[:i] + f"\\u{ord(text[i]):04x}" + text[i + 1:]
    elif op == "whitespace":
        text = text.replace(", ", rng.choice([",", " ,\n\t ", ",  "]))
    elif op == "nan_literal":
        field = rng.choice(FLOAT_FIELDS)
        text = re.sub(r'("' + field + r'": )[^,}]*', lambda m: m.group(1) + rng.choice(
            ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]), text, count=1)
    elif op == "huge_integer":
        field = rng.choice(["epoch", *FLOAT_FIELDS])
        text = re.sub(r'("' + field + r'": )[^,}]*', lambda m: m.group(1) + rng.choice(
            [str(2**53 + 1), str(-(2**53) - 1), str(2**64), "9" * 40, "1" + "0" * 5000]),
            text, count=1)
    elif op == "invalid_utf8":
        bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"])
        i = rng.randrange(len(b) + 1)
        return bytes(b[:i] + bad + b[i:])
    elif op == "deep_nesting":
        depth = rng.choice([500, 5000, 50000])
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    elif b:
        i = rng.randrange(len(b))
        if op == "flip_byte":
            b[i] ^= 1 << rng.randrange(8)
        elif op == "insert_byte":
            b.insert(i, rng.randrange(256))
        elif op == "delete_byte":
            del b[i]
        elif op == "truncate":
            del b[i:]
        elif op == "dup_slice":
            j = rng.randrange(i, min(len(b), i + 40) + 1)
            b[i:i] = b[i:j]
        return bytes(b)
    return text.encode("utf-8", "surrogateescape")


def mutate(alg: str, profile: str, shape: int, seed: int, n_struct: int, n_text: int
           ) -> tuple[bytes, list[str]]:
    """A mutated signed record: (mutated bytes, operations applied)."""
    rng = random.Random(seed)
    original = signed_record(alg, profile, shape)
    other = signed_record(alg, profile, shape + 1, epoch=8)["sig"]
    rec: dict[str, Any] = original
    ops: list[str] = []
    for _ in range(n_struct):
        op = rng.choice(STRUCTURAL)
        ops.append(op)
        rec = mutate_struct(rec, op, rng, other)
    raw = json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    for _ in range(n_text):
        op = rng.choice(TEXTUAL)
        ops.append(op)
        raw = mutate_text(raw, op, rng)
    return raw, ops


_LEGIT: dict[tuple[str, str], set[tuple[bytes, bytes]]] = {}


def legitimately_signed(alg: str, profile: str) -> set[tuple[bytes, bytes]]:
    """(signed bytes under ``profile``, signature) of every record this module signs itself:
    the only pairs a mutated record may verify with."""
    got = _LEGIT.get((alg, profile))
    if got is None:
        got = set()
        for p in PROFILES:
            for shape in range(len(_SHAPES)):
                for epoch in (7, 8):
                    view = signed_view(signed_record(alg, p, shape, epoch), profile)
                    assert view is not None
                    got.add(view)
        _LEGIT[(alg, profile)] = got
    return got


KNOWN_BUG_SIGNED_ZERO = "known-bug:signed-zero-replay-cache"
_ZERO = re.compile(rb"([:,])-0((?:\.0+)?)(?=[,}])")


def _zero_sign_only(raw: bytes, alg: str, profile: str) -> bool:
    """True if ``raw``'s signed bytes equal a legitimately signed record's once the sign of
    every zero is dropped (the known replay-cache bug, see test_diagnoser_replay_cache_...)."""
    view = view_of_bytes(raw, profile)
    if view is None:
        return False
    norm = _ZERO.sub(rb"\g<1>0\g<2>", view[0])
    return any(_ZERO.sub(rb"\g<1>0\g<2>", c) == norm and sig == view[1]
               for c, sig in legitimately_signed(alg, profile))


def check(alg: str, profile: str, raw: bytes) -> str:
    """Judge ``raw`` with the long-lived diagnoser (caches warm, as in a CLI run) and with a
    fresh one; fail (AssertionError) on a ``malformed`` verdict without a reason or when the
    short and full routes disagree; return :data:`FORGERY` for a changed record that verified.
    ``sigops verify``'s short route (:meth:`Diagnoser.check_line`) must agree with the full
    route. Returns ``valid-unchanged`` (allowed: signed bytes and signature are those of a record
    legitimately signed), the known replay-cache bug marker, or the cause."""
    shared = DIAGNOSERS[(alg, profile)].classify_line(raw, 0)
    fresh = Diagnoser(DIAGNOSERS[(alg, profile)].ring).classify_line(raw, 0)
    for v in (shared, fresh):
        if v.cause == "malformed":
            assert v.detail, "malformed verdict without a reason"
    # sigops verify's short route must say what the full route says, with the compiled
    # reader (when built) and without it.
    ring = DIAGNOSERS[(alg, profile)].ring
    for d in (Diagnoser(ring), Diagnoser(ring, accelerate=False)):
        short, kid, _ = d.check_line(raw, 0)
        if short is None:
            assert fresh.valid and kid == fresh.kid, ("short route: valid, full route: "
                                                      f"{fresh.cause}", raw[:300])
        else:
            assert short.cause == fresh.cause, ("short and full route disagree", short.cause,
                                                fresh.cause, raw[:300])
    assert_accel_agrees(raw, profile)
    if fresh.valid:
        if view_of_bytes(raw, profile) not in legitimately_signed(alg, profile):
            return FORGERY  # signed bytes or signature changed, and it verified
        return "valid-unchanged"
    if shared.valid:
        # The warm diagnoser accepted a record a fresh one rejects.
        return KNOWN_BUG_SIGNED_ZERO if _zero_sign_only(raw, alg, profile) else FORGERY
    return fresh.cause


def python_read(raw: bytes, profile: str) -> tuple[Any, ...] | None:
    """What the pure-Python route reads from a line before the signature check, in the shape
    of ``sigops_accel.read_pcs``: (values, canonical bytes, signature, sent_at), or None
    where the short route would not go on (anything else: the full route decides)."""
    try:
        fields = short_fields(loads(raw))
    except MalformedInput:
        return None
    if fields is None or len(fields[1]) not in (32, 64):
        return None
    values, sig, sent = fields
    return values, canonical_bytes_of(values, profile), sig, sent


def _exact(values: tuple[Any, ...]) -> tuple[Any, ...]:
    # type and bits: 0.0 and -0.0, 1 and 1.0 differ
    return tuple((type(v), v.hex() if type(v) is float else v) for v in values)


def assert_accel_agrees(raw: bytes, profile: str) -> str:
    """The compiled reader answers only where the Python route gives the very same values
    (types and float bits), canonical bytes, signature and sent_at; returns ``answered``,
    ``unsure`` (it left the line to Python) or ``absent`` (not built)."""
    if accel.read_pcs is None:
        return "absent"
    got = accel.read_pcs(raw, accel.PROFILE_CODES[profile])
    if got is None:
        return "unsure"
    want = python_read(raw, profile)
    assert want is not None, ("compiled reader answered, Python route would not", raw[:300])
    values, canon, sig, sent = got
    assert _exact(values) == _exact(want[0]), ("values differ", values, want[0])
    assert canon == want[1], ("canonical bytes differ", canon, want[1])
    assert canon == canonical_bytes_reference(dict(zip(SIGNED_FIELDS, values, strict=True)),
                                              profile)
    assert sig == want[2] and sent == want[3], ("signature or sent_at differ", raw[:300])
    return "answered"


FORGERY = "FORGERY"
"""The outcome callers count and then require to be zero: a changed record that verified."""
CRASH = "CRASH"
"""An exception out of the code under test, counted by :func:`judged` before it is raised."""


def judged(outcomes: Counter[str], alg: str, profile: str, raw: bytes) -> str:
    """:func:`check`, with the outcome counted (a crash too, then raised)."""
    try:
        outcome = check(alg, profile, raw)
    except AssertionError:
        raise
    except Exception:
        outcomes[CRASH] += 1
        raise
    outcomes[outcome] += 1
    return outcome


def b64_noncanonical(sig: str) -> bool:
    """True if ``sig`` decodes but is not the canonical encoding of its bytes."""
    try:
        return base64.b64encode(base64.b64decode(sig, validate=True)).decode() != sig
    except ValueError:
        return False
