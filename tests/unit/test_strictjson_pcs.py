"""Hostile input: every case is a ``malformed`` verdict with a reason, never an exception.

The gate is exercised through :meth:`Diagnoser.classify_line`, the path every CLI record and
every sample of an incident takes, through :meth:`Diagnoser.check_line` (``sigops verify``)
and through :func:`strictjson.loads` directly; each test runs twice, with orjson as the fast
parser and with json's C scanner (what runs where orjson is missing), and records are fed both
as text and as UTF-8 bytes (orjson reads bytes).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pcskit import ed_key, envelope, hmac_key, ring, signed

from sigops.core import strictjson
from sigops.core.diagnose import Diagnoser
from sigops.core.errors import MalformedInput
from sigops.core.pcs import expected_pcs_id, parse_pcs, parse_record, sign_pcs

KEY = hmac_key("k1")
GOOD = signed(KEY)
GOOD_TEXT = json.dumps(GOOD)


@pytest.fixture(autouse=True, params=["orjson", "stdlib"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(strictjson, "orjson", None)
    else:
        assert strictjson.orjson is not None, "orjson is a dependency"
    return str(request.param)


def diagnoser(**kw: Any) -> Diagnoser:
    return Diagnoser(ring([KEY, ed_key("e1")]), **kw)


def with_field(field: str, raw: str, doc: dict[str, Any] | None = None) -> str:
    """GOOD serialized with ``field``'s value replaced by the raw JSON text ``raw``."""
    d = dict(doc or GOOD)
    d[field] = "__RAW__"
    return json.dumps(d).replace('"__RAW__"', raw)


def assert_malformed(record: str | bytes, **kw: Any) -> str:
    v = diagnoser(**kw).classify_line(record, 3)
    assert v.cause == "malformed", v
    assert not v.valid
    assert v.index == 3
    assert v.detail and v.detail.strip()
    assert len(v.detail) < 200, "a reason is short and never echoes the whole input"
    forms = [record] if isinstance(record, bytes) else [
        record, record.encode("utf-8", "surrogatepass")]
    for form in forms:
        short, kid, _ = diagnoser(**kw).check_line(form, 3)
        assert short is not None and kid is None, "never valid by the short route"
        assert short.cause == "malformed", short
        if form == record:
            assert short.detail == v.detail
        assert diagnoser(**kw).classify_line(form, 3).cause == "malformed"
    return v.detail


def test_good_record_is_valid() -> None:
    v = diagnoser().classify_line(GOOD_TEXT, 0)
    assert v.cause == "valid" and v.kid == "k1" and v.profile == "python"


# -- duplicate keys --------------------------------------------------------------------------

def test_duplicate_top_level_key() -> None:
    text = GOOD_TEXT[:-1] + ', "D_hat": 2.0}'
    assert "duplicate key" in assert_malformed(text)


def test_duplicate_signed_key_even_with_the_same_value() -> None:
    text = GOOD_TEXT[:-1] + f', "pcs_id": {json.dumps(GOOD["pcs_id"])}}}'
    assert "duplicate key 'pcs_id'" in assert_malformed(text)


def test_duplicate_key_nested_in_an_unsigned_field() -> None:
    text = with_field("ft", '{"outbox_seq": 0, "outbox_seq": 1}')
    assert "duplicate key" in assert_malformed(text)


def test_duplicate_key_deep_in_a_list() -> None:
    text = with_field("ft", '[1, [2, {"a": {"b": 1, "b": 1}}]]')
    assert "duplicate key" in assert_malformed(text)


def test_duplicate_sig_inside_envelope_pcs() -> None:
    pcs = json.dumps(GOOD)[:-1] + f', "sig": {json.dumps(GOOD["sig"])}}}'
    text = '{"pcs": ' + pcs + ', "source": "agent-1"}'
    assert "duplicate key 'sig'" in assert_malformed(text)


def test_duplicate_key_at_envelope_level() -> None:
    text = json.dumps(envelope(GOOD, source="a"))[:-1] + ', "source": "b"}'
    assert "duplicate key 'source'" in assert_malformed(text)


def test_duplicate_pcs_in_envelope() -> None:
    other = signed(KEY, epoch=8)
    text = '{"pcs": ' + json.dumps(GOOD) + ', "pcs": ' + json.dumps(other) + "}"
    assert "duplicate key 'pcs'" in assert_malformed(text)


# -- numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["D_hat", "budget", "epoch"])
def test_non_finite_constants(field: str, raw: str) -> None:
    assert "non-finite" in assert_malformed(with_field(field, raw))


def test_non_finite_constant_in_an_unsigned_field() -> None:
    assert_malformed(with_field("ft", "[NaN]"))


@pytest.mark.parametrize("raw", ["1e999", "-1e999", "1" + "0" * 400 + ".0", "1.5e308"])
def test_numbers_that_overflow(raw: str) -> None:
    assert "out of range" in assert_malformed(with_field("coh_star", raw))


