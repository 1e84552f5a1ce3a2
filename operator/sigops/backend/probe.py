"""The golden probe: a fresh, well-formed PCS signed with a given key, and its submission;
and the live overlap check: does the running backend accept the old and the new key at once?"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ..core.keys import Key
from ..core.pcs import expected_pcs_id, sign_pcs
from ..core.timeparse import now_iso

__all__ = ["probe_pcs", "submit", "http_get", "ACCEPTED", "OverlapProbe", "probe_overlap",
           "PROBE_SHARD"]

ACCEPTED = (200, 202)
"""The backend's answers to a submit whose signature it accepted."""
PROBE_SHARD = "sigops-probe"
"""The shard_id and X-Agent-Id of every probe sigops sends: its refusals are recognisable in the
backend's logs and WAL (diagnosis leaves them out)."""
_RETRYABLE = (0, 429, 503)  # unreachable, rate-limited, not ready: says nothing about keys
_NO_ENDPOINT = (404, 405, 501)


def probe_pcs(key: Key, profile: str = "python") -> dict[str, Any]:
    """A unique PCS (random merkle root) in the agents' form, signed with ``key``.

    Its values (an integral float, a 1e-7) are written differently by every canonical
    profile, so a probe accepted under one profile is never accepted under another.
    """
    root = secrets.token_hex(32)
    pcs = {"pcs_id": expected_pcs_id(root, 0, PROBE_SHARD), "merkle_root": root,
           "epoch": 0, "shard_id": PROBE_SHARD, "D_hat": 1.0, "coh_star": 0.2, "r": 1e-7,
           "budget": 0.125, "schema": "fractal-lba-kakeya", "version": "0.1",
           "sent_at": now_iso()}
    return sign_pcs(pcs, key, profile)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is the backend's answer, never followed: a probe signed with production keys
    goes to the target and nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    """http and https only (no file:, ftp: or data:), no proxy, no redirect followed."""
    o = urllib.request.OpenerDirector()
    for h in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(), _NoRedirect(),
              urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        o.add_handler(h)
    return o


_OPENER = _opener()


def http_get(url: str, timeout: float, limit: int) -> bytes:
    """GET an http(s) URL of the target, no redirect followed, at most ``limit`` bytes read.
    Raises ``urllib.error.HTTPError`` for any answer but 2xx (a redirect included), ``OSError``
    when unreachable, ``ValueError`` for a URL that is not http(s)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    with _OPENER.open(urllib.request.Request(url, method="GET"), timeout=timeout) as r:
        body: bytes = r.read(limit)
        return body


def submit(url: str, timeout: float, pcs: dict[str, Any]) -> int:
    """POST a PCS to an http(s) URL; the HTTP status (a redirect's own, not followed), or 0 when
    the backend cannot be reached or the URL is not http(s)."""
    if not url.startswith(("http://", "https://")):
        return 0
    req = urllib.request.Request(url, data=json.dumps(pcs).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-Agent-Id": PROBE_SHARD})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


@dataclass(frozen=True)
class OverlapProbe:
    """One backend endpoint's answers to a PCS signed with the old key and one with the new.

    ``old`` is None when no signer for the old key is at hand (an Ed25519 key known only by its
    public half)."""

    url: str
    old: int | None
    new: int

    @property
    def both_accepted(self) -> bool:
        return self.new in ACCEPTED and (self.old is None or self.old in ACCEPTED)

    @property
    def refuses_old(self) -> bool:
        """It accepts the new key and refuses the old: it holds one key, the new one."""
        return (self.new in ACCEPTED and self.old is not None and self.old not in ACCEPTED
                and self.old not in _RETRYABLE and self.old not in _NO_ENDPOINT)

    @property
    def refuses_new(self) -> bool:
        """It accepts the old key and refuses the new: one key, the old one (or not rolled)."""
        return (self.old in ACCEPTED and self.new not in ACCEPTED
                and self.new not in _RETRYABLE and self.new not in _NO_ENDPOINT)

    @property
    def no_submit_endpoint(self) -> bool:
        """The URL has no PCS submit endpoint (not found, method not allowed / implemented)."""
        return self.new in _NO_ENDPOINT and (self.old is None or self.old in _NO_ENDPOINT)

    def describe(self) -> str:
        old = "n/a" if self.old is None else str(self.old)
        return f"{self.url}: old key {old}, new key {self.new}"


def probe_overlap(urls: list[str], timeout: float, old: Key | None, new: Key,
                  profile: str) -> list[OverlapProbe]:
    """Submit a fresh probe signed with each key to each endpoint (``.../v1/pcs/submit``)."""
    out = []
    for url in urls:
        o = submit(url, timeout, probe_pcs(old, profile)) if old is not None else None
        out.append(OverlapProbe(url, o, submit(url, timeout, probe_pcs(new, profile))))
    return out
