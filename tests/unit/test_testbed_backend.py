"""The reference backend without Kubernetes: status codes, dedup, freshness, metrics, samples."""

from __future__ import annotations

import base64
import email.utils
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pcskit import base_pcs, ed_key, hmac_key

from sigops.core.diagnose import Diagnoser, aggregate
from sigops.core.keys import Key, KeyRing
from sigops.core.pcs import sign_pcs
from sigops.testbed.backend import Backend, BackendServer, BackendSettings
from sigops.testbed.reload import ConfigError, config_from_env

KEY_A = hmac_key("a")
KEY_B = hmac_key("b")


def env_for(*keys: Key, **extra: str) -> dict[str, str]:
    """The backend env accepting ``keys`` (the key strings are test-only)."""
    if keys[0].alg == "ed25519":
        pubs = ",".join(base64.b64encode(k.public or b"").decode() for k in keys)
        return {"PCS_SIGN_ALG": "ed25519", "PCS_ED25519_PUBS_B64": pubs, **extra}
    return {"PCS_SIGN_ALG": "hmac",
            "PCS_HMAC_KEYS": ",".join((k.secret or b"").decode() for k in keys), **extra}


def now_iso(offset: float = 0.0) -> str:
    t = datetime.now(UTC) + timedelta(seconds=offset)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fresh(key: Key, n: int = 0, profile: str = "python", **over: Any) -> dict[str, Any]:
    """A PCS signed now by ``key``; ``n`` makes its pcs_id unique."""
    over.setdefault("sent_at", now_iso())
    return sign_pcs(base_pcs(shard=f"shard-{n:04d}", **over), key, profile)


def post(url: str, body: bytes | Mapping[str, Any], agent: str | None = None
         ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if agent:
        headers["X-Agent-Id"] = agent
    req = urllib.request.Request(f"{url}/v1/pcs/submit", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def get(url: str, path: str) -> tuple[int, bytes, Mapping[str, str]]:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=5) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


@pytest.fixture
def start() -> Iterator[Any]:
    servers: list[BackendServer] = []

    def _start(env: Mapping[str, str] | None = None, **settings: Any) -> BackendServer:
        cfg = config_from_env(env) if env is not None else None
        srv = BackendServer(Backend(BackendSettings(**settings), cfg)).start()
        servers.append(srv)
        return srv

    yield _start
    for s in servers:
        s.stop()


def test_accepts_a_valid_pcs_with_200(start: Any) -> None:
    srv = start(env_for(KEY_A))
    pcs = fresh(KEY_A)
    status, body, _ = post(srv.url, pcs)
    assert (status, body) == (200, {"status": "accepted", "pcs_id": pcs["pcs_id"]})


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"pcs_id": "x", "pcs_id": "y"}',
    b'{"D_hat": NaN}',
    b"[]",
    json.dumps({k: v for k, v in fresh(KEY_A).items() if k != "sig"}).encode(),
    json.dumps({**fresh(KEY_A), "sig": "!!"}).encode(),
    json.dumps({**fresh(KEY_A), "epoch": 2**60}).encode(),
], ids=["bad-json", "dup-key", "nan", "not-object", "no-sig", "bad-base64", "huge-int"])
def test_malformed_is_400_and_not_a_signature_error(start: Any, body: bytes) -> None:
    srv = start(env_for(KEY_A))
    status, reply, _ = post(srv.url, body)
    assert status == 400 and reply["error"] == "malformed" and reply["reason"]
    stats = srv.backend.stats()
    assert stats["malformed"] == 1 and stats["signature_err"] == 0


def test_oversize_body_is_400_without_reading_it(start: Any) -> None:
    srv = start(env_for(KEY_A), max_body_bytes=512)
    status, reply, _ = post(srv.url, b" " * 4096)
    assert status == 400 and "exceeds" in reply["reason"]


def test_bad_signature_is_401_with_a_generic_message(start: Any) -> None:
    srv = start(env_for(KEY_A))
    status, reply, _ = post(srv.url, fresh(KEY_B))
    assert status == 401
    assert reply["error"] == "signature verification failed"
    assert srv.backend.stats()["verdicts"] == {"unverifiable": 1}


