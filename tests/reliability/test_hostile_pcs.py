"""Hostile PCS input through parse -> canonicalize -> verify -> diagnose, in process
(``Diagnoser.classify_line`` / ``classify_obj``) and through the ``sigops`` CLI.

Figures: inputs tried, inputs that verified although their signed bytes or signature changed
(must be 0), crashes (must be 0). ``SIGOPS_FUZZ_SECONDS=N`` runs each fuzzer for about N
seconds instead of its short default; ``fuzz_atheris.py`` is the coverage-guided variant.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigops.core import accel
from sigops.core.diagnose import CAUSE_NAMES
from tests.reliability import kit
from tests.reliability.pcsfuzz import (
    ALGS,
    CRASH,
    DIAGNOSERS,
    FORGERY,
    KEYS,
    PROFILES,
    b64_noncanonical,
    check,
    judged,
    mutate,
    signed_record,
)
from tests.support import REPO

HYP = settings(max_examples=400, deadline=None, derandomize=False, database=None,
               suppress_health_check=list(HealthCheck))


# -- arbitrary input ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["pcs_id", "merkle_root", "epoch", "shard_id", "D_hat", "coh_star", "r",
                         "budget", "sig", "pcs", "received_at", "sent_at", "source", "x"]),
        inner, max_size=10),
    max_leaves=30)


def test_arbitrary_bytes_and_documents_never_crash_never_verify() -> None:
    causes: Counter[str] = Counter()

    @HYP
    @given(st.one_of(st.binary(max_size=400),
                     st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     json_values.map(lambda v: json.dumps(v).encode())),
           st.sampled_from(ALGS), st.sampled_from(PROFILES))
    def body(raw: bytes, alg: str, profile: str) -> None:
        d = DIAGNOSERS[(alg, profile)]
        try:
            v = d.classify_line(raw, 0)
        except Exception:
            causes[CRASH] += 1
            raise
        assert v.cause in CAUSE_NAMES and not v.valid
        if v.cause == "malformed":
            assert v.detail
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if obj is not None:
            w = d.classify_obj(obj, 0)
            assert w.cause in CAUSE_NAMES and not w.valid
            causes[w.cause] += 1
        causes[v.cause] += 1

    secs = kit.run_for_budget(body)
    n = causes.total()
    kit.bump("pcs fuzz: arbitrary input (hypothesis)", inputs_tried=n,
             accepted_as_valid=causes["valid"], crashes=causes[CRASH], seconds=round(secs, 1))
    kit.figure("pcs fuzz: arbitrary input (hypothesis)", by_cause=dict(causes))
    assert n > 0 and causes["valid"] == 0 and causes[CRASH] == 0


# -- mutated signed records -----------------------------------------------------------------------


def test_mutated_signed_records_never_verify_unless_signed_bytes_unchanged() -> None:
    outcomes: Counter[str] = Counter()
    unchanged_ops: Counter[str] = Counter()

    @HYP
    @given(st.sampled_from(ALGS), st.sampled_from(PROFILES), st.integers(0, 2),
           st.integers(0, 2**32), st.integers(0, 3), st.integers(0, 2))
    def body(alg: str, profile: str, shape: int, seed: int, n_struct: int, n_text: int) -> None:
        raw, ops = mutate(alg, profile, shape, seed, n_struct, n_text)
        outcome = judged(outcomes, alg, profile, raw)
        if outcome == "valid-unchanged":
            unchanged_ops.update(set(ops) or {"none"})

    secs = kit.run_for_budget(body, default_rounds=5)
    n = outcomes.total()
    sec = "pcs fuzz: mutated signed records (hypothesis)"
    kit.bump(sec, inputs_tried=n, forgeries_accepted=outcomes[FORGERY],
             crashes=outcomes[CRASH],
             verified_with_unchanged_signed_bytes=outcomes["valid-unchanged"],
             rejected=n - outcomes["valid-unchanged"], seconds=round(secs, 1))
    kit.figure(sec, by_outcome=dict(outcomes), unchanged_by_mutation=dict(unchanged_ops))
    assert n > 0 and outcomes["valid-unchanged"] < n
    assert outcomes[FORGERY] == 0 and outcomes[CRASH] == 0, dict(outcomes)


def test_signed_records_verify_before_mutation() -> None:
    """The oracle's baseline: each unmutated record verifies (else 'never valid' is vacuous)."""
    for alg in ALGS:
        for profile in PROFILES:
            for shape in range(3):
                raw = json.dumps(signed_record(alg, profile, shape)).encode()
                assert DIAGNOSERS[(alg, profile)].classify_line(raw, 0).valid


