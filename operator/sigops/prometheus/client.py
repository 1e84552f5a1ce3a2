"""Reading Prometheus with prometheus-api-client; failures become None, never exceptions.

TLS is verified by default (the system's CAs, or ``ca_file``); ``insecure_skip_verify`` turns
it off only when asked. Credentials: a client certificate, a bearer token file or basic auth
with a password file; both files are re-read when they change (a mounted Secret rotates), and
neither value is ever logged.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Prom", "PromAuth", "PromConfigError"]

log = logging.getLogger("sigops.prometheus")


class PromConfigError(ValueError):
    """The Prometheus connection settings do not fit together (a usage error at start-up)."""


@dataclass(frozen=True)
class PromAuth:
    """How to reach Prometheus safely; every field optional."""

    ca_file: str | None = None
    """PEM bundle of the CAs that sign Prometheus' certificate (default: the system's)."""
    cert_file: str | None = None
    """Client certificate (PEM) for mutual TLS; needs ``key_file`` unless it holds the key."""
    key_file: str | None = None
    bearer_token_file: str | None = None
    basic_auth_user: str | None = None
    basic_auth_password_file: str | None = None
    insecure_skip_verify: bool = False
    """Do not verify Prometheus' certificate. Only when asked: a test server, never a default."""

    def check(self) -> None:
        """Raise :class:`PromConfigError` on settings that cannot work together, and on files
        that cannot be read now (better at start than at the first guarded step)."""
        if self.bearer_token_file and (self.basic_auth_user or self.basic_auth_password_file):
            raise PromConfigError("Prometheus: a bearer token and basic auth are exclusive")
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise PromConfigError("Prometheus basic auth needs both the user and the "
                                  "password file")
        if self.key_file and not self.cert_file:
            raise PromConfigError("Prometheus: a client key needs its certificate file")
        for name in ("ca_file", "cert_file", "key_file", "bearer_token_file",
                     "basic_auth_password_file"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise PromConfigError(f"Prometheus {name.replace('_', ' ')} {path} is not "
                                      "readable")


class _SecretFile:
    """A one-line secret from a file, re-read when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._value = ""

    def value(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                text = Path(self.path).read_text().strip()
                if text:  # an empty file for a moment (a writer truncating) keeps the last
                    self._stamp, self._value = stamp, text
        except OSError:
            pass  # keep the last value; the query fails visibly if it is wrong
        return self._value


def _auth(cfg: PromAuth) -> Any:
    """A requests auth object adding the credentials to each request, or None."""
    import requests
    from requests.auth import AuthBase

    if cfg.bearer_token_file:
        token = _SecretFile(cfg.bearer_token_file)

        class Bearer(AuthBase):
            def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
                r.headers["Authorization"] = f"Bearer {token.value()}"
                return r

        return Bearer()
    if cfg.basic_auth_user and cfg.basic_auth_password_file:
        user, password = cfg.basic_auth_user, _SecretFile(cfg.basic_auth_password_file)

        class Basic(AuthBase):
            def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
                basic: requests.PreparedRequest = requests.auth.HTTPBasicAuth(
                    user, password.value())(r)
                return basic

        return Basic()
    return None


class Prom:
    """A Prometheus server at ``url``; ``None`` url means not configured."""

    def __init__(self, url: str | None, timeout: float = 5.0,
                 auth: PromAuth | None = None) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout
        self.auth = auth or PromAuth()
        self._conn: Any = None

    @property
    def configured(self) -> bool:
        return self.url is not None

    def session(self) -> Any:
        """The requests session: certificate verification, client certificate."""
        import requests

        s = requests.Session()
        if self.auth.insecure_skip_verify:
            import urllib3

            s.verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        else:
            s.verify = self.auth.ca_file or True
        if self.auth.cert_file:
            s.cert = ((self.auth.cert_file, self.auth.key_file) if self.auth.key_file
                      else self.auth.cert_file)
        return s

    def _c(self) -> Any:
        if self._conn is None:
            from prometheus_api_client import PrometheusConnect

            self._conn = PrometheusConnect(url=self.url, timeout=self.timeout,
                                           session=self.session(), auth=_auth(self.auth))
        return self._conn

    def query(self, promql: str) -> list[dict[str, Any]] | None:
        """Instant vector result, or None if Prometheus is unreachable or the query fails."""
        if not self.url:
            return None
        try:
            res: list[dict[str, Any]] = self._c().custom_query(promql)
            return res
        except Exception as e:  # noqa: BLE001 - any client/HTTP error means "unknown"
            log.warning("prometheus query failed: %s", type(e).__name__)
            return None

    def scalar(self, promql: str) -> float | None:
        """Sum of an instant vector (0.0 when empty); None when unknown."""
        res = self.query(promql)
        if res is None:
            return None
        total = 0.0
        for r in res:
            try:
                v = float(r["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if math.isfinite(v):
                total += v
        return total

    def range(self, promql: str, start: float, end: float, step: float
              ) -> list[tuple[float, float]] | None:
        """The sum over series of a range query, as ``(unix time, value)`` points in time
        order (non-finite values left out); None when unknown."""
        if not self.url:
            return None
        from datetime import UTC, datetime

        try:
            res: list[dict[str, Any]] = self._c().custom_query_range(
                promql, start_time=datetime.fromtimestamp(start, UTC),
                # seconds as a number: a duration string may not have a fraction ("1.5s")
                end_time=datetime.fromtimestamp(end, UTC), step=f"{max(step, 1.0):.3f}")
        except Exception as e:  # noqa: BLE001 - any client/HTTP error means "unknown"
            log.warning("prometheus range query failed: %s: %s", type(e).__name__,
                        str(e)[:200])
            return None
        total: dict[float, float] = {}
        for r in res:
            for t, v in r.get("values") or []:
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(x):
                    total[float(t)] = total.get(float(t), 0.0) + x
        return sorted(total.items())

    def firing(self, alertname: str) -> list[dict[str, str]] | None:
        """Label sets of firing alerts with this name (Prometheus' ALERTS series)."""
        res = self.query(f'ALERTS{{alertname="{alertname}",alertstate="firing"}}')
        if res is None:
            return None
        return [dict(r.get("metric", {})) for r in res]
