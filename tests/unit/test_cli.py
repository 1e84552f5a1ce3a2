"""The ``sigops`` command line: JSON on stdout, exit codes 0/1/2, never a traceback."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pcskit import SENT_AT, ed_key, envelope, hmac_key, later, signed

from sigops import cli
from sigops.core.keys import key_from_entry
from sigops.core.pcs import sign_pcs
from sigops.core.signals import build_payload, sign_signal

VERIFY_FIELDS = {"index", "pcs_id", "valid", "kid", "profile", "reason"}
REPORT_FIELDS = {"total", "by_cause", "dominant_cause", "incident_cause", "confidence",
                 "scenario", "skew"}
ACTIVE = hmac_key("k-active")
RETIRED = hmac_key("k-old", "retired")
ED = ed_key("k-ed", seed_byte=7)
STRANGER = hmac_key("k-stranger")


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a child process; stderr must never hold a traceback."""
    p = subprocess.run([sys.executable, "-m", "sigops.cli", *args], input=stdin,
                       capture_output=True, timeout=60)
    out = subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(),
                                      p.stderr.decode())
    assert "Traceback" not in out.stderr, out.stderr
    return out


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cli.main`` in process (fast); usage errors arrive as SystemExit(2)."""
    try:
        rc = cli.main(list(args))
    except SystemExit as e:
        rc = int(e.code or 0)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out, cap.err


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    return write_json(tmp_path / "keyring.json", {
        "keys": [ACTIVE.to_entry(), RETIRED.to_entry(),
                 {"kid": ED.kid, "alg": "ed25519",
                  "public_b64": base64.b64encode(ED.public or b"").decode(),
                  "state": "active"}],
        "profile": "python", "max_skew_seconds": None,
    })


# -- verify ----------------------------------------------------------------------------------

def test_verify_all_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                          keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE, epoch=1), signed(ED, epoch=2)])
    rc, out, _ = call(capsys, "verify", "--keyring", str(keyring), str(f))
    assert rc == 0
    got = lines(out)
    assert [set(x) for x in got] == [VERIFY_FIELDS, VERIFY_FIELDS]
    assert got[0] == {"index": 0, "pcs_id": signed(ACTIVE, epoch=1)["pcs_id"], "valid": True,
                      "kid": "k-active", "profile": "python", "reason": None}
    assert got[1]["kid"] == "k-ed" and got[1]["valid"] is True



def test_record_verbs_tune_the_collector_in_their_own_process_only(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, keyring: Path) -> None:
    """``sigops verify`` as a process of its own freezes startup's objects and collects every
    100,000 allocations (less CPU per record: ``make bench``); called in process, it leaves
    the caller's collector as it was, and a verb that judges no records leaves it too."""
    import gc

    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE, epoch=1)])
    before = gc.get_threshold()
    assert call(capsys, "verify", "--keyring", str(keyring), str(f))[0] == 0
    assert gc.get_threshold() == before
    probe = ("import gc, sys; from sigops.cli import main; sys.argv[1:] = sys.argv[2:]; "
             "rc = main(); print(rc, *gc.get_threshold(), gc.get_freeze_count() > 0)")
    untouched = " ".join(map(str, before)) + " False"
    for verb, want in ((["verify", "--keyring", str(keyring), str(f)], "0 100000 10 10 True"),
                       (["keygen", "--alg", "hmac-sha256"], f"0 {untouched}")):
        p = subprocess.run([sys.executable, "-c", probe, "sigops", *verb], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[-1] == want, p.stdout


def test_verify_some_invalid(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE), signed(RETIRED, epoch=2),
                                            signed(ACTIVE, "go", epoch=3)])
    rc, out, _ = call(capsys, "verify", "--keyring", str(keyring), str(f))
    assert rc == 1
    got = lines(out)
    assert [(x["valid"], x["reason"], x["kid"], x["profile"]) for x in got] == [
        (True, None, "k-active", "python"),
        (False, "stale_key", "k-old", "python"),
        (False, "canonicalization_drift", "k-active", "go"),
    ]
    assert all(VERIFY_FIELDS <= set(x) <= VERIFY_FIELDS | {"detail"} for x in got)


