"""One Target from configuration: what a KeyRotation may ask for, what is refused before anything
is read, and where probes may go (pure code and loopback HTTP only)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from sigops.backend.probe import PROBE_SHARD, probe_pcs, submit
from sigops.core.keys import HMAC, Key
from sigops.prometheus.client import Prom
from sigops.rotation.reconciler import RotationReconciler
from sigops.settings import Settings, Target, TargetRefused
from sigops.signing.records import Signer

pytestmark = pytest.mark.unit

SETTINGS = Settings.model_validate({"targets": [
    {"namespace": "payments", "deployment": "be", "profile": "go",
     "agentSecret": {"name": "agents"}, "requestNamespaces": ["sre"]},
    {"namespace": "search"},
]})


@pytest.mark.parametrize(("requester", "spec", "ref"), [
    ("payments", {"deployment": "be"}, "payments/be"),
    ("sre", {"namespace": "payments", "deployment": "be"}, "payments/be"),
    ("search", {}, "search/fractal-lba-backend"),
    ("search", None, "search/fractal-lba-backend"),
])
def test_a_configured_target_is_resolved_from_config(requester: str, spec: Any,
                                                     ref: str) -> None:
    t = SETTINGS.resolve_target(requester, spec)
    assert t.ref == ref
    if ref == "payments/be":  # everything else about it is the config's
        assert t.profile == "go" and t.agent_secret is not None
        assert t.agent_secret.name == "agents"


@pytest.mark.parametrize(("requester", "spec", "reason"), [
    # Another namespace's backend, from a namespace the config does not let request it.
    ("mallory", {"namespace": "payments", "deployment": "be"}, "NamespaceNotAllowed"),
    ("search", {"namespace": "payments", "deployment": "be"}, "NamespaceNotAllowed"),
    # A backend the config does not name at all (in her own namespace too).
    ("mallory", {}, "TargetNotConfigured"),
    ("payments", {"deployment": "other"}, "TargetNotConfigured"),
    # Fields the config owns.
    ("payments", {"deployment": "be", "env": {"hmacKey": "DATABASE_PASSWORD"}},
     "FieldNotAllowed"),
    ("payments", {"deployment": "be", "agentSecret": {"name": "db-creds"}}, "FieldNotAllowed"),
    ("payments", {"deployment": "be", "probeURL": "http://evil.example/"}, "FieldNotAllowed"),
    ("payments", {"deployment": "be", "container": "sidecar"}, "FieldNotAllowed"),
    ("payments", {"namespace": ["payments"]}, "TargetNotConfigured"),
])
def test_anything_else_is_refused(requester: str, spec: Any, reason: str) -> None:
    with pytest.raises(TargetRefused) as e:
        SETTINGS.resolve_target(requester, spec)
    assert e.value.reason == reason
    assert "DATABASE_PASSWORD" not in str(e.value) and "evil" not in str(e.value)


def test_a_requesters_name_is_shown_printable_and_short() -> None:
    with pytest.raises(TargetRefused) as e:
        SETTINGS.resolve_target("payments", {"deployment": "x\n" + "y" * 500})
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize("raw", [
    {"backendURL": "file:///etc/passwd"},
    {"backendURL": "gopher://backend:70"},
    {"env": {"hmacKey": "PCS_HMAC_KEY; rm -rf /"}},
    {"profile": "python2"},
])
def test_a_bad_target_config_is_refused_at_start(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Target.model_validate(raw)


def test_the_submit_url_is_the_configured_backends() -> None:
    t = Target.model_validate({"backendURL": "http://be.payments.svc:8080/"})
    assert t.submit_url() == "http://be.payments.svc:8080/v1/pcs/submit"
    assert Target().submit_url() is None


# -- where probes go --------------------------------------------------------------------------

class _Server:
    """A loopback HTTP server answering every POST with ``status`` (and ``location``)."""

    def __init__(self, status: int, location: str | None = None) -> None:
        self.hits = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1/pcs/submit"

    def close(self) -> None:
        self.srv.shutdown()


KEY = Key("k", HMAC, secret=b"targets-unit-test-key-0001")


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_probe_never_follows_a_redirect(code: int) -> None:
    elsewhere = _Server(200)
    redirecting = _Server(code, location=elsewhere.url)
    try:
        assert submit(redirecting.url, 5, probe_pcs(KEY)) == code
        assert redirecting.hits == 1 and elsewhere.hits == 0
    finally:
        elsewhere.close()
        redirecting.close()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,x",
                                 "127.0.0.1:8080/v1/pcs/submit", ""])
def test_a_probe_goes_only_to_http_urls(url: str) -> None:
    assert submit(url, 1, probe_pcs(KEY)) == 0  # says: unreachable; no crash, nothing read


def test_a_probe_is_recognisable() -> None:
    assert probe_pcs(KEY, "go")["shard_id"] == probe_pcs(KEY)["shard_id"] == PROBE_SHARD


# -- refused before anything is read ----------------------------------------------------------

class _RecordingKube:
    """Records every call; any read of a Secret, Deployment or pod fails the test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            self.calls.append((name, a))
            if name not in ("patch_status", "event"):
                raise AssertionError(f"a refused rotation called Kube.{name}")
            return None
        return call


