"""Cross-check against the upstream FLK golden vectors, read in place (never copied here).

They live next to the repository, in ``../shared/interop/kakeya-golden/``: two full PCS files
signed with HMAC key ``testsecret`` and one signature subset with its expected canonical bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from sigops import cli
from sigops.core.canonical import canonical_bytes
from sigops.core.diagnose import Diagnoser
from sigops.core.keys import HMAC, Key, KeyRing
from sigops.core.pcs import expected_pcs_id, parse_pcs

UPSTREAM = Path(__file__).resolve().parents[2].parent / "shared" / "interop" / "kakeya-golden"
CASES = ("pcs_tiny_case_1.json", "pcs_tiny_case_2.json")
SECRET = "testsecret"

pytestmark = pytest.mark.skipif(
    not UPSTREAM.is_dir(), reason=f"upstream golden vectors not found at {UPSTREAM}")


def raw(name: str) -> bytes:
    return (UPSTREAM / name).read_bytes()


def doc(name: str) -> Any:
    return json.loads(raw(name))


def diagnoser(profile: str) -> Diagnoser:
    return Diagnoser(KeyRing((Key("upstream", HMAC, secret=SECRET.encode()),), profile))


@pytest.mark.parametrize("name", CASES)
def test_pcs_cases_are_valid_under_python(name: str) -> None:
    v = diagnoser("python").classify_line(raw(name), 0)
    assert (v.cause, v.kid, v.profile) == ("valid", "upstream", "python")


@pytest.mark.parametrize("name", CASES)
def test_signature_is_hmac_over_the_python_canonical_bytes(name: str) -> None:
    pcs = parse_pcs(doc(name))
    mac = hmac.digest(SECRET.encode(), canonical_bytes(pcs.subset, "python"), "sha256")
    assert mac == pcs.sig


def test_case_2_is_drift_under_fixed9_and_go() -> None:
    for ring_profile in ("fixed9", "go"):
        v = diagnoser(ring_profile).classify_line(raw("pcs_tiny_case_2.json"), 0)
        assert (v.cause, v.profile) == ("canonicalization_drift", "python"), ring_profile


def test_case_2_canonical_bytes_differ_where_the_readme_says() -> None:
    subset = parse_pcs(doc("pcs_tiny_case_2.json")).subset
    assert b'"D_hat":1.0,' in canonical_bytes(subset, "python")
    assert b'"D_hat":1.000000000,' in canonical_bytes(subset, "fixed9")
    assert b'"coh_star":0.200000000,' in canonical_bytes(subset, "fixed9")
    assert b'"D_hat":1,' in canonical_bytes(subset, "go")


def test_case_1_is_the_same_under_the_sorted_profiles_and_refused_under_go() -> None:
    """The real Go backend answered 401 to this PCS: its keys come in struct order, so even a
    record whose values read the same in every profile is python form, not go form."""
    subset = parse_pcs(doc("pcs_tiny_case_1.json")).subset
    assert canonical_bytes(subset, "python") == canonical_bytes(subset, "fixed9")
    assert canonical_bytes(subset, "go") != canonical_bytes(subset, "python")
    assert sorted(json.loads(canonical_bytes(subset, "go")).items()) == sorted(
        json.loads(canonical_bytes(subset, "python")).items())
    for p in ("python", "fixed9"):
        assert diagnoser(p).classify_line(raw("pcs_tiny_case_1.json"), 0).cause == "valid"
    v = diagnoser("go").classify_line(raw("pcs_tiny_case_1.json"), 0)
    assert (v.cause, v.profile) == ("canonicalization_drift", "python")


def test_signature_test_case_expected_payload_is_fixed9() -> None:
    vec = doc("signature_test_case_1.json")
    want = vec["expected_payload"].encode("utf-8")
    assert canonical_bytes(vec["input"], "fixed9") == want
    assert canonical_bytes(vec["input"], "python") != want
    assert canonical_bytes(vec["input"], "go") != want
    assert vec["hmac_key"] == SECRET


@pytest.mark.parametrize("name", CASES)
def test_pcs_id_rule_holds(name: str) -> None:
    d = doc(name)
    direct = hashlib.sha256(f"{d['merkle_root']}|{d['epoch']}|{d['shard_id']}".encode("ascii"))
    assert d["pcs_id"] == direct.hexdigest()
    assert d["pcs_id"] == expected_pcs_id(d["merkle_root"], d["epoch"], d["shard_id"])
    assert parse_pcs(d).pcs_id_ok()


def test_golden_command_on_the_upstream_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["golden", str(UPSTREAM)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0 and report["total"] == 3
    # Requiring fixed9 everywhere singles out case 2, the drifting vector.
    assert cli.main(["golden", "--profile", "fixed9", str(UPSTREAM)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [v["file"] for v in report["vectors"] if not v["ok"]] == ["pcs_tiny_case_2.json"]
