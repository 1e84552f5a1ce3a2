"""The compiled reader's HMAC check (``read_batch(..., mac_key=)``, through
:meth:`Diagnoser.check_buffer`): a row it confirms is one Python's MAC would confirm, and the
rows and ``tried`` counts stay those of the pure-Python route and of a run without it: a wrong
signature under the key that matched last, a second key taking over mid-batch and handing
back, odd secrets, and Ed25519 rows (never checked there).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from hmac import compare_digest
from typing import Any

import pytest
from pcskit import hmac_key, ring, signed
from test_accel_batch import WINDOWED, assert_same, reference, wal_of
from test_verify_routes import ACTIVE, ED, RETIRED, mixed_records

from sigops.core import accel, diagnose
from sigops.core.canonical import canonical_bytes
from sigops.core.diagnose import Diagnoser, Row
from sigops.core.keys import Key, KeyRing
from sigops.core.pcs import typed_subset

built = pytest.mark.skipif(not accel.batch_mac, reason="sigops_accel (with mac_key) not built")
SECOND = hmac_key("k-second")
ODD_SECRETS = [b"", b"k", b"\x00" * 7, bytes(range(63)), bytes(range(64)), bytes(range(65)),
               b"\xff" * 200]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def run(keyring: KeyRing, buf: bytes, wal: bool, compiled_mac: bool = True
        ) -> tuple[list[Row], int]:
    d = Diagnoser(keyring, compiled_mac=compiled_mac)
    return list(d.check_buffer(buf, wal)), d.tried


def mac_ok(buf: bytes, secret: bytes | None, profile: str = "python") -> list[bool]:
    assert accel.read_batch is not None
    _, rows, stopped = accel.read_batch(buf, 0, accel.PROFILE_CODES[profile], False, 1 << 20,
                                        None, None, 1000, mac_key=secret)
    assert not stopped
    return [r[7] for r in rows]


@pytest.fixture
def python_macs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The kid of every MAC Python computes."""
    calls: list[str] = []
    mac = Key.mac

    def counted(self: Key, message: bytes) -> bytes:
        calls.append(self.kid)
        return mac(self, message)

    monkeypatch.setattr(Key, "mac", counted)
    yield calls


@built
def test_rows_say_whether_the_key_signed_them() -> None:
    good = signed(ACTIVE, epoch=1)
    wrong = signed(ACTIVE, epoch=2)
    wrong["sig"] = signed(ACTIVE, epoch=3)["sig"]  # a valid MAC, of another record
    other = signed(SECOND, epoch=4)
    ed = signed(ED, epoch=5)
    buf = jsonl([good, wrong, other, ed])
    assert mac_ok(buf, ACTIVE.secret) == [True, False, False, False]
    assert mac_ok(buf, SECOND.secret) == [False, False, True, False]
    assert mac_ok(buf, None) == [False] * 4
    # The MAC is of the canonical bytes under the profile the call writes: a record signed
    # under another profile is not confirmed (its bytes differ there).
    assert mac_ok(jsonl([signed(ACTIVE, "go", epoch=6)]), ACTIVE.secret) == [False]
    assert mac_ok(jsonl([signed(ACTIVE, "go", epoch=6)]), ACTIVE.secret, "go") == [True]


@built
@pytest.mark.parametrize("secret", ODD_SECRETS, ids=lambda s: f"{len(s)}-bytes")
def test_odd_secrets_give_python_s_answer(secret: bytes) -> None:
    key = Key("k-odd", "hmac-sha256", "active", secret=secret)
    records = [signed(key, epoch=1), signed(ACTIVE, epoch=2), signed(key, epoch=3)]
    buf = jsonl(records)
    want = []
    for r in records:
        subset = typed_subset(r)
        assert subset is not None
        canon = canonical_bytes(subset, "python")  # what an HMAC key signs: these bytes
        want.append(compare_digest(key.mac(canon), base64.b64decode(r["sig"])))
    assert want == [True, False, True]
    assert mac_ok(buf, secret) == want
    keyring = ring([key, ACTIVE])
    assert_same(keyring, buf, False)
    assert run(keyring, buf, False) == run(keyring, buf, False, compiled_mac=False)


