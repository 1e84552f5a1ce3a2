"""Bearer tokens from a mounted Secret, re-read when the file changes: the alert receiver's
(``--alerts-token-file``), the WAL reader sidecar's (``sigops wal serve --token-file``) and
the one the operator presents to that sidecar (``--wal-token-file``).

Compared in constant time; never logged (only how many tokens a file holds).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path

__all__ = ["TokenFile", "bearer"]

log = logging.getLogger("sigops.tokens")


def _parse_tokens(text: str) -> tuple[bytes, ...]:
    return tuple(line.strip().encode() for line in text.splitlines() if line.strip())


def bearer(header: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[7:].strip()
    return token.encode() if token else None


class TokenFile:
    """Bearer token(s) from a file that is re-read whenever it changes (a mounted Secret
    rotates: kubelet swaps the file under the mount).

    One token per line; any of them is accepted, so a rotation can overlap (old and new, then
    new only) or switch at once; a client presents the first (:meth:`first`). A file that is
    missing, unreadable or empty for a moment (a writer truncating before it writes) keeps the
    tokens last read: refusing every request then would lose them to a half-written file. The
    tokens are never logged. ``what`` names the file in log lines.
    """

    REREAD_AFTER = 5.0
    """Seconds after which the file is read again even if it looks unchanged (a rewrite in
    place within the file system's timestamp granularity, same size, keeps its stamp)."""

    def __init__(self, path: str, what: str = "token file") -> None:
        self.path = path
        self.what = what
        self._lock = threading.Lock()
        self._read_at = 0.0
        self._stamp: tuple[int, int, int, int] | None = None
        self._tokens: tuple[bytes, ...] = ()
        self._complained = False
        self._refresh(initial=True)

    def _signature(self) -> tuple[int, int, int, int]:
        st = os.stat(self.path)  # follows the Secret volume's symlinks to the current file
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self, initial: bool = False) -> None:
        try:
            stamp = self._signature()
            now = time.monotonic()
            if stamp == self._stamp and now - self._read_at < self.REREAD_AFTER:
                return
            tokens = _parse_tokens(Path(self.path).read_text())
            self._read_at = now
        except OSError as e:
            if initial:
                raise
            if not self._complained:
                log.warning("%s unreadable (%s); keeping the tokens read before", self.what,
                            type(e).__name__)
                self._complained = True
            return
        if not tokens:
            if initial:
                raise ValueError(f"{self.what} {self.path} is empty")
            if not self._complained:
                log.warning("%s is empty; keeping the tokens read before", self.what)
                self._complained = True
            return
        changed = self._stamp is not None and tokens != self._tokens
        self._stamp, self._tokens, self._complained = stamp, tokens, False
        if changed:
            log.info("%s changed: %d token(s) accepted from now on", self.what, len(tokens))

    def tokens(self) -> tuple[bytes, ...]:
        with self._lock:
            self._refresh()
            return self._tokens

    def first(self) -> bytes:
        """The token a client presents: the file's first line."""
        return self.tokens()[0]

    def matches(self, presented: bytes) -> bool:
        """Constant-time comparison against every current token."""
        ok = False
        for t in self.tokens():
            ok |= hmac.compare_digest(presented, t)
        return ok