@pytest.mark.parametrize("value", [1e300, -1.8e299, 1.7976931348623157e308])
def test_finite_floats_without_a_canonical_form(value: float) -> None:
    # x*1e9 overflows float64 (Go's rounding step yields +Inf and encoding/json refuses it).
    assert "out of range" in assert_malformed(with_field("r", repr(value)))


@pytest.mark.parametrize("value", [2**53 + 1, -(2**53) - 1, 2**63, 10**20])
@pytest.mark.parametrize("field", ["epoch", "D_hat"])
def test_integers_beyond_2_53(field: str, value: int) -> None:
    assert "2^53" in assert_malformed(with_field(field, str(value)))


def test_integer_at_2_53_is_allowed() -> None:
    pcs = sign_pcs(dict(GOOD, epoch=2**53,
                        pcs_id=expected_pcs_id(GOOD["merkle_root"], 2**53, GOOD["shard_id"])),
                   KEY)
    assert diagnoser().classify_line(json.dumps(pcs), 0).cause == "valid"


@pytest.mark.parametrize("field", ["epoch", "D_hat", "seed"])
def test_five_thousand_digit_integers(field: str) -> None:
    assert "too large" in assert_malformed(with_field(field, "7" * 5000))


def test_five_thousand_digit_negative_integer_and_float() -> None:
    assert_malformed(with_field("epoch", "-" + "9" * 5000))
    assert_malformed(with_field("D_hat", "9" * 5000 + ".5"))


# -- wrong types -----------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "raw"), [
    ("epoch", "true"), ("epoch", "false"), ("epoch", "1.0"), ("epoch", '"1"'), ("epoch", "null"),
    ("epoch", "[1]"),
    ("D_hat", '"1.0"'), ("D_hat", "null"), ("D_hat", "true"), ("D_hat", "{}"),
    ("coh_star", '"0.2"'), ("r", "[0.3]"), ("budget", "false"),
    ("pcs_id", "1"), ("pcs_id", "null"), ("merkle_root", "[]"), ("shard_id", "{}"),
    ("sig", "null"), ("sig", "1"), ("sig", '["a"]'),
    ("sent_at", "12"), ("sent_at", '"yesterday"'), ("sent_at", '"2025-13-40T99:00:00Z"'),
])
def test_wrong_types(field: str, raw: str) -> None:
    assert_malformed(with_field(field, raw))


@pytest.mark.parametrize("field", ["pcs_id", "merkle_root", "epoch", "shard_id", "D_hat",
                                   "coh_star", "r", "budget", "sig"])
def test_missing_field(field: str) -> None:
    d = dict(GOOD)
    del d[field]
    assert f"missing field {field}" in assert_malformed(json.dumps(d))


@pytest.mark.parametrize("raw", ["[]", "1", '"pcs"', "null", "true", "[{}]"])
def test_not_an_object(raw: str) -> None:
    assert_malformed(raw)


def test_overlong_string_field() -> None:
    assert "longer than" in assert_malformed(with_field("shard_id", json.dumps("x" * 2000)))


# -- signatures ------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [
    "not base64!", "x5KLRpKb75Oy1oxLA-3V-bgY_HL_3ZYOk1rw3pCiSm4=",  # URL-safe alphabet
    "x5KLRpKb75Oy1oxLA+3V+bgY/HL/3ZYOk1rw3pCiSm4",  # padding missing
    "x5KLRpKb75Oy1oxLA+3V+bgY/HL/3ZYOk1rw3pCiSm4=\n", " " + GOOD["sig"], "====",
    "\u00e9" * 44,
])
def test_bad_base64_sig(sig: str) -> None:
    assert "base64" in assert_malformed(json.dumps(dict(GOOD, sig=sig)))


@pytest.mark.parametrize("n", [0, 1, 16, 31, 33, 48, 63, 65, 128])
def test_wrong_sig_length(n: int) -> None:
    sig = base64.b64encode(bytes(n)).decode()
    detail = assert_malformed(json.dumps(dict(GOOD, sig=sig)))
    assert f"{n} bytes" in detail


# -- size, encoding, syntax ------------------------------------------------------------------

def test_oversized_record_over_a_configured_limit() -> None:
    text = GOOD_TEXT
    assert diagnoser(max_bytes=len(text)).classify_line(text, 0).cause == "valid"
    assert "exceeds the limit" in assert_malformed(text + " ", max_bytes=len(text))


def test_oversized_record_over_the_default_limit() -> None:
    big = json.dumps(dict(GOOD, padding="x" * (strictjson.DEFAULT_MAX_BYTES + 1)))
    assert "exceeds the limit" in assert_malformed(big)


@pytest.mark.parametrize("bad", [
    b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80",
])
def test_invalid_utf8(bad: bytes) -> None:
    data = GOOD_TEXT.encode().replace(b'"version": "0.1"', b'"version": "0.1' + bad + b'"')
    assert bad in data
    assert "UTF-8" in assert_malformed(data)


