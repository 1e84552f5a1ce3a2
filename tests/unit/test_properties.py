"""Properties of the core, checked with hypothesis on generated records."""

from __future__ import annotations

import base64
import json
import math
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pcskit import ALGS, PROFILES, ed_key, hmac_key, ring

from sigops.core import strictjson
from sigops.core.canonical import SIGNED_FIELDS, canonical_bytes
from sigops.core.diagnose import Diagnoser
from sigops.core.errors import MalformedInput
from sigops.core.pcs import expected_pcs_id, parse_pcs, sign_pcs

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
KEYS = {"hmac-sha256": hmac_key("prop-hmac"), "ed25519": ed_key("prop-ed", seed_byte=42)}
DIAGNOSERS = {(p, a): Diagnoser(ring([KEYS[a]], p)) for p in PROFILES for a in ALGS}

texts = st.text(max_size=24)  # hypothesis never generates lone surrogates here
epochs = st.integers(min_value=-(2**53), max_value=2**53)
any_float = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda x: math.isfinite(x * 1e9))
# Floats as agents send them: at most nine decimals and fifteen significant digits, so that
# every digit written is significant and no two such strings name the same float.
nine_decimal = st.builds(lambda m, k: float(Decimal(m).scaleb(-k)),
                         st.integers(min_value=-(10**12), max_value=10**12),
                         st.integers(min_value=0, max_value=9))


def pcs_strategy(floats: st.SearchStrategy[float] = any_float) -> st.SearchStrategy[Any]:
    def build(mroot: str, epoch: int, shard: str, fl: list[float], extra: dict[str, Any],
              ) -> dict[str, Any]:
        d: dict[str, Any] = {"pcs_id": expected_pcs_id(mroot, epoch, shard),
                             "merkle_root": mroot, "epoch": epoch, "shard_id": shard,
                             "D_hat": fl[0], "coh_star": fl[1], "r": fl[2], "budget": fl[3]}
        d.update({f"x_{k}": v for k, v in extra.items()})  # unsigned fields ride along
        return d

    return st.builds(build, texts, epochs, texts, st.lists(floats, min_size=4, max_size=4),
                     st.dictionaries(st.text(max_size=5), epochs | texts, max_size=3))


@SETTINGS
@given(pcs_strategy(), st.sampled_from(PROFILES))
def test_canonical_bytes_are_stable(pcs: dict[str, Any], profile: str) -> None:
    first = canonical_bytes(pcs, profile)
    assert canonical_bytes(dict(pcs), profile) == first
    # Re-serialized (either way of writing strings) and parsed strictly: same bytes.
    for ascii_only in (True, False):
        text = json.dumps(dict(pcs, sig="A" * 43 + "="), ensure_ascii=ascii_only)
        again = parse_pcs(strictjson.loads(text.encode("utf-8")))
        assert canonical_bytes(again.subset, profile) == first
    # The python form is JSON Python reads back to the same values: canonicalizing is
    # idempotent. (Go's "-0" reads back as the integer 0, fixed9 is not a repr form.)
    if profile == "python":
        assert canonical_bytes(json.loads(first), profile) == first


@SETTINGS
@given(pcs_strategy(), st.sampled_from(PROFILES), st.sampled_from(ALGS))
def test_sign_then_verify_round_trips(pcs: dict[str, Any], profile: str, alg: str) -> None:
    doc = sign_pcs(pcs, KEYS[alg], profile)
    v = DIAGNOSERS[(profile, alg)].classify_line(json.dumps(doc), 0)
    assert (v.cause, v.kid, v.profile) == ("valid", KEYS[alg].kid, profile)


def value_span(text: str, field: str) -> tuple[int, int]:
    """Byte span of ``field``'s value in a ``json.dumps`` document (flat, ``", "`` separated)."""
    m = re.search(r'(?:^\{|, )' + re.escape(json.dumps(field)) + r": ", text)
    assert m is not None
    start = m.end()
    if text[start] == '"':
        i = start + 1
        while text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        end = i + 1
    else:
        end = start
        while text[end] not in ",}":
            end += 1
    b = text.encode("utf-8")
    return len(text[:start].encode("utf-8")), len(b) - len(text[end:].encode("utf-8"))


