"""Diagnosis: one cause per sample (first match wins), the aggregate report, and its cost."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pcskit import (
    ALGS,
    SENT_AT,
    envelope,
    hmac_key,
    key_for,
    later,
    ring,
    signed,
)

from sigops.core.diagnose import CAUSE_NAMES, CAUSES, Diagnoser, Verdict, aggregate
from sigops.core.errors import KeyringError
from sigops.core.keys import Key, KeyRing
from sigops.core.pcs import expected_pcs_id, sign_pcs

CONTRACT_CAUSES = ("malformed", "valid", "clock_skew", "stale_key", "pending_key",
                   "canonicalization_drift", "tampered", "unverifiable")


def keys(alg: str) -> dict[str, Key]:
    """active, retiring, retired, pending and a stranger (not in the ring), all of ``alg``."""
    return {
        "active": key_for(alg, f"{alg}-active", "active"),
        "retiring": key_for(alg, f"{alg}-retiring", "retiring"),
        "retired": key_for(alg, f"{alg}-retired", "retired"),
        "pending": key_for(alg, f"{alg}-pending", "pending"),
        "stranger": key_for(alg, f"{alg}-stranger", "active"),
    }


def ring_of(alg: str, profile: str = "python", **kw: Any) -> KeyRing:
    k = keys(alg)
    return ring([k["active"], k["retiring"], k["retired"], k["pending"]], profile, **kw)


def judge(r: KeyRing, *records: Any, **kw: Any) -> list[Verdict]:
    d = Diagnoser(r, **kw)
    return [d.classify_line(json.dumps(rec), i) for i, rec in enumerate(records)]


def one(r: KeyRing, record: Any, **kw: Any) -> Verdict:
    return judge(r, record, **kw)[0]


def test_cause_table_matches_the_contract() -> None:
    assert CAUSE_NAMES == CONTRACT_CAUSES
    scen = {c: CAUSES[c].scenario for c in CAUSE_NAMES}
    assert scen == {"malformed": "D", "valid": None, "clock_skew": "B", "stale_key": "A",
                    "pending_key": "A", "canonicalization_drift": "C", "tampered": "D",
                    "unverifiable": "E"}


# -- each cause ------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ALGS)
def test_malformed(alg: str) -> None:
    rec = dict(signed(keys(alg)["active"]), epoch="1")
    v = one(ring_of(alg), rec)
    assert v.cause == "malformed" and "epoch" in (v.detail or "")


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("state", ["active", "retiring"])
def test_valid_with_an_accepted_key(alg: str, state: str) -> None:
    k = keys(alg)[state]
    v = one(ring_of(alg), signed(k))
    assert (v.cause, v.kid, v.profile, v.valid) == ("valid", k.kid, "python", True)
    assert v.pcs_id == signed(k)["pcs_id"]


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("profile", ["python", "go", "fixed9"])
def test_valid_under_the_rings_profile(alg: str, profile: str) -> None:
    k = keys(alg)["active"]
    v = one(ring_of(alg, profile), signed(k, profile))
    assert (v.cause, v.profile) == ("valid", profile)


@pytest.mark.parametrize("alg", ALGS)
def test_clock_skew(alg: str) -> None:
    k = keys(alg)["active"]
    rec = envelope(signed(k), received_at=later(600), source="agent-1")
    v = one(ring_of(alg, max_skew_seconds=60), rec)
    assert (v.cause, v.kid, v.skew_seconds) == ("clock_skew", k.kid, 600.0)
    assert v.source == "agent-1" and "60" in (v.detail or "")
    # Agent clock behind the backend's: negative skew, same cause.
    rec = envelope(signed(k), received_at=SENT_AT - timedelta(seconds=90))
    assert one(ring_of(alg, max_skew_seconds=60), rec).cause == "clock_skew"


def test_clock_skew_needs_a_limit_and_both_times() -> None:
    k = keys("hmac-sha256")["active"]
    skewed = envelope(signed(k), received_at=later(600))
    assert one(ring_of("hmac-sha256"), skewed).cause == "valid"  # no limit configured
    assert one(ring_of("hmac-sha256", max_skew_seconds=600), skewed).cause == "valid"
    assert one(ring_of("hmac-sha256"), skewed, max_skew_seconds=599).cause == "clock_skew"
    no_sent = signed(k)
    del no_sent["sent_at"]
    rec = envelope(sign_pcs(no_sent, k), received_at=later(10_000))
    assert one(ring_of("hmac-sha256", max_skew_seconds=1), rec).cause == "valid"


@pytest.mark.parametrize("alg", ALGS)
def test_stale_key(alg: str) -> None:
    k = keys(alg)["retired"]
    v = one(ring_of(alg), signed(k))
    assert (v.cause, v.kid, v.profile) == ("stale_key", k.kid, "python")


def test_stale_key_by_validity_window() -> None:
    k = key_for("hmac-sha256", "expired", "active", not_after=SENT_AT - timedelta(days=1))
    assert one(ring([k, hmac_key("x")]), signed(k)).cause == "stale_key"


@pytest.mark.parametrize("alg", ALGS)
def test_pending_key(alg: str) -> None:
    k = keys(alg)["pending"]
    v = one(ring_of(alg), signed(k))
    assert (v.cause, v.kid) == ("pending_key", k.kid)


@pytest.mark.parametrize("alg", ALGS)
def test_active_key_the_backend_does_not_accept_is_pending(alg: str) -> None:
    ks = keys(alg)
    r = ring([ks["active"], ks["retiring"], ks["pending"]],
             backend_accepts=frozenset({ks["retiring"].kid}))
    v = one(r, signed(ks["active"]))
    assert (v.cause, v.kid) == ("pending_key", ks["active"].kid)
    assert one(r, signed(ks["retiring"])).cause == "valid"


def test_backend_accepts_can_accept_a_pending_key() -> None:
    ks = keys("hmac-sha256")
    r = ring([ks["active"], ks["pending"]],
             backend_accepts=frozenset({ks["active"].kid, ks["pending"].kid}))
    assert one(r, signed(ks["pending"])).cause == "valid"


def test_pending_key_by_validity_window() -> None:
    k = key_for("hmac-sha256", "early", "active", not_before=SENT_AT + timedelta(hours=1))
    assert one(ring([k]), signed(k)).cause == "pending_key"


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize(("ring_profile", "agent_profile"), [
    ("python", "go"), ("python", "fixed9"), ("go", "python"), ("go", "fixed9"),
    ("fixed9", "python"), ("fixed9", "go"),
])
def test_canonicalization_drift_reports_the_profile(alg: str, ring_profile: str,
                                                    agent_profile: str) -> None:
    k = keys(alg)["active"]
    v = one(ring_of(alg, ring_profile), signed(k, agent_profile))
    assert (v.cause, v.kid, v.profile) == ("canonicalization_drift", k.kid, agent_profile)
    assert agent_profile in (v.detail or "") and ring_profile in (v.detail or "")


def test_profiles_that_agree_on_a_record_are_not_drift() -> None:
    # With nine-decimal floats python and fixed9 write the same bytes: no drift to report.
    k = keys("hmac-sha256")["active"]
    rec = signed(k, "fixed9", D_hat=1.234567891, coh_star=0.123456789, r=0.111111111,
                 budget=0.999999999)
    assert one(ring_of("hmac-sha256", "python"), rec).cause == "valid"


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_by_pcs_id_rule(alg: str) -> None:
    rec = signed(keys(alg)["active"])
    rec["shard_id"] = "shard-999"  # signed content changed, pcs_id no longer matches
    v = one(ring_of(alg), rec)
    assert v.cause == "tampered" and "pcs_id" in (v.detail or "")


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_by_same_pcs_id_with_other_content(alg: str) -> None:
    k = keys(alg)["active"]
    first = signed(k)
    forged = dict(first, D_hat=0.9)  # pcs_id rule still holds; the float was changed
    v = judge(ring_of(alg), first, forged)
    assert [x.cause for x in v] == ["valid", "tampered"]
    assert "seen before" in (v[1].detail or "")
    # Without the earlier record, the same forgery is only unverifiable.
    assert one(ring_of(alg), forged).cause == "unverifiable"


@pytest.mark.parametrize("alg", ALGS)
def test_content_of_a_clock_skewed_record_counts_as_seen(alg: str) -> None:
    """A clock_skew record is validly signed: other content under its pcs_id is tampering."""
    k = keys(alg)["active"]
    first = signed(k)
    skewed = envelope(first, received_at=later(3600))
    forged = dict(first, D_hat=0.9)
    v = judge(ring_of(alg, max_skew_seconds=60), skewed, forged)
    assert [x.cause for x in v] == ["clock_skew", "tampered"]


def test_replay_of_the_same_content_is_not_tampering() -> None:
    k = keys("hmac-sha256")["active"]
    rec = signed(k)
    assert [v.cause for v in judge(ring_of("hmac-sha256"), rec, rec, rec)] == ["valid"] * 3


@pytest.mark.parametrize("alg", ALGS)
def test_unverifiable(alg: str) -> None:
    v = one(ring_of(alg), signed(keys(alg)["stranger"]))
    assert (v.cause, v.kid, v.profile) == ("unverifiable", None, None)


def test_hmac_signature_against_an_ed25519_only_ring() -> None:
    v = one(ring_of("ed25519"), signed(keys("hmac-sha256")["active"]))
    assert v.cause == "unverifiable"


# -- first match wins ------------------------------------------------------------------------

def test_malformed_wins_over_everything() -> None:
    k = keys("hmac-sha256")["active"]
    rec = dict(signed(k), sig="@@@")
    assert one(ring_of("hmac-sha256"), rec).cause == "malformed"


def test_valid_wins_over_tampered() -> None:
    # The table puts valid before tampered: a record signed over a broken pcs_id still
    # verifies with an accepted key (the upstream test vector's pcs_id is not a hash either).
    k = keys("hmac-sha256")["active"]
    rec = sign_pcs(dict(signed(k), pcs_id="not-a-hash"), k)
    assert one(ring_of("hmac-sha256"), rec).cause == "valid"


def test_clock_skew_is_checked_only_for_accepted_keys() -> None:
    ks = keys("hmac-sha256")
    r = ring_of("hmac-sha256", max_skew_seconds=1)
    assert one(r, envelope(signed(ks["retired"]), received_at=later(600))).cause == "stale_key"
    assert one(r, envelope(signed(ks["pending"]), received_at=later(600))).cause == "pending_key"


def test_drift_wins_over_tampered() -> None:
    k = keys("hmac-sha256")["active"]
    rec = sign_pcs(dict(signed(k), pcs_id="broken"), k, "go")
    v = one(ring_of("hmac-sha256"), rec)
    assert (v.cause, v.profile) == ("canonicalization_drift", "go")


def test_tampered_wins_over_unverifiable() -> None:
    rec = dict(signed(keys("hmac-sha256")["stranger"]), pcs_id="0" * 64)
    assert one(ring_of("hmac-sha256"), rec).cause == "tampered"


def test_profile_override_on_the_diagnoser() -> None:
    k = keys("hmac-sha256")["active"]
    assert one(ring_of("hmac-sha256"), signed(k, "go"), profile="go").cause == "valid"
    with pytest.raises(KeyringError):
        Diagnoser(ring_of("hmac-sha256"), profile="rust")


def test_envelope_source_and_version_are_carried() -> None:
    k = keys("hmac-sha256")["active"]
    rec = envelope(signed(k, version="0.3"), source="agent-7", agent_version="agent/2.1")
    v = one(ring_of("hmac-sha256"), rec)
    assert (v.source, v.version) == ("agent-7", "agent/2.1")
    assert one(ring_of("hmac-sha256"), signed(k, version="0.3")).version == "0.3"


# -- aggregate report ------------------------------------------------------------------------

def report(verdicts: list[Verdict], **kw: Any) -> dict[str, Any]:
    r = aggregate(verdicts, **kw)
    assert 0.0 <= r["confidence"] <= 1.0
    assert r["by_cause"] and all(n > 0 for n in r["by_cause"].values()) or not verdicts
    assert sum(r["by_cause"].values()) == r["total"] == len(verdicts)
    json.dumps(r)  # the report is plain JSON
    return r


def mixed(alg: str = "hmac-sha256") -> list[Verdict]:
    ks = keys(alg)
    recs: list[Any] = [signed(ks["active"], epoch=i) for i in range(3)]
    recs += [signed(ks["retired"], epoch=10 + i) for i in range(5)]
    recs += [dict(signed(ks["active"]), sig="%%")]
    return judge(ring_of(alg), *recs)


def test_report_counts_only_non_zero_causes() -> None:
    r = report(mixed())
    assert r["by_cause"] == {"valid": 3, "stale_key": 5, "malformed": 1}
    assert list(r["by_cause"]) == [c for c in CAUSE_NAMES if c in r["by_cause"]]
    assert r["dominant_cause"] == "stale_key"
    assert (r["incident_cause"], r["scenario"]) == ("KeyRotationInProgress", "A")
    assert r["skew"] is None


def test_report_of_all_valid_and_of_nothing() -> None:
    k = keys("hmac-sha256")["active"]
    r = report(judge(ring_of("hmac-sha256"), *[signed(k, epoch=i) for i in range(4)]))
    assert r["by_cause"] == {"valid": 4}
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == ("valid", "Unknown", None)
    assert r["confidence"] == 0.0
    r = report([])
    assert r["total"] == 0 and r["by_cause"] == {} and r["dominant_cause"] is None


@pytest.mark.parametrize(("cause", "incident", "scenario"), [
    ("clock_skew", "ClockSkew", "B"),
    ("stale_key", "KeyRotationInProgress", "A"),
    ("pending_key", "KeyRotationInProgress", "A"),
    ("canonicalization_drift", "CanonicalizationDrift", "C"),
    ("tampered", "MaliciousActivity", "D"),
    ("malformed", "MaliciousActivity", "D"),
    ("unverifiable", "ConfigurationError", "E"),
])
def test_incident_cause_per_dominant_cause(cause: str, incident: str, scenario: str) -> None:
    ks = keys("hmac-sha256")
    make = {
        "clock_skew": lambda i: envelope(signed(ks["active"], epoch=i), received_at=later(900)),
        "stale_key": lambda i: signed(ks["retired"], epoch=i),
        "pending_key": lambda i: signed(ks["pending"], epoch=i),
        "canonicalization_drift": lambda i: signed(ks["active"], "go", epoch=i),
        "tampered": lambda i: dict(signed(ks["stranger"], epoch=i), pcs_id=f"{i:064x}"),
        "malformed": lambda i: {"pcs_id": i},
        "unverifiable": lambda i: signed(ks["stranger"], epoch=i),
    }[cause]
    verdicts = judge(ring_of("hmac-sha256", max_skew_seconds=60), *[make(i) for i in range(9)])
    r = report(verdicts)
    assert r["by_cause"] == {cause: 9}
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == (cause, incident, scenario)
    assert r["confidence"] == pytest.approx(0.9)


def test_unverifiable_next_to_valid_records_points_at_forgery() -> None:
    ks = keys("hmac-sha256")
    recs = [signed(ks["active"], epoch=i) for i in range(3)]
    recs += [signed(ks["stranger"], epoch=10 + i) for i in range(6)]
    verdicts = judge(ring_of("hmac-sha256"), *recs)
    r = report(verdicts)
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == (
        "unverifiable", "MaliciousActivity", "D")
    r = report(verdicts, recent_config_change=True)
    assert (r["incident_cause"], r["scenario"]) == ("ConfigurationError", "E")


def test_drift_that_follows_the_version_field_is_a_library_version_mismatch() -> None:
    k = keys("hmac-sha256")["active"]
    recs = [signed(k, epoch=i, version="0.1") for i in range(2)]
    recs += [signed(k, "go", epoch=10 + i, version="0.2") for i in range(6)]
    r = report(judge(ring_of("hmac-sha256"), *recs))
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == (
        "canonicalization_drift", "LibraryVersionMismatch", "C")
    assert r["drift"] == {"profiles": {"go": 6}, "versions": ["0.2"]}


def test_the_real_stacks_builtin_drift_names_which_side_signs_which_form() -> None:
    """Upstream's Python agents sign the python form; its Go backend checks the go form."""
    k = keys("hmac-sha256")["active"]
    recs = [signed(k, epoch=i) for i in range(5)]
    verdicts = judge(ring_of("hmac-sha256", profile="go"), *recs)
    assert {(v.cause, v.profile) for v in verdicts} == {("canonicalization_drift", "python")}
    r = report(verdicts, verifier_profile="go")
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == (
        "canonicalization_drift", "CanonicalizationDrift", "C")
    assert r["drift"]["profiles"] == {"python": 5}
    assert r["drift"]["verifier_profile"] == "go"
    summary = r["drift"]["summary"]
    assert summary.startswith("5 records are signed in the python form (upstream Python agent")
    assert summary.endswith("the verifier checks the go form (upstream Go backend: "
                            "math.Round(x*1e9)/1e9, encoding/json of its struct (keys in "
                            "declaration order))")
    # Without the verifier's profile the report stays as the contract has it.
    assert set(report(verdicts)["drift"]) == {"profiles", "versions"}