def test_every_non_valid_verdict_is_401(start: Any) -> None:
    srv = start(env_for(KEY_A), max_skew_seconds=30)
    cases = {
        "canonicalization_drift": fresh(KEY_A, 1, profile="go"),
        "clock_skew": fresh(KEY_A, 2, sent_at=now_iso(-600)),
        "tampered": {**fresh(KEY_A, 3), "merkle_root": "cd" * 32},
        "unverifiable": fresh(KEY_B, 4),
    }
    for cause, pcs in cases.items():
        assert post(srv.url, pcs)[0] == 401, cause
    assert srv.backend.stats()["verdicts"] == {c: 1 for c in cases}


def test_multi_key_hmac_and_ed25519(start: Any) -> None:
    srv = start(env_for(KEY_A, KEY_B))
    assert post(srv.url, fresh(KEY_A, 1))[0] == 200
    assert post(srv.url, fresh(KEY_B, 2))[0] == 200
    ed_a, ed_b, ed_c = ed_key("ed-a"), ed_key("ed-b"), ed_key("ed-c")
    eds = start(env_for(ed_a, ed_b))
    assert eds.backend.current_config()["alg"] == "ed25519"
    assert post(eds.url, fresh(ed_a, 1))[0] == 200
    assert post(eds.url, fresh(ed_b, 2))[0] == 200
    assert post(eds.url, fresh(ed_c, 3))[0] == 401
    single = start({"PCS_SIGN_ALG": "ed25519",
                    "PCS_ED25519_PUB_B64": base64.b64encode(ed_c.public or b"").decode()})
    assert post(single.url, fresh(ed_c, 4))[0] == 200


def test_token_rate_answers_429_and_zero_means_unlimited(start: Any) -> None:
    limited = start(env_for(KEY_A, TOKEN_RATE="2"))
    codes = [post(limited.url, fresh(KEY_A, i))[0] for i in range(8)]
    assert codes.count(429) >= 4 and codes.count(200) >= 2
    assert limited.backend.stats()["rate_limited"] == codes.count(429)
    status, body, headers = post(limited.url, fresh(KEY_A, 99))
    if status == 429:
        assert headers["Retry-After"] == "1" and body == {"error": "rate limited"}
    for rate in ("0", ""):
        free = start(env_for(KEY_A, TOKEN_RATE=rate))
        assert {post(free.url, fresh(KEY_A, i))[0] for i in range(20)} == {200}


def test_replay_of_an_accepted_pcs_is_answered_from_the_dedup_cache(start: Any) -> None:
    srv = start(env_for(KEY_A))
    pcs = fresh(KEY_A)
    assert post(srv.url, pcs)[0] == 200
    # The backend drops key A (a rotation finished): a replay is still 200, not 401 ...
    srv.backend.apply(config_from_env(env_for(KEY_B)))
    status, body, _ = post(srv.url, pcs)
    assert (status, body.get("dedup")) == (200, True)
    # ... but a new PCS signed with A is not, and the replay was not verified again.
    assert post(srv.url, fresh(KEY_A, 7))[0] == 401
    stats = srv.backend.stats()
    assert stats["dedup_hits"] == 1 and stats["verdicts"]["valid"] == 1
    # Same pcs_id, other signed content (validly signed): tampering, never accepted.
    changed = sign_pcs({**pcs, "D_hat": 1.5}, KEY_B)
    status, _, _ = post(srv.url, changed)
    assert status == 401 and srv.backend.stats()["verdicts"]["tampered"] == 1


def test_freshness_against_the_backend_clock(start: Any) -> None:
    srv = start(env_for(KEY_A), max_skew_seconds=30)
    assert post(srv.url, fresh(KEY_A, 1, sent_at=now_iso(-20)))[0] == 200
    assert post(srv.url, fresh(KEY_A, 2, sent_at=now_iso(-40)))[0] == 401
    assert post(srv.url, fresh(KEY_A, 3, sent_at=now_iso(+40)))[0] == 401
    # Without --max-skew, sent_at is not checked.
    lax = start(env_for(KEY_A))
    assert post(lax.url, fresh(KEY_A, 4, sent_at=now_iso(-86400)))[0] == 200


