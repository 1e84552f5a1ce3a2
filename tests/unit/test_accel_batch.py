"""The batch interface of the compiled reader (``read_batch``, through
:meth:`Diagnoser.check_buffer`) gives, record for record, the rows of the pure-Python route:
:meth:`Diagnoser.check_line` of every JSONL line, :meth:`Diagnoser.check_wal` of every entry
:func:`read_wal` frames. Odd and invalid records, damaged WAL framing, odd times, key windows,
skew limits and the ``[since, until)`` window included.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcskit import SENT_AT, hmac_key, ring, signed
from test_verify_routes import ACTIVE, ED, PENDING, RETIRED, mixed_records

from sigops.core import accel, batch
from sigops.core.diagnose import Diagnoser, Row
from sigops.core.keys import Key, KeyRing
from sigops.core.timeparse import parse_time
from sigops.core.wal import read_wal

built = pytest.mark.skipif(accel.read_batch is None, reason="sigops_accel not built here")
WINDOWED = Key("k-win", "hmac-sha256", "active", secret=b"windowed-secret",
               not_before=SENT_AT - timedelta(seconds=30), not_after=SENT_AT + timedelta(hours=1))
RING = ring([ACTIVE, ED, RETIRED, PENDING, WINDOWED], max_skew_seconds=30)


def reference(keyring: KeyRing, buf: bytes, wal: bool, since: datetime | None = None,
              until: datetime | None = None) -> tuple[list[Row], int]:
    """The pure-Python route, one record at a time: the reference."""
    d = Diagnoser(keyring, accelerate=False)
    if wal:
        rows = [d.check_wal(e, i) for i, e in enumerate(read_wal(buf, since, until))]
    else:
        rows = [d.check_line(x, i) for i, x in enumerate(batch.LineBlock(buf).records())]
    return rows, d.tried


def compiled(keyring: KeyRing, buf: bytes, wal: bool, since: datetime | None = None,
             until: datetime | None = None) -> tuple[list[Row], int]:
    d = Diagnoser(keyring)
    per_record = 0
    check_one = d.check_wal if wal else d.check_line

    def counted(rec: Any, index: int) -> Row:
        nonlocal per_record
        per_record += 1
        return check_one(rec, index)

    setattr(d, "check_wal" if wal else "check_line", counted)
    rows = list(d.check_buffer(buf, wal, 0, since, until))
    valid = sum(v is None for v, _, _ in rows)
    # The batch's own short route answered for some valid records, the per-record route for
    # the others (and for every record it was not sure of).
    assert per_record < len(rows) or not valid
    return rows, d.tried


def assert_same(keyring: KeyRing, buf: bytes, wal: bool, since: datetime | None = None,
                until: datetime | None = None) -> list[Row]:
    want, tried = reference(keyring, buf, wal, since, until)
    got, got_tried = compiled(keyring, buf, wal, since, until)
    assert got == want
    assert got_tried == tried  # the same pairs tried: the same work, the same cache
    return got


def stamp(t: datetime, form: int) -> str:
    """An entry time in one of the forms a WAL (or a person) may write."""
    if form == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}123Z"  # nanoseconds
    if form == 1:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == 2:
        return (t + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] \
            + "+05:30"
    return (t - timedelta(hours=7)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-5] + "-07:00"


def wal_of(bodies: list[str], seed: int) -> bytes:
    """A WAL of these bodies, received around their sent_at (some too far: skew), in every
    time form, with damaged entries and blank lines among them."""
    rng = random.Random(seed)
    out = []
    for i, body in enumerate(bodies):
        raw = body.encode()
        t = SENT_AT + timedelta(seconds=rng.choice([0, 1, 20, 90, -45, 4000]), microseconds=i)
        out.append(f"{stamp(t, rng.randrange(4))}|{len(raw)}|".encode() + raw + b"\n")
        r = rng.random()
        if r < 0.04:
            out.append(b"\n")
        elif r < 0.08:
            out.append(rng.choice([
                b"not a header\n",
                b"2025-13-19T12:00:00Z|2|{}\n",  # month 13: the regex matches, the time not
                b"2025-02-29T12:00:00Z|2|{}\n",  # no such day
                b"2025-01-19T12:00:00.1234567890Z|2|{}\n",  # ten fraction digits
                b"2025-01-19T12:00:00z|2|{}\n",  # lower-case z
                b"2025-01-19T12:00:00Z|5|{}\n",  # the length runs past the body
                b"2025-01-19T12:00:00Z|1|{}\n",  # the body does not end where it says
                b"2025-01-19T12:00:00Z|0000000000002|{}\n",  # a 13-digit length
                b"2025-01-19T24:00:00+24:00|2|{}\n",
                b"2025-01-19T12:00:00Z|2|[]\n",  # not an object
            ]))
    if rng.random() < 0.5:
        out.append(b"2025-01-19T12:00:00Z|900|{\"cut")  # a crash mid-write
    return b"".join(out)


@built
@pytest.mark.parametrize("seed", range(4))
def test_jsonl_buffers_give_the_per_line_rows(seed: int) -> None:
    records = mixed_records(300, seed)
    rng = random.Random(seed)
    parts = []
    for r in records:
        parts.append(r.encode() + b"\n")
        if rng.random() < 0.05:
            parts.append(rng.choice([b"\n", b"  \t\n", b"\x0b\x0c\r\n"]))
    buf = b"".join(parts)
    rows = assert_same(RING, buf, False)
    assert sum(v is None for v, _, _ in rows) > 50  # the batch's own short route answered
    assert_same(RING, buf.rstrip(b"\n"), False)  # no newline after the last line


@built
@pytest.mark.parametrize("seed", range(6))
def test_wal_buffers_give_the_per_entry_rows(seed: int) -> None:
    bodies = [r for r in mixed_records(300, seed)]
    rng = random.Random(seed)
    for i in range(40):  # records of the windowed key: inside and outside its window
        pcs = signed(WINDOWED, shard=f"w-{i}", epoch=i)
        if rng.random() < 0.3:
            del pcs["sent_at"]
        bodies.insert(rng.randrange(len(bodies)), json.dumps(pcs))
    buf = wal_of(bodies, seed)
    rows = assert_same(RING, buf, True)
    assert sum(v is None for v, _, _ in rows) > 20
    windows = [(SENT_AT, None), (None, SENT_AT + timedelta(seconds=21)),
               (SENT_AT - timedelta(seconds=1), SENT_AT + timedelta(seconds=60))]
    for since, until in windows:
        assert_same(RING, buf, True, since, until)


@built
def test_no_skew_limit_and_a_windowless_ring() -> None:
    bodies = mixed_records(200, 11)
    keyring = ring([ACTIVE, ED, RETIRED, PENDING])
    assert_same(keyring, wal_of(bodies, 11), True)
    assert_same(keyring, "\n".join(bodies).encode(), False)


@built
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**32), st.integers(1, 8), st.booleans())
def test_byte_mutations(seed: int, edits: int, wal: bool) -> None:
    rng = random.Random(seed)
    bodies = mixed_records(12, seed % 97)
    raw = bytearray(wal_of(bodies, seed) if wal else "\n".join(bodies).encode())
    for _ in range(edits):
        i = rng.randrange(len(raw))
        op = rng.randrange(3)
        if op == 0:
            raw[i] = rng.randrange(256)
        elif op == 1:
            raw.insert(i, rng.choice(b'{}[]",:|0123456789.eE-+TZz\\ \n\x00\xff'))
        else:
            del raw[i]
    assert_same(RING, bytes(raw), wal)


@built
@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(0, 9), st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-23:59"]))
def test_times_read_to_the_same_instant(t: datetime, digits: int, zone: str) -> None:
    """``sent_at`` as the batch reads it (microseconds since the epoch) is parse_time's."""
    frac = f"{t.microsecond:06d}987"[:digits]
    text = f"{t.year:04d}" + t.strftime("-%m-%dT%H:%M:%S") + ("." + frac if digits else "") \
        + zone
    pcs = signed(ACTIVE, sent_at=text)
    _, rows, _ = accel.read_batch(json.dumps(pcs).encode(), 0, 0, False, 1 << 20, None,  # type: ignore[misc]
                                  None, 10)
    want = parse_time(text) - datetime(1970, 1, 1, tzinfo=UTC)
    assert rows[0][4] == want // timedelta(microseconds=1)


