"""The WAL tail sidecar (``sigops wal serve``): intact entries of the window from the newest
end of the day files, never a torn entry, bounded answers, nothing but /v1/wal and /healthz."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sigops.core.wal import read_wal, whole_entries
from sigops.runtime.walreader import WalDirectory, make_app
from sigops.testbed.upstream import InboxWal

pytestmark = pytest.mark.unit

T0 = 1_800_000_000_000_000_000  # 2027-01-15T08:00:00Z in ns


def body(i: int) -> bytes:
    # multi-line bodies: only the length delimits them
    return json.dumps({"pcs_id": f"id-{i}", "n": i, "pad": "x" * (i % 7)}, indent=1).encode()


@pytest.fixture
def waldir(tmp_path: Path) -> Path:
    wal = InboxWal(tmp_path)
    for i in range(100):
        wal.append(body(i), T0 + i * 1_000_000_000)  # one per second
    # the next day's file
    for i in range(100, 110):
        wal.append(body(i), T0 + 86_400 * 1_000_000_000 + i * 1_000_000_000)
    return tmp_path


def since(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 / 1e9 + seconds, UTC)


def ids(data: bytes) -> list[int]:
    out = []
    for e in read_wal(data):
        assert e.error is None, e.error
        out.append(json.loads(e.body or b"")["n"])
    return out


def test_the_window_from_both_day_files(waldir: Path) -> None:
    data, files, damaged, truncated = WalDirectory(waldir, 1 << 20).tail(since(90), 1 << 20)
    assert ids(data) == list(range(90, 110))
    assert len(files) == 2 and damaged == 0 and not truncated


def test_a_small_budget_keeps_the_newest_whole_entries(waldir: Path) -> None:
    wd = WalDirectory(waldir, 1 << 20)
    data, files, damaged, truncated = wd.tail(since(0), 700)
    got = ids(data)
    assert got and got == list(range(got[0], 110)) and truncated and damaged == 0
    assert len(data) <= 700
    # the server's own ceiling wins over a larger request
    assert len(WalDirectory(waldir, 500).tail(since(0), 1 << 20)[0]) <= 500


def test_damage_is_left_out_and_counted(tmp_path: Path) -> None:
    good = InboxWal(tmp_path)
    good.append(body(1), T0)
    path = next(tmp_path.iterdir())
    with open(path, "ab") as f:
        f.write(b"2027-01-15T08:00:01Z|999|{\"cut\n")  # length runs past the data
    good.append(body(2), T0 + 2_000_000_000)
    with open(path, "ab") as f:
        f.write(b"2027-01-15T08:00:03Z|50|{\"torn")  # the crash mid-write
    data, _, damaged, _ = WalDirectory(tmp_path, 1 << 20).tail(since(-10), 1 << 20)
    assert ids(data) == [1, 2] and damaged == 2


def test_whole_entries_is_byte_identical_for_intact_entries(waldir: Path) -> None:
    raw = next(waldir.glob("inbox-20270115.wal")).read_bytes()
    assert whole_entries(raw)[0] == raw
    # a cut anywhere: only whole entries come out, and they are the file's own bytes
    for cut in (1, 17, 250, 999, len(raw) // 2):
        data, damaged = whole_entries(raw[cut:], cut=True)
        assert damaged == 0 and raw.endswith(data)


def test_http_answers_and_refuses(waldir: Path) -> None:
    async def run() -> None:
        client = TestClient(TestServer(make_app(WalDirectory(waldir, 1 << 20))))
        await client.start_server()
        try:
            r = await client.get("/v1/wal", params={"since": "2027-01-16T08:00:00Z"})
            assert r.status == 200 and r.headers["X-WAL-Files"] == "inbox-20270116.wal"
            assert ids(await r.read()) == list(range(100, 110))
            for bad in ({"since": "yesterday"}, {"max_bytes": "-1"}, {"max_bytes": "x"}):
                assert (await client.get("/v1/wal", params=bad)).status == 400
            assert (await client.get("/../../etc/passwd")).status == 404
            assert (await client.get("/v1/wal/inbox-20270115.wal")).status == 404
            assert (await client.get("/healthz")).status == 200
        finally:
            await client.close()

    asyncio.run(run())


def test_no_wal_dir_yet_is_an_empty_answer(tmp_path: Path) -> None:
    data, files, damaged, truncated = WalDirectory(tmp_path / "absent", 100).tail(since(0), 100)
    assert (data, files, damaged, truncated) == (b"", [], 0, False)



def test_a_time_at_the_edge_of_the_calendar_is_a_bad_request(waldir: Path) -> None:
    async def run() -> None:
        client = TestClient(TestServer(make_app(WalDirectory(waldir, 1 << 20))))
        await client.start_server()
        try:
            r = await client.get("/v1/wal", params={"since": "0001-01-01T00:00:00+01:00"})
            assert r.status == 400
        finally:
            await client.close()

    asyncio.run(run())