def test_verify_bad_line_in_the_middle_does_not_stop_the_batch(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [
        signed(ACTIVE, epoch=1), '{"pcs_id": "x", "pcs_id": "y"}', "not json at all",
        signed(ACTIVE, epoch=2)])
    rc, out, _ = call(capsys, "verify", "--keyring", str(keyring), str(f))
    got = lines(out)
    assert rc == 1
    assert [x["index"] for x in got] == [0, 1, 2, 3]
    assert [x["reason"] for x in got] == [None, "malformed", "malformed", None]
    assert got[1]["detail"] and got[1]["pcs_id"] is None


def test_verify_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                        keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE), signed(RETIRED, epoch=2),
                                            signed(RETIRED, epoch=3), "{"])
    rc, out, _ = call(capsys, "verify", "--summary", "--keyring", str(keyring), str(f))
    assert rc == 1
    assert lines(out) == [{"total": 4, "valid": 1, "invalid": 3,
                           "by_reason": {"stale_key": 2, "malformed": 1}}]


def test_verify_numbers_records_across_inputs(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, keyring: Path) -> None:
    one = write_json(tmp_path / "one.json", signed(ACTIVE, epoch=1))
    arr = write_json(tmp_path / "arr.json", [signed(ACTIVE, epoch=2), signed(ACTIVE, epoch=3)])
    many = write_jsonl(tmp_path / "many.jsonl", [signed(ACTIVE, epoch=4)])
    rc, out, _ = call(capsys, "verify", "--keyring", str(keyring), str(one), str(arr),
                      str(many))
    assert rc == 0
    assert [x["index"] for x in lines(out)] == [0, 1, 2, 3]


def test_verify_envelopes_and_profile_flag(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path, keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [
        envelope(signed(ACTIVE, "go"), received_at=later(1), source="agent-1")])
    rc, out, _ = call(capsys, "verify", "--keyring", str(keyring), str(f))
    assert rc == 1 and lines(out)[0]["reason"] == "canonicalization_drift"
    rc, out, _ = call(capsys, "verify", "--profile", "go", "--keyring", str(keyring), str(f))
    assert rc == 0 and lines(out)[0]["profile"] == "go"


def test_verify_max_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                          keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE)])
    rc, out, _ = call(capsys, "verify", "--max-bytes", "100", "--keyring", str(keyring), str(f))
    assert rc == 1
    assert lines(out)[0]["reason"] == "malformed" and "limit" in lines(out)[0]["detail"]


def test_verify_stdin_jsonl(tmp_path: Path, keyring: Path) -> None:
    data = "\n".join(json.dumps(r) for r in [signed(ACTIVE, epoch=1), signed(ED, epoch=2)])
    p = run("verify", "--keyring", str(keyring), "-", stdin=("\n" + data + "\n\n").encode())
    assert p.returncode == 0, p.stderr
    assert [x["index"] for x in lines(p.stdout)] == [0, 1]
    p = run("verify", "--keyring", str(keyring), "-", stdin=data.encode() + b"\n\xff\xfe\n")
    assert p.returncode == 1
    assert lines(p.stdout)[2]["reason"] == "malformed"


def test_verify_hostile_lines_never_crash(tmp_path: Path, keyring: Path) -> None:
    hostile = [
        b'{"pcs_id": "\\ud800", "epoch": "x"}', b"[" * 100_000, b"9" * 5000,
        b'{"D_hat": NaN}', b"\x00\x01\x02", json.dumps(dict(signed(ACTIVE),
                                                            shard_id="\u2028<&>")).encode(),
    ]
    p = run("verify", "--keyring", str(keyring), "-", stdin=b"\n".join(hostile) + b"\n")
    assert p.returncode == 1
    got = lines(p.stdout)
    assert len(got) == len(hostile)
    assert all(not x["valid"] for x in got)


