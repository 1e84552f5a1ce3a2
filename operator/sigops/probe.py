"""The golden probe: a fresh, well-formed PCS signed with a given key, and its submission."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

from .conditions import now_iso
from .core.keys import Key
from .core.pcs import expected_pcs_id, sign_pcs

__all__ = ["probe_pcs", "submit"]


def probe_pcs(key: Key, profile: str = "python") -> dict[str, Any]:
    """A unique PCS (random merkle root) in the agents' form, signed with ``key``.

    Its values (an integral float, a 1e-7) are written differently by every canonical
    profile, so a probe accepted under one profile is never accepted under another.
    """
    root = secrets.token_hex(32)
    pcs = {"pcs_id": expected_pcs_id(root, 0, "sigops-probe"), "merkle_root": root,
           "epoch": 0, "shard_id": "sigops-probe", "D_hat": 1.0, "coh_star": 0.2, "r": 1e-7,
           "budget": 0.125, "schema": "fractal-lba-kakeya", "version": "0.1",
           "sent_at": now_iso()}
    return sign_pcs(pcs, key, profile)


def submit(url: str, timeout: float, pcs: dict[str, Any]) -> int:
    """POST a PCS; the HTTP status, or 0 when the backend cannot be reached."""
    req = urllib.request.Request(url, data=json.dumps(pcs).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-Agent-Id": "sigops-probe"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return 0
