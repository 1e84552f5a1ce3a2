"""Real Prometheus and Alertmanager (Debian binaries) on loopback, for tests and drills.

Each gets its own config and data directory under ``workdir`` and a free 127.0.0.1 port; they
run as our child processes (never as system services), log into their data directories and are
stopped by pid. Intervals are short so alerts fire and resolve in seconds:
Prometheus scrapes and evaluates every ``interval`` and resends alerts as often; Alertmanager
groups with ``group_wait`` / ``group_interval`` of ``interval`` and posts to one webhook with a
bearer token read from a file (``http_config.authorization.credentials_file``, which
Alertmanager 0.25 supports).

>>> stack = PromStack(targets=["127.0.0.1:9"], webhook_url="http://127.0.0.1:9/v1/alerts")
>>> stack.prometheus_url
Traceback (most recent call last):
...
RuntimeError: PromStack not started
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import DEFAULT_BIN, free_port

__all__ = ["PromStack", "ScrapeTarget"]


@dataclass(frozen=True)
class ScrapeTarget:
    """A ``host:port`` to scrape, with extra labels (e.g. namespace, deployment)."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def _yaml(obj: Any) -> str:
    import yaml

    out: str = yaml.safe_dump(obj, sort_keys=False)
    return out


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _kill(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL after ``grace`` seconds; reap it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait(timeout=grace)


class PromStack:
    """Prometheus + Alertmanager: ``PromStack(...).start()`` ... ``.stop()``, or ``with``."""

    def __init__(self, *, targets: Sequence[str | ScrapeTarget] = (),
                 rule_files: Sequence[str | Path] = (), webhook_url: str | None = None,
                 webhook_token: str | None = None, workdir: str | Path | None = None,
                 bindir: str | Path = DEFAULT_BIN, interval: str = "1s",
                 repeat_interval: str = "1m", job: str = "flk-backend",
                 host: str = "127.0.0.1",
                 scrape_configs: Sequence[dict[str, Any]] | None = None,
                 prom_port: int = 0, web_config: dict[str, Any] | None = None,
                 client_ssl: ssl.SSLContext | None = None,
                 client_auth: tuple[str, str] | None = None,
                 webhook_ca_file: str | Path | None = None) -> None:
        self.targets = [t if isinstance(t, ScrapeTarget) else ScrapeTarget(t) for t in targets]
        self.rule_files = [Path(r).resolve() for r in rule_files]
        self.webhook_url = webhook_url
        self.webhook_token = webhook_token
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="promstack-"))
        self.bindir = Path(bindir)
        self.interval = interval
        self.repeat_interval = repeat_interval
        self.job = job
        # Where Prometheus listens (the node's pods reach the bridge address, not loopback),
        # and scrape jobs given whole (e.g. Kubernetes service discovery of pods).
        self.host = host
        self.scrape_configs = list(scrape_configs) if scrape_configs is not None else None
        self.prom_port = prom_port  # 0: a free one at start
        # Prometheus' own TLS and basic auth (--web.config.file), and how the helpers below
        # then reach it; the CA Alertmanager trusts when it posts to an https webhook.
        self.web_config = web_config
        self.client_ssl, self.client_auth = client_ssl, client_auth
        self.webhook_ca_file = webhook_ca_file
        self.am_port = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- addresses --------------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        if not self.prom_port:
            raise RuntimeError("PromStack not started")
        scheme = "https" if (self.web_config or {}).get("tls_server_config") else "http"
        return f"{scheme}://{self.host}:{self.prom_port}"

    @property
    def alertmanager_url(self) -> str:
        if not self.am_port:
            raise RuntimeError("PromStack not started")
        return f"http://127.0.0.1:{self.am_port}"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    # -- configuration ----------------------------------------------------------------------

    def _alertmanager_config(self, d: Path) -> dict[str, Any]:
        receiver: dict[str, Any] = {"name": "webhook"}
        if self.webhook_url:
            hook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": True,
                                    "max_alerts": 0}
            if self.webhook_token is not None:
                token = d / "webhook-token"
                token.write_text(self.webhook_token)
                os.chmod(token, 0o600)
                hook["http_config"] = {"authorization": {"type": "Bearer",
                                                         "credentials_file": str(token)}}
            if self.webhook_ca_file is not None:
                hook.setdefault("http_config", {})["tls_config"] = {
                    "ca_file": str(self.webhook_ca_file)}
            receiver["webhook_configs"] = [hook]
        return {
            "route": {"receiver": "webhook", "group_by": ["alertname", "namespace", "deployment"],
                      "group_wait": self.interval, "group_interval": self.interval,
                      "repeat_interval": self.repeat_interval},
            "receivers": [receiver],
        }

    def _prometheus_config(self) -> dict[str, Any]:
        static = [{"targets": [t.address], "labels": dict(t.labels)} if t.labels
                  else {"targets": [t.address]} for t in self.targets]
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval,
                       "scrape_timeout": self.interval},
            "rule_files": [str(r) for r in self.rule_files],
            "alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{self.am_port}"]}]}]},
            "scrape_configs": (self.scrape_configs if self.scrape_configs is not None
                               else [{"job_name": self.job, "static_configs": static}]),
        }

    # -- lifecycle --------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        p = self.bindir / name
        if not p.exists():
            found = shutil.which(name) or shutil.which(f"prometheus-{name}")
            if found is None:
                raise FileNotFoundError(f"{p} is missing: run `make tools` (scripts/tools.sh)")
            return found
        return str(p)

    def _spawn(self, name: str, argv: list[str], d: Path) -> None:
        with open(d / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=d)

    def start(self, timeout: float = 30.0) -> PromStack:
        """Write configs, start both processes, wait until both answer ``/-/ready``."""
        t0 = time.monotonic()
        am_dir, prom_dir = self.workdir / "alertmanager", self.workdir / "prometheus"
        for d in (am_dir, prom_dir):
            (d / "data").mkdir(parents=True, exist_ok=True)
        self.am_port, self.prom_port = free_port(), self.prom_port or free_port()
        try:
            (am_dir / "alertmanager.yml").write_text(_yaml(self._alertmanager_config(am_dir)))
            self._spawn("alertmanager", [
                self._bin("alertmanager"),
                f"--config.file={am_dir / 'alertmanager.yml'}",
                f"--storage.path={am_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.am_port}",
                "--cluster.listen-address=",  # no gossip port: a single, private instance
                "--log.level=info",
            ], am_dir)
            (prom_dir / "prometheus.yml").write_text(_yaml(self._prometheus_config()))
            web = []
            if self.web_config is not None:
                (prom_dir / "web.yml").write_text(_yaml(self.web_config))
                web = [f"--web.config.file={prom_dir / 'web.yml'}"]
            self._spawn("prometheus", [
                self._bin("prometheus"),
                f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address={self.host}:{self.prom_port}",
                "--storage.tsdb.retention.time=1d",
                f"--rules.alert.resend-delay={self.interval}",
                "--log.level=info", *web,
            ], prom_dir)
            for name, url in (("alertmanager", self.alertmanager_url),
                              ("prometheus", self.prometheus_url)):
                self._wait_ready(name, url, timeout - (time.monotonic() - t0))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, name: str, url: str, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 1.0)
        last = ""
        while time.monotonic() < deadline:
            if not _alive(self.procs[name]):
                raise RuntimeError(f"{name} exited during start-up; see {self.log_path(name)}")
            try:
                with self._open(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout:.0f}s ({last}); "
                           f"see {self.log_path(name)}")

    def log_path(self, name: str) -> Path:
        """Where ``prometheus`` or ``alertmanager`` logs."""
        return self.workdir / name / f"{name}.log"

    def stop(self) -> None:
        """Kill both processes by pid (Prometheus first); remove a workdir we created."""
        for name in ("prometheus", "alertmanager"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                _kill(proc)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PromStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- small read helpers -------------------------------------------------------------------

    def _open(self, url: str, timeout: float = 5) -> Any:
        """GET ``url``; Prometheus' own URLs with its TLS context and basic auth."""
        if not url.startswith(self.prometheus_url):
            return urllib.request.urlopen(url, timeout=timeout)
        req = urllib.request.Request(url)
        if self.client_auth is not None:
            import base64

            cred = base64.b64encode(":".join(self.client_auth).encode()).decode()
            req.add_header("Authorization", f"Basic {cred}")
        return urllib.request.urlopen(req, timeout=timeout, context=self.client_ssl)

    def _get(self, url: str) -> Any:
        with self._open(url) as r:
            return json.loads(r.read())

    def set_webhook_token(self, token: str) -> None:
        """Replace the token Alertmanager sends (it reads the file on every post), in one
        rename, as a mounted Secret changes."""
        path = self.workdir / "alertmanager" / "webhook-token"
        tmp = path.with_suffix(".new")
        tmp.write_text(token)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Hand alerts to Alertmanager as Prometheus does (``POST /api/v2/alerts``)."""
        req = urllib.request.Request(f"{self.alertmanager_url}/api/v2/alerts",
                                     data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        q = urllib.parse.urlencode({"query": promql})
        data: list[dict[str, Any]] = self._get(f"{self.prometheus_url}/api/v1/query?{q}")[
            "data"]["result"]
        return data

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Prometheus' active alerts (pending and firing), optionally one alert name only."""
        alerts: list[dict[str, Any]] = self._get(f"{self.prometheus_url}/api/v1/alerts")[
            "data"]["alerts"]
        return [a for a in alerts if name is None or a["labels"].get("alertname") == name]

    def targets_up(self) -> bool:
        """True when every scrape target is up."""
        active = self._get(f"{self.prometheus_url}/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)