@SETTINGS
@given(pcs_strategy(nine_decimal), st.sampled_from(PROFILES), st.sampled_from(ALGS),
       st.sampled_from(SIGNED_FIELDS), st.data())
def test_any_changed_byte_in_a_signed_value_is_rejected(
        pcs: dict[str, Any], profile: str, alg: str, field: str, data: st.DataObject) -> None:
    doc = sign_pcs(pcs, KEYS[alg], profile)
    text = json.dumps(doc, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    start, end = value_span(text, field)
    raw = bytearray(text.encode("utf-8"))
    assume(end > start)
    i = data.draw(st.integers(min_value=start, max_value=end - 1), label="offset")
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != raw[i]),
                    label="byte")
    raw[i] = new
    try:
        changed = strictjson.loads(bytes(raw))
    except MalformedInput:
        changed = None
    if isinstance(changed, dict) and field in changed:
        # A change that leaves the value as it was (e.g. 1e+20 -> 1e020) is not a change.
        assume(repr(changed[field]) != repr(doc[field]) or type(changed[field]) is not
               type(doc[field]))
    v = DIAGNOSERS[(profile, alg)].classify_line(bytes(raw), 0)
    assert not v.valid, (field, bytes(raw[start:end]))


def dup_document(draw: st.DrawFn) -> str:
    """A JSON object text (possibly nested) in which some object repeats a key."""
    key = draw(st.text(max_size=6), label="key")
    values = epochs | st.text(max_size=6) | st.booleans() | st.none()
    members = draw(st.lists(st.tuples(st.text(max_size=6), values), max_size=4))
    members = [(k, v) for k, v in members if k != key]
    first, second = draw(values), draw(values)
    pos = draw(st.integers(min_value=0, max_value=len(members)))
    items = [*members[:pos], (key, first), *members[pos:]]
    pos2 = draw(st.integers(min_value=pos + 1, max_value=len(items)))
    items.insert(pos2, (key, second))
    obj = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in items) + "}"
    for _ in range(draw(st.integers(min_value=0, max_value=3), label="depth")):
        wrap = draw(st.sampled_from(["list", "object", "envelope"]))
        if wrap == "list":
            obj = f"[1, {obj}]"
        elif wrap == "object":
            obj = '{"ft": ' + obj + ', "v": 1}'
        else:
            obj = '{"pcs": ' + obj + ', "source": "a"}'
    return obj


@SETTINGS
@given(st.composite(lambda draw: dup_document(draw))())
def test_duplicate_keys_are_always_rejected(text: str) -> None:
    with pytest.raises(MalformedInput) as e:
        strictjson.loads(text)
    assert "duplicate key" in e.value.reason
    v = DIAGNOSERS[("python", "hmac-sha256")].classify_line(text, 0)
    assert v.cause == "malformed"


@SETTINGS
@given(pcs_strategy(), st.sampled_from(SIGNED_FIELDS + ("sig", "sent_at")),
       st.sampled_from(ALGS))
def test_duplicate_key_in_a_signed_record_is_rejected(pcs: dict[str, Any], field: str,
                                                      alg: str) -> None:
    doc = dict(sign_pcs(pcs, KEYS[alg]), sent_at="2025-01-19T12:00:00Z")
    text = json.dumps(doc)
    dup = f", {json.dumps(field)}: {json.dumps(doc[field])}"
    v = DIAGNOSERS[("python", alg)].classify_line(text[:-1] + dup + "}", 0)
    assert v.cause == "malformed" and "duplicate key" in (v.detail or "")


# -- the fast parsers agree with the strict decoder ---------------------------------------------

def _number_text() -> st.SearchStrategy[str]:
    """Numbers as JSON text: small and huge integers, floats in every notation, tokens that
    overflow, and the non-standard constants."""
    digits = st.text("0123456789", min_size=1, max_size=30)
    return st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.builds(lambda s, i, f, e: f"{s}{int(i)}.{f}e{e}", st.sampled_from(["", "-"]),
                  digits, digits, st.integers(min_value=-400, max_value=400)),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1E+400", "9007199254740993",
                         "-9007199254740993", "18446744073709551616", "0.0", "-0.0", "-0"]),
    )


