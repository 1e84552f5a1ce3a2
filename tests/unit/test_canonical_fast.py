"""The fast canonical routes give the reference route's bytes for every double and every record.

The reference rounding of the ``python`` and ``fixed9`` profiles is the agent's own: decimal
arithmetic on the float's shortest repr (``round_half_up_9_reference``); the reference encoding
writes each field in turn (``canonical_bytes_reference``). The fast routes (digit arithmetic on
the repr, fused round-and-write, the inline default profile, the plain-string check of the Go
escaping) must never differ from them, not even in the sign of a zero.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pcskit import ALGS, PROFILES, ed_key, hmac_key, ring

from sigops.core.canonical import (
    PROFILES as PROFILE_ROWS,
)
from sigops.core.canonical import (
    SIGNED_FIELDS,
    canonical_bytes,
    canonical_bytes_of,
    canonical_bytes_reference,
    escape_go,
    escape_go_reference,
    format_fixed9_float,
    format_go_float,
    format_python_float,
    round_go_9,
    round_half_up_9,
    round_half_up_9_reference,
)
from sigops.core.diagnose import Diagnoser
from sigops.core.pcs import expected_pcs_id, signing_message

SETTINGS = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def in_range(x: float) -> bool:
    """Finite, and finite once scaled by 1e9 (what the core accepts as a signed float)."""
    return math.isfinite(x) and math.isfinite(x * 1e9)


def bits(x: float) -> bytes:
    """Equality that tells -0.0 from 0.0."""
    return struct.pack("<d", x)


# Every finite double: hypothesis's own floats, raw bit patterns (subnormals, every exponent),
# values with the 10th decimal a 5 (halfway at the ninth decimal, as written and as stored),
# and values whose shortest repr needs 17 significant digits.
hyp_floats = st.floats(allow_nan=False, allow_infinity=False)
raw_bits = st.integers(min_value=0, max_value=2**64 - 1).map(
    lambda n: struct.unpack("<d", n.to_bytes(8, "little"))[0])
halfway = st.builds(lambda m, k: float(Decimal(m * 10 + 5).scaleb(-k)),
                    st.integers(min_value=-(10**15), max_value=10**15),
                    st.integers(min_value=10, max_value=20))
seventeen = st.builds(lambda a, b: a / b, st.integers(1, 10**9), st.integers(3, 10**9)).filter(
    lambda x: len(repr(x).replace("-", "").replace(".", "").split("e")[0].lstrip("0")) >= 17)
# As agents send them: at most nine decimals (the plain route), up to 10^7.
nine_decimal = st.builds(lambda m, k: float(Decimal(m).scaleb(-k)),
                         st.integers(min_value=-(10**16), max_value=10**16),
                         st.integers(min_value=0, max_value=9))
# x * 1e9 an exact half, or close to one: where Go's halves-away-from-zero shows.
scaled_half = st.builds(lambda k: (k + 0.5) / 1e9, st.integers(-(10**15), 10**15))
big = st.floats(min_value=1e5, max_value=1e16)  # where Go's rounding stops being exact
any_double = st.one_of(hyp_floats, raw_bits, halfway, seventeen, scaled_half, nine_decimal, big,
                       halfway.map(lambda x: -x)).filter(in_range)

# Hand-worked from DESIGN.md section 2 (half-up at nine decimals on the shortest repr).
HAND = [
    (0.0000000005, 1e-09),          # exactly half a unit of the ninth decimal: up
    (-0.0000000005, -1e-09),        # half-up is away from zero for negatives too
    (4.999999999e-10, 0.0),         # just below half
    (1e-10, 0.0),
    (-1e-10, -0.0),                 # rounds to nothing and keeps its sign
    (-0.0, -0.0),
    (0.0, 0.0),
    (5e-324, 0.0),                  # the smallest subnormal
    (0.1234567895, 0.12345679),     # repr ends in 5 at the tenth decimal: up
    (0.1278756055, 0.127875606),    # stored below the half, written at it: the repr decides
    (999999.9999999995, 1000000.0),  # the carry crosses the decimal point
    (9.9999999995e-05, 0.0001),     # exponent form, carry into the next power of ten
    (1.5e-07, 1.5e-07),             # exponent form with nine decimals or fewer: unchanged
    (0.30000000000000004, 0.3),     # a 17-digit repr
    (1 / 3, 0.333333333),
    (-2 / 3, -0.666666667),
    (1e16, 1e16),                   # from 1e16 up every double is integral
    (-1e16, -1e16),
    (123456789012345.67, 123456789012345.67),
    (1.5e290, 1.5e290),
]


@pytest.mark.parametrize(("x", "want"), HAND, ids=[repr(c[0]) for c in HAND])
def test_hand_worked_rounding(x: float, want: float) -> None:
    assert bits(round_half_up_9(x)) == bits(want)
    assert bits(round_half_up_9_reference(x)) == bits(want)


EDGES = [x for x, _ in HAND] + [
    1e-9, 5e-10, -5e-10, 0.5 / 1e9, -0.5 / 1e9, 2.5 / 1e9, -3.5 / 1e9, 1.5e-9, -1.5e-9,
    2.5e-9, 1e-4, 9.999999999999999e-05, 1e15 + 0.5,
    4503599.6274, 2**52 / 1e9, 2**53 / 1e9, 2.2250738585072014e-308, 1.7976931348623157e299,
    0.7286696819777281, -0.07787537342431614,
    # Few decimals, many integer digits: Go's x*1e9/1e9 moves these by one unit in the last
    # place (so a plain repr needs at most six integer digits).
    711480577.9255843, 846351221.0098845, 4389616301006669.5, 999999.999999999, -999999.5,
    1.0000000005, 2.0746415705, 1e-05, 1e21, 1e20,
]


@pytest.mark.parametrize("x", EDGES, ids=repr)
@pytest.mark.parametrize("profile", PROFILES)
def test_edge_values_every_profile(x: float, profile: str) -> None:
    fast_and_reference_agree(x, profile)


def is_plain(r: str) -> bool:
    """No exponent, at most nine decimals, at most six integer digits."""
    return "e" not in r and 6 >= r.find(".") >= len(r) - 10


def fast_and_reference_agree(x: float, profile: str) -> None:
    p = PROFILE_ROWS[profile]
    reference_round = round_half_up_9_reference if p.round is round_half_up_9 else p.round
    want = p.format_float(reference_round(x))
    r = repr(x)
    assert p.text(r, x) == want
    if is_plain(r):  # the plain route, where no profile has anything to round
        assert (r if p.plain is None else p.plain(r, x)) == want
    values = ("p", "m", 1, "s", x, -x, x / 3, 1.0)
    subset = dict(zip(SIGNED_FIELDS, values, strict=True))
    assert canonical_bytes_of(values, p) == canonical_bytes_reference(subset, p)


@SETTINGS
@given(any_double)
@example(0.1278756055)
@example(-0.0)
def test_fast_rounding_is_the_decimal_rounding_on_every_double(x: float) -> None:
    assert bits(round_half_up_9(x)) == bits(round_half_up_9_reference(x))


@SETTINGS
@given(any_double, st.sampled_from(PROFILES))
def test_fused_and_plain_routes_are_round_then_format(x: float, profile: str) -> None:
    fast_and_reference_agree(x, profile)


def test_the_fused_routes_are_the_profiles_compositions() -> None:
    pairs = {name: (p.round, p.format_float) for name, p in PROFILE_ROWS.items()}
    assert pairs == {"python": (round_half_up_9, format_python_float),
                     "go": (round_go_9, format_go_float),
                     "fixed9": (round_half_up_9, format_fixed9_float)}


@settings(max_examples=1000, deadline=None)
@given(st.text(st.characters(blacklist_categories=()), max_size=40)
       | st.text("abcdef0123456789<>&\"\\ -_.", max_size=40))
def test_go_escaping_fast_check_changes_nothing(s: str) -> None:
    assert escape_go(s) == escape_go_reference(s)


texts = st.text(max_size=24)
epochs = st.integers(min_value=-(2**53), max_value=2**53)


def record(mroot: str, epoch: int, shard: str, fl: list[float]) -> dict[str, Any]:
    return {"pcs_id": expected_pcs_id(mroot, epoch, shard), "merkle_root": mroot,
            "epoch": epoch, "shard_id": shard,
            "D_hat": fl[0], "coh_star": fl[1], "r": fl[2], "budget": fl[3]}


records = st.builds(record, texts, epochs, texts, st.lists(any_double, min_size=4, max_size=4))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.sampled_from(PROFILES))
def test_whole_records_fast_and_reference_bytes_agree(rec: dict[str, Any], profile: str) -> None:
    want = canonical_bytes_reference(rec, profile)
    assert canonical_bytes(rec, profile) == want
    if profile == "python":  # the agent's own form, built independently of the core
        rounded = {k: round_half_up_9_reference(v) if isinstance(v, float) else v
                   for k, v in rec.items()}
        assert want == json.dumps(rounded, sort_keys=True, separators=(",", ":")).encode()


KEYS = {"hmac-sha256": hmac_key("fast-hmac"), "ed25519": ed_key("fast-ed", seed_byte=9)}
DIAGNOSERS = {(p, a): Diagnoser(ring([KEYS[a]], p)) for p in PROFILES for a in ALGS}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.sampled_from(PROFILES), st.sampled_from(ALGS))
def test_records_signed_over_reference_bytes_pass_the_short_route(
        rec: dict[str, Any], profile: str, alg: str) -> None:
    """Signed over the reference bytes (never the fast route), verified by `sigops verify`'s
    short route: the fast bytes must be the signed ones, for any double the agent sends."""
    key = KEYS[alg]
    rec = dict(rec, sig=base64.b64encode(
        key.sign(signing_message(canonical_bytes_reference(rec, profile), alg))).decode())
    line = json.dumps(rec).encode()
    d = DIAGNOSERS[(profile, alg)]
    verdict, kid, _ = d.check_line(line, 0)
    if all(rec[k].isascii() for k in ("pcs_id", "merkle_root", "shard_id")):
        assert verdict is None and kid == key.kid  # the short route took it
    else:  # the short route leaves non-ASCII strings to the full route
        assert verdict is not None and verdict.valid and verdict.kid == key.kid
    tampered = dict(rec, budget=math.nextafter(rec["budget"], math.inf))
    if canonical_bytes_reference(tampered, profile) != canonical_bytes_reference(rec, profile):
        v2, _, _ = d.check_line(json.dumps(tampered).encode(), 1)
        assert v2 is not None and not v2.valid
