"""Canonical bytes of a PCS signature subset, under named profiles.

The FLK stack carries three incompatible canonical forms in the wild. Each is a row of
:data:`PROFILES`: a rounding rule, a float format, a string escaping and a key order, so adding
a form is adding a row. ``python`` and ``fixed9`` sort keys; ``go`` keeps the declaration order
of the upstream backend's Go struct (encoding/json writes struct fields in that order). All
use no whitespace and emit UTF-8.

>>> subset = {"pcs_id": "p", "merkle_root": "m", "epoch": 1, "shard_id": "s",
...           "D_hat": 1.0, "coh_star": 0.2, "r": 1e-7, "budget": 0.5}
>>> canonical_bytes(subset, "python")
b'{"D_hat":1.0,"budget":0.5,"coh_star":0.2,"epoch":1,"merkle_root":"m","pcs_id":"p","r":1e-07,"shard_id":"s"}'
>>> canonical_bytes(subset, "go")
b'{"budget":0.5,"coh_star":0.2,"D_hat":1,"epoch":1,"merkle_root":"m","pcs_id":"p","r":1e-7,"shard_id":"s"}'
>>> canonical_bytes(subset, "fixed9")[:40]
b'{"D_hat":1.000000000,"budget":0.50000000'
"""

from __future__ import annotations

import json.encoder
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from operator import itemgetter
from typing import Any

__all__ = [
    "Profile",
    "PROFILES",
    "PROFILE_NAMES",
    "SIGNED_FIELDS",
    "FLOAT_FIELDS",
    "SORTED_ORDER",
    "GO_STRUCT_ORDER",
    "canonical_bytes",
    "canonical_bytes_of",
    "round_half_up_9",
    "round_half_up_9_reference",
    "round_go_9",
    "format_python_float",
    "format_go_float",
    "format_fixed9_float",
    "escape_python",
    "escape_go",
    "escape_go_reference",
    "canonical_bytes_reference",
]

FLOAT_FIELDS = ("D_hat", "coh_star", "r", "budget")
"""The four signed float fields, rounded to 9 decimals before encoding."""

SIGNED_FIELDS = ("pcs_id", "merkle_root", "epoch", "shard_id", *FLOAT_FIELDS)
"""The signed subset; every other PCS field is unsigned."""

SORTED_ORDER = tuple(sorted(SIGNED_FIELDS))
"""Keys sorted by code point, as ``json.dumps(sort_keys=True)`` writes them."""

GO_STRUCT_ORDER = ("budget", "coh_star", "D_hat", "epoch", "merkle_root", "pcs_id", "r",
                   "shard_id")
"""The upstream Go backend's signature struct, fields in declaration order: encoding/json
writes a struct's fields in that order, not sorted (observed on the real server)."""

# Enough precision for any finite double's shortest repr quantized to 9 decimals
# (309 integer digits + 9 decimals), so rounding is exact and never raises.
_DEC = Context(prec=400, rounding=ROUND_HALF_UP)
_Q9 = Decimal("1E-9")


def round_half_up_9_reference(x: float) -> float:
    """The Python agent's rounding, as the agent writes it: ``Decimal(repr(x))`` quantized to
    9 decimals, half-up. The reference that :func:`round_half_up_9` must equal on every double.

    >>> round_half_up_9_reference(0.1234567895), round_half_up_9_reference(-2.5e-10)
    (0.12345679, -0.0)
    """
    return float(Decimal(repr(x)).quantize(_Q9, context=_DEC))


_E9 = 1_000_000_000


