"""Signed signals (sign, verify, reject, hash chain) and the per-source rate limiter."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from pcskit import ed_key, hmac_key

from sigops.core.errors import KeyringError, MalformedInput, SignalRejected
from sigops.core.ratelimit import SlidingWindowLimiter
from sigops.core.signals import (
    REJECT_REASONS,
    build_payload,
    canonical_payload,
    load_pubkeys,
    pubkeys_document,
    rejection_record,
    sign_signal,
    signal_hash,
    verify_chain,
    verify_signal,
)

KEY = ed_key("sigops-1", seed_byte=11)
OTHER = ed_key("sigops-2", seed_byte=99)
PUBKEYS = load_pubkeys(pubkeys_document([KEY]))
T0 = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)


def payload(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(target="fractal-lba/fractal-lba-backend", service_id="sigops-0",
                                prev_hash=None, cause="stale_key", scenario="A",
                                evidence={"samples": [3, 1, 2]}, detected_at=T0)
    base.update(kw)
    return build_payload("detection", **base)


def rejected(signal: Any, pubkeys: Any = None) -> str:
    with pytest.raises(SignalRejected) as e:
        verify_signal(signal, PUBKEYS if pubkeys is None else pubkeys)
    assert e.value.reason in REJECT_REASONS
    return e.value.reason


# -- signing ---------------------------------------------------------------------------------

def test_sign_then_verify() -> None:
    p = payload()
    s = sign_signal(p, KEY)
    assert set(s) == {"payload", "signature", "key_id", "sig_alg_version"}
    assert s["key_id"] == "sigops-1" and s["sig_alg_version"] == 1
    assert len(base64.b64decode(s["signature"], validate=True)) == 64
    assert verify_signal(s, PUBKEYS) == p
    # The signal survives a JSON round trip (stored in a CR status, read by an observer).
    assert verify_signal(json.loads(json.dumps(s)), PUBKEYS) == p


def test_signed_bytes_are_jcs_of_the_payload_without_prehash() -> None:
    p = payload()
    s = sign_signal(p, KEY)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    assert KEY.public is not None
    Ed25519PublicKey.from_public_bytes(KEY.public).verify(
        base64.b64decode(s["signature"]), rfc8785.dumps(p))
    assert canonical_payload(p) == rfc8785.dumps(p)


def test_payload_holds_every_field_with_collections_sorted() -> None:
    p = payload(actions=["b", "a"], extra={"z": [2, 1]}, prev_hash="ab" * 32)
    assert p["type"] == "detection" and p["detected_at"] == "2025-03-01T08:30:00Z"
    for f in ("target", "cause", "scenario", "evidence_digest", "service_id", "prev_hash"):
        assert f in p
    assert p["actions"] == ["a", "b"] and p["extra"] == {"z": [1, 2]}
    # Evidence is bound by digest, independent of collection order.
    assert payload(evidence={"samples": [1, 2, 3]})["evidence_digest"] == p["evidence_digest"]
    # Unset fields are absent, not null (Kubernetes drops nulls from stored objects).
    bare = build_payload("action", target="t", service_id="s", prev_hash=None)
    assert "prev_hash" not in bare and "cause" not in bare and "evidence_digest" not in bare
    assert payload(evidence={"samples": [1, 2]})["evidence_digest"] != p["evidence_digest"]


def test_only_ed25519_keys_with_a_private_part_sign() -> None:
    with pytest.raises(KeyringError):
        sign_signal(payload(), hmac_key("h"))
    public_only = type(KEY)(KEY.kid, KEY.alg, public=KEY.public)
    with pytest.raises(KeyringError):
        sign_signal(payload(), public_only)


def test_payload_that_is_not_canonicalizable() -> None:
    with pytest.raises(MalformedInput):
        sign_signal({"x": float("nan")}, KEY)


# -- rejections ------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [
    lambda p: p.__setitem__("cause", "clock_skew"),
    lambda p: p.__setitem__("scenario", "B"),
    lambda p: p.__setitem__("new_field", 1),
    lambda p: p.pop("cause"),
    lambda p: p.__setitem__("prev_hash", None),
    lambda p: p.__setitem__("detected_at", "2025-03-01T08:30:01Z"),
])
def test_tampered_payload_is_rejected(change: Any) -> None:
    s = sign_signal(payload(), KEY)
    change(s["payload"])
    assert rejected(s) == "bad_signature"


def test_signature_from_another_key_under_a_known_kid() -> None:
    s = sign_signal(payload(), OTHER)
    s["key_id"] = KEY.kid
    assert rejected(s) == "bad_signature"


def test_unknown_kid() -> None:
    assert rejected(sign_signal(payload(), OTHER)) == "unknown_key"


def test_no_public_keys_verifies_nothing() -> None:
    assert rejected(sign_signal(payload(), KEY), {}) == "unknown_key"
    with pytest.raises(KeyringError):
        load_pubkeys({"keys": {}})


@pytest.mark.parametrize("strip", [
    lambda s: s.pop("signature"),
    lambda s: s.__setitem__("signature", ""),
    lambda s: s.__setitem__("signature", None),
    lambda s: s.pop("key_id"),
    lambda s: s.__setitem__("key_id", ""),
])
def test_unsigned(strip: Any) -> None:
    s = sign_signal(payload(), KEY)
    strip(s)
    assert rejected(s) == "unsigned"


@pytest.mark.parametrize("version", [0, 2, "1", None, 1.5, 1.0, True])
def test_wrong_version(version: Any) -> None:
    s = sign_signal(payload(), KEY)
    s["sig_alg_version"] = version
    assert rejected(s) == "unsupported_version"


def test_missing_version() -> None:
    s = sign_signal(payload(), KEY)
    del s["sig_alg_version"]
    assert rejected(s) == "unsupported_version"


@pytest.mark.parametrize("signal", [None, [], "signal", {"payload": "x"}, {"signature": "x"}])
def test_malformed_signal(signal: Any) -> None:
    assert rejected(signal) == "malformed"


@pytest.mark.parametrize("sig", ["not base64", base64.b64encode(bytes(32)).decode(), 5])
def test_bad_signature_encoding(sig: Any) -> None:
    s = sign_signal(payload(), KEY)
    s["signature"] = sig
    assert rejected(s) == "malformed"


def test_rejection_record_is_safe_to_log() -> None:
    rec = rejection_record("bad_signature", "src\n\x1b[2J", raw="x" * 500 + "\x00")
    assert rec["potential_attack"] is True and rec["reason"] == "bad_signature"
    assert "\n" not in rec["source"] and "\x1b" not in rec["source"]
    assert len(rec["input_excerpt"]) < 140 and "\x00" not in rec["input_excerpt"]
    text = json.dumps(rec)
    assert "private" not in text and "secret" not in text


def test_pubkeys_document_round_trip() -> None:
    doc = pubkeys_document([KEY, OTHER, hmac_key("h")])
    assert set(doc["keys"]) == {"sigops-1", "sigops-2"}
    assert load_pubkeys(doc)["sigops-1"] == KEY.public
    for bad in (None, {"keys": []}, {"keys": {"a": "short"}}, {"keys": {"a": 5}}):
        with pytest.raises(KeyringError):
            load_pubkeys(bad)


# -- hash chain ------------------------------------------------------------------------------

def chain(n: int = 4) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev = None
    for i in range(n):
        s = sign_signal(build_payload("action", target="t", service_id="sigops-0",
                                      prev_hash=prev, step=i, detected_at=T0), KEY)
        out.append(s)
        prev = signal_hash(s)
    return out


def test_chain_verifies() -> None:
    c = chain()
    verify_chain(c, PUBKEYS)
    verify_chain([], PUBKEYS)
    verify_chain(c[2:], PUBKEYS, first_prev=signal_hash(c[1]))


@pytest.mark.parametrize("edit", [
    lambda c: c.pop(1),                       # removed in the middle
    lambda c: c.pop(0),                       # removed at the start
    lambda c: c.insert(1, c.pop(2)),          # reordered
    lambda c: c.reverse(),                    # reversed
    lambda c: c.append(copy.deepcopy(c[1])),  # an old action replayed
])
def test_chain_detects_removed_and_reordered_signals(edit: Any) -> None:
    c = chain()
    edit(c)
    with pytest.raises(SignalRejected) as e:
        verify_chain(c, PUBKEYS)
    assert e.value.reason == "broken_chain"


def test_chain_with_a_forged_link_names_the_signal() -> None:
    c = chain()
    c[2]["payload"]["step"] = 9
    with pytest.raises(SignalRejected) as e:
        verify_chain(c, PUBKEYS)
    assert e.value.reason == "bad_signature" and "signal 2" in e.value.detail


def test_signal_hash_covers_the_signature() -> None:
    a = sign_signal(payload(), KEY)
    b = dict(a, key_id="sigops-x")
    assert signal_hash(a) != signal_hash(b)
    assert len(signal_hash(a)) == 64


# -- rate limiter ----------------------------------------------------------------------------

class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def limiter(clock: Clock, **kw: Any) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(clock=clock, **kw)


def test_three_per_hour_per_source() -> None:
    c = Clock()
    rl = limiter(c)
    ds = []
    for _ in range(6):
        ds.append(rl.check("agent-a"))
        c.t += 60
    assert [d.allowed for d in ds] == [True, True, True, False, False, False]
    assert [d.first_limited for d in ds] == [False, False, False, True, False, False]
    assert [d.count for d in ds] == [1, 2, 3, 4, 5, 6]
    rec = ds[3].record()
    assert set(rec) == {"source", "signal_count", "window_start", "window_seconds",
                        "rate_limited_at"}
    assert rec["source"] == "agent-a" and rec["signal_count"] == 4
    assert rec["window_seconds"] == 3600.0
    assert rec["window_start"] == datetime.fromtimestamp(ds[0].at, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert rec["rate_limited_at"].endswith("Z")


def test_sources_are_independent() -> None:
    c = Clock()
    rl = limiter(c)
    for _ in range(3):
        assert rl.check("a").allowed
    assert not rl.check("a").allowed
    for src in ("b", "c"):
        assert all(rl.check(src).allowed for _ in range(3))
        d = rl.check(src)
        assert not d.allowed and d.first_limited


def test_the_window_slides() -> None:
    c = Clock(0.0)
    rl = limiter(c)
    for t in (0.0, 1000.0, 2000.0):
        c.t = t
        assert rl.check("a").allowed
    c.t = 3599.0
    assert not rl.check("a").allowed          # all three still inside the hour
    c.t = 3600.5
    d = rl.check("a")
    assert d.allowed and d.window_start == 1000.0   # the signal at 0 has left the window
    c.t = 3700.0
    d = rl.check("a")
    assert not d.allowed and d.first_limited  # a new episode after an allowed signal
    c.t = 3601.0 + 2000.0
    assert rl.check("a").allowed


def test_first_limited_only_once_per_episode() -> None:
    c = Clock()
    rl = limiter(c, limit=1, window_seconds=10)
    assert rl.check("a").allowed
    firsts = []
    for _ in range(5):
        c.t += 1
        firsts.append(rl.check("a").first_limited)
    assert firsts == [True, False, False, False, False]


def test_undo_takes_back_a_signal_that_was_not_acted_on() -> None:
    c = Clock()
    rl = limiter(c)
    assert rl.check("a").allowed and rl.check("a").allowed
    c.t += 1
    third = rl.check("a")
    assert third.allowed
    rl.undo(third)  # its incident could not be created: the retry counts once
    c.t += 1
    again = rl.check("a")
    assert again.allowed and again.count == 3
    over = rl.check("a")
    assert not over.allowed and over.first_limited
    rl.undo(over)  # the RateLimited record failed: the retry is the first refusal again
    retry = rl.check("a")
    assert not retry.allowed and retry.first_limited
    assert not rl.check("a").first_limited
    rl.undo(limiter(c).check("unknown"))  # nothing to take back: no error


def test_configurable_limit_and_window() -> None:
    c = Clock()
    rl = limiter(c, limit=5, window_seconds=60)
    assert [rl.check("a").allowed for _ in range(6)] == [True] * 5 + [False]
    c.t += 61
    assert rl.check("a").allowed
    with pytest.raises(ValueError):
        SlidingWindowLimiter(limit=0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(window_seconds=0)


def test_state_survives_a_restart() -> None:
    c = Clock()
    rl = limiter(c)
    for _ in range(4):
        rl.check("a")
        c.t += 1
    rl.check("b")
    stored = json.dumps(rl.to_state())  # e.g. kept in a ConfigMap

    restarted = limiter(c)
    restarted.load_state(json.loads(stored))
    d = restarted.check("a")
    assert not d.allowed and not d.first_limited  # the episode's record exists already
    assert d.count == 5
    assert [restarted.check("b").allowed for _ in range(3)] == [True, True, False]
    assert restarted.to_state()["sources"].keys() == rl.to_state()["sources"].keys()
    c.t += 3600
    assert restarted.check("a").allowed


@pytest.mark.parametrize("state", [
    None, [], "state", {}, {"sources": []}, {"sources": None},
    {"sources": {"a": "x", "b": 5, "c": None}},
    {"sources": {"a": {"accepted": "x"}}},
    {"sources": {"a": {"accepted": [None, "1", [], {}], "limited": "many"}}},
    {"sources": {"a": {"accepted": [1.0], "limited": -4}}},
])
def test_malformed_state_is_ignored(state: Any) -> None:
    c = Clock(10.0)
    rl = limiter(c)
    rl.load_state(state)
    d = rl.check("a")
    assert d.allowed


def test_partly_malformed_state_keeps_the_good_parts() -> None:
    c = Clock(100.0)
    rl = limiter(c)
    rl.load_state({"sources": {"bad": "x", 5: {}, "good": {"accepted": [90.0, "x", 95.0, 99.0],
                                                             "limited": 2}}})
    d = rl.check("good")
    assert not d.allowed and not d.first_limited


def test_many_sources_are_bounded() -> None:
    c = Clock()
    rl = limiter(c, max_sources=100)
    for i in range(1000):
        rl.check(f"s{i}")
    assert len(rl.to_state()["sources"]) <= 100