def test_verify_empty_input_is_not_vacuously_valid(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, keyring: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    rc, out, err = call(capsys, "verify", "--keyring", str(keyring), str(f))
    assert rc == 1 and out == "" and "no records" in err


# -- exit code 2 -----------------------------------------------------------------------------

def test_missing_keyring_file(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE)])
    p = run("verify", "--keyring", str(tmp_path / "nope.json"), str(f))
    assert p.returncode == 2 and p.stdout == ""
    assert "cannot read keyring" in p.stderr and "nope.json" in p.stderr


def test_empty_keyring_fails_closed(tmp_path: Path) -> None:
    kr = write_json(tmp_path / "kr.json", {"keys": []})
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE)])
    for verb in ("verify", "diagnose"):
        p = run(verb, "--keyring", str(kr), str(f))
        assert p.returncode == 2 and p.stdout == ""
        assert "no keys" in p.stderr


@pytest.mark.parametrize("doc", [
    "not json", "[]", '{"keys": {}}', '{"keys": [{"kid": "a", "alg": "rsa"}]}',
    '{"keys": [{"kid": "a", "alg": "hmac-sha256"}]}',
    '{"keys": [{"kid": "a", "alg": "hmac-sha256", "secret": "s", "state": "old"}]}',
    '{"keys": [{"kid": "a", "alg": "ed25519", "public_b64": "AAAA"}]}',
    '{"keys": [{"kid": "a", "alg": "hmac-sha256", "secret": "s"}], "profile": "rust"}',
    '{"keys": [{"kid": "a", "alg": "hmac-sha256", "secret": "s"}], "max_skew_seconds": -1}',
    '{"keys": [{"kid": "a", "alg": "hmac-sha256", "secret": "s"}], "backend_accepts": ["b"]}',
    '{"keys": [{"kid": "a", "alg": "hmac-sha256", "secret": "s"},'
    ' {"kid": "a", "alg": "hmac-sha256", "secret": "t"}]}',
    '{"keys": [], "keys": [{"kid": "a", "alg": "hmac-sha256", "secret": "s"}]}',
])
def test_unusable_keyrings(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           doc: str) -> None:
    kr = tmp_path / "kr.json"
    kr.write_text(doc)
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE)])
    rc, out, err = call(capsys, "verify", "--keyring", str(kr), str(f))
    assert rc == 2 and out == ""
    assert err.startswith("sigops: ") and "kr.json" in err


@pytest.mark.parametrize("args", [
    [], ["frobnicate"], ["verify"], ["verify", "--keyring"], ["verify", "--bogus", "x"],
    ["verify", "--keyring", "KR", "--profile", "rust", "IN"],
    ["verify", "--keyring", "KR", "--max-bytes", "0", "IN"],
    ["verify", "--keyring", "KR", "--max-bytes", "ten", "IN"],
    ["verify", "--keyring", "KR"],
    ["verify", "--keyring", "KR", "MISSING"],
    ["diagnose", "--keyring", "KR", "--max-skew", "-5", "IN"],
    ["diagnose", "--keyring", "KR", "--max-skew", "nan", "IN"],
    ["diagnose", "--keyring", "KR", "--max-skew", "inf", "IN"],
    ["golden"], ["signal"], ["signal", "sign"], ["signal", "verify", "x"],
    ["keygen"], ["keygen", "--alg", "rsa"],
])
def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, keyring: Path,
                          args: list[str]) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE)])
    subst = {"KR": str(keyring), "IN": str(f), "MISSING": str(tmp_path / "missing.jsonl")}
    rc, out, err = call(capsys, *[subst.get(a, a) for a in args])
    assert rc == 2 and out == ""
    assert err.strip()


def test_bad_flags_in_a_real_process(tmp_path: Path) -> None:
    p = run("verify", "--keyring", str(tmp_path / "k.json"), "--profile", "rust", "x")
    assert p.returncode == 2 and "invalid choice" in p.stderr
    p = run()
    assert p.returncode == 2


def test_help_exits_0() -> None:
    p = run("--help")
    assert p.returncode == 0 and "verify" in p.stdout


# -- diagnose --------------------------------------------------------------------------------