@built
def test_a_mapped_file_is_read_in_place(tmp_path: Any) -> None:
    import mmap

    buf = wal_of(mixed_records(50, 3), 3)
    p = tmp_path / "inbox-20250119.wal"
    p.write_bytes(buf)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        got = list(Diagnoser(RING).check_buffer(m, True))
    assert got == reference(RING, buf, True)[0]



@built
def test_a_writable_buffer_is_refused(tmp_path: Any) -> None:
    """The compiled reader borrows the buffer's bytes for the whole call, while it makes
    Python objects (which may run other Python code): only a buffer no Python code can write
    to is lent (bytes, a read-only mmap); a bytearray or a writable mapping is refused."""
    import mmap

    buf = wal_of(mixed_records(5, 3), 3)
    p = tmp_path / "inbox-20250119.wal"
    p.write_bytes(buf)
    with open(p, "r+b") as f, mmap.mmap(f.fileno(), 0) as writable:
        for lent in (bytearray(buf), memoryview(bytearray(buf)), writable):
            with pytest.raises(ValueError, match="writable"):
                accel.read_batch(lent, 0, 0, True, 1 << 20, None, None, 10)  # type: ignore[misc]
    assert accel.read_batch(buf, 0, 0, True, 1 << 20, None, None, 10)[1]  # type: ignore[misc]

@built
def test_counts_with_and_without_the_compiled_reader() -> None:
    """``sigops verify --summary`` over a whole WAL in one process."""
    buf = wal_of(mixed_records(400, 5), 5)
    totals = [batch.count(Diagnoser(RING, accelerate=a), [batch.WalBuffer(buf)])
              for a in (True, False)]
    assert totals[0] == totals[1]
    per_entry = batch.count(Diagnoser(RING, accelerate=False), list(read_wal(buf)))
    assert totals[0] == per_entry


def test_hmac_only_ring_keeps_the_python_route_for_ed25519() -> None:
    d = Diagnoser(ring([hmac_key("only")]))
    buf = json.dumps(signed(ED)).encode()
    assert list(d.check_buffer(buf, False)) == reference(d.ring, buf, False)[0]