def _half_up_9_of_repr(r: str, x: float) -> float:
    """:func:`round_half_up_9_reference` of ``x`` whose ``repr`` is ``r``, on the repr's digits.

    Half-up at 9 decimals keeps the digits up to the ninth decimal as an integer ``q`` and adds
    one when the first dropped digit is 5 or more (the ones after it can only add). The result
    is ``q / 10**9`` correctly rounded, which ``int / int`` gives exactly as ``float(Decimal)``
    does; the sign is put back last, so a negative value that rounds to nothing is ``-0.0``.
    """
    e = r.find("e")
    if e < 0:  # [-]ddd.ddd: the common form, from 1e-4 up to 1e16
        dot = r.find(".")
        if len(r) - dot <= 10:  # at most nine decimals: nothing to round
            return x
        neg = r[0] == "-"
        q = int(r[neg:dot] + r[dot + 1:dot + 10])
        if r[dot + 10] >= "5":
            q += 1
    else:
        if r[e + 1] == "+":  # 1e16 and up: an integral double, nothing to round
            return x
        neg = r[0] == "-"
        digits = r[neg:e].replace(".", "")  # d.ddd e-k: value is int(digits) * 10**-decimals
        decimals = len(digits) - 1 - int(r[e + 1:])
        if decimals <= 9:
            return x
        cut = len(digits) - (decimals - 9)  # digits kept; the first dropped one decides
        if cut < 0:  # even the first dropped digit is a leading zero: below half
            q = 0
        else:
            q = int(digits[:cut]) if cut else 0
            if digits[cut] >= "5":
                q += 1
    v = q / _E9
    return -v if neg else v


def round_half_up_9(x: float) -> float:
    """The Python agent's rounding: half-up at 9 decimals on the float's shortest repr.

    Equal to :func:`round_half_up_9_reference` on every double (a property test says so),
    without decimal arithmetic.

    >>> round_half_up_9(0.1234567895), round_half_up_9(2.5e-10), round_half_up_9(1.0)
    (0.12345679, 0.0, 1.0)
    """
    return _half_up_9_of_repr(repr(x), x)


def _go_math_round(v: float) -> float:
    """Go's math.Round: nearest integer, halves away from zero, sign of zero kept."""
    if not math.isfinite(v) or abs(v) >= 4503599627370496.0:  # 2**52: already integral
        return v
    t = float(math.trunc(v))
    if abs(v - t) >= 0.5:
        t += math.copysign(1.0, v)
    return t if t != 0.0 else math.copysign(0.0, v)


def round_go_9(x: float) -> float:
    """The Go backend's rounding: ``math.Round(x*1e9)/1e9`` in float64 arithmetic.

    >>> round_go_9(0.1234567895), round_go_9(-2.5e-10)
    (0.12345679, -0.0)
    """
    return _go_math_round(x * 1e9) / 1e9


def format_python_float(x: float) -> str:
    """Python ``repr``: ``1.0``, ``0.2``, ``1e-07``, ``1e+21``."""
    return repr(x)


def format_go_float(x: float) -> str:
    """Go ``encoding/json`` float64: shortest digits, no ``.0``, exponent below 1e-6 or from 1e21.

    >>> [format_go_float(v) for v in (1.0, 0.2, 1e-7, 1.5e-7, 1e21, 1e20, 1e-5, -0.0)]
    ['1', '0.2', '1e-7', '1.5e-7', '1e+21', '100000000000000000000', '0.00001', '-0']
    """
    r = repr(x)
    a = abs(x)
    if a != 0.0 and (a < 1e-6 or a >= 1e21):
        # Go's 'e' format has the same shortest digits as Python's repr; encoding/json then
        # drops the leading zero of a negative one-digit exponent (e-07 -> e-7).
        if "e" not in r:  # pragma: no cover - repr always uses an exponent in this range
            r = f"{x:e}"
        if len(r) >= 4 and r[-4] == "e" and r[-3] == "-" and r[-2] == "0":
            r = r[:-2] + r[-1]
        return r
    if "e" in r:  # Python chose an exponent Go does not use: write the digits out.
        r = format(Decimal(r), "f")
    if r.endswith(".0"):
        r = r[:-2]
    return r


def _go_exponent_form(r: str, x: float) -> str:
    """:func:`format_go_float` of ``x`` whose ``repr`` ``r`` has an exponent, from the repr's
    digits: Go writes 1e-6 <= |x| < 1e21 without one (the digits moved to the point)."""
    a = abs(x)
    mant, _, exp = r.partition("e")
    if a < 1e-6 or a >= 1e21:  # Go's exponent form: no leading zero in the exponent
        return f"{mant}e{exp[0]}{exp[1:].lstrip('0')}"
    neg = mant[0] == "-"
    digits = mant[neg:].replace(".", "")
    k = int(exp)
    if k < 0:  # 1e-6 <= |x| < 1e-4: 0.0000dd
        return "-" * neg + "0." + "0" * (-k - 1) + digits
    return "-" * neg + digits + "0" * (k - len(digits) + 1)  # 1e16 <= |x| < 1e21: integral


