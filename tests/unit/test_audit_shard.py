"""The audit of one shard (issue 27): its answer is a single-process ``sigops verify`` of the
same WAL files, record for record, with the findings a leaked-key drill asks for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pcskit import ed_key, hmac_key, signed

from sigops import cli
from sigops.core import audit
from sigops.core.audit import AuditQuery, ShardInput, audit_shard, history_ring, merge_partials
from sigops.core.errors import KeyringError
from sigops.core.keys import KeyRing
from sigops.core.timeparse import format_time

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 19, 12, 0, 0, tzinfo=UTC)
REVOKED_AT = T0 + timedelta(minutes=30)
GOOD = hmac_key("good-2025")
OLD = hmac_key("old-2024", state="retired", not_after=T0 + timedelta(minutes=5))
LEAKED = ed_key("leaked-ed", state="retired", not_after=REVOKED_AT)
EARLY = hmac_key("next-2025", state="pending", not_before=T0 + timedelta(hours=2))
STRANGER = hmac_key("stranger")
RING = KeyRing((GOOD, OLD, LEAKED, EARLY), "python", max_skew_seconds=30)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def entry(when: datetime, body: bytes) -> bytes:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    return f"{stamp}|{len(body)}|".encode() + body + b"\n"


def rec(key: Any, epoch: int, when: datetime, profile: str = "python", shard: str = "s-1",
        sent: datetime | None = None, **after: Any) -> bytes:
    """A signed record; ``after``: fields changed once it is signed."""
    pcs = signed(key, profile, epoch=epoch, shard=shard, sent_at=format_time(sent or when))
    pcs.update(after)
    return entry(when, json.dumps(pcs, indent=1).encode())


def pod_wal(base: int) -> tuple[bytes, dict[str, set[int]]]:
    """A backend pod's WAL: good traffic with every kind of bad record mixed in; returns
    the bytes and, per kind, the epochs injected."""
    out, kinds = [], {"leaked_after": set(), "leaked_before": set()}
    for i in range(40):
        e = base + i
        out.append(rec(GOOD, e, at(i), shard=f"s-{i % 3}"))
        if i % 10 == 3:
            out.append(rec(LEAKED, e + 1000, at(i + 20)))  # some before the revocation
            kinds["leaked_after" if at(i + 20) > REVOKED_AT else "leaked_before"].add(e + 1000)
    out.append(rec(OLD, base + 2000, at(1)))                 # valid: inside its window
    out.append(rec(OLD, base + 2001, at(50)))                # stale_key
    out.append(rec(EARLY, base + 2002, at(10)))              # pending_key
    out.append(rec(GOOD, base + 2003, at(11), sent=at(0)))   # clock_skew
    out.append(rec(GOOD, base + 2004, at(12), profile="go"))  # canonicalization_drift
    out.append(rec(STRANGER, base + 2005, at(13)))           # unverifiable
    out.append(rec(GOOD, base + 2006, at(14), merkle_root="cd" * 32))  # tampered
    out.append(entry(at(15), b'{"pcs_id": '))                # malformed body
    out.append(b"torn entry\n")                              # damaged entry
    return b"".join(out), kinds


@pytest.fixture()
def wals(tmp_path: Path) -> list[Path]:
    paths = []
    for n in range(2):
        p = tmp_path / f"pod-{n}" / "inbox-20250119.wal"
        p.parent.mkdir()
        p.write_bytes(pod_wal(10_000 * (n + 1))[0])
        paths.append(p)
    return paths


def verify_lines(capsys: pytest.CaptureFixture[str], ring: KeyRing, files: list[Path],
                 tmp_path: Path) -> list[dict[str, Any]]:
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(ring.to_dict()))
    cli.main(["verify", "--keyring", str(kr), *map(str, files)])
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def inputs(files: list[Path]) -> list[ShardInput]:
    return [ShardInput(str(p), p.read_bytes()) for p in files]


@pytest.mark.parametrize("accelerate", [True, False])
def test_totals_equal_a_single_process_verify_record_for_record(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, wals: list[Path],
        accelerate: bool) -> None:
    ring = history_ring(RING)
    lines = verify_lines(capsys, ring, wals, tmp_path)
    got = audit_shard(ring, inputs(wals), AuditQuery(all=True, accepted_invalid=True,
                                                     first_n=10_000), accelerate=accelerate)
    assert got["total"] == len(lines)
    assert got["valid"] == sum(x["valid"] for x in lines)
    by_verdict: dict[str, int] = {}
    by_kid: dict[str, int] = {}
    for x in lines:
        cause = "valid" if x["valid"] else x["reason"]
        by_verdict[cause] = by_verdict.get(cause, 0) + 1
        by_kid[x["kid"] or "-"] = by_kid.get(x["kid"] or "-", 0) + 1
    assert got["by_verdict"] == by_verdict
    assert got["by_kid"] == by_kid
    # Every invalid record, in order, is the one verify names, with its kid and verdict.
    assert [(f["index"], f["pcs_id"], f["verdict"], f["kid"])
            for f in got["findings"]["invalid"]["first"]] == \
        [(x["index"], x["pcs_id"], x["reason"], x["kid"]) for x in lines if not x["valid"]]
    assert set(got["by_verdict"]) == {"valid", "stale_key", "pending_key", "clock_skew",
                                      "canonicalization_drift", "unverifiable", "tampered",
                                      "malformed"}


def test_a_leaked_key_drill_finds_exactly_the_records_signed_after_its_revocation(
        tmp_path: Path) -> None:
    data, kinds = pod_wal(10_000)
    q = AuditQuery(fingerprints=frozenset({LEAKED.fingerprint}), accepted_invalid=True,
                   first_n=100)
    got = audit_shard(history_ring(RING), [ShardInput("pod-0", data, tenant="acme")], q)
    searched = got["findings"]["searched_key"]["first"]
    assert {f["verdict"] for f in searched} == {"valid", "stale_key"}
    after = {f["pcs_id"] for f in searched if f["verdict"] == "stale_key"}
    assert len(after) == len(kinds["leaked_after"]) > 0
    assert len(searched) == len(kinds["leaked_after"]) + len(kinds["leaked_before"])
    accepted_invalid = got["findings"]["accepted_invalid"]
    # The leaked key's late records, the old key's late one, the early key, the skewed one.
    assert accepted_invalid["count"] == len(kinds["leaked_after"]) + 3
    assert after <= {f["pcs_id"] for f in accepted_invalid["first"]}
    assert "invalid" not in got["findings"]
    assert got["by_tenant"] == {"acme": got["total"]}
    assert got["by_shard"]["s-0"] > 0 and got["by_profile"]["go"] == 1


def test_searching_by_key_id_reports_ids_and_fingerprints_it_does_not_know() -> None:
    data, _ = pod_wal(10_000)
    q = AuditQuery(key_ids=frozenset({"leaked-ed", "nobody"}),
                   fingerprints=frozenset({"000000000000"}))
    got = audit_shard(history_ring(RING), [ShardInput("w", data)], q)
    assert got["findings"]["searched_key"]["count"] > 0
    assert got["unknown_key_ids"] == ["nobody"]
    assert got["unknown_fingerprints"] == ["000000000000"]


def test_a_history_judges_keys_by_their_windows_not_by_todays_state() -> None:
    ring = history_ring(RING)
    assert ring.backend_accepts == {"good-2025", "old-2024", "leaked-ed", "next-2025"}
    no_window = KeyRing((GOOD, hmac_key("gone", state="retired")))
    assert history_ring(no_window).backend_accepts == {"good-2025"}


def test_an_audit_that_looks_for_nothing_or_in_an_empty_window_is_refused() -> None:
    with pytest.raises(KeyringError, match="look for something"):
        AuditQuery()
    with pytest.raises(KeyringError, match="window is empty"):
        AuditQuery(all=True, since=at(10), until=at(10))


def test_the_window_keeps_records_received_in_it_and_the_digest_covers_the_bytes() -> None:
    data, _ = pod_wal(10_000)
    whole = audit_shard(RING, [ShardInput("w", data)], AuditQuery(all=True))
    part = audit_shard(RING, [ShardInput("w", data)],
                       AuditQuery(all=True, since=at(0), until=at(10)))
    # 10 good records in [0, 10) min, the old key's at 1 min, the damaged entry (no time).
    assert part["total"] == 12 and whole["total"] > part["total"]
    assert part["inputs"] == whole["inputs"]  # what was read, not what was kept
    again = audit_shard(RING, [ShardInput("w", data)], AuditQuery(all=True))
    assert again == whole  # a rerun gives the same answer
    flipped = data[:-2] + b"X\n"
    other = audit_shard(RING, [ShardInput("w", flipped)], AuditQuery(all=True))
    assert other["digest"] != whole["digest"]


def test_counts_keep_a_bounded_number_of_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_KEYS", 2)
    data, _ = pod_wal(10_000)
    got = audit_shard(RING, [ShardInput("w", data)], AuditQuery(all=True, first_n=3))
    assert len(got["by_shard"]) == 3 and audit.OTHER in got["by_shard"]
    assert sum(got["by_shard"].values()) == got["total"]
    assert len(got["findings"]["invalid"]["first"]) == 3


def test_partials_merge_into_the_totals_of_one_run(wals: list[Path]) -> None:
    ring = history_ring(RING)
    q = AuditQuery(accepted_invalid=True, key_ids=frozenset({"leaked-ed"}), first_n=5)
    one = audit_shard(ring, inputs(wals), q)
    parts = [audit_shard(ring, inputs([w]), q) for w in wals]
    merged = merge_partials(parts, first_n=5)
    for k in ("total", "valid", "invalid", "by_verdict", "by_kid", "by_profile", "by_shard"):
        assert merged[k] == one[k], k
    for name, f in one["findings"].items():
        assert merged["findings"][name]["count"] == f["count"]
    assert merged["digests"] == [p["digest"] for p in parts]

    for name, f in one["findings"].items():
        assert merged["findings"][name]["by_hour"] == f["by_hour"], name


def test_each_finding_record_carries_its_wal_time_and_counts_by_hour_add_up() -> None:
    data, kinds = pod_wal(10_000)
    q = AuditQuery(accepted_invalid=True, key_ids=frozenset({"leaked-ed"}), all=True,
                   first_n=1000)
    got = audit_shard(history_ring(RING), [ShardInput("w", data)], q)
    stamps = {e["index"]: e.get("received") for e in got["findings"]["invalid"]["first"]}
    for name, f in got["findings"].items():
        assert sum(f["by_hour"].values()) == f["count"], name
        for e in f["first"]:
            assert e["received"] == stamps.get(e["index"], e["received"])
    searched = got["findings"]["searched_key"]
    # The leaked key's records were received from 12:20 to 12:53: hours 12.
    assert searched["by_hour"] == {"2025-01-19T12": searched["count"]}
    assert all(e["received"].startswith("2025-01-19T12:") and e["received"].endswith("123Z")
               for e in searched["first"])
    # A damaged entry has no time: its hour is "-".
    assert got["findings"]["invalid"]["by_hour"][audit.NONE] == 1
    assert audit._hour("2026-11-30T12:30:00+02:00") == "2026-11-30T10"
    assert audit._hour("2026-11-30T23:59:59.999999999Z") == "2026-11-30T23"


def test_counts_by_hour_stay_bounded_in_a_shard_and_in_the_merge(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_HOURS", 1)
    late = rec(GOOD, 1, at(90), merkle_root="cd" * 32)  # tampered, at 13:30
    data = pod_wal(10_000)[0] + late
    got = audit_shard(RING, [ShardInput("w", data)], AuditQuery(all=True))
    hours = got["findings"]["invalid"]["by_hour"]
    assert len(hours) == 2 and audit.OTHER in hours
    merged = merge_partials([got, got])["findings"]["invalid"]["by_hour"]
    assert len(merged) == 2 and sum(merged.values()) == 2 * got["findings"]["invalid"]["count"]


# -- sigops audit shard ----------------------------------------------------------------------

AUDIT_KEY = ed_key("audit-abc", seed_byte=77)


def test_the_cli_audits_its_own_index_and_signs_the_result(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, wals: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sigops.audit.partial import verify_partial
    from sigops.core.errors import SignalRejected

    ring = history_ring(RING)
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(RING.to_dict()))  # the verb judges it as a history itself
    key = tmp_path / "audit-key.json"
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    shards = tmp_path / "shards.json"
    shards.write_text(json.dumps([[str(wals[0])], [str(wals[1].parent)]]))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    rc = cli.main(["audit", "shard", "--keyring", str(kr), "--key", str(key), "--shards",
                   str(shards), "--index", "1", "--fingerprint", LEAKED.fingerprint,
                   "--audit", "fleet/leak-drill", "--target", "backend"])
    out = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out.err
    signal = json.loads(out.out)
    public = {AUDIT_KEY.kid: AUDIT_KEY.public or b""}
    result = verify_partial(signal, public, "fleet/leak-drill", 1)
    alone = audit_shard(ring, inputs([wals[1]]), AuditQuery(
        fingerprints=frozenset({LEAKED.fingerprint})))
    assert result["total"] == alone["total"] and result["by_verdict"] == alone["by_verdict"]
    assert result["findings"]["searched_key"]["count"] == 4
    assert [i["name"] for i in result["inputs"]] == [str(wals[1])]
    with pytest.raises(SignalRejected, match="foreign_record"):
        verify_partial(signal, public, "fleet/leak-drill", 0)
    signal["payload"]["result"]["total"] += 1
    with pytest.raises(SignalRejected, match="bad_signature"):
        verify_partial(signal, public, "fleet/leak-drill", 1)
    for k in RING.keys:  # no key material in what it prints
        assert k.secret is None or k.secret.decode() not in out.out + out.err


def test_the_cli_refuses_an_audit_that_looks_for_nothing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, wals: list[Path]) -> None:
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(RING.to_dict()))
    key = tmp_path / "audit-key.json"
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    rc = cli.main(["audit", "shard", "--keyring", str(kr), "--key", str(key), str(wals[0])])
    assert rc == 2 and "look for something" in capsys.readouterr().err
    out = tmp_path / "partial.json"
    rc = cli.main(["audit", "shard", "--keyring", str(kr), "--key", str(key), "--all",
                   "--out", str(out), str(wals[0])])
    assert rc == 1 and json.loads(out.read_text())["payload"]["result"]["total"] > 0


# -- the managed ring's retired_at / revoked_at -------------------------------------------


def test_revoked_at_and_retired_at_end_a_keys_window_as_the_managed_ring_records_them(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from sigops.core.audit import closed_times
    from sigops.core.keys import keyring_from_dict

    revoked = ed_key("leaked-ed", state="revoked")
    retired = hmac_key("old-2024", state="retired")
    doc = {"keys": [GOOD.to_entry(),
                    {**revoked.to_entry(), "revoked_at": format_time(REVOKED_AT),
                     "revoked_by": "alice"},
                    {**retired.to_entry(), "retired_at": format_time(at(5))}],
           "profile": "python", "backend_accepts": ["good-2025"], "primary": "good-2025"}
    data = b"".join([rec(revoked, 1, at(10)), rec(revoked, 2, at(40)),
                     rec(retired, 3, at(1)), rec(retired, 4, at(50)), rec(GOOD, 5, at(2))])
    ring = history_ring(keyring_from_dict(doc), closed_times(doc))
    got = audit_shard(ring, [ShardInput("w", data)],
                      AuditQuery(key_ids=frozenset({"leaked-ed"}), accepted_invalid=True))
    assert [(f["pcs_id"] is not None, f["verdict"]) for f in
            got["findings"]["searched_key"]["first"]] == [(True, "valid"), (True, "stale_key")]
    assert got["by_verdict"] == {"valid": 3, "stale_key": 2}
    assert got["findings"]["accepted_invalid"]["count"] == 2
    # The verb reads the same document (a managed ring's keyring.json) the same way.
    kr, key, wal = tmp_path / "keyring.json", tmp_path / "k.json", tmp_path / "inbox-1.wal"
    kr.write_text(json.dumps(doc))
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    wal.write_bytes(data)
    assert cli.main(["audit", "shard", "--keyring", str(kr), "--key", str(key), "--all",
                     str(wal)]) == 1
    result = json.loads(capsys.readouterr().out)["payload"]["result"]
    assert result["by_verdict"] == got["by_verdict"]
    # A key revoked with no recorded time is never valid.
    bare = {**doc, "keys": [GOOD.to_entry(), revoked.to_entry()]}
    never = audit_shard(history_ring(keyring_from_dict(bare), closed_times(bare)),
                        [ShardInput("w", data[:data.index(b"\n2025") + 1])],
                        AuditQuery(all=True))
    assert never["by_verdict"] == {"stale_key": 1}


def test_both_routes_give_the_same_answer_times_of_findings_included(wals: list[Path]) -> None:
    """The compiled batch route and the pure-Python one agree on everything an audit says,
    each finding record's ``received`` (read back at the record's offset) included."""
    q = AuditQuery(all=True, accepted_invalid=True, first_n=10_000)
    fast = audit_shard(history_ring(RING), inputs(wals), q, accelerate=True)
    pure = audit_shard(history_ring(RING), inputs(wals), q, accelerate=False)
    assert fast == pure
    times = [f["received"] for f in fast["findings"]["invalid"]["first"]]
    assert any(t is None for t in times) and sum(t is not None for t in times) > 10


def many_values_wal(base: int) -> bytes:
    """Records with many distinct shards, kids, profiles and verdicts, first seen in an
    order that is not sorted (a shard named like the overflow bucket among them)."""
    out = []
    shards = ["s-7", "(other)", "s-2", "s-9", "s-0", "s-5", "s-1", "s-8", "s-3", "s-6", "s-4"]
    for i in range(60):
        shard = shards[(i * 7) % len(shards)] if i > 3 else shards[i]
        key = (GOOD, STRANGER, OLD, GOOD, EARLY, LEAKED)[i % 6]
        profile = "go" if i % 11 == 5 else "python"
        out.append(rec(key, base + i, at(i % 45), profile=profile, shard=f"{shard}-{i // 25}"
                       if i % 13 == 7 else shard))
        if i % 17 == 4:
            out.append(rec(GOOD, base + i, at(i), shard=shard))  # replayed or tampered
    return b"".join(out)


# What the audit counted, value by value and in this order, when each of the five
# dimensions was one bounded counter fed one record at a time (MAX_KEYS = 3).
BOUNDED = {
    "by_verdict": [("valid", 104), ("unverifiable", 33), ("pending_key", 29), ("(other)", 42)],
    "by_kid": [("good-2025", 78), ("-", 35), ("old-2024", 32), ("(other)", 63)],
    "by_profile": [("python", 160), ("-", 35), ("go", 13)],
    "by_shard": [("s-7", 20), ("(other)", 164), ("s-2", 24)],
    "by_tenant": [("t-a", 74), ("t-b", 64), ("-", 6), ("(other)", 64)],
}


@pytest.mark.parametrize("tally", [None, 1, 5])
@pytest.mark.parametrize("accelerate", [True, False])
def test_counts_past_max_keys_go_to_other_as_one_record_at_a_time(
        monkeypatch: pytest.MonkeyPatch, accelerate: bool, tally: int | None) -> None:
    monkeypatch.setattr(audit, "MAX_KEYS", 3)
    if tally is not None:  # the tally of combinations is added in often, or rarely
        monkeypatch.setattr(audit, "TALLY_BOUND", tally)
    ins = [ShardInput("z", b"", "t-z"),  # no records: no tenant counted
           ShardInput("a", many_values_wal(100), "t-a"),
           ShardInput("b", many_values_wal(100), "t-b"),
           ShardInput("c", many_values_wal(500)[:3000]),
           ShardInput("d", many_values_wal(700), "t-d"),
           ShardInput("e", many_values_wal(900)[:5000], "t-a")]
    got = audit_shard(history_ring(RING), ins, AuditQuery(all=True, first_n=0),
                      accelerate=accelerate)
    assert {name: list(got[name].items()) for name in BOUNDED} == BOUNDED
    for name in BOUNDED:
        assert sum(got[name].values()) == got["total"]


def test_the_merge_keeps_the_window_read_when_the_partials_agree_else_lists_them() -> None:
    data = pod_wal(10_000)[0]
    ring = history_ring(RING)

    def part(since: datetime, until: datetime) -> dict[str, Any]:
        return audit_shard(ring, [ShardInput("w", data)],
                           AuditQuery(all=True, since=since, until=until))

    a, b = part(T0, at(60)), part(T0, at(90))
    assert merge_partials([a, a])["window"] == a["window"] == {
        "since": "2025-01-19T12:00:00Z", "until": "2025-01-19T13:00:00Z"}
    assert merge_partials([a, b, a])["window"] == [a["window"], b["window"], a["window"]]
    assert "window" not in merge_partials([])