@pytest.mark.parametrize(("ns", "target", "reason"), [
    ("mallory", {"namespace": "payments", "deployment": "be"}, "NamespaceNotAllowed"),
    ("payments", {"deployment": "be", "agentSecret": {"name": "db"}}, "FieldNotAllowed"),
    ("mallory", {"deployment": "fractal-lba-backend"}, "TargetNotConfigured"),
])
def test_a_refused_rotation_fails_without_reading_anything(ns: str, target: dict[str, Any],
                                                           reason: str) -> None:
    kube = _RecordingKube()
    rec = RotationReconciler(kube, Prom(None), SETTINGS,  # type: ignore[arg-type]
                             Signer(Key("s", HMAC, secret=b"signer-key-for-unit-tests-01")))
    obj = {"metadata": {"namespace": ns, "name": "r", "uid": "u1", "generation": 1},
           "spec": {"target": target, "algorithm": HMAC}}
    assert rec.tick(obj) == "Failed"
    names = [c[0] for c in kube.calls]
    assert names == ["patch_status", "event"], names
    patch = kube.calls[0][1][3]
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert patch["phase"] == "Failed" and ready["reason"] == reason
    assert "db" not in ready["message"].replace("db-", "")  # names no requested Secret


def test_a_rotations_own_query_only_where_the_config_allows_it() -> None:
    kube = _RecordingKube()
    rec = RotationReconciler(kube, Prom(None), SETTINGS,  # type: ignore[arg-type]
                             Signer(Key("s", HMAC, secret=b"signer-key-for-unit-tests-01")))
    obj = {"metadata": {"namespace": "search", "name": "r", "uid": "u1", "generation": 1},
           "spec": {"target": {}, "algorithm": HMAC,
                    "errorRateQuery": 'sum(rate(anything{job="secret-stuff"}[5m]))'}}
    assert rec.tick(obj) == "Failed"
    ready = next(c for c in kube.calls[0][1][3]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "FieldNotAllowed" and "allowErrorRateQuery" in ready["message"]


def test_a_bad_env_value_is_named_never_shown() -> None:
    """An error about the backend's env names the variable, never its value (a misconfigured
    name could point at any variable of the pod, e.g. a database password)."""
    from sigops.backend.config import backend_config
    from sigops.core.errors import KeyringError

    with pytest.raises(KeyringError) as e:
        backend_config({"PCS_SIGN_ALG": "hunter2-database-password"})
    assert "PCS_SIGN_ALG" in str(e.value) and "hunter2" not in str(e.value)
