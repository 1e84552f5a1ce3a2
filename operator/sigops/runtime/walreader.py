"""``sigops wal serve``: a read-only sidecar beside the FLK backend that serves the tail of
its inbox WAL directory over HTTP, so sigops can read the failed PCS the backend logged
without ``pods/exec``.

``GET /v1/wal?since=<RFC 3339>&max_bytes=N`` answers the intact entries received at or after
``since`` (default: the last hour; at most ``--max-window`` back, else 400) from the newest end
of the ``inbox-*.wal`` files, at most ``max_bytes`` (default and ceiling: ``--max-bytes``),
as WAL bytes (``application/octet-stream``). Headers: ``X-WAL-Files`` (the files read),
``X-WAL-Damaged`` (entries left out because they were damaged), ``X-WAL-Truncated: true``
when older entries in the window did not fit. ``GET /healthz`` answers ``ok`` (no token: the
kubelet probes it). Nothing else is served: no listing, no path from the request ever reaches
the file system.

``GET /v1/wal/range?since=T&until=T&cursor=C&max_bytes=N`` reads a whole window forward,
page by page (the fleet audit's source): whole entries received in ``[since, until)``
(``until`` default now), oldest first, at most ``max_bytes`` per page, cut only between
entries. ``X-WAL-Next-Cursor`` is the cursor of the next page (absent, and
``X-WAL-Complete: true``, once the window is read). A cursor is opaque to clients; the server
takes it apart strictly (the day of one of the window's own inbox files, and a byte offset in
that file that is its start, its end, or just after a newline where the server's own reader
finds an entry header; else 400). That does not prove an entry boundary -- a body may hold
"\n<a valid header>" -- and needs not: a forged cursor only makes the server read one of the
window's own day files from such an offset, with the same reader, time filter and page
limits, so a token holder (already trusted to read the WAL) gains nothing by forging one. A
damaged stretch is not served (it may be anything, of any length): in its place one stub
line (:data:`DAMAGED_STUB`) that every WAL reader reads as one damaged entry, so a reader of
the pages counts what a reader of the files counts, in the same place; ``X-WAL-Damaged``
counts them. An intact entry longer than the page (``max_bytes``) cannot be served whole, and
any client of the backend can post one: in its place an entry with its time and a short body
that is no JSON (:data:`OVERSIZED_STUB`), read as one malformed record -- as a reader of the
file judges a body above its record limit (``--max-bytes``, 1 MiB, well below the default
4 MiB page), never a cut. Only a page too small for a stub is refused (422).
Same token, limits, deadline and ``--max-window`` as ``/v1/wal``, but a range read may have
``since`` up to ``--max-window`` plus :data:`READ_GRACE` (6 h) back: an audit fixes its
window once, at launch, just inside ``--max-window``, and its indexes start and page through
it later (a later wave of indexes, a retry, a slow read) -- as long as an audit Job may run
by default (``audit.activeDeadline``, 6 h). ``/v1/wal`` keeps the strict bound.

Only sigops may read: a WAL holds every PCS body the backend received. A ``/v1/wal`` request
must carry ``Authorization: Bearer <token>``, one of the lines of ``--token-file`` (a mounted
Secret, compared in constant time, re-read when it changes), else 401; refusals are logged
with the source address, never a token, at most a line a minute per client and reason (the
next line says how many refusals it held back). A client (source address) has one read in
flight at a time (429 for a second), four reads at most run at once (503), and each read --
the files and the sending of the answer -- has a deadline (``--read-deadline``): a client
that reads too slowly is cut off, so no client holds a slot another needs.

The sidecar holds no key material: a WAL holds request bodies (signed PCS, never keys).
Served on aiohttp: an idle or slow connection costs no thread and is closed after a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from ..core.errors import MalformedInput
from ..core.ratelimit import LogBudget
from ..core.timeparse import parse_time
from ..core.wal import HEADER, WalEntry, read_wal, whole_entries
from ..settings.tokens import TokenFile, bearer

__all__ = ["WalDirectory", "Limits", "Page", "PageRefused", "make_app", "serve", "WAL_PATH",
           "RANGE_PATH", "DAMAGED_STUB", "OVERSIZED_STUB", "SCAN_PAGES", "READ_GRACE"]

log = logging.getLogger("sigops.walreader")
WAL_PATH = "/v1/wal"
RANGE_PATH = "/v1/wal/range"
_NAME = re.compile(r"inbox-(\d{8})\.wal")
_CURSOR = re.compile(r"v1\.(\d{8})\.(\d{1,15})")
DAMAGED_STUB = "1970-01-01T00:00:00Z|0|damaged entry at byte {offset} of {file}\n"
"""What a page holds in place of a damaged stretch: a header whose zero-length body is not
followed by the newline it declares, so :func:`~sigops.core.wal.read_wal` reads it as exactly
one damaged entry wherever it stands (two in a row are two)."""
OVERSIZED_STUB = "oversized entry ({length} bytes) at byte {offset} of {file}, not served"
"""The body of what a page holds in place of an intact entry longer than the page (under the
entry's own time): not JSON, so read as one malformed record."""
SCAN_PAGES = 8
"""File bytes one page request reads at most, in page sizes: a window whose entries are mostly
outside ``[since, until)`` answers short (even empty) pages with a cursor instead of reading
whole files in one request."""


READ_GRACE = 6 * 3600.0
"""Seconds past ``--max-window`` that ``since`` may lie back in a range request: an audit's
window, fixed at its launch, can be read by indexes that start or go on later."""


class PageRefused(ValueError):
    """A range request the server will not answer: ``status`` 400 (a bad cursor) or 422 (a
    page too small for a stub)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Page:
    """One page of a window: WAL bytes, the files read, the damaged entries stubbed, and the
    cursor of the next page (``None``: the window is read)."""

    data: bytes
    files: tuple[str, ...]
    damaged: int
    next_cursor: str | None


def _cursor(path: Path, offset: int) -> str:
    m = _NAME.fullmatch(path.name)
    assert m is not None
    return f"v1.{m.group(1)}.{offset}"


class WalDirectory:
    """The inbox WAL files of one directory, read from their newest end."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def files(self, since: datetime) -> list[Path]:
        """``inbox-YYYYMMDD.wal`` files of ``since``'s UTC day or later, oldest first."""
        day = since.astimezone(UTC).strftime("%Y%m%d")
        try:
            names = sorted(n for n in os.listdir(self.directory)
                           if (m := _NAME.fullmatch(n)) and m.group(1) >= day)
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names]

    def window_files(self, since: datetime, until: datetime) -> list[Path]:
        """The files of the UTC days from ``since``'s to that of the window's last instant
        (``until`` is excluded: a window ending at midnight reads no file of that day),
        oldest first."""
        last = (until - timedelta(microseconds=1)).astimezone(UTC).strftime("%Y%m%d")
        return [p for p in self.files(since)
                if (m := _NAME.fullmatch(p.name)) and m.group(1) <= last]

    def page(self, since: datetime, until: datetime, cursor: str | None,
             max_bytes: int) -> Page:
        """One page of the window ``[since, until)`` from ``cursor`` (``None``: its start).
        Raises :class:`PageRefused` for a cursor that is not one of this window's, or a page
        too small for a stub. An intact entry longer than the page is served as a stub
        (:func:`_oversized`).

        Each file is mapped and read with :func:`~sigops.core.wal.read_wal` from the cursor's
        offset: the entries are those a reader of the whole file finds, damaged ones where it
        finds them. A damaged last entry stamped at or after ``until`` is one still being
        written after the window closed: not the window's."""
        budget = min(max_bytes, self.max_bytes)
        files = self.window_files(since, until)
        index, offset = 0, 0
        if cursor is not None:
            m = _CURSOR.fullmatch(cursor)
            names = [p.name for p in files]
            if m is None or f"inbox-{m.group(1)}.wal" not in names:
                raise PageRefused(400, "cursor is not one of this window's")
            index, offset = names.index(f"inbox-{m.group(1)}.wal"), int(m.group(2))
        parts: list[bytes] = []
        used: list[str] = []
        size, damaged, scanned = 0, 0, 0
        checked = cursor is None

        def done(path: Path, at: int) -> Page:
            return Page(b"".join(parts), tuple(used), damaged, _cursor(path, at))

        while index < len(files):
            path = files[index]
            with open(path, "rb") as f:
                end = os.fstat(f.fileno()).st_size
                if not checked:
                    _check_boundary(f, offset, end)
                    checked = True
                if offset >= end:
                    index, offset = index + 1, 0
                    continue
                with mmap.mmap(f.fileno(), end, access=mmap.ACCESS_READ) as mm:
                    for e in read_wal(mm, start=offset):
                        if size >= budget or scanned + e.offset - offset >= SCAN_PAGES * budget:
                            return done(path, e.offset)
                        piece = self._piece(mm, e, since, until, path.name)
                        if piece is None:
                            continue
                        if not piece:  # a torn tail written after the window closed
                            break
                        if len(piece) > budget:
                            piece = _oversized(e, len(piece), path.name)
                        if size + len(piece) > budget:
                            if size:
                                return done(path, e.offset)
                            raise PageRefused(422, f"max_bytes ({budget}) is below the "
                                                   f"stub of the entry at cursor "
                                                   f"{_cursor(path, e.offset)}")
                        parts.append(piece)
                        size += len(piece)
                        damaged += e.error is not None
                        if path.name not in used:
                            used.append(path.name)
                scanned += end - offset
            index, offset = index + 1, 0
        return Page(b"".join(parts), tuple(used), damaged, None)

    @staticmethod
    def _piece(mm: mmap.mmap, e: WalEntry, since: datetime, until: datetime, name: str
               ) -> bytes | None:
        """What a page holds for entry ``e``: its bytes as written if it is in the window,
        a stub if it is damaged, ``None`` if it is outside the window; ``b""`` for a damaged
        last entry stamped at or after ``until`` (the window ends before it)."""
        if e.error is not None:
            m = HEADER.match(mm, e.offset)
            if m is not None and e.received_at is not None and _runs_to_end(mm, m):
                try:
                    if parse_time(e.received_at) >= until:
                        return b""
                except MalformedInput:
                    pass
            return DAMAGED_STUB.format(offset=e.offset, file=name).encode()
        when = e.time
        assert when is not None and e.body is not None
        if not since <= when < until:
            return None
        m = HEADER.match(mm, e.offset)
        assert m is not None
        body_end = m.end() + int(m.group(2))
        whole = mm[e.offset:body_end + 1]
        return whole if whole.endswith(b"\n") else whole + b"\n"

    def tail(self, since: datetime, max_bytes: int) -> tuple[bytes, list[str], int, bool]:
        """(WAL bytes, files read, damaged entries left out, older entries cut off)."""
        budget = min(max_bytes, self.max_bytes)
        parts: list[bytes] = []
        used: list[str] = []
        damaged = 0
        truncated = False
        for path in reversed(self.files(since)):
            if budget <= 0:
                truncated = True
                break
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - budget)
                f.seek(start)
                chunk = f.read(size - start)
            data, bad = whole_entries(chunk, since, cut=start > 0)
            truncated = truncated or start > 0
            parts.append(data)
            used.append(path.name)
            damaged += bad
            budget -= len(chunk)
        return b"".join(reversed(parts)), list(reversed(used)), damaged, truncated