def test_drift_that_follows_the_agent_version_is_a_library_version_mismatch() -> None:
    k = keys("hmac-sha256")["active"]
    recs = [envelope(signed(k, epoch=i), agent_version="agent/1") for i in range(2)]
    recs += [envelope(signed(k, "fixed9", epoch=10 + i), agent_version="agent/2")
             for i in range(4)]
    r = report(judge(ring_of("hmac-sha256"), *recs))
    assert r["incident_cause"] == "LibraryVersionMismatch"
    assert r["drift"]["versions"] == ["agent/2"]


def test_drift_across_the_same_version_is_plain_drift() -> None:
    k = keys("hmac-sha256")["active"]
    recs = [signed(k, epoch=i, version="0.1") for i in range(2)]
    recs += [signed(k, "go", epoch=10 + i, version="0.1") for i in range(6)]
    r = report(judge(ring_of("hmac-sha256"), *recs))
    assert r["incident_cause"] == "CanonicalizationDrift"
    # With nothing valid to compare against, the version explains nothing either.
    r = report(judge(ring_of("hmac-sha256"), *recs[2:]))
    assert r["incident_cause"] == "CanonicalizationDrift"


def test_confidence_grows_with_evidence_and_falls_with_a_mix() -> None:
    ks = keys("hmac-sha256")
    r = ring_of("hmac-sha256")
    few = report(judge(r, *[signed(ks["retired"], epoch=i) for i in range(2)]))["confidence"]
    many = report(judge(r, *[signed(ks["retired"], epoch=i) for i in range(50)]))["confidence"]
    recs = [signed(ks["retired"], epoch=i) for i in range(25)]
    recs += [signed(ks["stranger"], epoch=100 + i) for i in range(25)]
    split = report(judge(r, *recs))["confidence"]
    assert 0 < few < many <= 1
    assert split < many


