"""The compiled reader (``sigops_accel``, built from ``accel/``) gives the Python route's answers
or none at all.

Where it answers, the values (types and float bits), canonical bytes of every profile, decoded
signature and ``sent_at`` must be those of the pure-Python route (strict parse, typed values,
strict base64, the fast canonical route, and the reference route too); where it is unsure, it
must say so (None) and Python decides. It must also answer for every plain record shape, or the
speed would again depend on the shape. ``SIGOPS_REQUIRE_ACCEL=1`` (set by ``make``) turns a
missing extension into a failure instead of a skip.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
from collections import Counter
from decimal import ROUND_HALF_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pcskit import ALGS, PROFILES, base_pcs, ed_key, hmac_key, line, ring, signed
from test_canonical_fast import EDGES, any_double
from tests.reliability.pcsfuzz import assert_accel_agrees, python_read

from sigops.core import accel, batch
from sigops.core.diagnose import Diagnoser

built = pytest.mark.skipif(accel.read_pcs is None, reason="sigops_accel not built here")
SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = {"hmac-sha256": hmac_key("accel-hmac"), "ed25519": ed_key("accel-ed", seed_byte=11)}
BIG = 2**53 / 1e9
"""From here up a value with more than nine decimals keeps more than 2^53 in its digits: the
compiled reader may leave it to Python (it never writes what it cannot divide exactly)."""


def test_the_compiled_reader_is_built_where_required() -> None:
    if os.environ.get("SIGOPS_REQUIRE_ACCEL") == "1":
        assert accel.available(), "sigops_accel is not importable: `make venv` builds it"
    elif not accel.available():
        pytest.skip("sigops_accel not built here (SIGOPS_REQUIRE_ACCEL unset)")


def record_line(floats: list[float], profile: str, alg: str = "hmac-sha256",
                **over: Any) -> bytes:
    pcs = base_pcs(**over)
    for k, x in zip(("D_hat", "coh_star", "r", "budget"), floats, strict=True):
        pcs[k] = x
    return line(signed(KEYS[alg], profile, **pcs))


def _tie(x: float) -> bool:
    """Whether ``x`` lies exactly halfway between two decimals of its shortest repr's length
    (e.g. 2**-24 = 5.9604644775390625e-08): the compiled reader leaves those to Python,
    whose choice between the two it does not copy.

    >>> _tie(2.0**-24), _tie(0.1), _tie(0.0)
    (True, False, False)
    """
    if x == 0 or not math.isfinite(x):
        return False
    d = Decimal(abs(x))
    n = len(repr(abs(x)).split("e")[0].replace(".", "").lstrip("0").rstrip("0") or "0")
    q = Decimal(1).scaleb(d.adjusted() - n + 1)
    return d.quantize(q, ROUND_HALF_UP) != d.quantize(q, ROUND_HALF_DOWN)


def must_answer(floats: list[float]) -> bool:
    return all(abs(x) < BIG and not _tie(x) for x in floats)


@built
@pytest.mark.parametrize("x", EDGES, ids=repr)
@pytest.mark.parametrize("profile", PROFILES)
def test_edge_values(x: float, profile: str) -> None:
    floats = [x, -x, x / 7, 0.5]
    outcome = assert_accel_agrees(record_line(floats, profile), profile)
    assert outcome == "answered" or not must_answer(floats)


@built
@SETTINGS
@given(st.lists(any_double, min_size=4, max_size=4), st.sampled_from(PROFILES))
@example([0.1234567895, -2.5e-10, 1e-7, 1.0], "python")
@example([-0.0, 5e-324, 1e16, 0.30000000000000004], "go")
@example([9.9999999995e-05, 999999.9999999995, -999999.5, 1e-10], "fixed9")
@example([0.0, 0.0, 0.0, 5.960464477539063e-08], "python")  # a tie: found by a CI-like run
def test_every_double_every_profile(floats: list[float], profile: str) -> None:
    outcome = assert_accel_agrees(record_line(floats, profile), profile)
    assert outcome == "answered" or not must_answer(floats)


def _texts(x: float) -> list[str]:
    """The same double written as agents and JSON libraries might: repr, long exponent forms,
    upper-case E, more digits than needed."""
    return [repr(x), f"{x:.17e}", f"{x:.17E}", f"{x:.25e}", f"{x:.30f}", f"{x:.20g}"]


@built
@SETTINGS
@given(any_double, st.sampled_from(PROFILES))
def test_number_texts(x: float, profile: str) -> None:
    base = record_line([0.25, 0.5, 0.75, 1.5], profile).decode()
    for text in _texts(x):
        raw = base.replace('"D_hat": 0.25', f'"D_hat": {text}').encode()
        assert_accel_agrees(raw, profile)


def _hostile(profile: str) -> dict[str, bytes]:
    good = record_line([1.5, 0.25, 0.125, 2.0], profile).decode()
    obj = json.loads(good)

    def with_(**over: Any) -> bytes:
        return json.dumps(obj | over).encode()

    sig = obj["sig"]
    raw_sig = base64.b64decode(sig)
    last = sig.rstrip("=")[-1]
    flipped = "BA"[last == "B"]  # another character: changes the unused low bits or the bytes
    return {
        "duplicate key": good.replace('{"pcs_id"', '{"epoch": 7, "pcs_id"', 1).encode(),
        "duplicate nested key": with_(x={"a": 1}).replace(b'"a": 1', b'"a": 1, "a": 2'),
        "epoch beyond 2^53": with_(epoch=2**53 + 1),
        "integer beyond 2^53 elsewhere": with_(x=[2**53 + 1]),
        "NaN": good.replace('"D_hat": 1.5', '"D_hat": NaN').encode(),
        "Infinity elsewhere": with_(x=1).replace(b'"x": 1', b'"x": Infinity'),
        "overflowing number elsewhere": with_(x=1).replace(b'"x": 1', b'"x": 1e400'),
        "invalid UTF-8 elsewhere": with_(x="ab").replace(b'"ab"', b'"a\xff"'),
        "overlong UTF-8": with_(x="ab").replace(b'"ab"', b'"\xc0\xaf"'),
        "encoded surrogate": with_(x="ab").replace(b'"ab"', b'"\xed\xa0\x80"'),
        "lone surrogate escape": with_(x="ab").replace(b'"ab"', b'"\\ud800"'),
        "raw control character": with_(x="ab").replace(b'"ab"', b'"a\x01"'),
        "escape in a signed string": with_(shard_id="shard\\u0030"),
        "trailing garbage": good.encode() + b"x",
        "two documents": good.encode() + b" {}",
        "BOM": b"\xef\xbb\xbf" + good.encode(),
        "top-level array": b"[" + good.encode() + b"]",
        "envelope": json.dumps({"pcs": obj, "received_at": "2025-01-19T12:00:00Z"}).encode(),
        "epoch as float": with_(epoch=7.0),
        "epoch as bool": with_(epoch=True),
        "float as integer": with_(D_hat=2),
        "float as string": with_(D_hat="1.5"),
        "missing sig": json.dumps({k: v for k, v in obj.items() if k != "sig"}).encode(),
        "sig null": with_(sig=None),
        "sig not canonical": with_(sig=sig[: len(sig.rstrip("="))-1] + flipped
                                   + "=" * (len(sig) - len(sig.rstrip("=")))),
        "sig without padding": with_(sig=sig.rstrip("=")),
        "sig with a space": with_(sig=sig[:10] + " " + sig[10:]),
        "sig url-safe": with_(sig=sig.replace("+", "-").replace("/", "_")),
        "sig 31 bytes": with_(sig=base64.b64encode(raw_sig[:31]).decode()),
        "sent_at a number": with_(sent_at=5),
        "long pcs_id": with_(pcs_id="a" * 1025),
        "non-ASCII shard": with_(shard_id="shärd"),
        "HTML characters": with_(shard_id="<shard&>"),
        "DEL character": with_(shard_id="shard\x7f"),
        "deep nesting": with_(x=1).replace(b'"x": 1', b'"x": ' + b"[" * 70 + b"]" * 70),
        "many keys": json.dumps(obj | {f"k{i}": i for i in range(80)}).encode(),
        "sum overflows": with_(D_hat=1e300, coh_star=1e300),
        "truncated": good.encode()[:-5],
        "leading zero": good.replace('"epoch": 7', '"epoch": 07').encode(),
        "plus sign": good.replace('"epoch": 7', '"epoch": +7').encode(),
        "bare point": good.replace('"D_hat": 1.5', '"D_hat": 1.').encode(),
    }


@built
@pytest.mark.parametrize("profile", PROFILES)
def test_hostile_lines(profile: str) -> None:
    outcomes: Counter[str] = Counter()
    for name, raw in _hostile(profile).items():
        got = assert_accel_agrees(raw, profile)
        outcomes[got] += 1
        if python_read(raw, profile) is None:
            assert got == "unsure", name
    # Beyond what Python refuses, the reader leaves to Python what it is not sure of (escapes,
    # deep nesting, many keys, non-canonical base64, characters a profile escapes).
    assert outcomes["unsure"] >= 35, outcomes


@built
@SETTINGS
@given(st.sampled_from(PROFILES), st.sampled_from(ALGS), st.integers(0, 2**32),
       st.integers(1, 6))
def test_byte_mutations(profile: str, alg: str, seed: int, edits: int) -> None:
    raw = bytearray(record_line([1.25, 0.7272573528421941, -3.1e-07, 4.2e-11], profile, alg))
    rng = random.Random(seed)
    for _ in range(edits):
        i = rng.randrange(len(raw))
        op = rng.randrange(3)
        if op == 0:
            raw[i] = rng.randrange(256)
        elif op == 1:
            raw.insert(i, rng.choice(b'{}[]",:0123456789.eE-+\\ \x00\xff'))
        else:
            del raw[i]
    assert_accel_agrees(bytes(raw), profile)


SHAPES = {
    "nine": [1.197978222, 0.357757857, 0.563925191, 0.444938732],
    "full": [1.1976653440851341, 0.35720914519055014, 0.563762909233552, 0.44468683655010177],
    "integral": [5.0, 1.0, 2.0, 2.0],
    "negative_tiny": [-1.19742951019055, -0.3575059615501018, -6.169920811204205e-10, 4.2e-11],
}


@built
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("alg", ALGS)
def test_every_shape_takes_the_compiled_route(shape: str, profile: str, alg: str) -> None:
    raw = record_line(SHAPES[shape], profile, alg)
    assert assert_accel_agrees(raw, profile) == "answered"
    verdict, kid, _ = Diagnoser(ring([KEYS[alg]], profile)).check_line(raw, 0)
    assert verdict is None and kid == KEYS[alg].kid


@built
@pytest.mark.parametrize("profile", PROFILES)
def test_verify_counts_equal_with_and_without(profile: str) -> None:
    """``sigops verify --summary``'s counting over valid, replayed, tampered, stale, drifted,
    skewed and malformed records: the same totals with the compiled reader as without."""
    key, other = KEYS["hmac-sha256"], hmac_key("accel-other")
    retired = hmac_key("accel-retired", state="retired")
    keyring = ring([key, retired], profile)
    lines: list[bytes] = []
    drift = next(p for p in PROFILES if p != profile)
    for i in range(60):
        kind = i % 6
        floats = [1.0 + i / 7, 0.1 * i, -3.1e-07 * i, 4.2e-11]
        if kind == 0:
            lines.append(record_line(floats, profile, epoch=i))
        elif kind == 1:  # the same pcs_id, other signed content, validly signed
            lines.append(record_line([f + 1 for f in floats], profile, epoch=i - 1))
        elif kind == 2:
            lines.append(line(signed(retired, profile, **base_pcs(epoch=i))))
        elif kind == 3:
            lines.append(line(signed(key, drift, **base_pcs(epoch=i))))
        elif kind == 4:
            lines.append(line(signed(other, profile, **base_pcs(epoch=i))))
        else:
            lines.append(record_line(floats, profile, epoch=i)[:-9] + b"\n")
    totals = []
    for accelerate in (True, False):
        d = Diagnoser(keyring, accelerate=accelerate)
        totals.append(batch.count(d, [batch.LineBlock(b"".join(lines))]))
    assert totals[0] == totals[1]
    assert totals[0][1]["valid"] >= 10 and len(totals[0][1]) >= 4, totals[0]