def format_fixed9_float(x: float) -> str:
    """Exactly nine decimals: ``1.000000000``."""
    return f"{x:.9f}"


escape_python: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""Python ``json.dumps`` string form (ASCII only, ``\\uXXXX`` escapes)."""

_GO_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
             "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
             "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESC = {chr(c): f"\\u{c:04x}" for c in range(0x20)} | _GO_SHORT
_GO_TABLE = str.maketrans(_GO_ESC)


def escape_go_reference(s: str) -> str:
    """Go ``encoding/json`` string form, character by character: the reference of
    :func:`escape_go`."""
    # Go replaces invalid UTF-8 (here: lone surrogates) with U+FFFD.
    if not s.isascii():
        s = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    return '"' + s.translate(_GO_TABLE) + '"'


# Printable ASCII except '"', '&', '<', '>' and '\\': the characters Go writes as they are.
_GO_PLAIN = re.compile(r"[ !#-%'-;=?-\[\]-~]*")


def escape_go(s: str) -> str:
    """Go ``encoding/json`` string form: HTML-escaped, U+2028/9 escaped, other UTF-8 raw.

    >>> escape_go('a<b>&\\u2028é')
    '"a\\\\u003cb\\\\u003e\\\\u0026\\\\u2028é"'
    """
    if _GO_PLAIN.fullmatch(s):  # the common case (hex ids, shard names): nothing to escape
        return '"' + s + '"'
    return escape_go_reference(s)


def _nine_decimals(r: str) -> str | None:
    """The repr ``r`` rounded half-up to exactly nine decimals, as text, for the common
    full-precision form: no exponent, more than nine decimals, at most six integer digits (so
    at most 15 significant digits are kept, and the kept text is what ``repr`` and ``.9f`` of
    the rounded double write). None otherwise, or when rounding up carries (a ninth decimal 9).
    """
    if "e" in r:
        return None
    dot = r.find(".")
    if len(r) - dot <= 10 or dot - (r[0] == "-") > 6:
        return None
    if r[dot + 10] < "5":
        return r[:dot + 10]
    last = r[dot + 9]
    return None if last == "9" else r[:dot + 9] + chr(ord(last) + 1)


# Fused round-and-write routes: ``text(repr(x), x) == format_float(round(x))`` for a profile's
# (round, format_float) pair, on every double (tests/unit/test_canonical_fast.py). Each takes
# the repr, which every route needs, so it is made once.


def _python_text(r: str, x: float) -> str:
    """``format_python_float(round_half_up_9(x))``: ``r`` itself when nothing is rounded."""
    if "e" not in r:  # _nine_decimals, inline: this runs for every full-precision float
        dot = r.find(".")
        if len(r) - dot > 10 and dot - (r[0] == "-") <= 6:
            if r[dot + 10] < "5":  # repr drops trailing zeros, keeps a digit after the point
                t = r[:dot + 10].rstrip("0")
                return t + "0" if t[-1] == "." else t
            last = r[dot + 9]
            if last != "9":
                return r[:dot + 9] + chr(ord(last) + 1)
    if -4.9e-10 < x < 4.9e-10:  # so is its repr, within a hair of it: below half of 1e-9
        return "-0.0" if r[0] == "-" else "0.0"
    v = _half_up_9_of_repr(r, x)
    return r if v is x else repr(v)  # the very same object back: nothing was rounded


def _go_text(r: str, x: float, copysign: Callable[[float, float], float] = math.copysign
             ) -> str:
    """``format_go_float(round_go_9(x))``. ``round(y)`` is the nearest integer with halves to
    even; Go's math.Round takes halves away from zero, so an exact half moves out by one; zero
    keeps the sign of ``x``. A repr without exponent (1e-4 <= |v| < 1e16, inside Go's plain
    range) is Go's form less a trailing ``.0``."""
    y = x * 1e9
    t = round(y)
    h = y - t  # exact: y and t are within one half of each other
    if h == 0.5 and y > 0.0:
        t += 1
    elif h == -0.5 and y < 0.0:
        t -= 1
    if not t:  # a zero, with the sign of x
        return "-0" if copysign(1.0, x) < 0.0 else "0"
    v = t / 1e9
    if v != x:  # else x's own repr will do
        r = repr(v)
    if "e" in r:
        return _go_exponent_form(r, v)
    return r[:-2] if r.endswith(".0") else r


