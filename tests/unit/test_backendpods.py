"""Pieces of the pod evidence that need no cluster: a pod's clock from its Date header (the
testbed backend's clock set wrong on purpose), which WAL entries are judged, pod rows."""

from __future__ import annotations

import json

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