def test_every_truncation_is_malformed() -> None:
    data = GOOD_TEXT.encode()
    d = diagnoser()
    for n in range(len(data)):
        v = d.classify_line(data[:n], n)
        assert v.cause == "malformed" and v.detail, (n, v)


@pytest.mark.parametrize("text", [
    "", " ", "\n", "{", "}", "{]", GOOD_TEXT + " x", GOOD_TEXT + GOOD_TEXT,
    GOOD_TEXT.replace(":", "=", 1), "{'pcs_id': 'x'}", GOOD_TEXT.replace('"', "'"),
])
def test_syntax_errors(text: str) -> None:
    assert_malformed(text)


@pytest.mark.parametrize("text", [
    "[" * 100_000, "{\"a\":" * 100_000, "[" * 100_000 + "]" * 100_000,
    with_field("ft", "[" * 100_000 + "]" * 100_000),
])
def test_deep_nesting(text: str) -> None:
    assert_malformed(text, max_bytes=1 << 21)


@pytest.mark.parametrize("raw", ['"\\ud800"', '"\\udfff"', '"a\\udc00b"', '"\\ude00\\ud83d"',
                                 '"\\ud83d"'])
@pytest.mark.parametrize("field", ["merkle_root", "shard_id", "pcs_id", "version"])
def test_lone_surrogates(field: str, raw: str) -> None:
    assert "surrogate" in assert_malformed(with_field(field, raw))


def test_lone_surrogate_in_a_key_or_nested_or_in_the_envelope() -> None:
    assert_malformed(GOOD_TEXT[:-1] + ', "\\ud800": 1}')
    assert_malformed(with_field("ft", '{"x": ["\\udbff"]}'))
    env = json.dumps(envelope(GOOD, source="__S__")).replace('"__S__"', '"ag\\ud800"')
    assert_malformed(env)


def test_lone_surrogate_in_a_str_record() -> None:
    assert_malformed(json.dumps(dict(GOOD, shard_id="\ud800"), ensure_ascii=False))


def test_surrogate_pair_is_fine() -> None:
    pcs = signed(KEY, shard="emoji-\U0001f600")
    text = json.dumps(pcs)  # ASCII: the emoji travels as a \ud83d\ude00 pair
    assert "\\ud83d\\ude00" in text
    assert diagnoser().classify_line(text, 0).cause == "valid"


# -- envelopes -------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    {"received_at": "soon"}, {"received_at": 5}, {"source": 5}, {"source": ["a"]},
])
def test_bad_envelope_fields(extra: dict[str, Any]) -> None:
    env = {"pcs": GOOD, **extra}
    assert_malformed(json.dumps(env))


def test_envelope_with_malformed_pcs_keeps_the_pcs_id() -> None:
    env = {"pcs": dict(GOOD, sig="bad!"), "source": "a"}
    v = diagnoser().classify_line(json.dumps(env), 0)
    assert v.cause == "malformed" and v.pcs_id == GOOD["pcs_id"]


def test_non_string_pcs_id_is_not_reported_as_pcs_id() -> None:
    v = diagnoser().classify_line(with_field("pcs_id", "[1]"), 0)
    assert v.cause == "malformed" and v.pcs_id is None


# -- the building blocks raise MalformedInput, never anything else ---------------------------

@pytest.mark.parametrize("data", [
    b'{"a":1,"a":1}', b"NaN", b"[1e999]", b"9" * 30, b"\xff", b"[" * 50_000, b'"\\ud800"', b"",
])
def test_loads_raises_only_malformed_input(data: bytes) -> None:
    with pytest.raises(MalformedInput) as e:
        strictjson.loads(data)
    assert e.value.reason


def test_loads_accepts_plain_json() -> None:
    assert strictjson.loads('{"a": [1, 2.5, "\\u00e9", null, true]}') == {
        "a": [1, 2.5, "\u00e9", None, True]}
    assert strictjson.loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert strictjson.loads(str(2**53)) == 2**53
    assert strictjson.loads("1e-400") == 0.0


def test_safe_repr_truncates_and_escapes() -> None:
    out = strictjson.safe_repr("\x1b[31m" + "A" * 100)
    assert "\x1b" not in out and out.endswith("...'") and len(out) < 60


@pytest.mark.parametrize("obj", [None, [], "x", {"pcs": "x"}, {"pcs": {}}])
def test_parse_record_raises_malformed_input(obj: Any) -> None:
    with pytest.raises(MalformedInput):
        parse_record(obj)


def test_parse_pcs_detects_alg_by_signature_length() -> None:
    assert parse_pcs(GOOD).alg == "hmac-sha256"
    assert parse_pcs(signed(ed_key("e1"))).alg == "ed25519"


def test_classify_obj_with_python_objects() -> None:
    d = diagnoser()
    for obj in ({"x": float("nan")}, dict(GOOD, D_hat=float("inf")), dict(GOOD, D_hat=True),
                dict(GOOD, epoch=10**400), dict(GOOD, shard_id="\udc80"), object()):
        v = d.classify_obj(obj, 0)
        assert v.cause == "malformed" and v.detail, obj
