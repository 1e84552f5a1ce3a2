"""The upstream backend's inbox WAL, read as records.

Every request body the backend receives is appended, before verification, to
``<WAL_DIR>/inbox-YYYYMMDD.wal`` as one entry::

    <RFC 3339 timestamp, nanoseconds>|<body length in bytes>|<body>\\n

The body is the raw JSON as posted and may itself hold newlines, so the length, not the line
end, delimits it. An entry's timestamp is when the backend received the body: the record's
``received_at``, so clock skew is diagnosed from a WAL alone.

A damaged entry (a header that does not parse, a bad timestamp, a length that runs past the
data, a body that does not end where its length says) becomes one :class:`WalEntry` with an
``error`` and its byte offset; reading goes on at the next line that starts a valid header.
A last entry cut short (a crash mid-write) is reported the same way; nothing else is lost.

Pure: reads bytes-like buffers (a ``mmap`` of a file works), no I/O of its own.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from .errors import MalformedInput
from .timeparse import parse_time

__all__ = ["WalEntry", "read_wal", "entry_at", "looks_like_wal", "HEADER", "entry_bytes",
           "whole_entries"]

HEADER = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d))"
                    rb"\|(\d{1,12})\|")
"""An entry's header: the timestamp, the body length, each followed by ``|``."""
Buffer = bytes | mmap.mmap
"""What :func:`read_wal` reads: the bytes of a WAL, or a ``mmap`` of its file."""
_LOOSE = re.compile(rb"[^|\n]{1,64}\|[^|\n]{0,32}\|")
_MAX_DETAIL = 60


@dataclass(frozen=True, slots=True)
class WalEntry:
    """One entry: its byte ``offset`` in the file, the body and its time; or an ``error``."""

    offset: int
    body: bytes | None
    received_at: str | None
    error: str | None = None

    @property
    def time(self) -> datetime | None:
        return None if self.received_at is None else parse_time(self.received_at)


def looks_like_wal(head: bytes) -> bool:
    """True if ``head`` (the first bytes of an input) starts with a WAL entry header."""
    return HEADER.match(head) is not None


def _what_is_wrong(buf: Buffer, pos: int) -> str:
    head = bytes(buf[pos:pos + 96])
    m = _LOOSE.match(head)
    if m is None:
        return "not a WAL entry header (<time>|<length>|)"
    stamp, _, length = m.group(0)[:-1].partition(b"|")
    if not re.fullmatch(rb"\d{1,12}", length):
        return f"entry length is not a number: {_safe(length)}"
    return f"bad entry timestamp: {_safe(stamp)}"


def _safe(b: bytes) -> str:
    text = b[:_MAX_DETAIL].decode("ascii", "replace")
    return repr("".join(c if " " <= c <= "~" else "?" for c in text))


def _next_header(buf: Buffer, start: int, end: int) -> int:
    """The offset of the next line at or after ``start`` that begins with a valid header,
    or ``end``."""
    i = start
    while True:
        j = buf.find(b"\n", i, end)
        if j < 0:
            return end
        if HEADER.match(buf, j + 1):
            return j + 1
        i = j + 1


def entry_at(buf: Buffer, pos: int) -> tuple[WalEntry | None, datetime | None, int]:
    """The entry that starts at byte ``pos`` of ``buf``: ``(entry, its time, where reading
    goes on)``; a blank line between entries is ``(None, None, pos + 1)``, a damaged entry
    has an ``error`` and no time. :func:`read_wal` is this, entry after entry."""
    end = len(buf)
    if buf[pos:pos + 1] == b"\n":  # a blank line between entries: not an entry
        return None, None, pos + 1
    m = HEADER.match(buf, pos)
    if m is None:
        nxt = _next_header(buf, pos, end)
        return WalEntry(pos, None, None, f"{_what_is_wrong(buf, pos)} at byte {pos}"), None, nxt
    stamp = m.group(1).decode("ascii")
    try:
        when = parse_time(stamp)
    except MalformedInput:
        return (WalEntry(pos, None, None, f"bad entry timestamp {stamp!r} at byte {pos}"), None,
                _next_header(buf, m.end(), end))
    length = int(m.group(2))
    body_end = m.end() + length
    if body_end > end:
        nxt = _next_header(buf, m.end(), end)
        what = ("truncated last entry (crash mid-write?)" if nxt == end
                else "entry length runs past the next entry")
        return (WalEntry(pos, None, stamp, f"{what}: {length} bytes declared at byte {pos}"),
                None, nxt)
    if body_end < end and buf[body_end:body_end + 1] != b"\n":
        nxt = _next_header(buf, m.end(), end)
        return WalEntry(pos, None, stamp, f"entry does not end where its length ({length}) "
                                          f"says, at byte {pos}"), None, nxt
    return WalEntry(m.start(), bytes(buf[m.end():body_end]), stamp), when, body_end + 1


def read_wal(buf: Buffer, since: datetime | None = None, until: datetime | None = None,
             start: int = 0) -> Iterator[WalEntry]:
    """Every entry of ``buf`` in order (``buf`` may be a ``mmap``; it is only sliced).

    ``since``/``until`` keep the entries whose time is within ``[since, until)``; damaged
    entries are always reported (their time is unknown). ``start``: read from this offset,
    one where an entry starts (a reader of ``buf`` from 0 reads the same entries after it)."""
    end = len(buf)
    pos = start
    while pos < end:
        entry, when, pos = entry_at(buf, pos)
        if entry is None:
            continue
        if when is not None and ((since is not None and when < since)
                                 or (until is not None and when >= until)):
            continue
        yield entry


def entry_bytes(entry: WalEntry) -> bytes:
    """An intact entry written back exactly as the backend wrote it."""
    if entry.body is None or entry.received_at is None:
        raise ValueError("a damaged entry has no bytes of its own")
    return f"{entry.received_at}|{len(entry.body)}|".encode() + entry.body + b"\n"


def whole_entries(chunk: Buffer, since: datetime | None = None, cut: bool = False
                  ) -> tuple[bytes, int]:
    """The intact entries of ``chunk`` received at or after ``since``, as WAL bytes, and how
    many damaged entries were left out. With ``cut`` the chunk is the tail of a file that
    may begin mid-entry: what comes before its first intact entry is not counted as damage.
    """
    out: list[bytes] = []
    damaged = 0
    for e in read_wal(chunk, since=since):
        if e.error is not None:
            if not (cut and not out):
                damaged += 1
            continue
        out.append(entry_bytes(e))
    return b"".join(out), damaged