@built
def test_a_wrong_signature_under_the_key_that_matched_last(python_macs: list[str]) -> None:
    records = [signed(ACTIVE, epoch=e) for e in range(1, 9)]
    bad = dict(records[4])
    bad["sig"] = records[5]["sig"]
    records[4] = bad
    buf = jsonl(records)
    want, tried = reference(RING2, buf, False)
    assert want[4][0] is not None and want[4][0].cause != "valid"
    python_macs.clear()
    assert run(RING2, buf, False) == (want, tried)
    with_compiled = len(python_macs)
    python_macs.clear()
    assert run(RING2, buf, False, compiled_mac=False) == (want, tried)
    # Python MAC'd none of the seven good records, nor the bad one in the batch loop (the
    # compiled reader said no: the per-record route then decides it, MACs and all).
    assert len(python_macs) - with_compiled == 8


RING2 = ring([ACTIVE, SECOND, ED, RETIRED, WINDOWED], max_skew_seconds=30)


@built
@pytest.mark.parametrize("batch_records", [512, 3, 1])
def test_a_second_key_takes_over_mid_batch_and_hands_back(
        monkeypatch: pytest.MonkeyPatch, python_macs: list[str], batch_records: int) -> None:
    """ACTIVE matched last when the call starts; SECOND's records move it to the front (the
    rows after that are MAC'd in Python under SECOND, as without the compiled MAC), then
    ACTIVE's records move it back, and the compiled check applies again."""
    monkeypatch.setattr(diagnose, "BATCH_RECORDS", batch_records)
    keys = [ACTIVE] * 5 + [SECOND] * 4 + [ACTIVE] * 6 + [SECOND] + [ACTIVE] * 3
    buf = jsonl([signed(k, epoch=i + 1) for i, k in enumerate(keys)])
    want = reference(RING2, buf, False)
    assert [kid if v is None else (v.cause, v.kid) for v, kid, _ in want[0]] == [
        k.kid if i == 0 or k is keys[i - 1] else ("valid", k.kid) for i, k in enumerate(keys)]
    python_macs.clear()
    got = run(RING2, buf, False)
    with_compiled = len(python_macs)
    assert got == want
    python_macs.clear()
    assert run(RING2, buf, False, compiled_mac=False) == want
    assert with_compiled < len(python_macs)
    # The same as WAL entries.
    wbuf = wal_of([json.dumps(signed(k, epoch=i + 1)) for i, k in enumerate(keys)], 1)
    assert_same(RING2, wbuf, True)
    assert run(RING2, wbuf, True) == run(RING2, wbuf, True, compiled_mac=False)


@built
def test_ed25519_rows_are_verified_in_python(monkeypatch: pytest.MonkeyPatch,
                                             python_macs: list[str]) -> None:
    verified: list[str] = []
    verify = Key.verify

    def counted(self: Key, message: bytes, sig: bytes) -> bool:
        if self.alg == "ed25519":
            verified.append(self.kid)
        return verify(self, message, sig)

    monkeypatch.setattr(Key, "verify", counted)
    keys = [ED] * 4 + [ACTIVE] * 3 + [ED] * 3
    buf = jsonl([signed(k, epoch=i + 1) for i, k in enumerate(keys)])
    assert mac_ok(buf, ACTIVE.secret) == [k is ACTIVE for k in keys]
    want = reference(RING2, buf, False)
    verified.clear()
    assert run(RING2, buf, False) == want
    assert verified.count(ED.kid) == 7  # each Ed25519 record verified once, in Python
    assert run(RING2, buf, False, compiled_mac=False) == want


@built
@pytest.mark.parametrize("seed", range(6))
def test_mixed_buffers_with_and_without_the_compiled_mac(seed: int) -> None:
    buf = "".join(x + "\n" for x in mixed_records(300, seed)).encode()
    assert run(RING2, buf, False) == run(RING2, buf, False, compiled_mac=False)
    wbuf = wal_of(mixed_records(300, seed), seed)
    assert run(RING2, wbuf, True) == run(RING2, wbuf, True, compiled_mac=False)
    assert_same(RING2, wbuf, True)


def test_the_compiled_mac_is_built_where_required() -> None:
    """``make`` requires the compiled reader; a build older than ``mac_key`` would skip the
    tests above (and leave ``read_batch`` unused)."""
    assert not accel.batch_mac or accel.read_batch is not None
    if os.environ.get("SIGOPS_REQUIRE_ACCEL") == "1" and \
            os.environ.get("SIGOPS_ACCEL_MAC", "1") != "0":
        assert accel.batch_mac, "sigops_accel is older than read_batch's mac_key: `make venv`"