def test_a_wrong_backend_clock_rejects_fresh_pcs_and_shows_in_date(start: Any) -> None:
    srv = start(env_for(KEY_A), max_skew_seconds=30, clock_offset_seconds=300)
    status, _, headers = post(srv.url, fresh(KEY_A))
    assert status == 401
    backend_time = email.utils.parsedate_to_datetime(headers["Date"])
    assert abs((backend_time - datetime.now(UTC)).total_seconds() - 300) < 5
    sample = srv.backend.samples(1)[0]
    received = datetime.fromisoformat(sample["received_at"].replace("Z", "+00:00"))
    assert abs((received - datetime.now(UTC)).total_seconds() - 300) < 5
    # The diagnosis of the samples points at the backend's clock when all agents agree.
    for i, agent in enumerate(("agent-1", "agent-2", "agent-3")):
        post(srv.url, fresh(KEY_A, 10 + i), agent=agent)
    report = aggregate([Diagnoser(KeyRing((KEY_A,)), max_skew_seconds=30).classify_obj(s, i)
                        for i, s in enumerate(srv.backend.samples(3))], max_skew_seconds=30)
    assert report["dominant_cause"] == "clock_skew"
    assert report["skew"]["suspect"] == "backend_clock"
    assert report["skew"]["offset_seconds"] == pytest.approx(300, abs=5)


def test_metrics_counters_move(start: Any) -> None:
    srv = start(env_for(KEY_A))
    post(srv.url, fresh(KEY_A, 1))
    post(srv.url, fresh(KEY_B, 2))
    post(srv.url, fresh(KEY_B, 3))
    post(srv.url, b"{")
    status, text, headers = get(srv.url, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = text.decode().splitlines()
    for line in ("flk_signature_err 2.0", "flk_ingest_total 4.0", "flk_accepted 1.0",
                 "# TYPE flk_signature_err counter", 'flk_testbed_verdicts{cause="valid"} 1.0'):
        assert line in lines, line
    reg = srv.backend.metrics.registry
    assert reg.get_sample_value("flk_signature_err") == 2.0


def test_signature_error_metric_name_is_configurable(start: Any) -> None:
    srv = start(env_for(KEY_A), signature_error_metric="flk_signature_errors")
    post(srv.url, fresh(KEY_B))
    text = get(srv.url, "/metrics")[1].decode().splitlines()
    assert "flk_signature_errors 1.0" in text
    assert not any(t.startswith("flk_signature_err ") for t in text)


def test_samples_are_bounded_recent_envelopes_that_diagnose(start: Any) -> None:
    old = hmac_key("old", "retired")
    srv = start(env_for(KEY_A), samples_max=5)
    sent = [fresh(old, i) for i in range(8)]
    for i, pcs in enumerate(sent):
        assert post(srv.url, pcs, agent=f"agent-{i % 2}")[0] == 401
    assert post(srv.url, fresh(KEY_A, 100))[0] == 200  # successes are not samples
    status, raw, _ = get(srv.url, "/v1/samples/failures?limit=1000")
    samples = json.loads(raw)["samples"]
    assert status == 200 and len(samples) == 5
    assert [s["pcs"] for s in samples] == sent[-5:]  # the most recent, oldest first
    assert all(set(s) == {"pcs", "received_at", "source"} for s in samples)
    assert {s["source"] for s in samples} == {"agent-0", "agent-1"}
    two = json.loads(get(srv.url, "/v1/samples/failures?limit=2")[1])["samples"]
    assert [s["pcs"] for s in two] == sent[-2:]
    assert get(srv.url, "/v1/samples/failures?limit=x")[0] == 400
    # Exactly what `sigops diagnose` reads: JSONL envelopes, judged by the core.
    d = Diagnoser(KeyRing((KEY_A, old)))
    verdicts = d.run([json.dumps(s) for s in samples])
    assert {v.cause for v in verdicts} == {"stale_key"}
    report = aggregate(verdicts)
    assert report["incident_cause"] == "KeyRotationInProgress" and report["scenario"] == "A"


def test_samples_keep_the_client_address_without_an_agent_id(start: Any) -> None:
    srv = start(env_for(KEY_A))
    post(srv.url, fresh(KEY_B))
    assert srv.backend.samples(1)[0]["source"] == "127.0.0.1"


def test_samples_endpoint_caps_at_1000_by_default() -> None:
    backend = Backend(BackendSettings(), config_from_env(env_for(KEY_A)))
    body = json.dumps(fresh(KEY_B)).encode()
    for _ in range(1005):
        backend.submit(body, "agent")
    assert len(backend.samples(5000)) == 1000


def test_not_ready_until_configured_then_health_and_config(start: Any) -> None:
    srv = start(None)
    assert post(srv.url, fresh(KEY_A))[0] == 503
    assert get(srv.url, "/healthz")[0] == 503
    srv.backend.apply(config_from_env(env_for(KEY_A)))
    assert get(srv.url, "/healthz")[:2] == (200, b"ok\n")
    cfg = json.loads(get(srv.url, "/v1/testbed/config")[1])["config"]
    assert cfg["fingerprints"] == [KEY_A.fingerprint] and cfg["generation"] == 1
    assert get(srv.url, "/nope")[0] == 404
    stats = json.loads(get(srv.url, "/v1/testbed/stats")[1])
    assert stats["generation"] == 1


def test_no_key_material_in_config_stats_or_logs(start: Any, caplog: Any) -> None:
    caplog.set_level("DEBUG", logger="sigops.testbed")
    srv = start(env_for(KEY_A, KEY_B))
    post(srv.url, fresh(KEY_A))
    exposed = (json.dumps(srv.backend.current_config()) + json.dumps(srv.backend.stats())
               + get(srv.url, "/v1/testbed/config")[1].decode() + caplog.text
               + get(srv.url, "/metrics")[1].decode())
    for k in (KEY_A, KEY_B):
        assert (k.secret or b"").decode() not in exposed
        assert k.fingerprint in exposed


@pytest.mark.parametrize("env, message", [
    ({"PCS_SIGN_ALG": "hmac"}, "no verification key"),
    ({"PCS_SIGN_ALG": "ed25519"}, "no verification key"),
    ({"PCS_SIGN_ALG": "rsa", "PCS_HMAC_KEY": "k"}, "is not hmac or ed25519"),
    ({"PCS_HMAC_KEY": "k", "TOKEN_RATE": "fast"}, "TOKEN_RATE"),
    ({"PCS_SIGN_ALG": "ed25519", "PCS_ED25519_PUB_B64": "abc"}, "base64"),
])
def test_unusable_env_config_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_env(env)


def test_concurrent_submits_are_all_counted(start: Any) -> None:
    import concurrent.futures

    srv = start(env_for(KEY_A))
    bodies = [fresh(KEY_A, i) if i % 2 else fresh(KEY_B, i) for i in range(60)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda b: post(srv.url, b)[0], bodies))
    assert codes.count(200) == 30 and codes.count(401) == 30
    st = srv.backend.stats()
    assert (st["ingest"], st["accepted"], st["signature_err"]) == (60, 30, 30)


