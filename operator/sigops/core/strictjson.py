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

import importlib
import json
import math
import re
from typing import Any

from .errors import MalformedInput

orjson: Any  # a C parser about 2.5x faster than json's; optional, the same answers without it
try:
    orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - orjson is a dependency; kept usable without it
    orjson = None

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

# The fast path: a C parser with no per-value Python hooks (the hooks above cost about as
# much as the scan itself): orjson when installed, else json's C scanner. Its result is used
# only when the strict decoder is certain to return the same value; anything else goes
# through ``_decoder``, so errors and their reasons are exactly the strict decoder's.
_plain = json.JSONDecoder()
_FAST_MAX_DEPTH = 64  # deeper documents take the strict path, far from any recursion limit

# orjson itself rejects NaN/Infinity, numbers that overflow, invalid UTF-8 and lone
# surrogates, but reads integers beyond 64 bits as floats and keeps the last of duplicate
# keys; :func:`_orjson_is_strict` rules both out. An integer literal of 2^53 or more has at
# least 16 digits, at the start of the text or right after one of ``:,[-`` or whitespace
# (inside a string such a run needs one of those just before it, and then merely sends the
# record to the strict decoder). _DIGITS maps digits to ``0``, those characters to a space
# and every other byte to ``.``, so one substring search finds such a literal.
_DIGITS = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x20 if chr(b) in ":,[-\t\n\r " else 0x2E
    for b in range(256)
)
_LONG_INT = b" " + b"0" * 16


def _orjson_is_strict(obj: Any, data: bytes) -> bool:
    """Would the strict decoder have read ``data`` (no backslash in it) as ``obj``?

    Integers: see _DIGITS. Duplicate keys: each member of an object has one structural colon,
    the others sit in keys and strings as written (no escapes), and orjson writes strings back
    unchanged; a duplicate key drops a member, so the re-encoded value has fewer colons than
    the text exactly when a key was duplicated.
    """
    shape = data.translate(_DIGITS)
    if _LONG_INT in shape or shape.startswith(_LONG_INT[1:]):
        return False
    try:
        again: bytes = orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: nested too deeply to write back
        return False
    return again.count(b":") == data.count(b":")


def _plain_is_strict(obj: Any, colons: int) -> bool:
    """Would the strict decoder have accepted this plainly decoded value unchanged?

    ``colons`` is the number of ``:`` in the text, which holds no backslash (so no escape).
    Each member of an object has one structural colon; the others sit inside strings. A
    duplicate key drops a member (and whatever its value held), so the colons found in the
    decoded value fall short of the text's exactly when a key was duplicated. Numbers must
    be finite (``x - x`` is NaN otherwise) and integers within 2^53, as the hooks demand.
    """
    stack: list[tuple[Any, int]] = [([obj], 0)]
    pop, push = stack.pop, stack.append
    lo, hi = -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER
    while stack:
        c, depth = pop()
        if depth > _FAST_MAX_DEPTH:
            return False
        if type(c) is dict:
            colons -= len(c) + "".join(c).count(":")
            c = c.values()
        for v in c:
            t = type(v)
            if t is str:
                if ":" in v:
                    colons -= v.count(":")
            elif t is int:
                if v > hi or v < lo:
                    return False
            elif t is float:
                if v - v:  # NaN for inf and NaN, 0.0 otherwise
                    return False
            elif t is dict or t is list:
                push((v, depth + 1))
    return colons == 0


def loads(data: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse one JSON document strictly; raise :class:`MalformedInput` with a reason."""
    if len(data) > max_bytes:
        raise MalformedInput(f"record of {len(data)} bytes exceeds the limit of {max_bytes}")
    if orjson is not None and type(data) is bytes and b"\\" not in data:
        try:
            obj = orjson.loads(data)
        except ValueError:  # orjson.JSONDecodeError, nesting limit included
            pass  # the strict decoder below gives the reason
        else:
            if _orjson_is_strict(obj, data):
                return obj
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedInput(f"invalid UTF-8 at byte {e.start}") from None
    else:
        text = data
    ascii_only = text.isascii()
    if "\\" not in text:  # no escapes: every colon and quote in the text is what it seems
        try:
            obj = _plain.decode(text)
        except (ValueError, RecursionError):
            pass  # the strict decoder below gives the reason
        else:
            if _plain_is_strict(obj, text.count(":")):
                if not ascii_only and _SURROGATE_HINT.search(text):
                    _reject_lone_surrogates(obj)
                return obj
    try:
        obj = _decoder.decode(text)
        # The hint needs a \u escape or a non-ASCII character: skip the regex when neither.
        if (not ascii_only or "\\u" in text) and _SURROGATE_HINT.search(text):
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