def _fixed9_text(r: str, x: float) -> str:
    """``format_fixed9_float(round_half_up_9(x))``."""
    t = _nine_decimals(r)
    if t is not None:
        return t
    if -4.9e-10 < x < 4.9e-10:  # rounds to a zero of its sign, as in _python_text
        return "-0.000000000" if r[0] == "-" else "0.000000000"
    return f"{_half_up_9_of_repr(r, x):.9f}"


# Plain routes, for a repr with no exponent, at most nine decimals and at most six integer
# digits (a "plain repr"): no profile rounds such a value (half-up keeps its nine decimals; Go's
# x*1e9 lands within 0.13 of the integer, so math.Round(x*1e9)/1e9 is the double nearest the
# same decimal, x), so each only writes it. None: write the repr as it is.


def _go_plain(r: str, x: float) -> str:
    return r[:-2] if r.endswith(".0") else r


def _fixed9_plain(r: str, x: float) -> str:
    return f"{x:.9f}"


_FUSED: Mapping[tuple[Callable[[float], float], Callable[[float], str]],
                tuple[Callable[[str, float], str], Callable[[str, float], str] | None]] = {
    (round_half_up_9, format_python_float): (_python_text, None),
    (round_go_9, format_go_float): (_go_text, _go_plain),
    (round_half_up_9, format_fixed9_float): (_fixed9_text, _fixed9_plain),
}
"""(fused route, plain route) of each known (round, format_float) pair."""

_REFERENCE: Mapping[Callable[..., Any], Callable[..., Any]] = {
    round_half_up_9: round_half_up_9_reference,
    escape_go: escape_go_reference,
}
"""The reference each fast rounding or escaping stands in for."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One canonical form: how floats are rounded and written, how strings are escaped, and in
    which order the keys are written."""

    name: str
    round: Callable[[float], float]
    format_float: Callable[[float], str]
    escape: Callable[[str], str]
    order: tuple[str, ...]
    description: str
    template: str = field(init=False, repr=False, compare=False)
    """The canonical object as one format string: keys in ``order``, one ``%s`` per value."""
    permutation: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """For each key of ``order``, its index in :data:`SIGNED_FIELDS`."""
    text: Callable[[str, float], str] = field(init=False, repr=False, compare=False)
    """``text(repr(x), x) == format_float(round(x))``: a fused route for the known
    (round, format_float) pairs, else that composition."""
    plain: Callable[[str, float], str] | None = field(init=False, repr=False, compare=False)
    """:attr:`text` for a plain repr (no exponent, at most nine decimals and six integer
    digits), where the known profiles have nothing to round; None: the repr itself."""
    pick: Callable[[Sequence[Any]], tuple[Any, ...]] = field(init=False, repr=False,
                                                              compare=False)
    """Values in :data:`SIGNED_FIELDS` order to values in ``order``."""

    def __post_init__(self) -> None:
        if sorted(self.order) != sorted(SIGNED_FIELDS):
            raise ValueError(f"profile {self.name}: order must name each signed field once")
        object.__setattr__(self, "template", "{" + ",".join(
            f'"{k}":%{"d" if k == "epoch" else "s"}' for k in self.order) + "}")
        object.__setattr__(self, "permutation",
                           tuple(SIGNED_FIELDS.index(k) for k in self.order))
        rnd, ff = self.round, self.format_float

        def composed(r: str, x: float) -> str:
            return ff(rnd(x))

        text, plain = _FUSED.get((rnd, ff), (composed, composed))
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "plain", plain)
        object.__setattr__(self, "pick", itemgetter(*self.permutation))


PROFILES: Mapping[str, Profile] = {
    p.name: p
    for p in (
        Profile("python", round_half_up_9, format_python_float, escape_python, SORTED_ORDER,
                "upstream Python agent: Decimal half-up, json.dumps(sort_keys=True)"),
        Profile("go", round_go_9, format_go_float, escape_go, GO_STRUCT_ORDER,
                "upstream Go backend: math.Round(x*1e9)/1e9, encoding/json of its struct "
                "(keys in declaration order)"),
        Profile("fixed9", round_half_up_9, format_fixed9_float, escape_python, SORTED_ORDER,
                "nine fixed decimals, keys sorted, as in the upstream signature test vector"),
    )
}
PROFILE_NAMES = tuple(PROFILES)

