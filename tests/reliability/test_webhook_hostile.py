"""Hostile clients of the real operator's alert receiver (``POST /v1/alerts``).

Wrong, missing and partial tokens; bodies over 1 MiB (declared and sent); slow clients that
send part of a request and stall (closed after 10 s: no headers, or no body, in time); invalid JSON;
schema-valid garbage (wrong version, labels that are not strings, 5000 alerts); replayed
deliveries. The receiver must stay up and keep serving others, open no incident from an
unauthenticated post, count every rejection in ``sigops_signals_rejected_total{reason}`` and
log each as a potential attack, without the token.

Then a flood from a forged source (alerts naming another namespace or deployment, no configured
target) opens nothing and must not use up a real source's quota of 3 incidents per hour, before
or after a restart.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

from kubernetes import client

from sigops.core.keys import HMAC, Key
from tests.reliability import kit
from tests.support import TOKEN, backend, incidents, start


def alert_doc(ns: str, fp: str, status: str = "firing", deployment: str = "fractal-lba-backend",
              group: str | None = None, **labels: str) -> dict[str, Any]:
    return {"version": "4", "groupKey": group or f"g-{fp}", "status": status,
            "receiver": "sigops",
            "alerts": [{"status": status, "fingerprint": fp,
                        "labels": {"alertname": "FLKSignatureFailuresSpike",
                                   "severity": "warning", "namespace": ns,
                                   "deployment": deployment, **labels},
                        "annotations": {"value": "42"}, "startsAt": "2026-11-22T00:00:00Z"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def healthz(port: int) -> float:
    """Seconds /healthz took (fails if not 200)."""
    t = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
    return time.monotonic() - t


class SlowClient:
    """Opens a connection, sends ``prefix`` and then nothing; records when the server hangs
    up (or answers)."""

    def __init__(self, port: int, prefix: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if prefix:
            self.sock.sendall(prefix)
        self.opened = time.monotonic()
        self.closed_after: float | None = None
        self.reply = b""
        self._t = threading.Thread(target=self._wait, daemon=True)
        self._t.start()

    def _wait(self) -> None:
        try:
            while True:
                b = self.sock.recv(4096)
                if not b:
                    break
                self.reply += b
        except OSError:
            pass
        self.closed_after = time.monotonic() - self.opened

    def join(self, timeout: float) -> None:
        self._t.join(timeout)
        self.sock.close()


def test_hostile_webhook_clients(api, namespace, operator_factory, tmp_path):
    t0 = time.monotonic()
    key = Key("k", HMAC, secret=b"reliability-webhook-backend-key-1")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key)
    op = start(operator_factory, tmp_path, namespace, None)
    port = op.alerts_port
    expected: Counter[str] = Counter()
    wrong_tokens = ["wrong-token-value-0001", TOKEN[:-1], TOKEN + "x", TOKEN[:8],
                    TOKEN.upper(), "", " " + TOKEN[1:]]

    # Slow clients first: they stall through everything below.
    good_head = (f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n").encode()
    slow = ([SlowClient(port, b"") for _ in range(3)]
            + [SlowClient(port, b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n") for _ in range(3)]
            + [SlowClient(port, good_head + b'{"version": "4",') for _ in range(3)])
    served: list[float] = []

    def timed_post(body: bytes, headers: dict[str, str]) -> int | None:
        t = time.monotonic()
        code, _ = kit.post_bytes(port, body, headers)
        served.append(time.monotonic() - t)
        return code

    n = 0

    def fresh_body() -> bytes:
        nonlocal n
        n += 1
        return json.dumps(alert_doc(namespace, f"{n:016x}")).encode()

    # Missing, wrong, partial tokens and other schemes: 401, nothing created.
    assert timed_post(fresh_body(), {}) == 401
    expected["no_token"] += 1
    for tok in wrong_tokens:
        assert timed_post(fresh_body(), bearer(tok)) == 401, tok
        expected["unauthorized"] += 1
    for hdr in (f"bearer {TOKEN}", f"Basic {base64.b64encode(TOKEN.encode()).decode()}", TOKEN,
                f"Bearer\t{TOKEN}", "Bearer", f"Token {TOKEN}"):
        assert timed_post(fresh_body(), {"Authorization": hdr}) == 401, hdr
        expected["unauthorized"] += 1
    # Unauthenticated and oversized: refused for the token first.
    assert kit.raw_request(port, b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 2097152\r\n\r\n")[0] == 401
    expected["no_token"] += 1
    # Oversized (authenticated): declared sizes and a real body.
    for length in ("2097152", str(10**12), str((1 << 20) + 1)):
        head = (f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()
        code, _ = kit.raw_request(port, head)
        assert code == 413, (length, code)
        expected["oversized"] += 1
    # A negative or bogus length is not HTTP: the HTTP layer answers 400 before any handler.
    for length in ("-5", "abc"):
        head = (f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()
        code, _ = kit.raw_request(port, head)
        assert code == 400, (length, code)
    code, _ = kit.post_bytes(port, b'{"version": "4", "alerts": []}' + b" " * (3 << 19),
                             bearer(TOKEN))
    assert code in (413, None)  # the server may hang up while the client still sends
    expected["oversized"] += 1
    # Invalid JSON.
    for body in (b"{not json", b"", b"\xff\xfe\x00", b'{"version": "4", "version": "4"}',
                 b"[" * 100_000, b'{"version": NaN}', b'{"version": "4", "alerts": [',
                 b'"\\ud800"'):
        assert timed_post(body, bearer(TOKEN)) == 400, body[:20]
        expected["bad_json"] += 1
    # Schema-valid garbage.
    base = alert_doc(namespace, "00000000000000aa")
    garbage = [
        {**base, "version": "3"}, {k: v for k, v in base.items() if k != "version"},
        {**base, "alerts": "all of them"}, {**base, "alerts": [7]},
        {**base, "alerts": [{**base["alerts"][0], "labels": {"namespace": 7}}]},
        {**base, "alerts": [{**base["alerts"][0], "labels": ["a", "b"]}]},
        {**base, "alerts": [{**base["alerts"][0], "annotations": {"a": {"b": 1}}}]},
        {**base, "alerts": [{**base["alerts"][0], "status": "maybe"}]},
        {**base, "alerts": [{**base["alerts"][0], "fingerprint": "f" * 100}]},
        {**base, "groupKey": 12},
        {**base, "alerts": [{"status": "firing", "labels": {"alertname": "x"}}] * 5000},
        [base], "version 4",
    ]
    for doc in garbage:
        assert timed_post(json.dumps(doc).encode(), bearer(TOKEN)) == 400, str(doc)[:80]
        expected["bad_schema"] += 1
    # Still serving others while the slow clients stall.
    health_times = [healthz(op.metrics_port) for _ in range(3)]
    assert incidents(api, namespace) == []  # nothing from any of the above

    # Replayed deliveries: one alert, 40 times (4 at a time at the end: larger bursts are
    # test_a_burst_of_deliveries_is_served): one incident.
    body = json.dumps(alert_doc(namespace, "0000000000000777", group="g-replay")).encode()
    codes: Counter[int | None] = Counter()
    for _ in range(36):
        codes[timed_post(body, bearer(TOKEN))] += 1
    lock = threading.Lock()

    def replay() -> None:
        code = timed_post(body, bearer(TOKEN))
        with lock:
            codes[code] += 1

    threads = [threading.Thread(target=replay) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == {200: 40}, codes
    assert len(incidents(api, namespace)) == 1
    assert max(served) < 5, f"a request waited {max(served):.1f}s behind the slow clients"

    # The slow clients are cut off after 10 s (idle or body timeout), not served for ever.
    for s in slow:
        s.join(timeout=25)
    closed = [s.closed_after for s in slow]
    assert all(c is not None and c < 20 for c in closed), closed
    unanswered = sum(1 for s in slow if not s.reply)

    # Every rejection counted by reason, logged as a potential attack, no token in logs.
    counted = kit.rejected_by_reason(op.metrics_port)
    assert counted == dict(expected), (counted, dict(expected))
    logs = op.logs()
    attack_lines = [line for line in logs.splitlines() if '"potential_attack": true' in line]
    assert len(attack_lines) == sum(expected.values())
    # (Equal counts above: the slow clients were neither counted nor logged.)
    slow_noted = sum(counted.values()) + len(attack_lines) - 2 * sum(expected.values())
    for tok in [TOKEN, *[t for t in wrong_tokens if len(t) >= 8]]:
        assert tok.strip() not in logs, "a token (or a guess of one) was logged"
    assert "Traceback" not in logs
    healthz(op.metrics_port)
    kit.figure("hostile webhooks", requests_rejected=sum(expected.values()),
               rejected_by_reason=dict(expected), counted_in_metrics=counted,
               attack_log_lines=len(attack_lines), incidents_from_unauthenticated=0,
               replayed_deliveries=40, incidents_from_replays=1,
               slow_clients=len(slow), slow_client_cut_off_after_s=[
                   round(min(c for c in closed if c is not None), 1),
                   round(max(c for c in closed if c is not None), 1)],
               slow_clients_counted_or_logged=slow_noted, slow_clients_unanswered=unanswered,
               max_other_request_s_during_stall=round(max(served), 3),
               max_healthz_s_during_stall=round(max(health_times), 3),
               seconds=round(time.monotonic() - t0, 1))


def test_a_burst_of_deliveries_is_served(api, namespace, operator_factory, tmp_path):
    key = Key("k", HMAC, secret=b"reliability-burst-backend-key-001")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key)
    op = start(operator_factory, tmp_path, namespace, None)
    body = json.dumps(alert_doc(namespace, "0000000000000888", group="g-burst")).encode()
    codes: Counter[int | None] = Counter()
    lock = threading.Lock()

    def post() -> None:
        code = kit.post_bytes(op.alerts_port, body, bearer(TOKEN))[0]
        with lock:
            codes[code] += 1

    threads = [threading.Thread(target=post) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kit.figure("hostile webhooks", burst_of_100_concurrent_deliveries=dict(
        (str(k), v) for k, v in codes.items()))
    assert codes == {200: 100}, codes
    assert len(incidents(api, namespace)) == 1


def _limited_record(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if (i.get("status") or {}).get("phase") == "RateLimited"]


def test_forged_source_flood_does_not_use_up_a_real_sources_quota(api, namespace,
                                                                  operator_factory, tmp_path):
    t0 = time.monotonic()
    key = Key("k", HMAC, secret=b"reliability-ratelimit-backend-key")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key)
    core = client.CoreV1Api(api)
    forged_ns = f"{namespace}-forged"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=forged_ns)))
    try:
        op = start(operator_factory, tmp_path, namespace, None)
        port = op.alerts_port
        sent = 0

        def flood(ns: str, dep: str, tag: str, n: int) -> list[int | None]:
            nonlocal sent
            out = []
            for i in range(n):
                doc = alert_doc(ns, f"{tag}{i:08x}".rjust(16, "0"), deployment=dep)
                out.append(kit.post_bytes(port, json.dumps(doc).encode(), bearer(TOKEN))[0])
                sent += 1
            return out

        # Forged sources: another (existing) namespace, the real namespace with another
        # deployment, a namespace that does not exist. None is a configured target: each is
        # answered (Alertmanager must not retry it), counted and opens nothing.
        assert set(flood(forged_ns, "fractal-lba-backend", "aa", 8)) == {200}
        assert set(flood(namespace, "not-the-backend", "bb", 8)) == {200}
        assert set(flood(f"{namespace}-nowhere", "fractal-lba-backend", "cc", 4)) == {200}
        assert incidents(api, namespace) == [] and incidents(api, forged_ns) == []
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics",
                                         timeout=10).read().decode()
        assert ('sigops_alerts_dropped_total{path="alertmanager",reason="unknown_target"} 20.0'
                in metrics)
        # The real source still has its whole quota: 3 incidents, then rate-limited.
        assert set(flood(namespace, "fractal-lba-backend", "dd", 3)) == {200}
        mine = [i for i in incidents(api, namespace)
                if i["spec"]["target"]["deployment"] == "fractal-lba-backend"]
        assert len(mine) == 3 and not _limited_record(mine), [
            (i.get("status") or {}).get("phase") for i in mine]
        # ... across a restart, too: the 4th is limited (one SignalRateLimited record), and
        # the forged sources' state did not spill over.
        op.kill()
        op.start()
        flood(namespace, "fractal-lba-backend", "ee", 2)
        mine = [i for i in incidents(api, namespace)
                if i["spec"]["target"]["deployment"] == "fractal-lba-backend"]
        limited = _limited_record(mine)
        assert len(mine) == 4 and len(limited) == 1, len(mine)
        rec = limited[0]["status"]["rateLimited"]["payload"]
        assert rec["source"] == f"{namespace}/fractal-lba-backend" and rec["signal_count"] == 4
        assert incidents(api, forged_ns) == []
        cm = core.read_namespaced_config_map("sigops-ratelimit", op.operator_ns)
        state = json.loads(cm.data["state.json"])["sources"]
        assert set(state) == {f"{namespace}/fractal-lba-backend"}, state  # no forged source
        assert len(state[f"{namespace}/fractal-lba-backend"]["accepted"]) == 3
        kit.figure("rate limit: forged-source flood", alerts_sent=sent,
                   forged_sources=3, real_source_incidents_before_limit=3,
                   real_source_limited_after=4, restarts=1,
                   sources_tracked=len(state), seconds=round(time.monotonic() - t0, 1))
    finally:
        kit.REGISTRY.harvest_secrets(api, forged_ns)
        docs = kit.cluster_documents(api, [forged_ns])
        _, _, found = kit.scan(docs)
        core.delete_namespace(forged_ns)
        assert not found, found