def test_diagnose_report(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                         keyring: Path) -> None:
    recs = [signed(ACTIVE, epoch=1)] + [signed(RETIRED, epoch=i) for i in range(10, 14)]
    recs.append("{broken")
    f = write_jsonl(tmp_path / "in.jsonl", recs)
    rc, out, _ = call(capsys, "diagnose", "--keyring", str(keyring), str(f))
    assert rc == 0
    (r,) = lines(out)
    assert REPORT_FIELDS <= set(r) and "samples" not in r
    assert r["total"] == 6
    assert r["by_cause"] == {"valid": 1, "stale_key": 4, "malformed": 1}
    assert (r["dominant_cause"], r["incident_cause"], r["scenario"]) == (
        "stale_key", "KeyRotationInProgress", "A")
    assert 0 <= r["confidence"] <= 1 and r["skew"] is None


def test_diagnose_python_form_against_a_go_ring_says_who_signs_what(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, keyring: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [signed(ACTIVE, epoch=i) for i in range(3)])
    rc, out, _ = call(capsys, "diagnose", "--profile", "go", "--keyring", str(keyring), str(f))
    (r,) = lines(out)
    assert (r["dominant_cause"], r["scenario"]) == ("canonicalization_drift", "C")
    assert r["drift"]["profiles"] == {"python": 3} and r["drift"]["verifier_profile"] == "go"
    assert "signed in the python form" in r["drift"]["summary"]
    assert "the verifier checks the go form" in r["drift"]["summary"]


def test_diagnose_per_sample_and_skew(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      keyring: Path) -> None:
    recs = [envelope(signed(ACTIVE, epoch=i), received_at=later(900), source="agent-1")
            for i in range(3)]
    recs.append(envelope(signed(ACTIVE, epoch=9), received_at=later(2), source="agent-2"))
    f = write_jsonl(tmp_path / "in.jsonl", recs)
    rc, out, _ = call(capsys, "diagnose", "--per-sample", "--max-skew", "60",
                      "--keyring", str(keyring), str(f))
    assert rc == 0
    (r,) = lines(out)
    assert REPORT_FIELDS | {"samples"} <= set(r)
    assert r["samples"] == [
        {"index": i, "cause": c, "kid": "k-active", "profile": "python"}
        for i, c in enumerate(["clock_skew"] * 3 + ["valid"])]
    assert (r["incident_cause"], r["scenario"]) == ("ClockSkew", "B")
    assert r["skew"]["scope"] == "single_source" and r["skew"]["offset_seconds"] == 900.0


