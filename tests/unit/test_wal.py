"""The upstream inbox WAL as input: ``<RFC 3339 nanos>|<length>|<body>\\n`` entries, read by
length (bodies may hold newlines); damaged entries are ``malformed`` with their byte offset and
reading goes on. Through the core reader and the CLI (files, gzip, stdin, --jobs, --since)."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcskit import HMAC, Key, signed

from sigops import cli
from sigops.core.wal import read_wal

KEY = Key("wal-key", HMAC, secret=b"sigops-wal-test-key-000000000001")
T0 = "2025-01-19T12:00:00.123456789Z"  # pcskit signs sent_at 2025-01-19T12:00:00Z


def entry(ts: str, body: bytes) -> bytes:
    return f"{ts}|{len(body)}|".encode() + body + b"\n"


def pcs_body(i: int, **over: Any) -> bytes:
    return json.dumps(signed(KEY, epoch=i, **over), indent=1).encode()  # multi-line


# -- the reader ------------------------------------------------------------------------------

def test_entries_are_read_by_length_not_by_line() -> None:
    bodies = [pcs_body(1), b'{"a":\n"b|1|c\\n"}', b"", b"\n\n2025-01-19T12:00:00Z|3|abc\n"]
    data = b"".join(entry(T0, b) for b in bodies)
    got = list(read_wal(data))
    assert [e.body for e in got] == bodies and all(e.error is None for e in got)
    assert got[0].received_at == T0 and got[0].offset == 0
    assert got[1].offset == len(entry(T0, bodies[0]))


@pytest.mark.parametrize(("damage", "reason"), [
    (b"not a header at all\n", "not a WAL entry header"),
    (b"2025-01-19T12:00:00Z|12x|{}\n", "entry length is not a number"),
    (b"2025-13-45T99:00:00Z|2|{}\n", "bad entry timestamp"),
    (b"yesterday|2|{}\n", "bad entry timestamp"),
    (b"2025-01-19T12:00:00Z|5|{}\n", "does not end where its length"),
    (b"2025-01-19T12:00:00Z|999999999999|{}\n", "entry length runs past the next entry"),
    (b"\xff\xfe\x00|2|{}\n", "bad entry timestamp: '???'"),
])
def test_a_damaged_entry_is_reported_with_its_offset_and_reading_goes_on(
        damage: bytes, reason: str) -> None:
    first, last = entry(T0, pcs_body(1)), entry(T0, pcs_body(2))
    got = list(read_wal(first + damage + last))
    assert [e.body for e in got] == [pcs_body(1), None, pcs_body(2)], got
    bad = got[1]
    assert bad.error is not None and reason in bad.error
    assert bad.offset == len(first) and f"at byte {len(first)}" in bad.error


def test_a_truncated_last_entry_is_reported_and_nothing_else_is_lost() -> None:
    whole = entry(T0, pcs_body(1)) + entry(T0, pcs_body(2))
    cut = entry(T0, pcs_body(3))[:-20]
    got = list(read_wal(whole + cut))
    assert [e.body for e in got[:2]] == [pcs_body(1), pcs_body(2)]
    assert got[2].error is not None and "truncated last entry" in got[2].error
    assert got[2].offset == len(whole)


def test_a_last_entry_without_its_newline_is_whole() -> None:
    assert [e.body for e in read_wal(entry(T0, b"{}")[:-1])] == [b"{}"]


def test_empty_and_blank_inputs_have_no_entries() -> None:
    assert list(read_wal(b"")) == [] and list(read_wal(b"\n\n")) == []


def test_since_and_until_select_by_entry_time() -> None:
    data = b"".join(entry(f"2025-01-19T12:00:0{i}Z", b"{}") for i in range(6))
    since = datetime(2025, 1, 19, 12, 0, 2, tzinfo=UTC)
    until = datetime(2025, 1, 19, 12, 0, 4, tzinfo=UTC)
    got = [e.received_at for e in read_wal(data, since, until)]
    assert got == ["2025-01-19T12:00:02Z", "2025-01-19T12:00:03Z"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=8), st.binary(max_size=40),
       st.integers(0, 400))
def test_any_damage_never_raises_and_entries_before_it_survive(
        bodies: list[bytes], noise: bytes, at: int) -> None:
    data = b"".join(entry(T0, b) for b in bodies)
    assert [e.body for e in read_wal(data)] == bodies
    cut = min(at, len(data))
    damaged = data[:cut] + noise + data[cut:]
    got = list(read_wal(damaged))  # never raises
    assert all((e.body is None) == (e.error is not None) for e in got)
    intact = [b for i, b in enumerate(bodies)
              if len(b"".join(entry(T0, x) for x in bodies[:i + 1])) <= cut]
    assert [e.body for e in got[:len(intact)]] == intact


# -- the CLI ---------------------------------------------------------------------------------

@pytest.fixture()
def ring(tmp_path: Path) -> str:
    p = tmp_path / "ring.json"
    p.write_text(json.dumps({"keys": [KEY.to_entry()], "max_skew_seconds": 30}))
    return str(p)


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    rc = cli.main(list(args))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, [json.loads(x) for x in out.out.splitlines()]


def wal_file(tmp_path: Path, name: str = "inbox-20250119.wal") -> Path:
    data = (entry(T0, pcs_body(1)) + entry("2025-01-19T12:10:00Z", pcs_body(2))
            + b"torn\n" + entry("2025-01-19T12:00:01Z", pcs_body(3))
            + entry("2025-01-19T12:00:02Z", pcs_body(4))[:-9])
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_verify_reads_a_wal_and_its_time_is_received_at(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, ring: str) -> None:
    rc, lines = call(capsys, "verify", "--keyring", ring, str(wal_file(tmp_path)))
    assert rc == 1
    assert [(x["index"], x["reason"]) for x in lines] == [
        (0, None), (1, "clock_skew"), (2, "malformed"), (3, None), (4, "malformed")]
    assert "+600.0s" in lines[1]["detail"]
    assert "at byte" in lines[2]["detail"] and "truncated last entry" in lines[4]["detail"]


def test_diagnose_a_wal_alone_names_the_skew(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, ring: str) -> None:
    p = tmp_path / "skew.wal"
    p.write_bytes(b"".join(entry("2025-01-19T12:10:00Z", pcs_body(i)) for i in range(5)))
    rc, (report,) = call(capsys, "diagnose", "--keyring", ring, str(p))
    assert rc == 0 and report["dominant_cause"] == "clock_skew" and report["scenario"] == "B"
    assert report["skew"]["offset_seconds"] == 600.0


def test_gzip_stdin_several_files_and_jobs_give_the_same_answers(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, ring: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = wal_file(tmp_path)
    _, want = call(capsys, "verify", "--keyring", ring, str(p))
    gz = tmp_path / "inbox.wal.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert call(capsys, "verify", "--keyring", ring, str(gz))[1] == want
    assert call(capsys, "verify", "--jobs", "2", "--keyring", ring, str(p))[1] == want
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(p.read_bytes())))
    assert call(capsys, "verify", "--keyring", ring, "-")[1] == want
    rc, two = call(capsys, "verify", "--keyring", ring, str(p), str(gz))
    assert [x["index"] for x in two] == list(range(10))
    assert [x["reason"] for x in two] == [x["reason"] for x in want] * 2


def test_format_flag_and_since(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               ring: str) -> None:
    p = wal_file(tmp_path, "no-suffix")
    _, as_wal = call(capsys, "verify", "--format", "wal", "--keyring", ring, str(p))
    _, auto = call(capsys, "verify", "--keyring", ring, str(p))
    assert as_wal == auto and len(auto) == 5
    # Read as JSONL, the same bytes are lines, none of them a PCS.
    rc, as_jsonl = call(capsys, "verify", "--format", "jsonl", "--keyring", ring, str(p))
    assert rc == 1 and {x["reason"] for x in as_jsonl} == {"malformed"}
    rc, picked = call(capsys, "verify", "--since", "2025-01-19T12:00:01Z", "--until",
                      "2025-01-19T12:05:00Z", "--keyring", ring, str(p))
    assert [x["reason"] for x in picked] == ["malformed", None, "malformed"]
    with pytest.raises(SystemExit) as e:
        call(capsys, "verify", "--since", "not a time", "--keyring", ring, str(p))
    assert e.value.code == 2 and "not an ISO-8601 time" in capsys.readouterr().err


# -- the short route for WAL entries ----------------------------------------------------------

@pytest.mark.parametrize("max_skew", [90, None])
def test_wal_short_route_says_what_the_full_route_says(max_skew: int | None) -> None:
    """sigops verify takes a short route for WAL entries too; with the entry time as
    received_at it must give every entry the full route's outcome: skew past the limit, a key
    whose window closed before the entry arrived, a retired or unknown key, tampering."""
    import random

    from pcskit import key_for

    from sigops.core.diagnose import Diagnoser
    from sigops.core.keys import KeyRing

    closes = datetime(2025, 1, 19, 12, 5, tzinfo=UTC)
    keys = [key_for("hmac-sha256", "a", "active"), key_for("ed25519", "b", "active"),
            key_for("hmac-sha256", "c", "active", not_after=closes),
            key_for("hmac-sha256", "r", "retired")]
    stranger = key_for("hmac-sha256", "x", "active")
    ring = KeyRing(tuple(keys), "python", max_skew_seconds=max_skew)
    rng = random.Random(7)
    data = b""
    for i in range(400):
        k = rng.choice([*keys, stranger])
        body = json.dumps(signed(k, epoch=i % 50))
        if rng.random() < 0.05:
            body = body.replace('"epoch": ', '"epoch": 1')  # tampered content
        ts = rng.choice(["2025-01-19T12:00:30Z", "2025-01-19T12:01:00Z",  # within 90 s
                         "2025-01-19T12:03:00Z", "2025-01-19T11:55:00Z",  # skewed
                         "2025-01-19T12:06:00Z"])  # after key c's window closed
        data += entry(ts, body.encode())
    short, full = Diagnoser(ring), Diagnoser(ring)
    routes: dict[str, int] = {}
    for i, e in enumerate(read_wal(data)):
        v, kid, content = short.check_wal(e, i)
        if v is None:
            assert content is not None
            short.remember(content[0], content)
            got = ("valid", kid)
            routes["short"] = routes.get("short", 0) + 1
        else:
            w = short.settle(v, content)
            got = (w.cause, w.kid)
        want = full.settle(*full.judge_wal(e, i))
        assert got == (want.cause, want.kid), (i, e.received_at, got, want)
        routes[want.cause] = routes.get(want.cause, 0) + 1
    assert routes["short"] > 20 and routes["valid"] > 20, routes
    assert routes.get("clock_skew", 0) > 20 if max_skew else "clock_skew" not in routes
    assert routes.get("stale_key", 0) + routes.get("unverifiable", 0) > 20, routes


# -- inputs that arrive in pieces or end early -----------------------------------------------

class Trickle(io.RawIOBase):
    """A pipe that delivers a few bytes per read."""

    def __init__(self, data: bytes, step: int = 5) -> None:
        self.data, self.step = data, step

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        k = min(len(b), self.step, len(self.data))
        b[:k] = self.data[:k]
        self.data = self.data[k:]
        return k


def test_a_wal_on_a_slow_pipe_is_still_recognised(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, ring: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    p = wal_file(tmp_path)
    _, want = call(capsys, "verify", "--keyring", ring, str(p))
    for data in (p.read_bytes(), gzip.compress(p.read_bytes())):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(Trickle(data))))
        assert call(capsys, "verify", "--keyring", ring, "-")[1] == want


def test_an_input_that_ends_early_keeps_what_came_before(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path, ring: str) -> None:
    lines = b"".join(json.dumps(signed(KEY, epoch=i)).encode() + b"\n" for i in range(50))
    cut = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(lines)
    cut.write_bytes(whole[: len(whole) * 2 // 3])  # a gzip stream cut short
    rc = cli.main(["verify", "--keyring", ring, str(cut)])
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out.err
    assert "cannot read the input to its end" in out.err
    got = [json.loads(x) for x in out.out.splitlines()]
    assert got and all(x["valid"] for x in got) and [x["index"] for x in got] == list(
        range(len(got)))