def skew_verdicts(offsets: dict[str, list[float]]) -> list[Verdict]:
    k = keys("hmac-sha256")["active"]
    recs = [envelope(signed(k, epoch=i * 100 + j), received_at=later(off), source=src)
            for i, (src, offs) in enumerate(offsets.items()) for j, off in enumerate(offs)]
    return judge(ring_of("hmac-sha256", max_skew_seconds=60), *recs)


def test_skew_report_single_source() -> None:
    r = report(skew_verdicts({"agent-1": [600, 610, 590], "agent-2": [1, 2], "agent-3": [0]}),
               max_skew_seconds=60)
    s = r["skew"]
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == (
        "clock_skew", "ClockSkew", "B")
    assert s["scope"] == "single_source" and s["suspect"] == "agent_clock"
    assert s["offset_seconds"] == 600.0 and s["max_abs_seconds"] == 610.0
    assert (s["affected_sources"], s["total_sources"]) == (1, 3)
    assert s["sources"] == {"agent-1": 600.0}
    assert s["limit_seconds"] == 60


def test_skew_report_all_sources_points_at_the_backend_clock() -> None:
    r = report(skew_verdicts({"agent-1": [-300, -300], "agent-2": [-301], "agent-3": [-299]}),
               max_skew_seconds=60)
    s = r["skew"]
    assert s["scope"] == "all_sources" and s["suspect"] == "backend_clock"
    assert s["offset_seconds"] == -300.0
    assert (s["affected_sources"], s["total_sources"]) == (3, 3)


