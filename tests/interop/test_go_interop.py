"""The ``go`` profile is byte-identical to what Go's encoding/json writes.

A small Go program (``gojson/``, standard library only) does what the upstream backend does:
``math.Round(x*1e9)/1e9`` on the four floats, then ``json.Marshal`` of a struct with the
backend's field names, json tags and declaration order (so keys come in struct order, not
sorted: a map would sort them). Thousands of generated subsets go through it and through
sigops; every line must match byte for byte, so sorting the keys again fails here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sigops.core.canonical import canonical_bytes
from sigops.core.errors import MalformedInput
from sigops.core.pcs import parse_pcs

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden"
FLOATS = ("D_hat", "coh_star", "r", "budget")
DUMMY_SIG = "A" * 43 + "="  # 32 zero bytes: parse_pcs needs a well-formed sig


@pytest.fixture(scope="module")
def gojson(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain ('go') is not on PATH: cannot build tests/interop/gojson")
    out = tmp_path_factory.mktemp("gojson") / "gojson"
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    p = subprocess.run([go, "build", "-o", str(out), "."], cwd=HERE / "gojson", env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"go build failed:\n{p.stderr}"
    return out


def go_canonical(binary: Path, subsets: list[dict[str, Any]]) -> list[bytes]:
    data = b"".join(json.dumps(s).encode() + b"\n" for s in subsets)
    p = subprocess.run([str(binary)], input=data, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.split(b"\n")
    assert out[-1] == b""
    assert len(out) - 1 == len(subsets)
    return out[:-1]


# -- generators ------------------------------------------------------------------------------

PIECES = ["<", ">", "&", "\u2028", "\u2029", "\u00e9", "\u00fc", "\u65e5\u672c", "\U0001f600",
          "\U0001f9ea", "\x00", "\x01", "\x08", "\x0c", "\x1b", "\x1f", "\x7f", "\x80", "\x9f",
          "\u00a0", "\ufeff", "\ufffd", "\uffff", "\U0010ffff", '"', "\\", "/", "\n", "\r", "\t",
          " ", "a", "Z", "0", "-", "_", "|", "<script>", "\\u0041", "'"]


def rand_string(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(0, 16)))
    if rng.random() < 0.1:  # any scalar value outside the surrogate block
        return "".join(chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                       for _ in range(rng.randint(1, 8)))
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 10)))


def rand_float(rng: random.Random) -> float:
    kind = rng.randrange(11)
    sign = rng.choice((1.0, -1.0))
    if kind == 0:  # integral
        return sign * float(rng.randint(0, 10**rng.randint(0, 17)))
    if kind == 1:  # tiny
        return sign * rng.uniform(1, 10) * 10.0 ** -rng.randint(7, 12)
    if kind == 2:  # huge (up to where x*1e9 overflows and Go refuses)
        return sign * rng.uniform(1, 10) * 10.0 ** rng.randint(15, 300)
    if kind == 3:  # exact halves at the tenth decimal: x.xxxxxxxxx5
        ip = rng.choice((0, 0, 1, 2, 3, 7, 12, 123, 98765))
        return sign * float(f"{ip}.{rng.randrange(10**9):09d}5")
    if kind == 4:
        return rng.choice((0.0, -0.0, 1.0, 0.2, 0.5, 1e-6, 1e-7, 1.5e-7, 1e21, 1e20, 1e-5,
                           9.999999999999999e20, 999999999999999.9, 5e-324,
                           2.2250738585072014e-308, 1.7976931348623157e299, 4503599627370496.5,
                           0.1234567895, 0.1278756055, 2.0746415705, 5e-10, 1.5e-9))
    if kind == 5:  # any finite double, subnormals included
        while True:
            x: float = struct.unpack("<d", rng.randbytes(8))[0]
            if x == x and abs(x) != float("inf"):
                return x
    if kind == 6:  # nine decimals exactly, as agents emit them
        return sign * round(rng.uniform(0, 10**rng.randint(0, 6)), 9)
    if kind == 7:  # around the 1e-6 and 1e21 format switches
        return sign * rng.choice((1e-6, 1e21)) * rng.uniform(0.9, 1.1)
    if kind == 8:
        return sign * rng.random()
    if kind == 9:
        return sign * rng.uniform(0, 100)
    return sign * rng.randint(0, 10**9) / 10.0 ** rng.randint(0, 12)


def rand_subset(rng: random.Random) -> dict[str, Any]:
    return {
        "pcs_id": rand_string(rng), "merkle_root": rand_string(rng),
        "shard_id": rand_string(rng),
        "epoch": rng.choice((0, 1, -1, 2**53, -(2**53), rng.randint(-(2**53), 2**53))),
        **{k: rand_float(rng) for k in FLOATS},
    }


def sigops_accepts(subset: dict[str, Any]) -> bool:
    try:
        parse_pcs(dict(subset, sig=DUMMY_SIG))
    except MalformedInput:
        return False
    return True


# -- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_go_profile_matches_go_encoding_json(gojson: Path, seed: int) -> None:
    rng = random.Random(seed)
    subsets = [rand_subset(rng) for _ in range(4000)]
    go_lines = go_canonical(gojson, subsets)
    compared = refused = 0
    for s, want in zip(subsets, go_lines, strict=True):
        if want.startswith(b'{"error"'):
            # Go cannot encode it (x*1e9 overflowed to +Inf): sigops must refuse it too.
            assert not sigops_accepts(s), (s, want)
            refused += 1
            continue
        assert sigops_accepts(s), s
        got = canonical_bytes(s, "go")
        assert got == want, f"\nsubset={s!r}\n  go={want!r}\n  py={got!r}"
        compared += 1
    assert compared > 3500 and refused > 0


def test_go_profile_hand_picked_edges(gojson: Path) -> None:
    base = {"pcs_id": "p", "merkle_root": "m", "shard_id": "s", "epoch": 1,
            "D_hat": 0.5, "coh_star": 0.5, "r": 0.5, "budget": 0.5}
    values = [1.0, 0.2, 1e-7, 1.5e-7, 1e21, 1e20, 1e-5, -0.0, 0.0, 0.1234567895, 0.1278756055,
              -0.1278756055, 2.5e-10, -2.5e-10, 5e-10, 1e-6, 9.99999e-7, 1e16, 123456789.123456789,
              1.7976931348623157e299, 5e-324]
    strings = ["<>&", "\u2028\u2029", "caf\u00e9", "\U0001f600", "\x00\x1f\x7f", '"\\', "\b\f"]
    subsets = [dict(base, D_hat=v, coh_star=-v) for v in values]
    subsets += [dict(base, pcs_id=s, merkle_root=s[::-1], shard_id=s * 2) for s in strings]
    for s, want in zip(subsets, go_canonical(gojson, subsets), strict=True):
        assert canonical_bytes(s, "go") == want, s


def test_golden_go_vectors_are_what_go_writes(gojson: Path) -> None:
    files = sorted(GOLDEN.glob("canonical_go_*.json"))
    assert files, "tests/golden has no canonical_go_* vectors"
    docs = [json.loads(f.read_text()) for f in files]
    got = go_canonical(gojson, [d["input"] for d in docs])
    for f, d, line in zip(files, docs, got, strict=True):
        assert line == d["expected_payload"].encode("utf-8"), f.name
