"""The ``python`` profile equals the upstream agent's rule, re-implemented here independently.

The agent rounds each float with ``Decimal(repr(x)).quantize(Decimal('1e-9'), ROUND_HALF_UP)``
and writes ``json.dumps(subset, sort_keys=True, separators=(',', ':'))``. sigops implements the
same rule with a fast path and a wide decimal context; this test checks it on thousands of
generated subsets against the plain rule.
"""

from __future__ import annotations

import json
import random
import re
import struct
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

import pytest

from sigops.core.canonical import canonical_bytes

FLOATS = ("D_hat", "coh_star", "r", "budget")
PIECES = ["<", ">", "&", "\u2028", "\u2029", "\u00e9", "\u65e5", "\U0001f600", "\x00", "\x1f",
          "\x7f", '"', "\\", "/", "\n", "\t", "a", "0", " ", "\ufeff", "\U0010ffff"]


def agent_round(x: float) -> float:
    """The upstream agent's rounding, verbatim. Its default context (28 digits) cannot
    quantize values from about 1e19 up; the agent would fail there, so the same rule is
    applied with enough digits to compare sigops' result."""
    try:
        return float(Decimal(repr(x)).quantize(Decimal("1e-9"), ROUND_HALF_UP))
    except InvalidOperation:
        with localcontext() as ctx:
            ctx.prec = 400
            return float(Decimal(repr(x)).quantize(Decimal("1e-9"), ROUND_HALF_UP))


def agent_canonical(subset: dict[str, Any]) -> bytes:
    d = {k: subset[k] for k in ("pcs_id", "merkle_root", "epoch", "shard_id")}
    for k in FLOATS:
        d[k] = agent_round(subset[k])
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8")


def rand_float(rng: random.Random) -> float:
    kind = rng.randrange(8)
    sign = rng.choice((1.0, -1.0))
    if kind == 0:
        return sign * float(rng.randint(0, 10**rng.randint(0, 17)))
    if kind == 1:
        return sign * rng.uniform(1, 10) * 10.0 ** -rng.randint(7, 12)
    if kind == 2:
        return sign * rng.uniform(1, 10) * 10.0 ** rng.randint(15, 299)
    if kind == 3:
        ip = rng.choice((0, 1, 2, 7, 123, 98765))
        return sign * float(f"{ip}.{rng.randrange(10**9):09d}5")
    if kind == 4:
        return rng.choice((0.0, -0.0, 1.0, 0.2, 1e-7, 1.5e-7, 1e21, 1e20, 1e-5, 0.1234567895,
                           0.1278756055, 5e-10, -5e-10, 2.5e-10, 1e16, 1e15, 9.9999999995e-5))
    if kind == 5:
        while True:
            x: float = struct.unpack("<d", rng.randbytes(8))[0]
            if x == x and abs(x) < 1e299:
                return x
    if kind == 6:
        return sign * round(rng.uniform(0, 10**rng.randint(0, 6)), rng.randint(0, 12))
    return sign * rng.random()


def rand_subset(rng: random.Random) -> dict[str, Any]:
    def s() -> str:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))

    return {"pcs_id": s(), "merkle_root": s(), "shard_id": s(),
            "epoch": rng.randint(-(2**53), 2**53), **{k: rand_float(rng) for k in FLOATS}}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_python_profile_is_the_agent_rule(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(4000):
        s = rand_subset(rng)
        assert canonical_bytes(s, "python") == agent_canonical(s), s


def test_fixed9_is_python_with_nine_fixed_decimals() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        s = rand_subset(rng)
        py, f9 = canonical_bytes(s, "python"), canonical_bytes(s, "fixed9")
        # Same values (the same rounding), same strings; only the float notation differs.
        assert json.loads(py) == json.loads(f9)
        floats = re.findall(rb'"(?:D_hat|budget|coh_star|r)":(-?[0-9]+\.[0-9]+),', f9)
        assert len(floats) == 4 and all(len(f.split(b".")[1]) == 9 for f in floats), f9