def test_top_failing_sources() -> None:
    ks = keys("hmac-sha256")
    recs = [envelope(signed(ks["stranger"], epoch=i), source="bad") for i in range(3)]
    recs += [envelope(signed(ks["active"], epoch=10), source="good")]
    r = report(judge(ring_of("hmac-sha256"), *recs))
    assert r["top_failing_sources"] == [{"source": "bad", "failures": 3}]


# -- cost ------------------------------------------------------------------------------------

def big_ring(alg: str, n: int = 64) -> tuple[KeyRing, list[Key]]:
    ks = [key_for(alg, f"k{i:02d}", "active", **({"seed_byte": i} if alg == "ed25519" else {}))
          for i in range(n)]
    return ring(ks), ks


@pytest.mark.parametrize("alg", ALGS)
def test_diagnosis_stays_cheap_with_a_64_key_ring(alg: str) -> None:
    r, ks = big_ring(alg)
    signer = ks[-1]  # the last key of the ring: the worst place for a naive scan
    n = 100 if alg == "ed25519" else 300
    recs = [signed(signer, epoch=i) for i in range(n)]
    d = Diagnoser(r)
    verdicts = [d.classify_line(json.dumps(rec), i) for i, rec in enumerate(recs)]
    assert all(v.cause == "valid" and v.kid == signer.kid for v in verdicts)
    # One scan to find the key, then one try per sample: far from 64 (or 192) per sample.
    assert d.tried <= len(ks) + n


def test_replayed_records_cost_nothing_more() -> None:
    r, ks = big_ring("hmac-sha256")
    rec = json.dumps(signed(hmac_key("nobody")))
    d = Diagnoser(r)
    d.classify_line(rec, 0)
    first = d.tried
    assert first == 3 * len(ks)  # every (key, profile) pair, once
    for i in range(1, 200):
        assert d.classify_line(rec, i).cause == "unverifiable"
    assert d.tried == first


def test_drift_flood_does_not_try_every_combination() -> None:
    r, ks = big_ring("hmac-sha256")
    n = 100
    d = Diagnoser(r)
    verdicts = [d.classify_line(json.dumps(signed(ks[-1], "go", epoch=i)), i) for i in range(n)]
    assert all(v.cause == "canonicalization_drift" for v in verdicts)
    assert d.tried < 3 * len(ks) * n / 2


def test_pcs_id_helper() -> None:
    import hashlib

    assert expected_pcs_id("m", 3, "s") == hashlib.sha256(b"m|3|s").hexdigest()