_keys = st.sampled_from(["a", "b", "c:d", "pcs_id", "sig", "\u00e9", "\u2028", "x y"])
_strings = st.one_of(st.text(max_size=12), st.sampled_from(["a:b", "::", "\\u003a", "é:ü"]))


def _json_text(depth: int = 3) -> st.SearchStrategy[str]:
    """JSON-ish text: objects (keys may repeat), arrays, strings (some with colons or
    escapes), numbers, with random whitespace; not always valid JSON."""
    ws = st.sampled_from(["", " ", "\n", "\t "])
    leaf = st.one_of(_number_text(), _strings.map(lambda s: json.dumps(s, ensure_ascii=False)),
                     st.sampled_from(["true", "false", "null"]))
    if depth == 0:
        return leaf
    inner = _json_text(depth - 1)
    obj = st.builds(lambda kv, a, b: "{" + ",".join(
        f"{a}{json.dumps(k, ensure_ascii=False)}{b}:{a}{v}" for k, v in kv) + "}",
        st.lists(st.tuples(_keys, inner), max_size=5), ws, ws)
    arr = st.builds(lambda vs, a: "[" + f",{a}".join(vs) + "]", st.lists(inner, max_size=4), ws)
    return st.one_of(leaf, obj, arr)


def _outcome(data: bytes) -> Any:
    """What loads makes of ``data``: the value with exact types and float bits, or the
    error's reason."""
    def shape(x: Any) -> Any:
        if isinstance(x, dict):
            return ("obj", [(k, shape(v)) for k, v in x.items()])
        if isinstance(x, list):
            return ("arr", [shape(v) for v in x])
        if isinstance(x, float):
            return ("float", x.hex())
        return (type(x).__name__, x)
    try:
        return shape(strictjson.loads(data))
    except MalformedInput as e:
        return ("malformed", e.reason)


@SETTINGS
@given(_json_text())
def test_fast_parsers_agree_with_the_strict_decoder(text: str) -> None:
    """orjson and json's plain C scanner are used only when the strict decoder would return
    the same value, so the answer (value or reason) never depends on which one is
    installed."""
    data = text.encode("utf-8", "surrogatepass")
    with_orjson = _outcome(data)
    saved = strictjson.orjson, strictjson._plain
    try:
        strictjson.orjson = None  # json's plain C scanner first
        assert _outcome(data) == with_orjson
        strictjson._plain = strictjson._decoder  # the strict decoder alone
        assert _outcome(data) == with_orjson
    finally:
        strictjson.orjson, strictjson._plain = saved


@SETTINGS
@given(st.binary(max_size=200), st.binary(max_size=600))
def test_hmac_with_precomputed_pads_is_hmac_sha256(secret: bytes, message: bytes) -> None:
    """Key.mac hashes the padded key blocks once (keys longer than a block are hashed first,
    as RFC 2104 says); it must be HMAC-SHA256 for every key and message length."""
    import hmac

    from sigops.core.keys import HMAC, Key

    key = Key("k", HMAC, secret=secret)
    assert key.mac(message) == hmac.digest(secret, message, "sha256")
    assert key.verify(message, hmac.digest(secret, message, "sha256"))
    assert not key.verify(message + b"x", hmac.digest(secret, message, "sha256"))


@SETTINGS
@given(st.one_of(st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode()),
                 st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=-_ \n", max_size=50)))
def test_strict_base64_first_changes_no_answer(text: str) -> None:
    """b64decode_strict tries binascii's strict mode first; the answer (bytes, or an error)
    is what base64.b64decode(validate=True) gives."""
    import binascii

    from sigops.core.keys import b64decode_strict

    try:
        want: bytes | None = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        want = None
    try:
        got: bytes | None = b64decode_strict(text, "sig")
    except MalformedInput:
        got = None
    assert got == want
