"""What the upstream FLK backend leaves behind, written the same way by the testbed backend:
the inbox WAL and the log line per rejected PCS. sigops diagnoses a real backend from these,
so the e2e tests need a testbed that writes them byte for byte in the upstream form.

- Inbox WAL: every request body, before verification, appended to
  ``<WAL_DIR>/inbox-YYYYMMDD.wal`` as ``<RFC 3339 time, nanoseconds>|<length>|<body>\\n``
  (Go's ``time.RFC3339Nano``: trailing zeros of the fraction dropped).
- Log: ``<2006/01/02 15:04:05> Signature verification failed for <pcs_id>: <err>`` (Go
  ``log``'s default prefix), one line per PCS answered 401.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

__all__ = ["InboxWal", "RejectionLog", "rfc3339nano", "error_text"]


def rfc3339nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC instant given in nanoseconds since the epoch.

    >>> rfc3339nano(1_764_471_600_120_000_000)
    '2025-11-30T03:00:00.12Z'
    >>> rfc3339nano(1_764_471_600_000_000_000)
    '2025-11-30T03:00:00Z'
    """
    secs, frac = divmod(ns, 1_000_000_000)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{head}.{digits}Z" if digits else f"{head}Z"


class InboxWal:
    """Appends request bodies to the day's WAL file; one ``write`` per entry, so an entry is
    never interleaved with another. The file of the entry's UTC day is opened per append
    (a day change starts a new file, as upstream does)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, body: bytes, ns: int) -> None:
        """Append one entry received at ``ns`` (nanoseconds since the epoch, UTC)."""
        day = time.strftime("%Y%m%d", time.gmtime(ns // 1_000_000_000))
        entry = f"{rfc3339nano(ns)}|{len(body)}|".encode() + body + b"\n"
        path = self.directory / f"inbox-{day}.wal"
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                view = memoryview(entry)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)


def error_text(alg: str, cause: str) -> str:
    """The error after ``<pcs_id>: `` in the rejection line, as upstream words it for a
    signature that does not verify; the testbed's own freshness check has its own words."""
    if cause == "clock_skew":
        return "PCS rejected: sent_at outside the freshness window"
    if alg == "ed25519":
        return "Ed25519 verification failed: signature verification failed"
    return "HMAC verification failed: HMAC signature verification failed"


class RejectionLog:
    """Writes the upstream rejection line, Go ``log`` style, to ``stream`` (stderr: the pod
    log). The pcs_id is written with control characters escaped, so a hostile id cannot
    forge a line of its own."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def rejected(self, pcs_id: str, err: str, when: float, tenant: str | None = None) -> None:
        safe = pcs_id.encode("unicode_escape").decode("ascii")[:256]
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(when))
        what = f"tenant {tenant}, PCS {safe}" if tenant else safe
        stream = self.stream or sys.stderr
        with self._lock:
            stream.write(f"{stamp} Signature verification failed for {what}: {err}\n")
            stream.flush()
