"""sigops' Prometheus client against the real Prometheus serving TLS with client certificates
and basic auth (``--web.config.file``): it verifies the server's certificate unless told not to,
presents its client certificate, sends basic auth from a password file it re-reads when the
file changes, and a bearer token from a file the same way."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from devtools.promstack import PromStack
from devtools.tlsfiles import TestCA
from sigops.prometheus.client import Prom, PromAuth, PromConfigError
from tests.support import BIN

pytestmark = pytest.mark.skipif(not (BIN / "prometheus").exists(),
                                reason="prometheus not installed (make tools)")

USER, PASSWORD = "sigops", "prometheus-basic-auth-pw-4c1e9a"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("secure-prom")
    ca = TestCA(d / "pki")
    server = ca.issue("prometheus", hosts=["127.0.0.1"])
    client = ca.issue("sigops", client=True)
    # Prometheus' basic_auth_users hold bcrypt hashes (cost 4, the lowest: a test password)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert hashed.startswith("$2")
    helper = ssl.create_default_context(cafile=str(ca.ca_file))
    helper.load_cert_chain(str(client.cert), str(client.key))
    web = {"tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key),
                                 "client_auth_type": "RequireAndVerifyClientCert",
                                 "client_ca_file": str(ca.ca_file)},
           "basic_auth_users": {USER: hashed}}
    password = d / "password"
    password.write_text(PASSWORD + "\n")
    with PromStack(workdir=d / "stack", web_config=web, client_ssl=helper,
                   client_auth=(USER, PASSWORD)) as stack:
        assert stack.prometheus_url.startswith("https://")
        yield {"url": stack.prometheus_url, "ca": str(ca.ca_file), "cert": str(client.cert),
               "key": str(client.key), "password": password, "dir": d}


def full(s: dict[str, Any], **kw: Any) -> PromAuth:
    base = {"ca_file": s["ca"], "cert_file": s["cert"], "key_file": s["key"],
            "basic_auth_user": USER, "basic_auth_password_file": str(s["password"])}
    return PromAuth(**{**base, **kw})


def test_everything_right_answers(secure: dict[str, Any]) -> None:
    prom = Prom(secure["url"], auth=full(secure))
    assert prom.scalar("vector(7)") == 7.0
    assert prom.query('up{job="flk-backend"}') == []  # a real empty answer, not None


def test_the_certificate_is_verified_by_default(secure: dict[str, Any]) -> None:
    # The test CA is not among the system's: without ca_file, the handshake must fail.
    assert Prom(secure["url"], auth=full(secure, ca_file=None)).scalar("vector(1)") is None
    # Only when asked is verification skipped.
    skip = full(secure, ca_file=None, insecure_skip_verify=True)
    assert Prom(secure["url"], auth=skip).scalar("vector(1)") == 1.0


def test_client_certificate_and_basic_auth_are_required_and_sent(secure: dict[str, Any]
                                                                  ) -> None:
    no_cert = full(secure, cert_file=None, key_file=None)
    assert Prom(secure["url"], auth=no_cert).scalar("vector(1)") is None
    no_auth = full(secure, basic_auth_user=None, basic_auth_password_file=None)
    assert Prom(secure["url"], auth=no_auth).scalar("vector(1)") is None


def test_the_password_file_is_reread_when_it_changes(secure: dict[str, Any]) -> None:
    pw_file = secure["dir"] / "rotating-password"
    pw_file.write_text(PASSWORD)
    prom = Prom(secure["url"], auth=full(secure, basic_auth_password_file=str(pw_file)))
    assert prom.scalar("vector(2)") == 2.0
    pw_file.write_text("not-the-password-at-all")
    assert prom.scalar("vector(2)") is None
    pw_file.write_text(PASSWORD + "\n")
    assert prom.scalar("vector(2)") == 2.0


class _Capture(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).seen.append(self.headers.get("Authorization"))
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_the_bearer_token_file_is_sent_and_reread(tmp_path: Path) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        tok = tmp_path / "token"
        tok.write_text("bearer-one\n")
        prom = Prom(f"http://127.0.0.1:{srv.server_address[1]}",
                    auth=PromAuth(bearer_token_file=str(tok)))
        assert prom.scalar("vector(1)") == 0.0
        tok.write_text("bearer-two-longer\n")
        assert prom.scalar("vector(1)") == 0.0
        assert _Capture.seen[-2:] == ["Bearer bearer-one", "Bearer bearer-two-longer"]
    finally:
        srv.shutdown()


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    for bad in (PromAuth(bearer_token_file=str(f), basic_auth_user="u",
                         basic_auth_password_file=str(f)),
                PromAuth(basic_auth_user="u"), PromAuth(key_file=str(f)),
                PromAuth(ca_file=str(tmp_path / "missing.crt"))):
        with pytest.raises(PromConfigError):
            bad.check()
    PromAuth(ca_file=str(f), bearer_token_file=str(f)).check()
