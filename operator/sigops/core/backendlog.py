"""The upstream backend's log lines about rejected PCS, counted.

The upstream Go server writes one line per PCS whose signature it refused, with Go ``log``'s
date/time prefix (``2006/01/02 15:04:05 ``)::

    Signature verification failed for <pcs_id>: <err>
    Signature verification failed for tenant <tenant>, PCS <pcs_id>: <err>

:class:`LogSummary` reads lines one at a time (any iterable, so a pod's log can stream
through it) and keeps counts per error kind, per tenant and per pod, and the most frequent
failing pcs_ids. Other lines are ignored. Memory is bounded whatever the log holds: lines are
cut at :data:`MAX_LINE`, and at most :data:`MAX_IDS` distinct pcs_ids are counted.

>>> s = LogSummary()
>>> s.add("2026/11/30 03:00:00 Signature verification failed for abc: HMAC verification "
...       "failed: HMAC signature verification failed", pod="backend-1")
True
>>> s.add("2026/11/30 03:00:01 Signature verification failed for tenant t1, PCS def: "
...       "signature is empty", pod="backend-2")
True
>>> s.add("2026/11/30 03:00:02 server listening on :8080")
False
>>> s.to_dict()["by_kind"], s.to_dict()["by_tenant"]
({'hmac_mismatch': 1, 'empty_signature': 1}, {'t1': 1})
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LogSummary", "parse_line", "lines_of", "KINDS", "MAX_LINE", "MAX_IDS"]

MAX_LINE = 8192
"""Longer lines are cut before they are looked at."""
MAX_IDS = 10_000
"""Distinct pcs_ids counted; later new ones only count in ``others``."""
MAX_TENANTS = 1_000
"""Distinct tenants counted (a hostile log can name any number); :meth:`LogSummary.to_dict`
shows the most frequent ones only."""

KINDS = (
    ("empty_signature", "signature is empty"),
    ("payload_error", "failed to generate signature"),
    ("hmac_mismatch", "HMAC "),
    ("ed25519_mismatch", "Ed25519 "),
    ("invalid_signature", "invalid signature"),
    ("no_verifier", "no verifier configured"),
    ("no_verifier", "no fallback verifier"),
    ("tenant_config", "HMAC key required"),
    ("tenant_config", "Ed25519 public key required"),
    ("tenant_config", "unknown signature algorithm"),
)
"""(kind, how the upstream error text starts), first match wins; else ``other``."""

_STARTS = "|".join(re.escape(start) for _, start in KINDS)
_HEAD = (r"^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)? )?"
         r"Signature verification failed for "
         r"(?:tenant (?P<tenant>[^,]{1,253}), PCS )?(?P<pcs>.*?): ")
_KNOWN = re.compile(_HEAD + r"(?P<err>(?:" + _STARTS + r").*)$")
"""A line whose error text starts as a known upstream error: the pcs_id may hold ': '."""
_ANY = re.compile(_HEAD + r"(?P<err>.*)$")


def lines_of(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[str]:
    r"""The lines of a byte stream that arrives in chunks (a pod log read from the API), each
    at most ``max_line`` bytes, undecodable bytes replaced. Memory stays bounded by one chunk
    plus ``max_line`` whatever the stream holds: a line longer than that yields its head and
    its rest is skipped up to the next newline.

    >>> list(lines_of([b"ab", b"c\nd", b"e\n", b"\xff"], max_line=2))
    ['ab', 'de', '\ufffd']
    """
    rest = b""
    skipping = False
    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                if not skipping:
                    rest += chunk[start:start + max_line + 1 - len(rest)]
                    if len(rest) > max_line:
                        yield rest[:max_line].decode("utf-8", "replace")
                        rest, skipping = b"", True
                break
            if not skipping:
                yield (rest + chunk[start:nl])[:max_line].decode("utf-8", "replace")
            rest, skipping = b"", False
            start = nl + 1
    if rest and not skipping:
        yield rest[:max_line].decode("utf-8", "replace")


def parse_line(line: str) -> tuple[str, str | None, str, str] | None:
    """``(kind, tenant, pcs_id, error text)`` of a rejection line, or None for other lines.

    >>> parse_line("2026/11/30 03:00:00 Signature verification failed for x: signature is empty")
    ('empty_signature', None, 'x', 'signature is empty')
    """
    text = line[:MAX_LINE].rstrip("\r\n")
    m = _KNOWN.match(text) or _ANY.match(text)
    if m is None:
        return None
    err = m.group("err")
    kind = next((k for k, start in KINDS if err.startswith(start)), "other")
    return kind, m.group("tenant"), m.group("pcs"), err


class LogSummary:
    """Counts of rejection lines; :meth:`to_dict` is what incident evidence shows."""

    def __init__(self, top: int = 10) -> None:
        self.top = top
        self.lines = 0
        self.rejections = 0
        self.by_kind: Counter[str] = Counter()
        self.by_tenant: Counter[str] = Counter()
        self.by_pod: Counter[str] = Counter()
        self.pcs_ids: Counter[str] = Counter()
        self.others = 0
        """Rejections whose pcs_id came after :data:`MAX_IDS` distinct ones."""

    def add(self, line: str, pod: str | None = None) -> bool:
        """Count one line; True if it was a rejection line."""
        self.lines += 1
        parsed = parse_line(line)
        if parsed is None:
            return False
        kind, tenant, pcs_id, _ = parsed
        self.rejections += 1
        self.by_kind[kind] += 1
        if tenant is not None:
            t = tenant[:253]
            if t in self.by_tenant or len(self.by_tenant) < MAX_TENANTS:
                self.by_tenant[t] += 1
        if pod is not None:
            self.by_pod[pod] += 1
        pcs_id = pcs_id[:128]
        if pcs_id in self.pcs_ids or len(self.pcs_ids) < MAX_IDS:
            self.pcs_ids[pcs_id] += 1
        else:
            self.others += 1
        return True

    def add_all(self, lines: Iterable[str], pod: str | None = None) -> LogSummary:
        for line in lines:
            self.add(line, pod)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "rejections": self.rejections,
                "by_kind": dict(self.by_kind),
                "by_tenant": dict(self.by_tenant.most_common(self.top)),
                "by_pod": dict(self.by_pod),
                "top_pcs_ids": [{"pcs_id": p, "failures": n}
                                for p, n in self.pcs_ids.most_common(self.top)],
                "pcs_ids_not_counted": self.others}