def _oversized(e: WalEntry, length: int, name: str) -> bytes:
    """What a page holds in place of an intact entry longer than the page: an entry with the
    same time whose body (see :data:`OVERSIZED_STUB`) is no JSON, so every reader judges it
    one malformed record -- as a reader of the file judges a body above its ``max_bytes``."""
    assert e.received_at is not None
    body = OVERSIZED_STUB.format(length=length, offset=e.offset, file=name).encode()
    return f"{e.received_at}|{len(body)}|".encode() + body + b"\n"


def _runs_to_end(mm: mmap.mmap, m: re.Match[bytes]) -> bool:
    """Whether the entry of header ``m`` is the file's last and cut short (as
    :func:`~sigops.core.wal.read_wal` finds a write in progress): its length runs past the
    end and no entry follows."""
    if m.end() + int(m.group(2)) <= len(mm):
        return False
    i = m.end()
    while (j := mm.find(b"\n", i)) >= 0:
        if HEADER.match(mm, j + 1):
            return False
        i = j + 1
    return True


def _check_boundary(f: BinaryIO, offset: int, end: int) -> None:
    """A cursor's offset must be the file's start or end, or just after a newline at a
    valid entry header. This is not proof of an entry boundary (a body may contain a newline
    and a header); it keeps a cursor to offsets where the server's own reader can start."""
    if offset > end:
        raise PageRefused(400, "cursor is not one of this window's")
    if offset in (0, end):
        return
    f.seek(offset - 1)
    head = f.read(96)
    if head[:1] != b"\n" or HEADER.match(head, 1) is None:
        raise PageRefused(400, "cursor is not one of this window's")


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the sidecar, and how long a read may take."""

    max_window: float = 24 * 3600.0
    """Seconds back from now that ``since`` may reach; an older ``since`` is 400 (a range
    request: :data:`READ_GRACE` more)."""
    per_client: int = 1
    """Reads one client (source address) may have in flight; one more is 429."""
    total: int = 4
    """Reads served at once, all clients together; one more is 503 (memory stays bounded)."""
    deadline: float = 10.0
    """Seconds one read may take, reading the files and sending the answer: a client that
    reads its answer slower is cut off and its slot freed."""


CHUNK = 64 << 10


def make_app(wal: WalDirectory, token: TokenFile, limits: Limits = Limits(),
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             refusals: LogBudget | None = None) -> web.Application:
    """The sidecar's routes. Every ``/v1/wal`` request must present one of ``token``'s
    tokens (``Authorization: Bearer``), checked before anything else. ``clock``: now.
    Refusals log at most a line per client and reason per ``refusals.interval`` seconds
    (default a minute); what that holds back is logged as a count every interval."""
    in_flight: dict[str, int] = {}
    budget = refusals if refusals is not None else LogBudget(60.0)

    async def tell_held_back(_: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(budget.interval)
                for key, n in budget.flush():
                    client, _, why = key.partition(" ")
                    log.warning("refused %d more WAL read(s) from %s: %s", n, client, why)

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def error(status: int, message: str, **headers: str) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers)

    def guard(read: Callable[[web.Request, datetime, datetime, int],
                             web.StreamResponse | Callable[[], tuple[bytes, dict[str, str]]]]
              ) -> Callable[[web.Request], Any]:
        """``read`` behind the token, the window, the per-client and total limits and the
        deadline: it gets the request, ``since``, now and ``max_bytes`` and answers an error
        response or the (blocking) function that reads the answer."""

        async def handler(request: web.Request) -> web.StreamResponse:
            client = request.remote or "unknown"
            presented = bearer(request.headers.get("Authorization"))
            if presented is None or not token.matches(presented):
                why = "wrong token" if presented else "no token"
                held = budget.take(f"{client} {why}")
                if held is not None:
                    log.warning("refused a WAL read from %s: %s%s", client, why,
                                f" ({held} more since the last line)" if held else "")
                return error(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
            q = request.query
            now = clock()
            try:
                since = parse_time(q["since"]) if "since" in q else now - timedelta(hours=1)
                max_bytes = int(q.get("max_bytes", wal.max_bytes))
                if max_bytes <= 0:
                    raise ValueError
                since.astimezone(UTC)  # a time at the edge of the calendar cannot be used
            except (MalformedInput, ValueError, OverflowError):
                return error(400, "since must be an RFC 3339 time and max_bytes a positive "
                                  "integer")
            grace = READ_GRACE if request.path == RANGE_PATH else 0.0
            if (now - since).total_seconds() > limits.max_window + grace:
                return error(400, f"since is more than {limits.max_window:g}s ago: this "
                             f"sidecar serves at most the last {limits.max_window:g}s "
                             "(--max-window)")
            answer = read(request, since, now, max_bytes)
            if isinstance(answer, web.StreamResponse):
                return answer
            if in_flight.get(client, 0) >= limits.per_client:
                return error(429, "this client already has a read in progress",
                             **{"Retry-After": "1"})
            if sum(in_flight.values()) >= limits.total:
                return error(503, "busy", **{"Retry-After": "1"})
            in_flight[client] = in_flight.get(client, 0) + 1
            try:
                return await _answer(request, answer,
                                     asyncio.get_running_loop().time() + limits.deadline)
            finally:
                in_flight[client] -= 1
                if not in_flight[client]:
                    del in_flight[client]

        return handler

    def tail(_: web.Request, since: datetime, now: datetime, max_bytes: int
             ) -> Callable[[], tuple[bytes, dict[str, str]]]:
        def read() -> tuple[bytes, dict[str, str]]:
            data, files, damaged, truncated = wal.tail(since, max_bytes)
            return data, {"X-WAL-Files": ",".join(files), "X-WAL-Damaged": str(damaged),
                          "X-WAL-Truncated": "true" if truncated else "false"}
        return read

    def window(request: web.Request, since: datetime, now: datetime, max_bytes: int
               ) -> web.StreamResponse | Callable[[], tuple[bytes, dict[str, str]]]:
        q = request.query
        try:
            until = parse_time(q["until"]) if "until" in q else now
            until.astimezone(UTC)
        except (MalformedInput, ValueError, OverflowError):
            return error(400, "until must be an RFC 3339 time")
        if until <= since:
            return error(400, "the window is empty: until must be after since")
        cursor = q.get("cursor") or None
        if cursor is not None and not _CURSOR.fullmatch(cursor):
            return error(400, "cursor is not one of this window's")

        def read() -> tuple[bytes, dict[str, str]]:
            page = wal.page(since, until, cursor, max_bytes)
            headers = {"X-WAL-Files": ",".join(page.files), "X-WAL-Damaged": str(page.damaged),
                       "X-WAL-Complete": "false" if page.next_cursor else "true"}
            if page.next_cursor:
                headers["X-WAL-Next-Cursor"] = page.next_cursor
            return page.data, headers
        return read

    app = web.Application()
    app.cleanup_ctx.append(tell_held_back)
    app.router.add_get("/healthz", health)
    app.router.add_get(WAL_PATH, guard(tail))
    app.router.add_get(RANGE_PATH, guard(window))
    return app


async def _answer(request: web.Request, read: Callable[[], tuple[bytes, dict[str, str]]],
                  deadline: float) -> web.StreamResponse:
    """Read the answer and send it, all before ``deadline`` (loop time). The caller's slot is
    held until the answer is sent or given up, so the bytes held stay bounded."""
    loop = asyncio.get_running_loop()
    reading = asyncio.ensure_future(asyncio.to_thread(read))
    try:
        data, headers = await asyncio.wait_for(asyncio.shield(reading),
                                               max(0.0, deadline - loop.time()))
    except TimeoutError:
        await asyncio.gather(reading, return_exceptions=True)  # a thread cannot be stopped
        log.warning("reading the WAL took longer than the read deadline")
        return web.json_response({"error": "reading the WAL took too long"}, status=503)
    except PageRefused as e:
        return web.json_response({"error": str(e)}, status=e.status)
    except (OSError, OverflowError) as e:
        log.warning("cannot read the WAL: %s", type(e).__name__)
        return web.json_response({"error": "cannot read the WAL"}, status=503)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream", **headers})
    resp.content_length = len(data)
    try:
        async with asyncio.timeout_at(deadline):
            await resp.prepare(request)
            for at in range(0, len(data), CHUNK):
                await resp.write(data[at:at + CHUNK])  # waits while the client is behind
            await resp.write_eof()
    except TimeoutError:
        log.info("a client of %s read its answer too slowly; cut off", request.remote)
        if request.transport is not None:
            request.transport.abort()
    return resp


def serve(directory: str, host: str, port: int, max_bytes: int, token: TokenFile,
          limits: Limits = Limits()) -> None:
    """Serve until interrupted (SIGTERM/SIGINT stop it cleanly)."""
    log.info("serving the WAL tail of %s on %s:%d (bearer token required)", directory, host,
             port)
    web.run_app(make_app(WalDirectory(directory, max_bytes), token, limits), host=host,
                port=port, print=None, keepalive_timeout=15, handle_signals=True)