# canonical_bytes_of lists the values of a sorted profile in this order.
assert SORTED_ORDER == ("D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r",
                        "shard_id"), "canonical_bytes_of lists its values in this order"


def canonical_bytes(subset: Mapping[str, Any], profile: str | Profile = "python") -> bytes:
    """Canonical UTF-8 bytes of the signed subset under ``profile``.

    ``subset`` must already be type-checked (see :func:`sigops.core.pcs.parse_pcs`): strings
    for ``pcs_id``/``merkle_root``/``shard_id``, an int ``epoch``, numbers for the floats.
    """
    s = subset
    return canonical_bytes_of((s["pcs_id"], s["merkle_root"], s["epoch"], s["shard_id"],
                               s["D_hat"], s["coh_star"], s["r"], s["budget"]), profile)


def canonical_bytes_of(values: Sequence[Any], profile: str | Profile = "python") -> bytes:
    """:func:`canonical_bytes` of the subset's values in :data:`SIGNED_FIELDS` order."""
    p = profile if isinstance(profile, Profile) else PROFILES[profile]
    esc = p.escape
    pid, root, epoch, shard, d0, c0, r0, b0 = values
    df, cf, rf, bf = float(d0), float(c0), float(r0), float(b0)
    d, c, r, b = repr(df), repr(cf), repr(rf), repr(bf)
    # Every repr plain (no exponent, at most nine decimals and six integer digits): the
    # common case, checked inline, since this runs once per record verified.
    if ("e" not in d and "e" not in c and "e" not in r and "e" not in b
            and 6 >= d.find(".") >= len(d) - 10 and 6 >= c.find(".") >= len(c) - 10
            and 6 >= r.find(".") >= len(r) - 10 and 6 >= b.find(".") >= len(b) - 10):
        plain = p.plain
        if plain is not None:
            d, c, r, b = plain(d, df), plain(c, cf), plain(r, rf), plain(b, bf)
    else:
        text = p.text
        d, c, r, b = text(d, df), text(c, cf), text(r, rf), text(b, bf)
    if p.order is SORTED_ORDER:  # (D_hat, budget, coh_star, epoch, merkle_root, pcs_id, r,
        #                            shard_id)
        out = p.template % (d, b, c, epoch, esc(root), esc(pid), r, esc(shard))
    elif esc is escape_go and _GO_PLAIN.fullmatch(pid + root + shard) is not None:
        # Nothing to escape in any of the three (one check for three): quotes only.
        out = p.template % p.pick(('"' + pid + '"', '"' + root + '"', epoch, '"' + shard + '"',
                                   d, c, r, b))
    else:
        out = p.template % p.pick((esc(pid), esc(root), epoch, esc(shard), d, c, r, b))
    return out.encode("utf-8", "surrogatepass")


def canonical_bytes_reference(subset: Mapping[str, Any], profile: str | Profile = "python"
                              ) -> bytes:
    """The reference route of :func:`canonical_bytes`: field by field in the profile's key
    order, each float rounded by the reference rule (decimal arithmetic for half-up) and
    written by the profile's format, each string escaped character by character. Slow and
    plain; the fast routes must give the same bytes for every input.

    >>> s = {"pcs_id": "p", "merkle_root": "m", "epoch": 1, "shard_id": "s",
    ...      "D_hat": 0.1234567895, "coh_star": -2.5e-10, "r": 1e-7, "budget": 1.0}
    >>> canonical_bytes_reference(s) == canonical_bytes(s)
    True
    """
    p = profile if isinstance(profile, Profile) else PROFILES[profile]
    rnd = _REFERENCE.get(p.round, p.round)
    esc = _REFERENCE.get(p.escape, p.escape)
    parts = []
    for k in p.order:
        v = subset[k]
        if k == "epoch":
            text = f"{v:d}"
        elif k in FLOAT_FIELDS:
            text = p.format_float(rnd(float(v)))
        else:
            text = esc(v)
        parts.append(f'"{k}":{text}')
    return ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")
