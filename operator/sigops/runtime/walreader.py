"""``sigops wal serve``: a read-only sidecar beside the FLK backend that serves the tail of
its inbox WAL directory over HTTP, so sigops can read the failed PCS the backend logged
without ``pods/exec``.

``GET /v1/wal?since=<RFC 3339>&max_bytes=N`` answers the intact entries received at or after
``since`` (default: the last hour) from the newest end of the ``inbox-*.wal`` files, at most
``max_bytes`` (default and ceiling: ``--max-bytes``), as WAL bytes
(``application/octet-stream``). Headers: ``X-WAL-Files`` (the files read), ``X-WAL-Damaged``
(entries left out because they were damaged), ``X-WAL-Truncated: true`` when older entries in
the window did not fit. ``GET /healthz`` answers ``ok``. Nothing else is served: no listing,
no path from the request ever reaches the file system.

The sidecar holds no key material: a WAL holds request bodies (signed PCS, never keys).
Served on aiohttp: an idle or slow connection costs no thread and is closed after a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from ..core.errors import MalformedInput
from ..core.timeparse import parse_time
from ..core.wal import whole_entries

__all__ = ["WalDirectory", "make_app", "serve", "WAL_PATH"]

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


MAX_CONCURRENT = 2
"""Reads served at once; more get 503 (Retry-After): memory stays bounded."""


def make_app(wal: WalDirectory) -> web.Application:
    busy = asyncio.Semaphore(MAX_CONCURRENT)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def tail(request: web.Request) -> web.Response:
        q = request.query
        try:
            since = (parse_time(q["since"]) if "since" in q
                     else datetime.now(UTC) - timedelta(hours=1))
            max_bytes = int(q.get("max_bytes", wal.max_bytes))
            if max_bytes <= 0:
                raise ValueError
            since.astimezone(UTC)  # a time at the edge of the calendar cannot be used
        except (MalformedInput, ValueError, OverflowError):
            return web.json_response({"error": "since must be an RFC 3339 time and "
                                      "max_bytes a positive integer"}, status=400)
        if busy.locked():
            return web.json_response({"error": "busy"}, status=503,
                                     headers={"Retry-After": "1"})
        async with busy:
            try:
                data, files, damaged, truncated = await asyncio.to_thread(wal.tail, since,
                                                                          max_bytes)
            except (OSError, OverflowError) as e:
                log.warning("cannot read the WAL: %s", type(e).__name__)
                return web.json_response({"error": "cannot read the WAL"}, status=503)
        return web.Response(body=data, content_type="application/octet-stream", headers={
            "X-WAL-Files": ",".join(files), "X-WAL-Damaged": str(damaged),
            "X-WAL-Truncated": "true" if truncated else "false"})

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_get(WAL_PATH, tail)
    return app


def serve(directory: str, host: str, port: int, max_bytes: int) -> None:
    """Serve until interrupted (SIGTERM/SIGINT stop it cleanly)."""
    log.info("serving the WAL tail of %s on %s:%d", directory, host, port)
    web.run_app(make_app(WalDirectory(directory, max_bytes)), host=host, port=port,
                print=None, keepalive_timeout=15, handle_signals=True)
