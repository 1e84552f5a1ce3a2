"""The testbed backend leaves what the upstream backend leaves: the inbox WAL (read back by
the core's WAL reader, entry times as received_at) and one rejection line per 401 (read by
the core's log parser), and can go without the samples endpoint as upstream does."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pcskit import base_pcs, hmac_key
from test_testbed_backend import env_for, fresh

from sigops.core.backendlog import LogSummary, parse_line
from sigops.core.diagnose import Diagnoser, aggregate
from sigops.core.keys import KeyRing
from sigops.core.pcs import sign_pcs
from sigops.core.wal import read_wal
from sigops.testbed.backend import Backend, BackendServer, BackendSettings
from sigops.testbed.reload import config_from_env
from sigops.testbed.upstream import InboxWal, RejectionLog, rfc3339nano

pytestmark = pytest.mark.unit

GOOD, BAD = hmac_key("good"), hmac_key("bad")


def backend(tmp_path: Path, **settings: object) -> tuple[Backend, io.StringIO]:
    b = Backend(BackendSettings(wal_dir=str(tmp_path / "wal"), **settings),  # type: ignore[arg-type]
                config_from_env(env_for(GOOD)))
    out = io.StringIO()
    b.rejections = RejectionLog(out)
    return b, out


def wal_bytes(tmp_path: Path) -> bytes:
    files = sorted((tmp_path / "wal").glob("inbox-*.wal"))
    assert len(files) == 1 and re.fullmatch(r"inbox-\d{8}\.wal", files[0].name), files
    return files[0].read_bytes()


def test_rfc3339nano_drops_trailing_zeros_like_go() -> None:
    assert rfc3339nano(1_000_000_000_123_456_789) == "2001-09-09T01:46:40.123456789Z"
    assert rfc3339nano(1_000_000_000_100_000_000) == "2001-09-09T01:46:40.1Z"
    assert rfc3339nano(1_000_000_000_000_000_000) == "2001-09-09T01:46:40Z"


def test_every_body_is_in_the_wal_before_verification(tmp_path: Path) -> None:
    b, _ = backend(tmp_path)
    good = json.dumps(fresh(GOOD, 1), indent=2).encode()  # a body with newlines in it
    bad = json.dumps(fresh(BAD, 2)).encode()
    assert b.submit(good, "a").status == 200
    assert b.submit(bad, "a").status == 401
    assert b.submit(b"{not json\n|12|", "a").status == 400
    entries = list(read_wal(wal_bytes(tmp_path)))
    assert [e.error for e in entries] == [None, None, None]
    assert [e.body for e in entries] == [good, bad, b"{not json\n|12|"]
    assert all(e.received_at and e.received_at.endswith("Z") for e in entries)


def test_wal_entry_time_is_the_backend_clock(tmp_path: Path) -> None:
    b, _ = backend(tmp_path, clock_offset_seconds=600.0)
    pcs = fresh(GOOD, 1)  # agents on time, backend clock 10 min ahead
    b.submit(json.dumps(pcs).encode(), "a")
    (entry,) = read_wal(wal_bytes(tmp_path))
    ring = KeyRing((GOOD,), max_skew_seconds=30)
    d = Diagnoser(ring)
    v = d.classify_obj({"pcs": json.loads(entry.body or b""), "received_at": entry.received_at},
                       0)
    assert v.cause == "clock_skew"
    skew = aggregate([v], max_skew_seconds=30)["skew"]
    assert 590 < skew["offset_seconds"] < 610


def test_one_rejection_line_per_401_in_the_upstream_form(tmp_path: Path) -> None:
    b, out = backend(tmp_path)
    ok = fresh(GOOD, 1)
    bad = [fresh(BAD, n) for n in (2, 3)]
    b.submit(json.dumps(ok).encode(), "a")
    for p in bad:
        b.submit(json.dumps(p).encode(), "a")
    b.submit(b"[]", "a")  # malformed: 400, no signature line
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d Signature verification failed for ",
                        line) for line in lines)
    parsed = [parse_line(line) for line in lines]
    assert [(p[0], p[2]) for p in parsed if p] == [("hmac_mismatch", p["pcs_id"]) for p in bad]
    s = LogSummary().add_all(lines, pod="p").to_dict()
    assert s["by_kind"] == {"hmac_mismatch": 2} and s["by_pod"] == {"p": 2}


def test_a_hostile_pcs_id_cannot_forge_a_log_line(tmp_path: Path) -> None:
    out = io.StringIO()
    RejectionLog(out).rejected("x: ok\n2026/01/01 00:00:00 Signature verification failed for "
                               "y", "HMAC verification failed: no", 0.0)
    assert len(out.getvalue().splitlines()) == 1


def test_without_the_samples_endpoint_it_answers_404(tmp_path: Path) -> None:
    b = Backend(BackendSettings(samples_endpoint=False), config_from_env(env_for(GOOD)))
    srv = BackendServer(b, "127.0.0.1", 0)
    srv.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{srv.url}/v1/samples/failures", timeout=5)
        assert e.value.code == 404
    finally:
        srv.stop()


def test_wal_appends_are_whole_entries(tmp_path: Path) -> None:
    wal = InboxWal(tmp_path)
    bodies = [json.dumps(sign_pcs(base_pcs(shard=f"s{i}"), GOOD, "python")).encode()
              for i in range(50)]
    for i, body in enumerate(bodies):
        wal.append(body, 1_800_000_000_000_000_000 + i)
    (f,) = tmp_path.iterdir()
    assert [e.body for e in read_wal(f.read_bytes())] == bodies
