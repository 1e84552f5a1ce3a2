"""The alert path with the real binaries: agents -> testbed backend -> Prometheus rule ->
Alertmanager -> a webhook with a bearer token; the alert fires, then resolves when faults stop.

The rule is the upstream one shrunk to seconds: rate(flk_signature_err[10s]) > 1 for 5s.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devtools.promstack import PromStack, ScrapeTarget
from sigops.core.keys import HMAC, generate_key
from sigops.testbed.agents import AgentPlan, AgentSimulator
from sigops.testbed.backend import Backend, BackendServer
from sigops.testbed.faults import parse_fault
from sigops.testbed.keysource import StaticKey
from sigops.testbed.reload import config_from_env
from sigops.testbed.rules import ALERT_NAME, write_rule_file
from tests.support import BIN, wait_for

pytestmark = pytest.mark.skipif(not (BIN / "prometheus").exists()
                                or not (BIN / "alertmanager").exists(),
                                reason="prometheus/alertmanager not installed (make tools)")


class Receiver:
    """A tiny Alertmanager webhook receiver that records every post."""

    def __init__(self) -> None:
        self.posts: list[tuple[str | None, dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.posts.append((self.headers.get("Authorization"), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1/alerts"

    def find(self, status: str) -> list[tuple[str | None, dict[str, Any]]]:
        with self.lock:
            return [(auth, p) for auth, p in self.posts if p.get("status") == status
                    and any(a["labels"].get("alertname") == ALERT_NAME for a in p["alerts"])]

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_alert_fires_posts_with_the_token_and_resolves(tmp_path: Path,
                                                       receiver: Receiver) -> None:
    key = generate_key(HMAC, "current", "active")
    cfg = config_from_env({"PCS_HMAC_KEY": (key.secret or b"").decode()})
    token = secrets.token_urlsafe(24)
    rules = write_rule_file(tmp_path / "rules.yml", window="10s", for_="5s", threshold=1)
    with BackendServer(Backend(config=cfg)) as backend:
        target = ScrapeTarget(backend.url.removeprefix("http://"),
                              {"namespace": "fractal-lba", "deployment": "fractal-lba-backend"})
        with PromStack(targets=[target], rule_files=[rules], webhook_url=receiver.url,
                       webhook_token=token, workdir=tmp_path / "promstack") as stack:
            wait_for(stack.targets_up, 15, what="the backend scraped")
            sim = AgentSimulator(AgentPlan(backend.url, rate=20, agents=3,
                                           faults=(parse_fault("wrong-key"),)),
                                 StaticKey(key, "test"))
            agents = threading.Thread(target=sim.run, daemon=True)
            agents.start()
            try:
                wait_for(lambda: [a for a in stack.alerts(ALERT_NAME) if a["state"] == "firing"],
                         40, 0.5, what="FLKSignatureFailuresSpike firing in Prometheus")
                auth, post = wait_for(lambda: (receiver.find("firing") or [None])[0], 20, 0.2,
                                      what="a firing webhook post")
            finally:
                sim.stop()
                agents.join(timeout=10)
            assert auth == f"Bearer {token}"
            alert = next(a for a in post["alerts"] if a["labels"]["alertname"] == ALERT_NAME)
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["component"] == "backend"
            assert alert["labels"]["namespace"] == "fractal-lba"
            assert alert["labels"]["deployment"] == "fractal-lba-backend"
            assert alert["annotations"]["runbook_url"]
            assert backend.backend.stats()["signature_err"] > 20

            # Faults stop: the rate falls under the threshold and the alert resolves.
            t_stop = time.monotonic()
            auth, post = wait_for(lambda: (receiver.find("resolved") or [None])[0], 45, 0.2,
                                  what="a resolved webhook post")
            assert auth == f"Bearer {token}"
            assert all(a["status"] == "resolved" for a in post["alerts"])
            assert not [a for a in stack.alerts(ALERT_NAME) if a["state"] == "firing"]
            assert time.monotonic() - t_stop < 45


def test_default_error_query_counts_one_target_whichever_counter_name_it_exports(
        tmp_path: Path) -> None:
    """Backends behind one real Prometheus: one exports upstream's alert-rule name
    (flk_signature_err), the other upstream's code name (flk_signature_errors), in two
    namespaces; a third Deployment shares team-a's namespace, with pod labels on both. The
    default query of each target sees its own errors only: by its pods where the series carry
    a pod label (a Deployment none of whose pods is scraped gets no rate, not a neighbour's),
    else by its namespace."""
    from devtools.stub import StubServer
    from sigops.prometheus.client import Prom
    from sigops.settings import Settings

    counts = {"a": 0.0, "b": 0.0}

    def exporter(name: str, metric: str, per_scrape: float) -> StubServer:
        def body() -> bytes:
            counts[name] += per_scrape
            return f"# TYPE {metric} counter\n{metric} {counts[name]}\n".encode()
        return StubServer(body, "text/plain; version=0.0.4")

    counts["a2"] = 0.0
    a = exporter("a", "flk_signature_err", 100.0)
    a2 = exporter("a2", "flk_signature_err", 1000.0)
    b = exporter("b", "flk_signature_errors", 10.0)
    targets = [ScrapeTarget(a.address, {"namespace": "team-a", "pod": "backend-5c54f8bbf4-h6c4v"}),
               ScrapeTarget(a2.address, {"namespace": "team-a",
                                         "pod": "backend-canary-7d9f8b6c5-x2x9k"}),
               ScrapeTarget(b.address, {"namespace": "team-b"})]
    settings = Settings()
    try:
        with PromStack(targets=targets, workdir=tmp_path / "prom") as stack:
            prom = Prom(stack.prometheus_url)
            query_a = settings.error_query("team-a", "backend")
            query_b = settings.error_query("team-b", "backend")
            wait_for(lambda: (prom.scalar(query_a) or 0) > 0 and (prom.scalar(query_b) or 0) > 0,
                     60, what="both error rates")
            query_a2 = settings.error_query("team-a", "backend-canary")
            wait_for(lambda: (prom.scalar(query_a2) or 0) > 0, 60, what="the canary's rate")
            ra, rb = prom.scalar(query_a), prom.scalar(query_b)
            ra2 = prom.scalar(query_a2)
            nobody = prom.scalar(settings.error_query("team-c", "backend"))
            unscraped = prom.query(settings.error_query("team-a", "backend-old"))
            # The rule's and dashboard's expression: one series per target, the same numbers
            # (one instant query each, so the values are of one evaluation time).
            t = time.time()
            by_target = {(r["metric"].get("namespace"), r["metric"].get("deployment")):
                         float(r["value"][1]) for r in prom._c().custom_query(
                             settings.error_rate_by_target(), params={"time": t})}
            guards = {k: float(prom._c().custom_query(settings.error_query(*k), params={
                "time": t})[0]["value"][1]) for k in (("team-a", "backend"),
                                                     ("team-a", "backend-canary"),
                                                     ("team-b", "backend"))}
    finally:
        a.close()
        a2.close()
        b.close()
    assert ra is not None and rb is not None and ra2 is not None
    assert ra > 5 * rb > 0, (ra, rb)  # each sees its own counter, not the sum of both
    assert ra2 > 5 * ra, (ra2, ra)  # backend-canary's pods are not backend's, and vice versa
    assert unscraped == [], unscraped
    assert nobody == 0.0
    assert set(by_target) == {("team-a", "backend"), ("team-a", "backend-canary"),
                              ("team-b", None)}, by_target
    for (ns, dep), rate in guards.items():  # team-b's series have no pod label
        assert by_target[ns, None if ns == "team-b" else dep] == pytest.approx(rate), ns
