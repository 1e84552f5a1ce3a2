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

Only sigops may read: a WAL holds every PCS body the backend received. A ``/v1/wal`` request
must carry ``Authorization: Bearer <token>``, one of the lines of ``--token-file`` (a mounted
Secret, compared in constant time, re-read when it changes), else 401; refusals are logged
with the source address, never a token. A client (source address) has one read in flight at a
time (429 for a second), four reads at most run at once (503), and each read -- the files and
the sending of the answer -- has a deadline (``--read-deadline``): a client that reads too
slowly is cut off, so no client holds a slot another needs.

The sidecar holds no key material: a WAL holds request bodies (signed PCS, never keys).
Served on aiohttp: an idle or slow connection costs no thread and is closed after a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from ..core.errors import MalformedInput
from ..core.timeparse import parse_time
from ..core.wal import whole_entries
from ..settings.tokens import TokenFile, bearer

__all__ = ["WalDirectory", "Limits", "make_app", "serve", "WAL_PATH"]

log = logging.getLogger("sigops.walreader")
WAL_PATH = "/v1/wal"
_NAME = re.compile(r"inbox-(\d{8})\.wal")


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


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the sidecar, and how long a read may take."""

    max_window: float = 24 * 3600.0
    """Seconds back from now that ``since`` may reach; an older ``since`` is 400."""
    per_client: int = 1
    """Reads one client (source address) may have in flight; one more is 429."""
    total: int = 4
    """Reads served at once, all clients together; one more is 503 (memory stays bounded)."""
    deadline: float = 10.0
    """Seconds one read may take, reading the files and sending the answer: a client that
    reads its answer slower is cut off and its slot freed."""


CHUNK = 64 << 10


def make_app(wal: WalDirectory, token: TokenFile, limits: Limits = Limits()) -> web.Application:
    """The sidecar's routes. Every ``/v1/wal`` request must present one of ``token``'s
    tokens (``Authorization: Bearer``), checked before anything else."""
    in_flight: dict[str, int] = {}

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def error(status: int, message: str, **headers: str) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers)

    async def tail(request: web.Request) -> web.StreamResponse:
        client = request.remote or "unknown"
        presented = bearer(request.headers.get("Authorization"))
        if presented is None or not token.matches(presented):
            log.warning("refused a WAL read from %s: %s", client,
                        "wrong token" if presented else "no token")
            return error(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        q = request.query
        now = datetime.now(UTC)
        try:
            since = parse_time(q["since"]) if "since" in q else now - timedelta(hours=1)
            max_bytes = int(q.get("max_bytes", wal.max_bytes))
            if max_bytes <= 0:
                raise ValueError
            since.astimezone(UTC)  # a time at the edge of the calendar cannot be used
        except (MalformedInput, ValueError, OverflowError):
            return error(400, "since must be an RFC 3339 time and max_bytes a positive integer")
        if (now - since).total_seconds() > limits.max_window:
            return error(400, f"since is more than {limits.max_window:g}s ago: this sidecar "
                         f"serves at most the last {limits.max_window:g}s (--max-window)")
        if in_flight.get(client, 0) >= limits.per_client:
            return error(429, "this client already has a read in progress", **{"Retry-After": "1"})
        if sum(in_flight.values()) >= limits.total:
            return error(503, "busy", **{"Retry-After": "1"})
        in_flight[client] = in_flight.get(client, 0) + 1
        try:
            return await _answer(request, wal, since, max_bytes,
                                 asyncio.get_running_loop().time() + limits.deadline)
        finally:
            in_flight[client] -= 1
            if not in_flight[client]:
                del in_flight[client]

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_get(WAL_PATH, tail)
    return app


async def _answer(request: web.Request, wal: WalDirectory, since: datetime, max_bytes: int,
                  deadline: float) -> web.StreamResponse:
    """Read the window and send it, all before ``deadline`` (loop time). The caller's slot is
    held until the answer is sent or given up, so the bytes held stay bounded."""
    loop = asyncio.get_running_loop()
    reading = asyncio.ensure_future(asyncio.to_thread(wal.tail, since, max_bytes))
    try:
        data, files, damaged, truncated = await asyncio.wait_for(
            asyncio.shield(reading), max(0.0, deadline - loop.time()))
    except TimeoutError:
        await asyncio.gather(reading, return_exceptions=True)  # a thread cannot be stopped
        log.warning("reading the WAL took longer than the read deadline")
        return web.json_response({"error": "reading the WAL took too long"}, status=503)
    except (OSError, OverflowError) as e:
        log.warning("cannot read the WAL: %s", type(e).__name__)
        return web.json_response({"error": "cannot read the WAL"}, status=503)
    resp = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream",
        "X-WAL-Files": ",".join(files), "X-WAL-Damaged": str(damaged),
        "X-WAL-Truncated": "true" if truncated else "false"})
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