def test_only_the_signature_encoding_is_malleable() -> None:
    """Non-canonical base64 (non-zero padding bits) decodes to the same signature and so
    verifies, as in Go's default base64 decoder the backend uses; everything else in the
    record that is signed is not malleable. Recorded as a figure, not a failure."""
    rec = signed_record(KEYS["hmac-sha256"].alg, "python", 0)
    sig = rec["sig"]
    alt = sig[:-2] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(sig[-2]) ^ 1
    ] + sig[-1]
    assert b64_noncanonical(alt)
    v = DIAGNOSERS[("hmac-sha256", "python")].classify_obj({**rec, "sig": alt}, 0)
    kit.figure("pcs fuzz: mutated signed records (hypothesis)",
               noncanonical_base64_sig_verifies=v.valid)


@pytest.mark.parametrize("profile", PROFILES)
def test_diagnoser_replay_cache_does_not_conflate_signed_zeros(profile: str) -> None:
    from sigops.core.diagnose import Diagnoser

    d = Diagnoser(DIAGNOSERS[("hmac-sha256", profile)].ring)
    rec = signed_record("hmac-sha256", profile, 2)  # budget is -0.0, coh_star is 0
    assert rec["budget"] == 0.0 and str(rec["budget"]) == "-0.0"
    assert d.classify_obj(rec, 0).valid
    forged = {**rec, "budget": 0.0}  # other signed bytes, same signature
    assert not Diagnoser(d.ring).classify_obj(forged, 1).valid  # a fresh diagnoser: rejected
    assert not d.classify_obj(forged, 1).valid  # the warm one: must agree


# -- named hostile inputs -------------------------------------------------------------------------

def _signed_text(**over: Any) -> str:
    rec = signed_record("hmac-sha256", "python", 0)
    rec.update(over)
    return json.dumps(rec)


def _replace_value(field: str, literal: str) -> bytes:
    rec = signed_record("hmac-sha256", "python", 0)
    text = json.dumps(rec)
    key = f'"{field}": '
    i = text.index(key) + len(key)
    j = i
    while text[j] not in ",}":
        j += 1
    return (text[:i] + literal + text[j:]).encode()


HOSTILE: dict[str, Any] = {
    "duplicate key (signed field)": lambda: _signed_text()[:-1].encode() + b', "epoch": 8}',
    "duplicate key (sig)": lambda: _signed_text()[:-1].encode() + b', "sig": "AAAA"}',
    "duplicate key (envelope)": lambda: b'{"pcs": ' + _signed_text().encode()
    + b', "source": "a", "source": "b"}',
    "NaN": lambda: _replace_value("D_hat", "NaN"),
    "Infinity": lambda: _replace_value("r", "Infinity"),
    "-Infinity": lambda: _replace_value("budget", "-Infinity"),
    "1e400 overflow": lambda: _replace_value("coh_star", "1e400"),
    "epoch 2^53+1": lambda: _replace_value("epoch", str(2**53 + 1)),
    "epoch -(2^53+1)": lambda: _replace_value("epoch", str(-(2**53 + 1))),
    "D_hat 2^64": lambda: _replace_value("D_hat", str(2**64)),
    "epoch with 5000 digits": lambda: _replace_value("epoch", "9" * 5000),
    "lone surrogate escape": lambda: _replace_value("shard_id", '"\\ud800x"'),
    "invalid UTF-8 (0xff)": lambda: _signed_text().encode().replace(b"shard-001", b"sh\xffrd"),
    "invalid UTF-8 (overlong /)": lambda: _signed_text().encode().replace(b"shard", b"\xc0\xafh"),
    "invalid UTF-8 (encoded surrogate)": lambda: _signed_text().encode().replace(
        b"shard", b"\xed\xa0\x80"),
    "invalid UTF-8 (truncated sequence)": lambda: _signed_text().encode()[:-1] + b"\xe2\x82}",
    "10 MB record": lambda: _signed_text(pad="x" * (10 << 20)).encode(),
    "deep nesting (arrays)": lambda: b"[" * 100_000 + b"]" * 100_000,
    "deep nesting (objects)": lambda: b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep nesting (in a signed record)": lambda: _signed_text()[:-1].encode()
    + b', "ft": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "bad base64 sig": lambda: _signed_text(sig="not base64!").encode(),
    "sig of 31 bytes": lambda: _signed_text(sig="A" * 42 + "==").encode(),
    "epoch true": lambda: _replace_value("epoch", "true"),
    "epoch 7.0": lambda: _replace_value("epoch", "7.0"),
    "D_hat as string": lambda: _replace_value("D_hat", '"1.0"'),
    "array of records": lambda: b"[" + _signed_text().encode() + b"]",
    "empty object": lambda: b"{}",
    "not JSON": lambda: b"\x00\x01garbage",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_named_hostile_input_is_malformed_with_a_reason(name: str, tmp_path: Path) -> None:
    raw = HOSTILE[name]()
    for (alg, profile), d in DIAGNOSERS.items():
        v = d.classify_line(raw, 0)
        assert (v.cause, bool(v.detail)) == ("malformed", True), (alg, profile, v)
    # The CLI, in process: one JSON line, reason malformed with a detail, exit 1.
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [KEYS["hmac-sha256"].to_entry()], "profile": "python"}))
    f = tmp_path / "in.jsonl"
    f.write_bytes(raw + b"\n")
    rc, out, err = _cli(["verify", "--keyring", str(ring), str(f)])
    lines = [json.loads(x) for x in out.splitlines()]
    assert rc == 1 and len(lines) == 1, (rc, out[:300], err[:300])
    assert lines[0]["valid"] is False and lines[0]["reason"] == "malformed" and lines[0]["detail"]
    rc, out, err = _cli(["diagnose", "--keyring", str(ring), str(f)])
    assert rc == 0 and json.loads(out)["by_cause"] == {"malformed": 1}
    kit.bump("pcs named hostile inputs", inputs=1, rejected_malformed_with_reason=1)


