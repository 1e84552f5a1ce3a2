"""The fleet audit's reader: ``read_batch(..., short=)`` and :meth:`Diagnoser.check_runs`.

A record the compiled reader finds valid by the short route comes in a run, with no row of its
own; expanded, the runs and rows of ``check_runs`` are the rows of ``check_buffer`` (and of the
pure-Python route), each record at the same entry, whatever keys, windows, skews, damaged
entries and batch sizes the WAL holds, and when another key takes the front mid-run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pcskit import SENT_AT, hmac_key, ring, signed
from test_accel_batch import WINDOWED, wal_of
from test_verify_routes import ACTIVE, ED, RETIRED, mixed_records

from sigops.core import accel, diagnose
from sigops.core.audit import AuditQuery, ShardInput, audit_shard
from sigops.core.diagnose import Diagnoser, Row, Run, _micros
from sigops.core.keys import KeyRing
from sigops.core.pcs import content_of
from sigops.core.timeparse import format_time

built = pytest.mark.skipif(not accel.batch_short, reason="sigops_accel (with short) not built")
SECOND = hmac_key("k-second")
RING2 = ring([ACTIVE, SECOND, ED, RETIRED, WINDOWED], max_skew_seconds=30)


def expanded(d: Diagnoser, items: Iterator[Row | Run], start: int = 0
             ) -> Iterator[tuple[int, Row]]:
    """Each record of ``check_runs`` (numbered from ``start``) as ``(its entry's start, its
    row)``."""
    n = start
    for item in items:
        if isinstance(item, Run):
            assert item.index == n
            values = item.values()
            assert len(item.starts) == len(values) == len(item.pcs_ids) > 0
            assert item.pcs_ids == [v[0] for v in values]
            assert item.shards == list(Counter(v[3] for v in values).items())
            for at, v in zip(item.starts, values, strict=True):
                yield at, (None, item.kid, content_of(v))
            n = item.index + len(item.starts)
        else:
            yield d.at, item
            n += 1


def rows(keyring: KeyRing, buf: bytes, runs: bool, **window: Any) -> list[tuple[int, Row]]:
    d = Diagnoser(keyring)
    if runs:
        return list(expanded(d, d.check_runs(buf, 5, **window), 5))
    return [(d.at, r) for r in d.check_buffer(buf, True, 5, **window)]


def assert_same(keyring: KeyRing, buf: bytes, **window: Any) -> list[tuple[int, Row]]:
    got = rows(keyring, buf, True, **window)
    assert got == rows(keyring, buf, False, **window)
    pure = Diagnoser(keyring, accelerate=False)
    assert [r for _, r in got] == list(pure.check_buffer(buf, True, 5, **window))
    return got


def wal(bodies: list[dict[str, Any]], received: list[int] | None = None) -> bytes:
    """Entries received at SENT_AT plus ``received[i]`` seconds (0 for all by default)."""
    out = []
    for i, body in enumerate(bodies):
        raw = json.dumps(body).encode()
        t = SENT_AT + timedelta(seconds=(received or [0] * len(bodies))[i])
        out.append(f"{format_time(t)}|{len(raw)}|".encode() + raw + b"\n")
    return b"".join(out)


def micros(t: Any) -> int:
    us = _micros(t)
    assert us is not None
    return us


def raw(buf: bytes, key: bytes, short: Any, limit: int = 1000) -> list[Any]:
    assert accel.read_batch is not None
    _, got, stopped = accel.read_batch(buf, 0, accel.PROFILE_CODES["python"], True, 1 << 20,
                                       None, None, limit, mac_key=key, short=short)
    assert not stopped
    return list(got)


@built
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("batch_records", [512, 7, 1])
def test_runs_expand_to_the_rows_of_check_buffer(monkeypatch: pytest.MonkeyPatch, seed: int,
                                                 batch_records: int) -> None:
    monkeypatch.setattr(diagnose, "BATCH_RECORDS", batch_records)
    buf = wal_of(mixed_records(300, seed), seed)
    assert_same(RING2, buf)
    in_runs = sum(len(x.starts) for x in Diagnoser(RING2).check_runs(buf) if isinstance(x, Run))
    assert in_runs > 15  # many of the valid ones under the front key
    since = SENT_AT + timedelta(seconds=10)
    assert_same(RING2, buf, since=since, until=since + timedelta(minutes=30))


@built
@pytest.mark.parametrize("batch_records", [512, 3])
def test_another_key_takes_the_front_mid_run(monkeypatch: pytest.MonkeyPatch,
                                             batch_records: int) -> None:
    """ACTIVE is the front when the call starts; a SECOND record moves SECOND to the front,
    so the ACTIVE records after it in the same call take the per-record route until one of
    them moves ACTIVE back: the same rows as check_buffer, the kids included."""
    monkeypatch.setattr(diagnose, "BATCH_RECORDS", batch_records)
    keys = [ACTIVE] * 5 + [SECOND] * 4 + [ACTIVE] * 6 + [SECOND] + [ACTIVE] * 3 + [ED] * 2 + \
        [ACTIVE] * 4
    buf = wal([signed(k, epoch=i + 1) for i, k in enumerate(keys)])
    d = Diagnoser(RING2)
    items = list(d.check_runs(buf))
    got = [r for _, r in expanded(d, iter(items))]
    want: list[Any] = []
    front = ACTIVE
    for k in keys:  # an HMAC record of a key other than the front: the full route
        want.append(("valid", k.kid) if k.alg == "hmac-sha256" and k is not front else k.kid)
        front = k if k.alg == "hmac-sha256" else front
    assert [kid if v is None else (v.cause, v.kid) for v, kid, _ in got] == want
    if batch_records == 512:
        assert [len(x.starts) for x in items if isinstance(x, Run)] == [5, 5, 2, 4]
    assert_same(RING2, buf)


@built
def test_window_and_skew_bounds_are_those_of_the_short_route() -> None:
    """A record received exactly at an end of its key's window, or exactly the skew limit
    from its sent_at, is in a run; a microsecond beyond, it is a row (Python decides); a
    sent_at so far that the difference is no exact float is a row too."""
    buf = wal([signed(ACTIVE, epoch=1)] * 5, [0, 60, -60, 30, -30])
    secret = ACTIVE.secret or b""
    nb, na = micros(SENT_AT - timedelta(seconds=60)), micros(SENT_AT + timedelta(seconds=30))

    def shape(short: Any) -> list[int]:
        """Per item: the records of a run, or 0 for a row."""
        return [len(x[0]) if len(x) == 4 else 0 for x in raw(buf, secret, short)]

    assert shape((nb, na, 60.0)) == [1, 0, 3]
    assert shape((nb, na - 1, 60.0)) == [1, 0, 1, 0, 1]
    assert shape((nb + 1, na, 60.0)) == [1, 0, 0, 2]
    assert shape((None, None, 30.0)) == [1, 0, 0, 2]
    assert shape((None, None, 29.999999)) == [1, 0, 0, 0, 0]
    assert shape((None, None, None)) == [5]
    far = dict(signed(ACTIVE, epoch=1), sent_at="0001-01-01T00:00:00Z")
    assert [len(x) for x in raw(wal([far]), secret, (None, None, 1e300))] == [8]


@built
def test_short_needs_the_key_and_a_wal() -> None:
    assert accel.read_batch is not None
    buf = wal([signed(ACTIVE, epoch=1)])
    with pytest.raises(ValueError, match="short needs mac_key and wal"):
        accel.read_batch(buf, 0, 0, True, 1 << 20, None, None, 10, short=(None, None, None))
    with pytest.raises(ValueError, match="short needs mac_key and wal"):
        accel.read_batch(buf, 0, 0, False, 1 << 20, None, None, 10, mac_key=b"k",
                         short=(None, None, None))


@built
def test_the_audit_counts_valid_records_in_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An audit of valid records under one HMAC key judges none of them record by record,
    and still says what the pure-Python route says (zero floats, whose content is not their
    values, and a tampered replay of an earlier run's record included)."""
    bodies = [signed(ACTIVE, epoch=i + 1, shard=f"s-{i % 3}") for i in range(40)]
    bodies[7] = signed(ACTIVE, epoch=99, D_hat=0.0)
    buf = wal(bodies)
    calls: list[int] = []
    check_wal = Diagnoser.check_wal

    def counted(self: Diagnoser, entry: Any, index: int) -> Row:
        calls.append(index)
        return check_wal(self, entry, index)

    monkeypatch.setattr(Diagnoser, "check_wal", counted)
    q = AuditQuery(all=True, accepted_invalid=True, key_ids=frozenset({ACTIVE.kid}))
    fast = audit_shard(RING2, [ShardInput("w", buf)], q)
    assert calls == []
    assert fast == audit_shard(RING2, [ShardInput("w", buf)], q, accelerate=False)
    assert fast["total"] == fast["valid"] == 40
    # The same pcs_id again, with other content, unsigned by any key: tampered.
    other = dict(bodies[3], D_hat=bodies[3]["D_hat"] + 1)
    buf2 = buf + wal([other])
    fast = audit_shard(RING2, [ShardInput("w", buf2)], q)
    assert fast["by_verdict"].get("tampered") == 1
    assert fast == audit_shard(RING2, [ShardInput("w", buf2)], q, accelerate=False)


