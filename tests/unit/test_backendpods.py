"""Pieces of the pod evidence that need no cluster: a pod's clock from its Date header (the
testbed backend's clock set wrong on purpose), which WAL entries are judged, pod rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pcskit import hmac_key
from test_testbed_backend import env_for

from sigops.core.wal import WalEntry
from sigops.incident.backendpods import (
    _failing_or_unparsed,
    _pod_row,
    _secret_names,
    clock_offset,
)
from sigops.testbed.backend import Backend, BackendServer, BackendSettings
from sigops.testbed.reload import config_from_env

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("offset", [0.0, 42.0, -300.0])
def test_clock_offset_from_the_date_header(offset: float) -> None:
    b = Backend(BackendSettings(clock_offset_seconds=offset),
                config_from_env(env_for(hmac_key("k"))))
    srv = BackendServer(b, "127.0.0.1", 0)
    srv.start()
    try:
        got = clock_offset(f"{srv.url}/healthz", 5)
        assert got is not None and abs(got - offset) <= 1.0, got
        b.draining = True  # 503 still has a Date header
        got = clock_offset(f"{srv.url}/healthz", 5)
        assert got is not None and abs(got - offset) <= 1.0
    finally:
        srv.stop()


def entry(body: bytes | None, error: str | None = None) -> WalEntry:
    return WalEntry(0, body, None if body is None else "2026-11-30T03:00:00Z", error)


def test_only_refused_ids_and_non_pcs_bodies_are_judged() -> None:
    failing = {"bad-1"}
    assert _failing_or_unparsed(entry(json.dumps({"pcs_id": "bad-1"}).encode()), failing)
    assert not _failing_or_unparsed(entry(json.dumps({"pcs_id": "ok-1"}).encode()), failing)
    assert _failing_or_unparsed(entry(b"{not json"), failing)
    assert _failing_or_unparsed(entry(b'{"pcs_id": 5}'), failing)
    assert _failing_or_unparsed(entry(b'{"pcs_id": "a", "pcs_id": "b"}'), failing)  # dup key
    assert _failing_or_unparsed(entry(None, "torn"), failing)
    # no refused id known (no logs): every entry
    assert _failing_or_unparsed(entry(json.dumps({"pcs_id": "ok-1"}).encode()), None)


def test_pod_row_counts_restarts_and_names_the_revision() -> None:
    pod = {"metadata": {"name": "be-1", "labels": {"pod-template-hash": "abc"}},
           "status": {"phase": "Running",
                      "conditions": [{"type": "Ready", "status": "False"}],
                      "containerStatuses": [
                          {"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                          {"restartCount": 1, "state": {"running": {}}}]}}
    row = _pod_row(pod, {"abc": 4})
    assert row == {"name": "be-1", "phase": "Running", "ready": False, "restarts": 4,
                   "revision": 4, "clockOffsetSeconds": None, "waiting": ["CrashLoopBackOff"]}


def test_secret_names_of_the_backend() -> None:
    dep = {"spec": {"template": {"spec": {
        "containers": [{"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s1",
                                                                              "key": "k"}}},
                                {"name": "B", "value": "x"}],
                        "envFrom": [{"secretRef": {"name": "s2"}}]}],
        "volumes": [{"name": "v", "secret": {"secretName": "s3"}}]}}}}
    assert _secret_names(dep) == {"s1", "s2", "s3"}


def test_the_documented_sidecar_patch_is_the_one_the_tests_run() -> None:
    """runbooks/wal-reader-sidecar.yaml (what users apply) and the manifest builder the node
    tests deploy describe the same container, volume and WAL_DIR."""
    import tomllib

    import yaml
    from tests.support import REPO

    from sigops.testbed.manifests import WAL_DIR, running_backend, wal_reader

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    doc = yaml.safe_load((REPO / "runbooks" / "wal-reader-sidecar.yaml").read_text())
    pod = doc["spec"]["template"]["spec"]
    backend, sidecar = pod["containers"]
    assert sidecar == wal_reader(f"sigops:{version}")
    built = running_backend([], f"sigops:{version}", upstream=True)["spec"]["template"]["spec"]
    assert pod["volumes"] == built["volumes"]
    assert backend["volumeMounts"] == built["containers"][0]["volumeMounts"]
    assert backend["env"] == [{"name": "WAL_DIR", "value": WAL_DIR}]
    assert {"name": "WAL_DIR", "value": WAL_DIR} in built["containers"][0]["env"]


def test_a_pod_without_the_named_container_has_no_port() -> None:
    from sigops.incident.backendpods import _port

    pod = {"spec": {"containers": [{"name": "api", "ports": [{"name": "http",
                                                               "containerPort": 9000}]}]}}
    assert _port(pod, None, "api") == 9000
    assert _port(pod, None, None) == 9000
    assert _port(pod, None, "backend") is None
    assert _port(pod, "flk-wal", None) is None


@pytest.mark.parametrize("starts", ["0001-01-01T00:00:00Z", "0001-01-01T00:09:00+00:00",
                                    "soon", "", "2026-11-30T02:55:00Z"])
def test_the_log_window_starts_within_the_last_hour(starts: str) -> None:
    from datetime import UTC, datetime, timedelta

    from sigops.incident.evidence import _window_start
    from sigops.settings import Settings

    now = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    start = _window_start({"alert": {"startsAt": starts}}, now, Settings())
    assert now - timedelta(hours=1, minutes=10) <= start <= now - timedelta(seconds=60)


def test_the_documented_network_policy_is_the_one_the_tests_apply() -> None:
    """runbooks/wal-reader-networkpolicy.yaml admits only sigops' pods to the WAL reader port
    and keeps the backend's own port open, as the builder the node tests apply."""
    import yaml
    from tests.support import REPO

    from sigops.testbed.manifests import WAL_PORT, wal_reader_policy

    doc = yaml.safe_load((REPO / "runbooks" / "wal-reader-networkpolicy.yaml").read_text())
    assert doc == wal_reader_policy({"app": "fractal-lba-backend"})
    wal_rule, backend_rule = doc["spec"]["ingress"]
    assert wal_rule["ports"] == [{"protocol": "TCP", "port": WAL_PORT}]
    assert wal_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "sigops"
    assert "from" not in backend_rule and WAL_PORT not in [p["port"]
                                                          for p in backend_rule["ports"]]