def test_non_nfc_strings_normalized_in_transit_never_verify() -> None:
    """A record signed over a non-NFC string, then NFC-normalized on the way (or the reverse),
    is rejected (pcs_id rule broken -> tampered), never valid."""
    for alg in ALGS:
        for profile in PROFILES:
            rec = signed_record(alg, profile, 1)  # shard_id holds "e" + U+0301 (NFD)
            assert not unicodedata.is_normalized("NFC", rec["shard_id"])
            for form in ("NFC", "NFKC"):
                bad = {**rec, "shard_id": unicodedata.normalize(form, rec["shard_id"])}
                v = DIAGNOSERS[(alg, profile)].classify_obj(bad, 0)
                assert v.cause == "tampered", v
    kit.figure("pcs named hostile inputs", non_nfc_normalized_in_transit="tampered (rejected)")


def test_non_nfc_string_signed_as_is_verifies() -> None:
    """Documented behaviour (DESIGN lists no NFC rule; the Go backend has none): a record signed
    over a non-NFC string verifies as long as nobody normalizes it. Rejecting it here would make
    sigops disagree with the backend it diagnoses."""
    v = DIAGNOSERS[("hmac-sha256", "python")].classify_obj(
        signed_record("hmac-sha256", "python", 1), 0)
    assert v.valid
    kit.figure("pcs named hostile inputs", non_nfc_signed_as_is="valid (as the backend)")


def test_ten_mb_record_rejected_in_jsonl_and_single_json_via_real_cli(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [KEYS["hmac-sha256"].to_entry()], "profile": "python"}))
    big = _signed_text(pad="x" * (10 << 20))
    (tmp_path / "big.json").write_text(big)
    (tmp_path / "big.jsonl").write_text(big + "\n")
    (tmp_path / "deep.jsonl").write_bytes(b"[" * 200_000 + b"]" * 200_000 + b"\n")
    (tmp_path / "bad.jsonl").write_bytes(b"\xff\xfe\n" + b'{"a": NaN}\n')
    runs = tracebacks = 0
    for name in ("big.json", "big.jsonl", "deep.jsonl", "bad.jsonl"):
        p = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), "verify", "--keyring",
                            str(ring), "--summary", str(tmp_path / name)],
                           capture_output=True, text=True, timeout=120)
        runs += 1
        tracebacks += "Traceback" in p.stderr
        assert p.returncode == 1 and "Traceback" not in p.stderr, (name, p.stderr[-500:])
        summary = json.loads(p.stdout)
        assert summary["valid"] == 0 and set(summary["by_reason"]) == {"malformed"}, summary
    kit.bump("pcs named hostile inputs", cli_process_runs=runs, cli_tracebacks=tracebacks)


def test_ten_mb_record_in_a_json_array_is_rejected(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [KEYS["hmac-sha256"].to_entry()], "profile": "python"}))
    (tmp_path / "arr.json").write_text("[" + _signed_text(pad="x" * (10 << 20)) + "]")
    rc, out, _ = _cli(["verify", "--keyring", str(ring), "--summary", str(tmp_path / "arr.json")])
    assert (rc, json.loads(out)["by_reason"]) == (1, {"malformed": 1})


