"""The WAL tail sidecar (``sigops wal serve``): intact entries of the window from the newest
end of the day files, never a torn entry, bounded answers, nothing but /v1/wal and /healthz;
only to the bearer token of its token file (re-read when it changes), a window at most
``max_window`` back, one read in flight per client and a deadline per read, so slow or greedy
clients do not starve sigops' own reads."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer

from sigops.core.ratelimit import LogBudget
from sigops.core.wal import read_wal, whole_entries
from sigops.runtime.walreader import Limits, WalDirectory, make_app
from sigops.settings.tokens import TokenFile
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


TOKEN = "wal-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> TokenFile:
    f = tmp_path / "wal-token"
    f.write_text(text)
    return TokenFile(str(f))


# The fixture's WAL lies in 2027: the default window would refuse a 2026 clock's "now".
WIDE = Limits(max_window=1e12)


def app_of(directory: Path, tokens: TokenFile, max_bytes: int = 1 << 20,
           limits: Limits = WIDE, refusals: LogBudget | None = None) -> web.Application:
    return make_app(WalDirectory(directory, max_bytes), tokens, limits, refusals=refusals)


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


def test_http_answers_and_refuses(waldir: Path, tmp_path: Path) -> None:
    async def run() -> None:
        client = TestClient(TestServer(app_of(waldir, token_file(tmp_path))))
        await client.start_server()
        try:
            r = await client.get("/v1/wal", params={"since": "2027-01-16T08:00:00Z"},
                                 headers=AUTH)
            assert r.status == 200 and r.headers["X-WAL-Files"] == "inbox-20270116.wal"
            assert ids(await r.read()) == list(range(100, 110))
            for bad in ({"since": "yesterday"}, {"max_bytes": "-1"}, {"max_bytes": "x"}):
                assert (await client.get("/v1/wal", params=bad, headers=AUTH)).status == 400
            assert (await client.get("/../../etc/passwd")).status == 404
            assert (await client.get("/v1/wal/inbox-20270115.wal")).status == 404
            assert (await client.get("/healthz")).status == 200
        finally:
            await client.close()

    asyncio.run(run())


def test_no_wal_dir_yet_is_an_empty_answer(tmp_path: Path) -> None:
    data, files, damaged, truncated = WalDirectory(tmp_path / "absent", 100).tail(since(0), 100)
    assert (data, files, damaged, truncated) == (b"", [], 0, False)


def test_a_time_at_the_edge_of_the_calendar_is_a_bad_request(waldir: Path,
                                                              tmp_path: Path) -> None:
    async def run() -> None:
        client = TestClient(TestServer(app_of(waldir, token_file(tmp_path))))
        await client.start_server()
        try:
            r = await client.get("/v1/wal", params={"since": "0001-01-01T00:00:00+01:00"},
                                 headers=AUTH)
            assert r.status == 400
        finally:
            await client.close()

    asyncio.run(run())


# -- who may read, how much, how long ------------------------------------------------------


def test_no_token_or_a_wrong_one_is_401_and_logged_without_the_token(
        waldir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The whole WAL went to anyone who asked (``since=2000-01-01``); now nothing does
    without the token, whatever the query."""
    async def run() -> None:
        client = TestClient(TestServer(app_of(waldir, token_file(tmp_path))))
        await client.start_server()
        try:
            q = {"since": "2000-01-01T00:00:00Z"}
            for headers in ({}, {"Authorization": "Bearer not-the-token"},
                            {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "},
                            {"Authorization": f"Bearer {TOKEN}x"}):
                r = await client.get("/v1/wal", params=q, headers=headers)
                assert r.status == 401, headers
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert await r.json() == {"error": "unauthorized"}
            # the kubelet's probe needs no token, and learns nothing
            r = await client.get("/healthz")
            assert r.status == 200 and await r.text() == "ok\n"
        finally:
            await client.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    refusals = [r.getMessage() for r in caplog.records if "refused a WAL read" in r.getMessage()]
    # A line per client and reason (the rest held back for a minute: see the next test).
    assert sorted(refusals) == ["refused a WAL read from 127.0.0.1: no token",
                                "refused a WAL read from 127.0.0.1: wrong token"], refusals
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_a_flood_of_refused_reads_logs_a_line_per_interval_with_the_count(
        waldir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each 401 logged a line: a client without the token could fill the sidecar's log (and
    the node's disk) at the speed it can send requests. Now a line per client and reason per
    interval; what that held back is logged as a count every interval (here the budget's
    clock stands still, so every line after the first is held back, and a short interval
    tells them), and the next line of the key says what is left. Nothing else changes."""
    t = [0.0]
    budget = LogBudget(interval=0.05, clock=lambda: t[0])

    async def run() -> None:
        client = TestClient(TestServer(app_of(waldir, token_file(tmp_path), refusals=budget)))
        await client.start_server()
        try:
            wrong = {"Authorization": "Bearer not-the-token"}
            for _ in range(200):
                assert (await client.get("/v1/wal", headers=wrong)).status == 401
            await asyncio.sleep(0.3)  # the interval passes: the held-back count is logged
            assert (await client.get("/v1/wal", headers=wrong)).status == 401
            t[0] = 60.0  # a minute later: a line again, with what was held since the count
            assert (await client.get("/v1/wal", headers=wrong)).status == 401
            assert (await client.get("/v1/wal", headers=AUTH)).status == 200
        finally:
            await client.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    refusals = [r.getMessage() for r in caplog.records if "WAL read" in r.getMessage()]
    first, *counts, last = refusals
    assert first == "refused a WAL read from 127.0.0.1: wrong token", refusals
    told = [int(m.split()[1]) for m in counts]
    assert all(m.startswith("refused ") and m.endswith(" more WAL read(s) from 127.0.0.1: "
                                                       "wrong token") for m in counts), counts
    assert told and last.startswith("refused a WAL read from 127.0.0.1: wrong token"), refusals
    # Every refusal told once: the first line, the counts, and what the last line says it held
    # (the one after the pause, unless a count already told it).
    left = int(last.rsplit("(", 1)[1].split()[0]) if last.endswith("since the last line)") else 0
    assert 1 + sum(told) + left + 1 == 202, refusals


def test_the_token_file_is_reread_when_the_secret_changes(waldir: Path, tmp_path: Path) -> None:
    tokens = token_file(tmp_path)

    async def run() -> None:
        client = TestClient(TestServer(app_of(waldir, tokens)))
        await client.start_server()
        q = {"since": "2027-01-16T08:00:00Z"}
        try:
            assert (await client.get("/v1/wal", params=q, headers=AUTH)).status == 200
            new = tmp_path / "wal-token.new"
            new.write_text("the-new-token-xyz\n" + TOKEN + "\n")  # overlap: both lines count
            os.replace(new, tmp_path / "wal-token")  # as kubelet swaps a Secret volume
            for t in ("the-new-token-xyz", TOKEN):
                r = await client.get("/v1/wal", params=q,
                                     headers={"Authorization": f"Bearer {t}"})
                assert r.status == 200, t
            new.write_text("the-new-token-xyz\n")
            os.replace(new, tmp_path / "wal-token")
            assert (await client.get("/v1/wal", params=q, headers=AUTH)).status == 401
            assert tokens.first() == b"the-new-token-xyz"
        finally:
            await client.close()

    asyncio.run(run())


def test_a_window_further_back_than_the_max_is_a_clear_400(tmp_path: Path) -> None:
    wal = InboxWal(tmp_path / "wal")
    now = time.time_ns()
    for i in range(5):
        wal.append(body(i), now - (5 - i) * 60 * 1_000_000_000)

    async def run() -> None:
        limits = Limits(max_window=3600)
        client = TestClient(TestServer(app_of(tmp_path / "wal", token_file(tmp_path),
                                              limits=limits)))
        await client.start_server()
        try:
            r = await client.get("/v1/wal", params={"since": "2000-01-01T00:00:00Z"},
                                 headers=AUTH)
            assert r.status == 400
            assert "at most the last 3600s" in (await r.json())["error"]
            r = await client.get("/v1/wal", headers=AUTH)  # the default: the last hour
            assert r.status == 200 and ids(await r.read()) == [0, 1, 2, 3, 4]
        finally:
            await client.close()

    asyncio.run(run())


async def _slow_client(port: int, source: str) -> tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter]:
    """A client at ``source`` that asks for the whole WAL and then reads nothing (a tiny
    receive buffer, so the sidecar's answer backs up)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 10)
    writer.write(f"GET /v1/wal?since=2027-01-15T00:00:00Z HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


def test_slow_clients_do_not_starve_another_and_are_cut_at_the_deadline(tmp_path: Path) -> None:
    """Two clients that ask for a large answer and do not read it (the attack that left
    sigops with 503s) each hold one slot at most, a second read of theirs is 429, sigops'
    own read goes through meanwhile, and at the read deadline they are cut off and their
    slots are free again."""
    wal = InboxWal(tmp_path / "wal")
    pad = "p" * 60_000
    for i in range(200):  # about 12 MB: more than the sockets' buffers hold
        wal.append(json.dumps({"pcs_id": f"id-{i}", "n": i, "pad": pad}).encode(),
                   T0 + i * 1_000_000_000)
    limits = Limits(max_window=1e12, per_client=1, total=3, deadline=2.0)

    async def run() -> None:
        server = TestServer(app_of(tmp_path / "wal", token_file(tmp_path), 16 << 20, limits))
        await server.start_server()
        port = server.port
        assert port is not None
        url = f"http://127.0.0.1:{port}/v1/wal"
        q = {"since": "2027-01-15T00:00:00Z", "max_bytes": str(1 << 20)}

        async def get(source: str) -> tuple[int, bytes]:
            async with ClientSession(connector=TCPConnector(local_addr=(source, 0))) as s:
                async with s.get(url, params=q, headers=AUTH) as r:
                    return r.status, await r.read()

        try:
            slow = [await _slow_client(port, "127.0.0.2"), await _slow_client(port, "127.0.0.3")]
            t0 = time.monotonic()
            await asyncio.sleep(0.3)  # their requests reach the handler
            # each slow client holds its one slot: a second read of its own is 429
            for source in ("127.0.0.2", "127.0.0.3"):
                status, _ = await get(source)
                assert status == 429, source
            # sigops' read is served meanwhile
            status, data = await get("127.0.0.1")
            assert status == 200 and ids(data)
            assert time.monotonic() - t0 < limits.deadline
            # at the deadline the slow ones are cut off: their answers end short
            await asyncio.sleep(limits.deadline + 0.5 - (time.monotonic() - t0))
            for reader, writer in slow:
                got = 0
                while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
                    got += len(chunk)
                assert got < 12_000_000
                writer.close()
            assert time.monotonic() - t0 < limits.deadline + 5
            for source in ("127.0.0.2", "127.0.0.3"):  # and their slots are free again
                status, _ = await get(source)
                assert status == 200, source
        finally:
            await server.close()

    asyncio.run(run())


def test_more_readers_than_the_total_get_503(tmp_path: Path, waldir: Path) -> None:
    limits = Limits(max_window=1e12, per_client=1, total=1, deadline=5.0)

    async def run() -> None:
        wal = InboxWal(tmp_path / "big")
        for i in range(200):
            wal.append(json.dumps({"n": i, "pad": "p" * 60_000}).encode(),
                       T0 + i * 1_000_000_000)
        server = TestServer(app_of(tmp_path / "big", token_file(tmp_path), 16 << 20, limits))
        await server.start_server()
        port = server.port
        assert port is not None
        try:
            reader, writer = await _slow_client(port, "127.0.0.2")
            await asyncio.sleep(0.3)
            async with ClientSession(connector=TCPConnector(local_addr=("127.0.0.3", 0))) as s:
                async with s.get(f"http://127.0.0.1:{port}/v1/wal", headers=AUTH,
                                 params={"since": "2027-01-15T00:00:00Z"}) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
            writer.close()
        finally:
            await server.close()

    asyncio.run(run())


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_the_sidecar_does_not_start_without_a_token(tmp_path: Path, content: str | None,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from sigops.cli import EXIT_USAGE, main

    monkeypatch.delenv("SIGOPS_WAL_TOKEN_FILE", raising=False)
    args = ["wal", "serve", "--dir", str(tmp_path), "--listen", "127.0.0.1:0"]
    if content is not None:
        (tmp_path / "tok").write_text(content)
        args += ["--token-file", str(tmp_path / "tok")]
    assert main(args) == EXIT_USAGE
    assert "token-file" in capsys.readouterr().err


def test_a_max_window_that_is_no_duration_is_a_usage_error(tmp_path: Path) -> None:
    from sigops.cli import EXIT_USAGE, main

    (tmp_path / "tok").write_text(TOKEN)
    for bad in ("forever", "0s"):
        assert main(["wal", "serve", "--dir", str(tmp_path), "--token-file",
                     str(tmp_path / "tok"), "--max-window", bad]) == EXIT_USAGE


# -- /v1/wal/range: a whole window, forward, page by page ------------------------------------


def damaged_dir(tmp_path: Path) -> Path:
    """Two day files with every kind of damage: junk lines, a length running past the next
    entry, two damaged entries in a row, and a last entry torn mid-write."""
    root = tmp_path / "dmg"
    wal = InboxWal(root)
    for i in range(30):
        wal.append(body(i), T0 + i * 1_000_000_000)
        if i == 4:
            with open(root / "inbox-20270115.wal", "ab") as f:
                f.write(b"not a header at all\n")
        if i == 9:
            with open(root / "inbox-20270115.wal", "ab") as f:
                f.write(b"2027-01-15T08:00:09Z|999|{\"cut\n")
                f.write(b"2027-01-15T08:00:09Z|3|{}}}\n")
        if i == 20:
            with open(root / "inbox-20270115.wal", "ab") as f:
                f.write(b"\n\n")  # blank lines between entries are no entries
    for i in range(30, 40):
        wal.append(body(i), T0 + 86_400 * 1_000_000_000 + i * 1_000_000_000)
    with open(root / "inbox-20270116.wal", "ab") as f:
        f.write(b"2027-01-16T08:00:50Z|50|{\"torn")
    return root


def direct(root: Path, lo: datetime, hi: datetime) -> list[tuple[bool, bytes | None]]:
    """What a reader of the files themselves sees in the window: intact entries in it and
    every damaged entry."""
    out = []
    for f in WalDirectory(root, 1).window_files(lo, hi):
        out += [(e.error is not None, e.body) for e in read_wal(f.read_bytes(), lo, hi)]
    return out


def paged(wd: WalDirectory, lo: datetime, hi: datetime, max_bytes: int
          ) -> tuple[list[tuple[bool, bytes | None]], int, int]:
    """(entries of every page, damaged entries the pages reported, pages)."""
    out: list[tuple[bool, bytes | None]] = []
    cursor, damaged, pages = None, 0, 0
    while True:
        page = wd.page(lo, hi, cursor, max_bytes)
        pages += 1
        assert len(page.data) <= max_bytes
        entries = list(read_wal(page.data))
        # a page holds whole entries only: nothing torn at its end, stubs stand alone
        assert sum(e.error is not None for e in entries) == page.damaged
        out += [(e.error is not None, e.body) for e in entries]
        damaged += page.damaged
        if page.next_cursor is None:
            return out, damaged, pages
        assert page.next_cursor != cursor or page.data
        cursor = page.next_cursor
        assert pages < 10_000


@pytest.mark.parametrize("max_bytes", [160, 300, 701, 4096, 1 << 20])
def test_pages_of_a_window_crossing_files_are_the_files_entry_for_entry(
        tmp_path: Path, max_bytes: int) -> None:
    root = damaged_dir(tmp_path)
    wd = WalDirectory(root, 1 << 20)
    for lo, hi in ((since(-10), since(86_400 * 2)), (since(5), since(86_400 + 35)),
                   (since(86_400 + 32), since(86_400 * 3))):
        want = direct(root, lo, hi)
        if hi == since(86_400 + 35):
            # the torn last entry is stamped after this window closed: a write in progress
            # then, not the window's (a reader of the file counts it)
            assert want[-1] == (True, None)
            want = want[:-1]
        got, damaged, pages = paged(wd, lo, hi, max_bytes)
        assert got == want
        assert damaged == sum(bad for bad, _ in want)
        if max_bytes == 1 << 20 and lo == since(-10):
            assert pages == 1 and damaged == 4
        elif max_bytes == 160 and lo == since(-10):
            assert pages > 10


def test_the_server_ceiling_bounds_every_page(waldir: Path) -> None:
    wd = WalDirectory(waldir, 400)
    page = wd.page(since(0), since(86_400 * 2), None, 1 << 20)
    assert 0 < len(page.data) <= 400 and page.next_cursor


def test_an_entry_longer_than_a_page_is_served_as_a_stub_with_its_time_not_a_hang(
        tmp_path: Path) -> None:
    from sigops.runtime.walreader import PageRefused

    wal = InboxWal(tmp_path)
    wal.append(body(1), T0)
    wal.append(json.dumps({"n": 2, "pad": "p" * 5000}).encode(), T0 + 1_000_000_000)
    wal.append(body(3), T0 + 2_000_000_000)
    wd = WalDirectory(tmp_path, 1 << 20)
    t0 = time.monotonic()
    page = wd.page(since(-1), since(10), None, 1000)
    assert time.monotonic() - t0 < 1
    assert len(page.data) <= 1000 and page.next_cursor is None and page.damaged == 0
    one, stub, three = read_wal(page.data)
    assert one.error is None is stub.error is three.error
    assert json.loads(one.body or b"")["n"] == 1 and json.loads(three.body or b"")["n"] == 3
    second = list(read_wal((tmp_path / "inbox-20270115.wal").read_bytes()))[1]
    assert stub.received_at == second.received_at  # its own time
    assert (stub.body or b"").startswith(b"oversized entry (") and stub.time == second.time
    # a page too small for the stub itself is refused
    at2 = f"v1.20270115.{second.offset}"
    with pytest.raises(PageRefused) as e:
        wd.page(since(-1), since(10), at2, 60)
    assert e.value.status == 422 and "below the stub" in str(e.value)
    # a larger page gets it whole
    again = wd.page(since(-1), since(10), at2, 8000)
    assert [json.loads(x.body or b"")["n"] for x in read_wal(again.data)] == [2, 3]


def test_a_cursor_names_only_an_entry_boundary_of_the_windows_own_files(
        waldir: Path) -> None:
    from sigops.runtime.walreader import PageRefused

    wd = WalDirectory(waldir, 1 << 20)
    lo, hi = since(0), since(86_400 * 2)
    good = wd.page(lo, hi, None, 500).next_cursor
    assert good is not None and good.startswith("v1.20270115.")
    offset = int(good.rsplit(".", 1)[1])
    size = (waldir / "inbox-20270115.wal").stat().st_size
    for bad in ("", "x", "v1.20270115", "v2.20270115.0", f"v1.20270115.{offset + 1}",
                f"v1.20270115.{size + 1}", "v1.20270114.0", "v1.20270117.0",
                "v1.20270115.-1", "v1.../../etc/passwd.0", "v1.20270115.0/../x",
                "v1.2027011500.0", "v1.20270115.1234567890123456"):
        if bad == "":
            continue  # an empty cursor is no cursor: the window's start
        with pytest.raises(PageRefused) as e:
            wd.page(lo, hi, bad, 500)
        assert e.value.status == 400, bad
    # a cursor of a day outside this window: refused, though the file exists
    with pytest.raises(PageRefused):
        wd.page(since(86_400), hi, good, 500)
    assert wd.page(lo, hi, f"v1.20270115.{size}", 500).data  # a file's end: the next file
    assert wd.page(lo, hi, "v1.20270115.0", 500).data


def test_range_over_http_pages_with_the_same_token_window_and_limits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = damaged_dir(tmp_path)

    async def run() -> None:
        client = TestClient(TestServer(app_of(root, token_file(tmp_path))))
        await client.start_server()
        try:
            q = {"since": "2027-01-15T07:00:00Z", "until": "2027-01-17T00:00:00Z",
                 "max_bytes": "500"}
            got: list[tuple[bool, bytes | None]] = []
            damaged, cursor = 0, None
            while True:
                params = {**q, **({"cursor": cursor} if cursor else {})}
                r = await client.get("/v1/wal/range", params=params, headers=AUTH)
                assert r.status == 200, await r.text()
                data = await r.read()
                assert len(data) <= 500
                got += [(e.error is not None, e.body) for e in read_wal(data)]
                damaged += int(r.headers["X-WAL-Damaged"])
                cursor = r.headers.get("X-WAL-Next-Cursor")
                assert r.headers["X-WAL-Complete"] == ("false" if cursor else "true")
                if not cursor:
                    break
            want = direct(root, parse(q["since"]), parse(q["until"]))
            assert got == want and damaged == 4
            # refusals: no token, a bad cursor, an empty window, a page too small for a stub
            assert (await client.get("/v1/wal/range", params=q)).status == 401
            for bad in ({"cursor": "v1.20270115.3"}, {"cursor": "../inbox-20270115.wal"},
                        {"until": "2027-01-15T07:00:00Z"}, {"until": "soon"}):
                r = await client.get("/v1/wal/range", params={**q, **bad}, headers=AUTH)
                assert r.status == 400, bad
            r = await client.get("/v1/wal/range", params={**q, "max_bytes": "20"},
                                 headers=AUTH)
            assert r.status == 422 and "below the stub" in (await r.json())["error"]
        finally:
            await client.close()

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    asyncio.run(run())


def test_range_refuses_a_window_older_than_the_max(tmp_path: Path) -> None:
    wal = InboxWal(tmp_path / "wal")
    wal.append(body(1), time.time_ns() - 60 * 1_000_000_000)

    async def run() -> None:
        client = TestClient(TestServer(app_of(tmp_path / "wal", token_file(tmp_path),
                                              limits=Limits(max_window=3600))))
        await client.start_server()
        try:
            r = await client.get("/v1/wal/range", headers=AUTH,
                                 params={"since": "2000-01-01T00:00:00Z"})
            assert r.status == 400 and "--max-window" in (await r.json())["error"]
            r = await client.get("/v1/wal/range", headers=AUTH)  # the last hour, to now
            assert r.status == 200 and ids(await r.read()) == [1]
        finally:
            await client.close()

    asyncio.run(run())



def test_a_window_ending_exactly_at_midnight_reads_no_file_of_the_next_day(
        waldir: Path) -> None:
    wd = WalDirectory(waldir, 1 << 20)
    midnight = datetime(2027, 1, 16, tzinfo=UTC)
    assert [p.name for p in wd.window_files(since(0), midnight)] == ["inbox-20270115.wal"]
    assert [p.name for p in wd.window_files(since(0), midnight + timedelta(microseconds=1))
            ] == ["inbox-20270115.wal", "inbox-20270116.wal"]


def test_a_range_read_may_outlast_the_window_by_the_read_grace(waldir: Path,
                                                               tmp_path: Path) -> None:
    """An audit's window is fixed at launch 10 minutes inside the sidecar's: its indexes'
    range reads -- pages under way, and the first page of an index that starts later (a later
    wave, a retry) -- are answered up to ``READ_GRACE`` later; the tail keeps the strict
    bound."""
    from sigops.runtime.walreader import READ_GRACE

    assert READ_GRACE == 6 * 3600
    clock = [since(3600)]
    limits = Limits(max_window=3600 + 600)
    app = make_app(WalDirectory(waldir, 1 << 20), token_file(tmp_path), limits,
                   clock=lambda: clock[0])

    async def run() -> None:
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            q = {"since": since(0).isoformat(), "until": since(3600).isoformat(),
                 "max_bytes": "300"}
            r = await client.get("/v1/wal/range", params=q, headers=AUTH)
            assert r.status == 200
            cursor = r.headers["X-WAL-Next-Cursor"]
            clock[0] = since(3600 + 1800)  # half an hour on: since is 90 min back
            r = await client.get("/v1/wal/range", params={**q, "cursor": cursor},
                                 headers=AUTH)
            assert r.status == 200, await r.text()
            r = await client.get("/v1/wal/range", params=q, headers=AUTH)
            assert r.status == 200  # a later index's first page: within the grace too
            r = await client.get("/v1/wal", params={"since": q["since"], "cursor": cursor},
                                 headers=AUTH)
            assert r.status == 400  # the tail takes no cursor, and no grace
            clock[0] = since(3600 + 600 + READ_GRACE + 1)  # past the grace: refused
            r = await client.get("/v1/wal/range", params={**q, "cursor": cursor},
                                 headers=AUTH)
            assert r.status == 400 and "--max-window" in (await r.json())["error"]
            r = await client.get("/v1/wal/range", params=q, headers=AUTH)
            assert r.status == 400
        finally:
            await client.close()

    asyncio.run(run())