class _Sidecar:
    """``sigops wal serve``'s app on 127.0.0.1 in a thread of its own."""

    def __init__(self, directory: str, tokens: object) -> None:
        import asyncio
        import threading

        from aiohttp import web

        from sigops.runtime.walreader import WalDirectory, make_app

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(make_app(WalDirectory(directory, 1 << 20),
                                             tokens))  # type: ignore[arg-type]
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_sigops_reads_the_sidecar_with_its_token_and_says_why_when_it_cannot(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The operator presents the first line of its token file; without a token it does not
    ask; a token the sidecar does not hold is named as the reason; no token in any note."""
    import logging
    import time as _time
    from datetime import UTC, datetime, timedelta

    from sigops.incident import backendpods
    from sigops.incident.backendpods import PodEvidence, _wal, use_wal_token
    from sigops.settings.tokens import TokenFile
    from sigops.testbed.upstream import InboxWal

    d = tmp_path
    now_ns = _time.time_ns()
    wal = InboxWal(d / "wal")
    for i in range(3):
        wal.append(json.dumps({"pcs_id": f"id-{i}"}).encode(), now_ns - i * 1_000_000_000)
    (d / "sidecar-token").write_text("the-token-of-sigops-1\nthe-older-token\n")
    (d / "ours").write_text("the-token-of-sigops-1\n")
    (d / "wrong").write_text("a-token-it-does-not-hold\n")
    side = _Sidecar(str(d / "wal"), TokenFile(str(d / "sidecar-token")))
    pod = {"metadata": {"name": "p1"}, "status": {"podIP": "127.0.0.1", "phase": "Running"},
           "spec": {"containers": [{"name": "wal-reader", "ports": [
               {"name": "flk-wal", "containerPort": side.port}]}]}}
    now = datetime.now(UTC)

    def read() -> dict[str, object]:
        pe = PodEvidence()
        _wal(pe, None, "ns", [pod], None, now - timedelta(minutes=10), now,  # type: ignore[arg-type]
             5.0, None, None, _time.monotonic() + 30)
        return {"source": pe.sources[-1], "entries": len(pe.wal)}

    try:
        with caplog.at_level(logging.DEBUG):
            use_wal_token(None)
            got = read()
            assert got["entries"] == 0 and "no WAL reader token" in str(got["source"])
            use_wal_token(TokenFile(str(d / "ours")))
            got = read()
            assert got["entries"] == 3, got
            assert got["source"]["status"] == "ok"  # type: ignore[index]
            use_wal_token(TokenFile(str(d / "wrong")))
            got = read()
            assert got["entries"] == 0 and "HTTP 401" in str(got["source"])
            assert "refused sigops' WAL token" in str(got["source"])
        for secret in ("the-token-of-sigops-1", "a-token-it-does-not-hold"):
            assert secret not in str(got) and secret not in caplog.text
    finally:
        use_wal_token(None)
        side.stop()
    assert backendpods._wal_token is None