# -- the inbox WAL under fuzz ---------------------------------------------------------------------


def test_wal_reader_fuzz_no_crash_no_forgery() -> None:
    """WAL files of legitimately signed records, then damaged at the byte level (noise, cut
    lengths, flipped bytes, truncation): the reader never raises, a damaged entry is
    ``malformed`` with a reason, and no entry whose signed bytes changed verifies."""
    import random

    from sigops.core.diagnose import Diagnoser
    from sigops.core.wal import read_wal

    outcomes: Counter[str] = Counter()

    @HYP
    @given(st.sampled_from(ALGS), st.sampled_from(PROFILES), st.integers(0, 2**32),
           st.integers(1, 6), st.integers(0, 4))
    def body(alg: str, profile: str, seed: int, n: int, damage: int) -> None:
        rng = random.Random(seed)
        recs = [json.dumps(signed_record(alg, profile, rng.randrange(3), 7 + i % 2),
                           indent=rng.choice([None, 1])).encode() for i in range(n)]
        data = bytearray(b"".join(b"2026-11-30T03:00:0%d.5Z|%d|%s\n" % (i % 10, len(r), r)
                                  for i, r in enumerate(recs)))
        for _ in range(damage):
            op = rng.randrange(4)
            at = rng.randrange(len(data) + 1)
            if op == 0:
                data[at:at] = rng.randbytes(rng.randint(1, 12))
            elif op == 1 and at < len(data):
                data[at] ^= 1 << rng.randrange(8)
            elif op == 2:
                del data[at:at + rng.randint(1, 30)]
            else:
                del data[at:]
        d = Diagnoser(DIAGNOSERS[(alg, profile)].ring)
        fast = Diagnoser(d.ring)  # sigops verify's short route must agree
        try:
            entries = list(read_wal(bytes(data)))
            for i, e in enumerate(entries):
                v = d.settle(*d.judge_wal(e, i))
                s, kid, content = fast.check_wal(e, i)
                if s is None:
                    assert content is not None
                    fast.remember(content[0], content)
                    assert (v.cause, v.kid) == ("valid", kid), ("short route", v)
                else:
                    assert fast.settle(s, content).cause == v.cause, ("short route", s, v)
                if e.error is not None:
                    assert v.cause == "malformed" and v.detail and "wal:" in v.detail
                    outcomes["damaged entry"] += 1
                    continue
                assert e.body is not None
                outcome = check(alg, profile, e.body)  # the body as a record of its own
                if v.valid and outcome not in ("valid-unchanged", FORGERY):
                    outcome = FORGERY  # the WAL route accepted what the record route rejects
                outcomes[outcome] += 1
        except AssertionError:
            raise
        except Exception:
            outcomes[CRASH] += 1
            raise

    secs = kit.run_for_budget(body)
    n = outcomes.total()
    kit.bump("wal fuzz (hypothesis)", entries=n, damaged_entries=outcomes["damaged entry"],
             forgeries_accepted=outcomes[FORGERY], crashes=outcomes[CRASH],
             seconds=round(secs, 1))
    kit.figure("wal fuzz (hypothesis)", by_outcome=dict(outcomes))
    assert n > 0 and outcomes[FORGERY] == 0 and outcomes[CRASH] == 0, dict(outcomes)


# -- the CLI under fuzz ---------------------------------------------------------------------------


_cli = kit.run_cli


@contextlib.contextmanager
def pure_python() -> Iterator[None]:
    """Diagnosers made inside do without the compiled reader (as with SIGOPS_ACCEL=0)."""
    saved = accel.read_pcs
    accel.read_pcs = None
    try:
        yield
    finally:
        accel.read_pcs = saved


