"""The real Alertmanager posting to the operator's receiver over TLS, while the receiver's
bearer token and then its certificate rotate under it, as mounted Secrets do.

- Token: the operator's token file is replaced (one rename, as kubelet swaps a Secret volume).
  Within 10 s the old token is refused (401) and the new one accepted, with no restart.
  Alertmanager, still sending the old token, is refused until its own Secret follows; then it
  delivers what it could not, so no alert is lost.
- Certificate: a new certificate from the same CA replaces the served one within 10 s (new
  handshakes get it) and Alertmanager keeps delivering.
Neither token appears in any log, Event or status (the suite's leak scan).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.promstack import PromStack
from devtools.tlsfiles import TestCA
from sigops.core.keys import HMAC, Key
from tests.reliability import kit
from tests.support import BIN, backend, incidents, wait_for

pytestmark = pytest.mark.skipif(not (BIN / "alertmanager").exists(),
                                reason="prometheus/alertmanager not installed (make tools)")

OLD, NEW = "rotation-token-old-7f3a9c2e51d4b8a6", "rotation-token-new-2b8e4d7c19f5a3e0"
kit.REGISTRY.add(OLD)
kit.REGISTRY.add(NEW)


def replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def post(port: int, ctx: ssl.SSLContext, token: str, alertname: str = "SomethingElse"
         ) -> int:
    """A webhook post over TLS; the alert is one sigops ignores (no incident)."""
    doc = {"version": "4", "groupKey": "probe", "status": "firing", "receiver": "sigops",
           "alerts": [{"status": "firing", "fingerprint": "00000000000000ab",
                       "labels": {"alertname": alertname}, "annotations": {},
                       "startsAt": "2026-11-22T00:00:00Z"}]}
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("POST", "/v1/alerts", body=json.dumps(doc),
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return der


def alert(ns: str, case: str) -> dict[str, Any]:
    return {"labels": {"alertname": "FLKSignatureFailuresSpike", "severity": "warning",
                       "namespace": ns, "deployment": "fractal-lba-backend", "case": case},
            "annotations": {"value": "42"}}


def cases(api: Any, ns: str) -> set[str]:
    return {i["spec"]["alert"]["labels"].get("case") for i in incidents(api, ns)}


def test_alertmanager_over_tls_through_token_and_certificate_rotation(
        api, namespace, operator_factory, tmp_path):
    t0 = time.monotonic()
    key = Key("k", HMAC, secret=b"reliability-tls-rotation-backend-1")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key)
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("receiver", hosts=["127.0.0.1"], directory=tmp_path / "tls")
    token = tmp_path / "alerts-token"
    token.write_text(OLD + "\n")
    op = operator_factory(
        {"targets": [{"namespace": namespace, "deployment": "fractal-lba-backend"}],
         "signal_rate_limit": 50, "verify_timeout": "20s"},
        start=False, extra_env={"SIGOPS_ALERTS_TOKEN_FILE": str(token),
                                "SIGOPS_ALERTS_TLS_CERT_FILE": str(server.cert),
                                "SIGOPS_ALERTS_TLS_KEY_FILE": str(server.key)})
    op.start()
    port = op.alerts_port
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    assert post(port, ctx, OLD) == 200
    # Plain HTTP on the TLS port gets nowhere.
    assert kit.post_bytes(port, b"{}", {"Authorization": f"Bearer {OLD}"})[0] is None

    with PromStack(webhook_url=f"https://127.0.0.1:{port}/v1/alerts", webhook_token=OLD,
                   webhook_ca_file=ca.ca_file, workdir=tmp_path / "promstack",
                   repeat_interval="1h") as stack:
        stack.post_alerts([alert(namespace, "1")])
        wait_for(lambda: "1" in cases(api, namespace), timeout=30,
                 what="the first alert's incident (Alertmanager over TLS)")

        # The operator's Secret rotates first.
        switched = time.monotonic()
        replace(token, (NEW + "\n").encode())
        wait_for(lambda: post(port, ctx, OLD) == 401, timeout=10, interval=0.2,
                 what="the old token refused")
        refused_after = time.monotonic() - switched
        assert post(port, ctx, NEW) == 200
        accepted_after = time.monotonic() - switched
        refused_before = kit.rejected_by_reason(op.metrics_port).get("unauthorized", 0)

        # Alertmanager still sends the old token: refused, nothing opened ...
        stack.post_alerts([alert(namespace, "2")])
        wait_for(lambda: kit.rejected_by_reason(op.metrics_port).get("unauthorized", 0)
                 > refused_before, timeout=30, what="Alertmanager's old token refused")
        assert "2" not in cases(api, namespace)
        # ... until its own Secret follows: then it delivers what was refused.
        stack.set_webhook_token(NEW)
        wait_for(lambda: "2" in cases(api, namespace), timeout=30,
                 what="the alert refused during the switch, delivered after it")

        # The certificate rotates (same CA, new key): served within 10 s, still delivered.
        first = served_cert(port, ctx)
        fresh = ca.issue("receiver-next", hosts=["127.0.0.1"], directory=tmp_path / "next")
        cert_switched = time.monotonic()
        replace(server.cert, fresh.cert.read_bytes())
        replace(server.key, fresh.key.read_bytes())
        wait_for(lambda: served_cert(port, ctx) != first, timeout=10, interval=0.3,
                 what="the new certificate served")
        cert_after = time.monotonic() - cert_switched
        stack.post_alerts([alert(namespace, "3")])
        wait_for(lambda: "3" in cases(api, namespace), timeout=30,
                 what="an alert delivered over the new certificate")
        am_log = stack.log_path("alertmanager").read_text(errors="replace")

    assert cases(api, namespace) == {"1", "2", "3"}
    assert len(incidents(api, namespace)) == 3  # each alert once, none lost, none doubled
    logs = op.logs()
    assert "token file changed" in logs and "certificate reloaded" in logs
    for secret in (OLD, NEW):
        assert secret not in logs and secret not in am_log
    kit.figure("receiver TLS and rotation", old_token_refused_after_s=round(refused_after, 2),
               new_token_accepted_after_s=round(accepted_after, 2),
               new_certificate_served_after_s=round(cert_after, 2),
               alerts_posted_to_alertmanager=3, incidents=3,
               seconds=round(time.monotonic() - t0, 1))