@built
def test_packed_values_read_back_exactly() -> None:
    """The values a run packs read back as the compiled reader's rows give them: signed
    zeros, subnormal and huge floats, the largest exact epochs, long and empty strings."""
    odd = [dict(D_hat=-0.0), dict(coh_star=5e-324), dict(r=1e22),
           dict(budget=0.1 + 0.2), dict(epoch=2 ** 53), dict(epoch=-(2 ** 53)),
           dict(merkle_root="f" * 1024), dict(shard_id=""), dict(shard_id="s" * 1024),
           dict(D_hat=1.0, coh_star=2.0, r=3.0, budget=4.0)]
    buf = wal([signed(ACTIVE, **over) for over in odd])
    runs = [x for x in Diagnoser(RING2).check_runs(buf) if isinstance(x, Run)]
    assert sum(len(x.starts) for x in runs) == len(odd)
    assert_same(RING2, buf)


@built
@pytest.mark.parametrize("batch_records", [512, 5])
def test_audit_of_runs_with_bounded_counts_and_findings(monkeypatch: pytest.MonkeyPatch,
                                                         batch_records: int) -> None:
    """Runs over many shards, split by another key taking the front, with replays inside a
    run and a tampered one after it, under a tally that folds every few combinations and
    counts that keep four values: the audit says what the pure-Python route says, the
    records of the searched key (in runs and not) each found once, at its index."""
    from sigops.core import audit

    monkeypatch.setattr(diagnose, "BATCH_RECORDS", batch_records)
    monkeypatch.setattr(audit, "TALLY_BOUND", 3)
    monkeypatch.setattr(audit, "MAX_KEYS", 4)
    bodies = []
    for i in range(90):
        key = SECOND if i % 23 == 7 else ED if i % 31 == 11 else ACTIVE
        bodies.append(signed(key, epoch=i + 1, shard=f"s-{(i * 7) % 9}"))
        if i % 10 == 3:
            bodies.append(bodies[-1])  # the same record again: valid, in the same run
    bodies.append(dict(bodies[20], D_hat=bodies[20]["D_hat"] + 1))  # tampered
    buf = wal(bodies)
    q = AuditQuery(all=True, accepted_invalid=True, key_ids=frozenset({ACTIVE.kid}),
                   first_n=1000)
    ring2 = ring([ACTIVE, SECOND, ED], max_skew_seconds=30)
    fast = audit_shard(ring2, [ShardInput("w", buf)], q)
    assert fast == audit_shard(ring2, [ShardInput("w", buf)], q, accelerate=False)
    assert len(fast["by_shard"]) == 5 and "(other)" in fast["by_shard"]
    assert fast["by_verdict"].get("tampered") == 1
    found = fast["findings"]["searched_key"]["first"]
    assert [f["index"] for f in found] == [
        i for i, b in enumerate(bodies[:-1]) if b["sig"] == signed(
            ACTIVE, epoch=b["epoch"], shard=b["shard_id"])["sig"]]


def test_the_short_runs_are_built_where_required() -> None:
    """``make`` requires the compiled reader; a build older than ``short`` would skip the
    tests above (and leave the audit on ``check_buffer``)."""
    assert not accel.batch_short or accel.batch_mac
    if os.environ.get("SIGOPS_REQUIRE_ACCEL") == "1" and \
            os.environ.get("SIGOPS_ACCEL_MAC", "1") != "0":
        assert accel.batch_short, "sigops_accel is older than read_batch's short: `make venv`"
