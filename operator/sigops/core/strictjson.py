"""Strict JSON parsing: the hostile-input gate in front of everything else.

Python's ``json`` module accepts things a verifier must not: duplicate keys (last one wins,
so two parsers can disagree on what was signed), ``NaN``/``Infinity``, integers of any size
and numbers that overflow to ``inf``. :func:`loads` rejects all of them with a short reason.

>>> loads(b'{"a": 1}')
{'a': 1}
>>> loads(b'{"a": 1, "a": 2}')
Traceback (most recent call last):
...
sigops.core.errors.MalformedInput: duplicate key 'a'
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import MalformedInput

__all__ = ["loads", "DEFAULT_MAX_BYTES", "MAX_SAFE_INTEGER", "safe_repr"]

DEFAULT_MAX_BYTES = 1 << 20
"""Default size limit of one record (1 MiB); PCS documents are a few hundred bytes."""

MAX_SAFE_INTEGER = 2**53
"""Integers beyond this lose precision in the Go backend's float64 and in JavaScript."""


def safe_repr(text: str, limit: int = 40) -> str:
    """A short, escaped excerpt of untrusted text for a reason or a log line."""
    cut = text[:limit]
    out = cut.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)
    return repr(out if len(text) <= limit else out + "...")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise MalformedInput(f"duplicate key {safe_repr(k)}")
            seen.add(k)
    return d


def _constant(name: str) -> Any:
    raise MalformedInput(f"non-finite number {name} is not allowed")


def _float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise MalformedInput(f"number out of range: {safe_repr(s, 24)}")
    return f


def _int(s: str) -> int:
    if len(s) < 16:  # cannot exceed 2**53 (16 digits), fast path
        return int(s)
    if len(s) > 24:
        raise MalformedInput(f"integer too large: {len(s)} digits (limit 2^53)")
    i = int(s)
    if abs(i) > MAX_SAFE_INTEGER:
        raise MalformedInput("integer beyond 2^53 is not allowed")
    return i


# A surrogate escape (\uD800-\uDFFF) or a raw surrogate: only then is the decoded value walked.
_SURROGATE_HINT = re.compile(r"\\u[dD][89abcdefABCDEF]|[\ud800-\udfff]")


def _reject_lone_surrogates(obj: Any) -> None:
    # A lone surrogate is not UTF-8: Go reads it as U+FFFD, Python keeps it, so the two sides
    # would sign different bytes (and it cannot be written back out as UTF-8).
    stack: list[Any] = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedInput("string holds a lone surrogate (not valid Unicode)") from None


_decoder = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float, parse_int=_int
)


def loads(data: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse one JSON document strictly; raise :class:`MalformedInput` with a reason."""
    if len(data) > max_bytes:
        raise MalformedInput(f"record of {len(data)} bytes exceeds the limit of {max_bytes}")
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedInput(f"invalid UTF-8 at byte {e.start}") from None
    else:
        text = data
    try:
        obj = _decoder.decode(text)
        if _SURROGATE_HINT.search(text):
            _reject_lone_surrogates(obj)
        return obj
    except MalformedInput:
        raise
    except json.JSONDecodeError as e:
        raise MalformedInput(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise MalformedInput("JSON nested too deeply") from None
    except ValueError as e:  # e.g. int() digit limit
        raise MalformedInput(f"invalid number: {str(e)[:60]}") from None
