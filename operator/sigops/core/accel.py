"""The optional compiled hot path of ``sigops verify`` (the ``sigops_accel`` extension).

Built from ``accel/`` (Rust, PyO3) by ``make venv``; the pure-Python route stays the
reference and is used whenever the extension is absent, turned off (``SIGOPS_ACCEL=0``), or
unsure. ``read_pcs(line, code)``: a JSONL line of a plain, well-typed bare PCS gives
``(values, canonical bytes, signature bytes, sent_at)`` exactly as
:func:`~sigops.core.strictjson.loads`, :func:`~sigops.core.pcs.typed_values`,
:func:`~sigops.core.keys.b64decode_strict` and :func:`~sigops.core.canonical.canonical_bytes_of`
give them; anything else gives None and the Python route reads the line from the start.
``read_batch(buf, start, code, wal, max_bytes, since_us, until_us, limit, *, mac_key=None)``
does the same for up to ``limit`` records of a buffer (JSONL lines, or inbox WAL entries framed as
:func:`~sigops.core.wal.read_wal` frames them), with ``sent_at`` and the entry's time as
microseconds since the epoch: one call per few thousand records
(:meth:`~sigops.core.diagnose.Diagnoser.check_buffer` uses it). Given ``mac_key=`` (an HMAC
secret, for that call only), ``read_batch`` also says per row whether the signature is that
key's HMAC-SHA256 of the canonical bytes (each row's eighth item), so Python skips the MAC of
a record whose signature the extension confirmed (:data:`batch_mac`; ``SIGOPS_ACCEL_MAC=0``
turns it off); the Ed25519 verify, and the MAC of any other record, stay in Python. With
``short=(not_before, not_after, max_skew)`` as well (WAL only; :data:`batch_short`), records
valid by the short route under that key come back as runs ``(starts, pcs_ids, packed,
shards)`` instead of rows (:class:`~sigops.core.diagnose.Run`;
:meth:`~sigops.core.diagnose.Diagnoser.check_runs`, the fleet audit's reader).
``tests/unit/test_accel.py`` and ``tests/unit/test_accel_batch.py`` hold the routes to the same
answers.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

__all__ = ["read_pcs", "read_batch", "batch_mac", "batch_short", "PROFILE_CODES", "available"]

PROFILE_CODES = {"python": 0, "go": 1, "fixed9": 2}
"""The profiles the extension writes, by the code it takes (each a row of PROFILES)."""

read_pcs: Callable[[bytes, int], Any] | None = None
read_batch: Callable[..., tuple[int, list[tuple[Any, ...]], bool]] | None = None
batch_mac = False
"""Does ``read_batch`` take ``mac_key`` (and is it not turned off by ``SIGOPS_ACCEL_MAC=0``)?"""
batch_short = False
"""Does ``read_batch`` also take ``short`` (and ``mac_key`` is in use)?"""
if os.environ.get("SIGOPS_ACCEL", "1") != "0":
    try:
        _ext = importlib.import_module("sigops_accel")
    except ImportError:  # not built here: the Python route does all the work
        pass
    else:
        read_pcs = _ext.read_pcs
        # An older build (rows of seven items, no mac_key): no batch interface, read_pcs only.
        if getattr(_ext, "BATCH_MAC", False) is True:
            read_batch = _ext.read_batch
            batch_mac = os.environ.get("SIGOPS_ACCEL_MAC", "1") != "0"
            batch_short = batch_mac and getattr(_ext, "BATCH_SHORT", False) is True


def available() -> bool:
    """Is the compiled route in use in this process?"""
    return read_pcs is not None