def test_drain_answers_not_ready_closes_connections_then_stops(start: Any) -> None:
    """SIGTERM behaviour: while draining, submits still succeed but each reply closes its
    connection and /healthz is 503; afterwards nothing listens and nothing was cut off."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    srv = start(env_for(KEY_A))
    host, port = urlsplit(srv.url).hostname, urlsplit(srv.url).port
    conn = http.client.HTTPConnection(host, port, timeout=5)  # a keep-alive client
    conn.request("POST", "/v1/pcs/submit", body=json.dumps(fresh(KEY_A, 1)))
    first = conn.getresponse()
    first.read()
    assert first.status == 200 and first.getheader("Connection") != "close"
    left: list[int] = []
    t = threading.Thread(target=lambda: left.append(srv.drain(delay=1.0, timeout=5)))
    t.start()
    time.sleep(0.2)
    conn.request("POST", "/v1/pcs/submit", body=json.dumps(fresh(KEY_A, 2)))
    during = conn.getresponse()
    during.read()
    assert during.status == 200 and during.getheader("Connection") == "close"
    assert get(srv.url, "/healthz")[0] == 503
    t.join(timeout=10)
    assert left == [0]
    with pytest.raises(OSError):
        http.client.HTTPConnection(host, port, timeout=2).request("GET", "/healthz")
