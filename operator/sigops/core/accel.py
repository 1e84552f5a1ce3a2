"""The optional compiled hot path of ``sigops verify`` (the ``sigops_accel`` extension).

Built from ``accel/`` (Rust, PyO3) by ``make venv``; the pure-Python route stays the
reference and is used whenever the extension is absent, turned off (``SIGOPS_ACCEL=0``), or
unsure. It has one function, ``read_pcs(line, code)``: a JSONL line of a plain, well-typed
bare PCS gives ``(values, canonical bytes, signature bytes, sent_at)`` exactly as
:func:`~sigops.core.strictjson.loads`, :func:`~sigops.core.pcs.typed_values`,
:func:`~sigops.core.keys.b64decode_strict` and :func:`~sigops.core.canonical.canonical_bytes_of`
give them; anything else gives None and the Python route reads the line from the start. It
does no cryptography: the MAC and the Ed25519 verify stay in Python. ``tests/unit/test_accel.py``
holds the two routes to the same answers.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

__all__ = ["read_pcs", "PROFILE_CODES", "available"]

PROFILE_CODES = {"python": 0, "go": 1, "fixed9": 2}
"""The profiles the extension writes, by the code it takes (each a row of PROFILES)."""

read_pcs: Callable[[bytes, int], Any] | None = None
if os.environ.get("SIGOPS_ACCEL", "1") != "0":
    try:
        read_pcs = importlib.import_module("sigops_accel").read_pcs
    except ImportError:  # not built here: the Python route does all the work
        read_pcs = None


def available() -> bool:
    """Is the compiled route in use in this process?"""
    return read_pcs is not None