def test_cli_verify_and_diagnose_under_fuzz(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [KEYS["hmac-sha256"].to_entry(),
                                         {**KEYS["ed25519"].to_entry(), "state": "retired"}],
                                "profile": "python"}))
    counts: Counter[str] = Counter()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(ALGS), st.integers(0, 2), st.integers(0, 2**32),
                              st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=12),
           st.lists(st.binary(max_size=80), max_size=3), st.sampled_from([".jsonl", ".json"]))
    def body(specs: list[tuple[str, int, int, int, int]], junk: list[bytes], ext: str) -> None:
        records = [mutate(alg, "python", shape, seed, ns_, nt)[0]
                   for alg, shape, seed, ns_, nt in specs]
        records += [j.replace(b"\n", b" ") for j in junk]
        records = [r.replace(b"\n", b" ").replace(b"\r", b" ") for r in records]
        if ext == ".json":
            records = records[:1]
        f = tmp_path / f"in{ext}"
        f.write_bytes(b"\n".join(records) + b"\n")
        expected = sum(1 for r in records if r.strip()) if ext == ".jsonl" else 1
        rc, out, _ = _cli(["verify", "--keyring", str(ring), "--summary", str(f)])
        counts["verify runs"] += 1
        # The same run with the pure-Python route alone: the same answer, byte for byte.
        with pure_python():
            assert _cli(["verify", "--keyring", str(ring), "--summary", str(f)])[:2] == (rc, out)
        if expected == 0:
            assert rc == 1
            return
        s = json.loads(out)
        if ext == ".json" and s["total"] != 1:  # a .json array holds several records
            assert records[0].lstrip().startswith(b"[")
        elif ext == ".jsonl":
            assert s["total"] == expected, (s, records)
        assert rc == (0 if s["valid"] == s["total"] else 1)
        counts["records"] += s["total"]
        counts["valid"] += s["valid"]
        rc, out, _ = _cli(["diagnose", "--keyring", str(ring), "--per-sample", str(f)])
        rep = json.loads(out)
        assert rc == 0 and rep["total"] == s["total"] and len(rep["samples"]) == s["total"]
        assert set(rep["by_cause"]) <= set(CAUSE_NAMES)
        counts["diagnose runs"] += 1

    before = dict(kit.CLI_RUNS)
    secs = kit.run_for_budget(body)
    kit.bump("cli fuzz (in process)", verify_runs=counts["verify runs"],
             diagnose_runs=counts["diagnose runs"], records=counts["records"],
             valid=counts["valid"], tracebacks=kit.CLI_RUNS["tracebacks"] - before["tracebacks"],
             seconds=round(secs, 1))


def test_cli_hostile_keyring_is_a_usage_error_without_traceback(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps(signed_record("hmac-sha256", "python", 0)) + "\n")
    n = Counter[int]()

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                     st.fixed_dictionaries({"keys": st.lists(st.dictionaries(
                         st.sampled_from(["kid", "alg", "secret", "public_b64", "private_b64",
                                          "state", "not_before", "not_after"]),
                         json_values, max_size=6), max_size=3)},
                         optional={"profile": json_values, "max_skew_seconds": json_values,
                                   "backend_accepts": json_values}).map(
                         lambda v: json.dumps(v).encode())))
    def body(raw: bytes) -> None:
        ring = tmp_path / "ring.json"
        ring.write_bytes(raw)
        rc, _, err = _cli(["verify", "--keyring", str(ring), str(f)])
        assert rc in (1, 2), rc
        if rc == 2:
            assert err.startswith("sigops: ")
        n[rc] += 1

    kit.run_for_budget(body)
    kit.bump("cli fuzz (in process)", hostile_keyrings=n.total(), keyring_usage_errors=n[2])


# -- atheris (coverage-guided), opt in ---------------------------------------------------------


def test_atheris_fuzzer(tmp_path: Path) -> None:
    """A short coverage-guided run in every suite; SIGOPS_FUZZ_SECONDS=N runs it longer."""
    pytest.importorskip("atheris")
    secs = int(kit.fuzz_seconds() or 5)
    script = Path(__file__).with_name("fuzz_atheris.py")
    stats = tmp_path / "stats.json"
    p = subprocess.run([sys.executable, str(script), f"-max_total_time={secs}",
                        f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
                       capture_output=True, text=True, timeout=secs + 300, cwd=tmp_path,
                       env={**os.environ, "SIGOPS_ATHERIS_STATS": str(stats)})
    assert p.returncode == 0, p.stderr[-3000:]
    done = re.search(r"^Done (\d+) runs in (\d+) second", p.stderr, re.M)
    assert done, p.stderr[-2000:]
    outcomes = json.loads(stats.read_text())["by_outcome"] if stats.exists() else {}
    kit.figure("pcs fuzz: atheris (coverage-guided)", inputs_tried=int(done.group(1)),
               seconds=int(done.group(2)),
               # Counted by the fuzz target (its last dump, every 10,000 inputs); a forgery or
               # a crash also stops libFuzzer with an error, which the returncode check saw.
               crashes=outcomes.get("CRASH", 0), forgeries_accepted=outcomes.get("FORGERY", 0),
               by_outcome_sampled=outcomes)
    assert outcomes, "the fuzz target wrote no figures"
