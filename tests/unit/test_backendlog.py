"""The upstream backend's rejection log lines (both forms), counted with bounded memory."""

from __future__ import annotations

import doctest

import pytest

from sigops.core import backendlog
from sigops.core.backendlog import MAX_IDS, LogSummary, parse_line

PREFIX = "2026/11/30 03:00:00 "


def test_doctests() -> None:
    assert doctest.testmod(backendlog).failed == 0


@pytest.mark.parametrize(("err", "kind"), [
    ("signature is empty", "empty_signature"),
    ("failed to generate signature payload: json: unsupported value: +Inf", "payload_error"),
    ("HMAC verification failed: HMAC signature verification failed", "hmac_mismatch"),
    ("Ed25519 verification failed: Ed25519 signature verification failed", "ed25519_mismatch"),
    ("no verifier configured for tenant t9 and no fallback available", "no_verifier"),
    ("something new upstream", "other"),
])
def test_both_line_forms_and_every_error_kind(err: str, kind: str) -> None:
    single = parse_line(f"{PREFIX}Signature verification failed for p-1: {err}\n")
    multi = parse_line(f"{PREFIX}Signature verification failed for tenant acme, PCS p-1: {err}")
    assert single == (kind, None, "p-1", err)
    assert multi == (kind, "acme", "p-1", err)


def test_a_pcs_id_holding_colons_is_kept_whole() -> None:
    line = f"{PREFIX}Signature verification failed for a: b: c: HMAC verification failed: x"
    assert parse_line(line) == ("hmac_mismatch", None, "a: b: c",
                                "HMAC verification failed: x")


@pytest.mark.parametrize("line", [
    "", "\x00\xff garbage", f"{PREFIX}PCS accepted: p-1", f"{PREFIX}signature verification "
    "failed for x: y",  # another case: not the upstream line
    "Signature verification failed",
])
def test_other_lines_are_ignored(line: str) -> None:
    assert parse_line(line) is None


def test_counts_per_kind_tenant_pod_and_top_ids() -> None:
    s = LogSummary(top=2)
    for _ in range(5):
        s.add(f"{PREFIX}Signature verification failed for hot: signature is empty", "pod-a")
    s.add(f"{PREFIX}Signature verification failed for tenant t2, PCS warm: HMAC x", "pod-b")
    s.add(f"{PREFIX}Signature verification failed for tenant t2, PCS warm: HMAC x", "pod-b")
    s.add(f"{PREFIX}Signature verification failed for cold: Ed25519 y", "pod-a")
    s.add(f"{PREFIX}listening")
    d = s.to_dict()
    assert (d["lines"], d["rejections"]) == (9, 8)
    assert d["by_kind"] == {"empty_signature": 5, "hmac_mismatch": 2, "ed25519_mismatch": 1}
    assert d["by_tenant"] == {"t2": 2} and d["by_pod"] == {"pod-a": 6, "pod-b": 2}
    assert d["top_pcs_ids"] == [{"pcs_id": "hot", "failures": 5},
                                {"pcs_id": "warm", "failures": 2}]


def test_memory_is_bounded_on_huge_and_hostile_logs() -> None:
    s = LogSummary()
    huge = f"{PREFIX}Signature verification failed for " + "x" * 10_000_000 + ": signature is empty"
    assert s.add(huge) is False  # cut at MAX_LINE: no longer a whole rejection line
    for i in range(MAX_IDS + 500):
        s.add(f"{PREFIX}Signature verification failed for id-{i}: signature is empty")
    d = s.to_dict()
    assert len(s.pcs_ids) == MAX_IDS and d["pcs_ids_not_counted"] == 500
    assert d["rejections"] == MAX_IDS + 500
    s.add_all(["\xff" * 100_000] * 10)
    assert s.to_dict()["lines"] == MAX_IDS + 511


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_lines_of_a_chunked_stream_are_the_lines(size: int) -> None:
    from sigops.core.backendlog import lines_of

    text = ("2026/11/30 03:00:00 Signature verification failed for a: signature is empty\n"
            "short\n\nlast without newline")
    assert list(lines_of(_chunked(text.encode(), size))) == text.split("\n")


def test_lines_of_a_huge_binary_log_stay_bounded() -> None:
    from sigops.core.backendlog import lines_of

    huge = b"\xff\x00" * 3_000_000 + b"\n" + b"ok line\n" + b"x" * 100_000
    lines = list(lines_of(_chunked(huge, 65536), max_line=100))
    assert [len(line) <= 100 for line in lines] == [True, True, True]
    assert lines[1] == "ok line" and lines[2] == "x" * 100
    s = LogSummary().add_all(lines_of(_chunked(huge, 65536)))
    assert s.lines == 3 and s.rejections == 0