def test_diagnose_uses_the_keyrings_max_skew(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    kr = write_json(tmp_path / "kr.json", {"keys": [ACTIVE.to_entry()], "max_skew_seconds": 30})
    f = write_jsonl(tmp_path / "in.jsonl", [envelope(signed(ACTIVE), received_at=later(31))])
    rc, out, _ = call(capsys, "diagnose", "--keyring", str(kr), str(f))
    assert rc == 0 and lines(out)[0]["by_cause"] == {"clock_skew": 1}


def test_diagnose_stdin_and_drift(tmp_path: Path, keyring: Path) -> None:
    data = "".join(json.dumps(signed(ACTIVE, "fixed9", epoch=i)) + "\n" for i in range(3))
    p = run("diagnose", "--per-sample", "--keyring", str(keyring), "-", stdin=data.encode())
    assert p.returncode == 0
    (r,) = lines(p.stdout)
    assert r["dominant_cause"] == "canonicalization_drift"
    assert r["incident_cause"] == "CanonicalizationDrift" and r["scenario"] == "C"
    assert {s["profile"] for s in r["samples"]} == {"fixed9"}


# -- golden ----------------------------------------------------------------------------------

def test_golden_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    write_json(good / "keyring.json", {"keys": [ACTIVE.to_entry()]})
    write_json(good / "pcs.json", dict(signed(ACTIVE, "go"), profile="go"))
    rc, out, _ = call(capsys, "golden", str(good))
    assert rc == 0
    assert lines(out)[0]["total"] == 1 and lines(out)[0]["passed"] == 1

    write_json(good / "pcs.json", dict(signed(ACTIVE, "go"), profile="python"))
    rc, out, err = call(capsys, "golden", str(good))
    assert rc == 1 and lines(out)[0]["failed"] == 1 and "pcs.json" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert call(capsys, "golden", str(empty))[0] == 2
    assert call(capsys, "golden", str(tmp_path / "missing"))[0] == 2
    assert call(capsys, "golden", "--keyring", str(tmp_path / "nokr.json"), str(good))[0] == 2


def test_golden_with_an_external_keyring(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         keyring: Path) -> None:
    d = tmp_path / "vectors"
    d.mkdir()
    write_json(d / "pcs.json", signed(ED))
    assert call(capsys, "golden", str(d))[0] == 1  # no key to verify with
    assert call(capsys, "golden", "--keyring", str(keyring), str(d))[0] == 0


# -- signal sign | verify --------------------------------------------------------------------

@pytest.fixture
def signal_files(tmp_path: Path) -> dict[str, Path]:
    key = ed_key("sigops-signer", seed_byte=3)
    other = ed_key("someone-else", seed_byte=4)
    payload = build_payload("detection", target="ns/deploy", service_id="sigops-0",
                            prev_hash=None, cause="stale_key", scenario="A",
                            detected_at=SENT_AT)
    return {
        "key": write_json(tmp_path / "key.json", key.to_entry()),
        "hmac": write_json(tmp_path / "hmac.json", ACTIVE.to_entry()),
        "public_only": write_json(tmp_path / "pub.json", key.public_entry()),
        "payload": write_json(tmp_path / "payload.json", payload),
        "pubkeys": write_json(tmp_path / "pubkeys.json", {"keys": {
            key.kid: base64.b64encode(key.public or b"").decode()}}),
        "empty_pubkeys": write_json(tmp_path / "nokeys.json", {"keys": {}}),
        "foreign": write_json(tmp_path / "foreign.json", sign_signal(payload, other)),
    }


def test_signal_sign_then_verify(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 signal_files: dict[str, Path]) -> None:
    f = signal_files
    rc, out, _ = call(capsys, "signal", "sign", "--key", str(f["key"]), str(f["payload"]))
    assert rc == 0
    (sig,) = lines(out)
    assert set(sig) == {"payload", "signature", "key_id", "sig_alg_version"}
    s = write_json(tmp_path / "signal.json", sig)
    rc, out, _ = call(capsys, "signal", "verify", "--pubkeys", str(f["pubkeys"]), str(s))
    assert rc == 0
    res = lines(out)[0]
    assert res["valid"] is True and res["key_id"] == "sigops-signer"
    assert res["payload"] == json.loads(f["payload"].read_text()) and len(res["hash"]) == 64

    sig["payload"]["cause"] = "clock_skew"
    bad = write_json(tmp_path / "bad.json", sig)
    p = run("signal", "verify", "--pubkeys", str(f["pubkeys"]), str(bad))
    assert p.returncode == 1
    assert lines(p.stdout)[0] == {"valid": False, "reason": "bad_signature",
                                  "detail": "signature does not verify with sigops-signer"}
    log = json.loads(p.stderr.strip().splitlines()[-1])
    assert log["potential_attack"] is True and log["reason"] == "bad_signature"


def test_signal_verify_rejections(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  signal_files: dict[str, Path]) -> None:
    f = signal_files
    rc, out, _ = call(capsys, "signal", "verify", "--pubkeys", str(f["pubkeys"]),
                      str(f["foreign"]))
    assert rc == 1 and lines(out)[0]["reason"] == "unknown_key"
    junk = tmp_path / "junk.json"
    junk.write_text('{"payload": {}, "payload": {}}')
    rc, out, _ = call(capsys, "signal", "verify", "--pubkeys", str(f["pubkeys"]), str(junk))
    assert rc == 1 and lines(out)[0]["reason"] == "malformed"
    unsigned = write_json(tmp_path / "unsigned.json", {"payload": {"a": 1}})
    rc, out, _ = call(capsys, "signal", "verify", "--pubkeys", str(f["pubkeys"]),
                      str(unsigned))
    assert rc == 1 and lines(out)[0]["reason"] == "unsigned"


def test_signal_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             signal_files: dict[str, Path]) -> None:
    f = signal_files
    for args in (
        ["signal", "sign", "--key", str(f["hmac"]), str(f["payload"])],
        ["signal", "sign", "--key", str(f["public_only"]), str(f["payload"])],
        ["signal", "sign", "--key", str(tmp_path / "none.json"), str(f["payload"])],
        ["signal", "sign", "--key", str(f["key"]), str(f["pubkeys"].with_name("none.json"))],
        ["signal", "verify", "--pubkeys", str(f["empty_pubkeys"]), str(f["foreign"])],
        ["signal", "verify", "--pubkeys", str(f["pubkeys"]), str(tmp_path / "none.json")],
    ):
        rc, out, err = call(capsys, *args)
        assert rc == 2 and out == "" and err.startswith("sigops: "), args
    lst = write_json(tmp_path / "list.json", [1, 2])
    rc, _, err = call(capsys, "signal", "sign", "--key", str(f["key"]), str(lst))
    assert rc == 2 and "object" in err


