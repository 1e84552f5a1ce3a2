"""Liveness and readiness by wedging each part for real.

- The reconcile loop, in the real ``sigops run``: an incident whose backend accepts the
  connection and never answers (with a generous probe timeout) holds a reconcile step;
  past ``--stuck-after`` /livez fails naming it while /readyz stays ready, and when the backend
  hangs up the step ends and /livez recovers.
- The alert intake, in process with the real receiver and API server: an API call that hangs
  holds an alert post (/livez names it past ``stuck_after``); a pool whose every thread hangs
  stops the intake heartbeat (/livez says so); both recover when the call returns.
- Readiness follows the API server: the real one answers, a closed port does not.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from devtools.cluster import free_port
from sigops.core.keys import HMAC, Key
from sigops.incident.intake import AlertIntake
from sigops.kube.api import Kube
from sigops.prometheus.client import Prom
from sigops.runtime.health import Health
from sigops.runtime.web import Endpoints
from sigops.settings import Settings, Target
from tests.integration.test_alert_intake import SIGNER
from tests.support import TOKEN, alert_post, backend, incidents, start, wait_for


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Blackhole:
    """Accepts connections and never answers, until :meth:`close`."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_stuck_reconcile_step_fails_liveness(api, namespace, operator_factory, tmp_path):
    backend(api, namespace, Key("k", HMAC, secret=b"health-test-backend-key-000000001"))
    hole = Blackhole()
    try:
        op = start(operator_factory, tmp_path, namespace, hole.url, probe_timeout=3600,
                   env={"SIGOPS_STUCK_AFTER": "5"})
        assert probe(op.metrics_port, "/livez")[0] == 200
        wait_for(lambda: probe(op.metrics_port, "/readyz")[0] == 200, timeout=30,
                 what="/readyz after start")
        code, _ = alert_post(op, namespace)
        assert code == 200
        t0 = time.monotonic()
        status = wait_for(lambda: (s := probe(op.metrics_port, "/livez"))[0] == 503 and s,
                          timeout=60, what="/livez failing on the stuck step")
        assert "reconcile: a step of signatureincident" in status[1], status
        assert time.monotonic() - t0 >= 4  # not before --stuck-after
        # Stuck is not unready: the API server still answers.
        assert probe(op.metrics_port, "/readyz")[0] == 200
        metrics = probe(op.metrics_port, "/metrics")[1]
        assert "sigops_live 0.0" in metrics and "sigops_ready 1.0" in metrics
        hole.close()  # the backend hangs up: the step ends
        wait_for(lambda: probe(op.metrics_port, "/livez")[0] == 200, timeout=30,
                 what="/livez recovering")
        assert len(incidents(api, namespace)) == 1
    finally:
        hole.close()


def _intake(api: Any, ns: str) -> AlertIntake:
    settings = Settings(targets=[Target(namespace=ns, deployment="fractal-lba-backend")])
    return AlertIntake(Kube(api), Prom(None), settings, SIGNER, ns, token=TOKEN)


class HangingKube(Kube):
    """The real API client, whose incident creation hangs until released."""

    release: threading.Event

    def create_cr(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        self.release.wait(60)
        return super().create_cr(ns, plural, body)


def _post(port: int, ns: str, fp: str) -> int:
    op = type("Op", (), {"alerts_port": port})()
    return alert_post(op, ns, fp=fp, group=f"g-{fp}")[0]


def _endpoints(api: Any, ns: str, health: Health, **kw: Any) -> tuple[Endpoints,
                                                                       threading.Event]:
    intake = _intake(api, ns)
    hanging = HangingKube(intake.kube.api)
    hanging.release = threading.Event()
    intake.kube = hanging
    ep = Endpoints(intake, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                   health=health, tick=0.5, **kw).start()
    health.started.set()
    health.api_result(True)
    return ep, hanging.release


def test_a_hanging_alert_post_fails_liveness(api, namespace):
    backend(api, namespace, Key("k", HMAC, secret=b"health-test-backend-key-000000002"))
    health = Health(stuck_after=2.0)
    ep, release = _endpoints(api, namespace, health)
    try:
        port = ep.metrics_address[1]
        assert probe(port, "/livez")[0] == 200
        codes: list[int] = []
        t = threading.Thread(target=lambda: codes.append(
            _post(ep.alerts_address[1], namespace, "00000000000000c1")))
        t.start()
        status = wait_for(lambda: (s := probe(port, "/livez"))[0] == 503 and s, timeout=20,
                          what="/livez failing on the hanging post")
        assert "intake: an alert post from 127.0.0.1 running for" in status[1]
        assert probe(port, "/readyz")[0] == 200
        release.set()
        t.join(30)
        assert codes == [200]
        wait_for(lambda: probe(port, "/livez")[0] == 200, timeout=10, what="/livez back")
        assert len(incidents(api, namespace)) == 1
    finally:
        release.set()
        ep.stop()


def test_an_intake_pool_that_hangs_stops_its_heartbeat(api, namespace):
    backend(api, namespace, Key("k", HMAC, secret=b"health-test-backend-key-000000003"))
    health = Health(stuck_after=1000.0)  # only the heartbeat can tell here
    ep, release = _endpoints(api, namespace, health, workers=2, heartbeat_max_age=3.0)
    try:
        port = ep.metrics_address[1]
        codes: list[int] = []
        threads = [threading.Thread(target=lambda fp=fp: codes.append(
            _post(ep.alerts_address[1], namespace, fp)))
            for fp in ("00000000000000d1", "00000000000000d2")]
        for t in threads:
            t.start()
        status = wait_for(lambda: (s := probe(port, "/livez"))[0] == 503 and s, timeout=20,
                          what="/livez failing on the intake heartbeat")
        assert "intake: no heartbeat for" in status[1], status
        release.set()
        for t in threads:
            t.join(30)
        assert sorted(codes) == [200, 200]
        wait_for(lambda: probe(port, "/livez")[0] == 200, timeout=10, what="/livez back")
    finally:
        release.set()
        ep.stop()


def test_readiness_follows_the_api_server(api, namespace):
    assert Kube(api).reachable() is None
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    err = Kube(client.ApiClient(cfg)).reachable(timeout=2)
    assert err is not None and "Error" in err
    health = Health(api_max_age=1.0)
    health.started.set()
    health.api_result(True)
    assert health.ready()[0]
    time.sleep(1.2)
    health.api_result(False, err)
    assert health.ready() == (False, f"API server: {err}")
