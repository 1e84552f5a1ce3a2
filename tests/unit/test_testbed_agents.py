"""The agent simulator: each fault produces the expected backend verdict; keys; pacing; CLI."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pcskit import ed_key, hmac_key

from sigops.core.canonical import SIGNED_FIELDS
from sigops.core.errors import KeyringError
from sigops.core.keys import Key
from sigops.core.pcs import expected_pcs_id, parse_pcs
from sigops.core.strictjson import loads
from sigops.testbed.agents import AgentPlan, AgentSimulator
from sigops.testbed.backend import Backend, BackendServer, BackendSettings
from sigops.testbed.cli import main
from sigops.testbed.faults import EXPECTED_CAUSE, parse_fault
from sigops.testbed.keysource import SecretKey, StaticKey, literal_key, parse_key_spec
from sigops.testbed.reload import config_from_env

CURRENT, OLD, NEW = hmac_key("current"), hmac_key("old"), hmac_key("new")


def secret_of(k: Key) -> str:
    return (k.secret or b"").decode()


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    cfg = config_from_env({"PCS_HMAC_KEY": secret_of(CURRENT)})
    with BackendServer(Backend(BackendSettings(max_skew_seconds=30), cfg)) as srv:
        yield srv


def run(url: str, *faults: str, key: Key = CURRENT, **plan: Any) -> dict[str, Any]:
    plan.setdefault("count", 14)
    plan.setdefault("rate", 0)
    sim = AgentSimulator(AgentPlan(url, faults=tuple(parse_fault(f) for f in faults), **plan),
                         StaticKey(key, "test"), old_key=StaticKey(OLD, "old"),
                         new_key=StaticKey(NEW, "new"))
    return sim.run()


@pytest.mark.parametrize("fault, status, cause", [
    ("old-key", "401", "unverifiable"),
    ("new-key-early", "401", "unverifiable"),
    ("skew:120", "401", "clock_skew"),
    ("skew:-120", "401", "clock_skew"),
    ("skew:10", "200", "valid"),
    ("profile:go", "401", "canonicalization_drift"),
    ("profile:fixed9", "401", "canonicalization_drift"),
    ("tamper", "401", "tampered"),
    ("tamper:epoch", "401", "tampered"),
    ("tamper:D_hat", "401", "unverifiable"),
    ("wrong-key", "401", "unverifiable"),
    ("malformed", "400", "malformed"),
])
def test_each_fault_produces_the_expected_backend_verdict(backend: BackendServer, fault: str,
                                                          status: str, cause: str) -> None:
    report = run(backend.url, fault)
    assert report["sent"] == 14
    assert report["by_fault"] == {fault: {status: 14}}
    assert backend.backend.stats()["verdicts"] == {cause: 14}
    if ":" not in fault:
        assert EXPECTED_CAUSE[fault] == cause


def test_no_fault_is_accepted_and_samples_name_the_agents(backend: BackendServer) -> None:
    report = run(backend.url, agents=4)
    assert report["by_status"] == {"200": 14}
    assert report["key_fingerprints"] == [CURRENT.fingerprint]
    run(backend.url, "wrong-key", agents=4, agent_prefix="edge")
    assert {s["source"] for s in backend.backend.samples(100)} == {
        f"edge-{i:03d}" for i in range(4)}


def test_fault_fraction_mixes_faults_in_turn(backend: BackendServer) -> None:
    report = run(backend.url, "wrong-key", "malformed", count=200, fault_fraction=0.5, seed=7)
    by = report["by_fault"]
    assert 60 < by["none"]["200"] < 140
    assert by["wrong-key"] == {"401": by["wrong-key"]["401"]} and by["wrong-key"]["401"] > 20
    assert by["malformed"] == {"400": by["malformed"]["400"]} and by["malformed"]["400"] > 20
    assert sum(report["by_status"].values()) == 200


def test_replay_is_answered_from_the_dedup_cache(backend: BackendServer) -> None:
    report = run(backend.url, "replay", count=40, fault_fraction=0.5, agents=1, workers=1,
                 seed=3)
    assert set(report["by_status"]) == {"200"}
    assert backend.backend.stats()["dedup_hits"] > 0


def test_pcs_look_upstream(backend: BackendServer) -> None:
    run(backend.url, "wrong-key", count=3)
    pcs = backend.backend.samples(1)[0]["pcs"]
    assert set(pcs) >= {"pcs_id", "schema", "version", "shard_id", "epoch", "attempt", "sent_at",
                        "seed", "scales", "N_j", "coh_star", "v_star", "D_hat", "r", "regime",
                        "budget", "merkle_root", "sig", "ft"}
    assert pcs["schema"] == "fractal-lba-kakeya"
    assert pcs["pcs_id"] == expected_pcs_id(pcs["merkle_root"], pcs["epoch"], pcs["shard_id"])
    parse_pcs(pcs)


def test_seed_makes_runs_reproducible_and_pcs_ids_unique(backend: BackendServer) -> None:
    run(backend.url, "wrong-key", count=10, seed=11, workers=1)
    first = [s["pcs"]["pcs_id"] for s in backend.backend.samples(10)]
    run(backend.url, "wrong-key", count=10, seed=11, workers=1)
    second = [s["pcs"]["pcs_id"] for s in backend.backend.samples(10)]
    assert first == second and len(set(first)) == 10


def test_rate_and_duration_pace_the_run(backend: BackendServer) -> None:
    t0 = time.monotonic()
    report = run(backend.url, count=10, rate=50)
    assert time.monotonic() - t0 >= 0.17 and report["sent"] == 10
    report = run(backend.url, count=None, duration=0.5, rate=20)
    assert 8 <= report["sent"] <= 11


def test_stop_ends_an_open_ended_run(backend: BackendServer) -> None:
    import threading

    sim = AgentSimulator(AgentPlan(backend.url, rate=50), StaticKey(CURRENT, "t"))
    threading.Timer(0.3, sim.stop).start()
    t0 = time.monotonic()
    report = sim.run()
    assert time.monotonic() - t0 < 3 and report["sent"] > 3


def test_unreachable_backend_counts_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = run(f"http://127.0.0.1:{port}", count=3, workers=1)
    assert report["by_status"] == {"error": 3}


def test_ed25519_agents(tmp_path: Path) -> None:
    k = ed_key("ed-current")
    cfg = config_from_env({"PCS_SIGN_ALG": "ed25519",
                           "PCS_ED25519_PUB_B64": base64.b64encode(k.public or b"").decode()})
    with BackendServer(Backend(config=cfg)) as srv:
        assert run(srv.url, key=k, count=5)["by_status"] == {"200": 5}
        assert run(srv.url, "wrong-key", key=k, count=5)["by_status"] == {"401": 5}
        assert run(srv.url, "profile:go", key=k, count=5)["by_status"] == {"401": 5}
        assert srv.backend.stats()["verdicts"]["canonicalization_drift"] == 5


def test_key_sources(tmp_path: Path) -> None:
    entry = tmp_path / "entry.json"
    entry.write_text(json.dumps(CURRENT.to_entry()))
    assert parse_key_spec(f"file:{entry}").current().fingerprint == CURRENT.fingerprint
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [ed_key("pub-only").public_entry(),
                                         OLD.with_state("retired").to_entry(),
                                         NEW.to_entry()]}))
    assert parse_key_spec(f"file:{ring}").current().fingerprint == NEW.fingerprint
    env = {"K": secret_of(CURRENT), "E": base64.b64encode(bytes(range(32))).decode()}
    assert parse_key_spec("env:K", environ=env).current().fingerprint == CURRENT.fingerprint
    ed = parse_key_spec("env:E", "ed25519", environ=env).current()
    assert ed.alg == "ed25519" and ed.can_sign
    for bad in ("K", "env:MISSING", "nope:x", "secret:a/b", f"file:{tmp_path / 'none'}"):
        with pytest.raises(KeyringError):
            parse_key_spec(bad, environ=env)
    with pytest.raises(KeyringError, match="base64"):
        literal_key("not base64!", "ed25519")


def test_secret_key_source_picks_up_a_promotion() -> None:
    store = {"key": secret_of(OLD)}
    src = SecretKey(lambda ns, name, key: store.get(key), "ns", "agent-key", "key", refresh=0.0)
    assert src.current().fingerprint == OLD.fingerprint
    store["key"] = secret_of(NEW)
    assert src.current().fingerprint == NEW.fingerprint and src.changes == 1
    del store["key"]  # a failed re-read keeps the last key
    assert src.current().fingerprint == NEW.fingerprint
    assert secret_of(NEW) not in src.describe()
    with pytest.raises(KeyringError, match="not found"):
        SecretKey(lambda *a: None, "ns", "missing", "key")


@pytest.mark.parametrize("text, ok", [
    ("old-key", True), ("skew:30", True), ("skew:-1.5", True), ("profile:go", True),
    ("profile:fixed9", True), ("tamper", True), ("tamper:D_hat", True), ("replay", True),
    ("skew", False), ("skew:abc", False), ("profile:rust", False), ("tamper:ft", False),
    ("wrong-key:1", False), ("bogus", False),
])
def test_parse_fault(text: str, ok: bool) -> None:
    if ok:
        assert parse_fault(text).label == text
    else:
        with pytest.raises(ValueError):
            parse_fault(text)


def test_key_faults_need_their_keys() -> None:
    with pytest.raises(ValueError, match="old key"):
        AgentSimulator(AgentPlan("http://127.0.0.1:1", faults=(parse_fault("old-key"),)),
                       StaticKey(CURRENT, "t"))
    with pytest.raises(ValueError, match="http://"):
        AgentSimulator(AgentPlan("ftp://x"), StaticKey(CURRENT, "t"))


def test_tamper_changes_only_the_named_signed_field(backend: BackendServer) -> None:
    import random
    from datetime import UTC, datetime

    from sigops.testbed.faults import FaultContext, build_body
    from sigops.testbed.pcsgen import make_pcs

    now = datetime.now(UTC)
    pcs = make_pcs(random.Random(1), "shard-1", 3, now, seq=0)
    ctx = FaultContext(pcs=pcs, key=CURRENT, profile="python", sent_at=now, seq=0)
    clean = loads(build_body(None, ctx))
    for field in SIGNED_FIELDS:
        bad = loads(build_body(parse_fault(f"tamper:{field}"), ctx))
        assert [k for k in clean if clean[k] != bad[k]] == [field]


def test_cli_agents_prints_the_report(backend: BackendServer, capsys: Any,
                                      monkeypatch: Any) -> None:
    monkeypatch.setenv("AGENT_KEY", secret_of(CURRENT))
    rc = main(["agents", "--url", backend.url, "--key-env", "AGENT_KEY", "--count", "6",
               "--rate", "0", "--fault", "wrong-key", "--fault-fraction", "0.5", "--seed", "1"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["sent"] == 6 and set(out["by_status"]) <= {"200", "401"}
    assert secret_of(CURRENT) not in json.dumps(out)


def test_cli_usage_errors(capsys: Any, monkeypatch: Any) -> None:
    for name in ("PCS_SIGN_ALG", "PCS_HMAC_KEY", "PCS_HMAC_KEYS", "PCS_ED25519_PUB_B64",
                 "PCS_ED25519_PUBS_B64", "TOKEN_RATE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["agents", "--url", "http://127.0.0.1:1"]) == 2  # no key
    assert main(["agents", "--url", "http://127.0.0.1:1", "--key-env", "X", "--fault",
                 "bogus"]) == 2
    assert main(["backend", "--profile", "rust"]) == 2
    assert main(["backend", "--listen", "127.0.0.1:0"]) == 2  # no key configured
    assert "no verification key" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "backend" in capsys.readouterr().out