# -- keygen ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["hmac-sha256", "ed25519"])
def test_keygen_output_is_a_usable_keyring_entry(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path, alg: str) -> None:
    rc, out, _ = call(capsys, "keygen", "--alg", alg, "--kid", "new-key", "--state", "active")
    assert rc == 0
    (entry,) = lines(out)
    assert entry["kid"] == "new-key" and entry["alg"] == alg and entry["state"] == "active"
    assert len(entry["fingerprint"]) == 12
    if alg == "ed25519":
        assert len(base64.b64decode(entry["private_b64"])) == 32
        assert len(base64.b64decode(entry["public_b64"])) == 32
    else:
        assert len(entry["secret"]) >= 43
    kr = write_json(tmp_path / "kr.json", {"keys": [entry]})
    key = key_from_entry(entry)
    f = write_jsonl(tmp_path / "in.jsonl", [sign_pcs(signed(key), key)])
    rc, out, _ = call(capsys, "verify", "--keyring", str(kr), str(f))
    assert rc == 0 and lines(out)[0]["kid"] == "new-key"


def test_keygen_defaults_to_a_pending_key_with_a_derived_kid(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = call(capsys, "keygen", "--alg", "ed25519")
    assert rc == 0
    (entry,) = lines(out)
    assert entry["state"] == "pending" and entry["kid"].startswith("ed25519-")
    rc, out2, _ = call(capsys, "keygen", "--alg", "ed25519")
    assert lines(out2)[0]["private_b64"] != entry["private_b64"]
    kr = write_json(tmp_path / "kr.json", {"keys": [entry]})
    key = key_from_entry(entry)
    f = write_jsonl(tmp_path / "in.jsonl", [signed(key)])
    rc, out, _ = call(capsys, "verify", "--keyring", str(kr), str(f))
    assert rc == 1 and lines(out)[0]["reason"] == "pending_key"


@pytest.mark.parametrize("kid", ["", "  "])
def test_keygen_refuses_an_empty_kid(capsys: pytest.CaptureFixture[str], kid: str) -> None:
    rc, out, err = call(capsys, "keygen", "--alg", "hmac-sha256", "--kid", kid)
    assert (rc, out) == (2, "")
    assert "kid must not be empty" in err


def test_keygen_ed25519_key_signs_signals(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    rc, out, _ = call(capsys, "keygen", "--alg", "ed25519", "--kid", "sigops-x")
    entry = lines(out)[0]
    kf = write_json(tmp_path / "k.json", entry)
    pf = write_json(tmp_path / "p.json", {"type": "test"})
    rc, out, _ = call(capsys, "signal", "sign", "--key", str(kf), str(pf))
    sf = tmp_path / "s.json"
    sf.write_text(out)
    pk = write_json(tmp_path / "pk.json", {"keys": {"sigops-x": entry["public_b64"]}})
    rc, out, _ = call(capsys, "signal", "verify", "--pubkeys", str(pk), str(sf))
    assert rc == 0 and lines(out)[0]["valid"] is True
