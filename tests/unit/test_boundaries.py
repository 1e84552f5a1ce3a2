"""Boundaries that a mutation read of the suite found guarded only at slower tiers (or not at
all): each is pinned here, at the unit tier, without a cluster."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pcskit import PROFILES, key_for, signed

from sigops.core.diagnose import Diagnoser
from sigops.core.keys import KeyRing
from sigops.core.ratelimit import SlidingWindowLimiter
from sigops.incident.intake import admit, signal_source
from sigops.rotation.model import spec_problem
from sigops.settings import Target


def _flip(sig_b64: str, i: int, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(sig_b64))
    raw[i] ^= 1 << bit
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("alg", ["hmac-sha256", "ed25519"])
@pytest.mark.parametrize("profile", PROFILES)
def test_one_flipped_bit_anywhere_in_the_signature_is_not_valid(alg: str, profile: str) -> None:
    """Every byte of the signature counts: a compare of a prefix would pass these."""
    k = key_for(alg, f"{alg}-boundary", "active")
    ring = KeyRing((k,), profile)
    rec = signed(k, profile, epoch=5)
    n = len(base64.b64decode(rec["sig"]))
    assert n == (32 if alg == "hmac-sha256" else 64)
    for i in range(n):
        bad = dict(rec, sig=_flip(rec["sig"], i, i % 8))
        # Full route, on a fresh diagnoser.
        assert not Diagnoser(ring).classify_obj(bad, 0).valid, (i, "full")
        # Short route: a diagnoser that just saw the valid record tries that key first.
        d = Diagnoser(ring)
        v, _, _ = d.check_line(json.dumps(rec), 0)
        assert v is None  # the valid record took the short route
        v2, _, content = d.check_line(json.dumps(bad), 1)
        assert v2 is not None and not d.settle(v2, content).valid, (i, "short")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("field", ["D_hat", "coh_star", "r", "budget"])
def test_a_replay_that_only_flips_the_sign_of_a_zero_is_not_the_same_content(
        profile: str, field: str) -> None:
    """0.0 == -0.0 in Python, but they are different signed bytes in every profile: a warm
    diagnoser must not take the second for a replay of the first."""
    k = key_for("hmac-sha256", "hmac-zero", "active")
    ring = KeyRing((k,), profile)
    rec = signed(k, profile, epoch=6, **{field: -0.0})
    forged = dict(rec, **{field: 0.0})  # other signed bytes, the same signature
    assert json.dumps(rec) != json.dumps(forged)
    fresh = Diagnoser(ring)
    assert not fresh.classify_obj(forged, 0).valid
    warm = Diagnoser(ring)
    assert warm.classify_obj(rec, 0).valid
    assert not warm.classify_obj(forged, 1).valid
    d = Diagnoser(ring)
    d.check_line(json.dumps(rec), 0)
    v, _, content = d.check_line(json.dumps(forged), 1)
    assert v is not None and not d.settle(v, content).valid


SPEC = {"algorithm": "hmac-sha256"}


@pytest.mark.parametrize(("overlap", "floor", "ok"), [
    ("1h", "1h", True),          # exactly the floor
    ("3600s", "1h", True),
    ("59m59s", "1h", False),     # a second short
    ("45m", "1h", False),        # 3/4 of it: a halved floor would let it through
    ("31m", "1h", False),
    ("336h", "336h", True),
    ("335h", "336h", False),
    ("200h", "336h", False),
])
def test_the_overlap_floor_is_the_configured_one(overlap: str, floor: str, ok: bool) -> None:
    problem = spec_problem({**SPEC, "overlap": overlap}, floor)
    assert (problem is None) == ok, problem
    if not ok:
        assert problem == f"overlap {overlap} is shorter than the configured floor {floor}"


def test_the_default_overlap_is_the_dedup_ttl() -> None:
    assert spec_problem(SPEC, "336h") is None  # 336h by default
    assert spec_problem(SPEC, "337h") is not None


@pytest.mark.parametrize(("spec", "why"), [
    ({"algorithm": "rsa", "overlap": "2h"}, "algorithm must be hmac-sha256 or ed25519"),
    ({"algorithm": "ed25519", "overlap": "two hours"}, "invalid duration"),
    ({**SPEC, "overlap": "2h", "abortOnErrorRate": -1}, "abortOnErrorRate must be"),
    ({**SPEC, "overlap": "2h", "abortOnErrorRate": "5"}, "abortOnErrorRate must be"),
])
def test_bad_specs_say_why(spec: dict[str, Any], why: str) -> None:
    assert why in (spec_problem(spec, "1h") or "")


def test_alert_intake_rate_limit_wiring() -> None:
    """Per backend, 3 signals per window; the first refusal is saved and opens the record,
    later refusals neither save nor open anything."""
    now = [1000.0]
    lim = SlidingWindowLimiter(3, 3600.0, clock=lambda: now[0])
    a, b = Target(namespace="ns1", deployment="be"), Target(namespace="ns2", deployment="be")
    assert signal_source(a) == "ns1/be" != signal_source(b)
    got = [admit(lim, signal_source(a)) for _ in range(5)]
    assert [(x.decision.allowed, x.save, x.record) for x in got] == [
        (True, True, False), (True, True, False), (True, True, False),
        (False, True, True),     # the first refusal: saved, and the record is opened
        (False, False, False),   # later ones only count
    ]
    assert got[3].decision.record()["signal_count"] == 4
    # Another backend has its own window.
    assert admit(lim, signal_source(b)).decision.allowed
    # The window slides: an hour later the first backend is allowed again.
    now[0] += 3601
    assert admit(lim, signal_source(a)).decision.allowed
