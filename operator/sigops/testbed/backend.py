"""The reference FLK backend: the verify path of ``POST /v1/pcs/submit``, for drills and e2e.

Status codes as upstream: 200 accepted (a replay of an accepted ``pcs_id`` with the same signed
content is answered from the dedup cache), 400 malformed, 401 signature invalid (every non-valid
verdict of :class:`sigops.core.Diagnoser` that is not ``malformed``), 429 over ``TOKEN_RATE``.
Until a configuration is loaded, 503 (a pod that is not ready).

Other endpoints: ``GET /metrics`` (``flk_signature_err`` and friends), ``GET /healthz``,
``GET /v1/samples/failures?limit=N`` (the last signature failures as the envelopes
``sigops diagnose`` reads), ``GET /v1/testbed/config`` and ``/v1/testbed/stats`` (no key
material: fingerprints only). Every response's ``Date`` header comes from the backend's clock,
which ``clock_offset_seconds`` can set wrong on purpose.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..core.diagnose import Diagnoser
from ..core.errors import MalformedInput
from ..core.keys import KeyRing
from ..core.pcs import Sample, parse_pcs
from ..core.strictjson import loads
from .bucket import TokenBucket
from .dedup import DEFAULT_TTL, DedupCache
from .metrics import CONTENT_TYPE, BackendMetrics
from .reload import DeploymentWatcher, LoadedConfig
from .upstream import InboxWal, RejectionLog, error_text

__all__ = ["BackendSettings", "Reply", "Backend", "BackendServer", "SUBMIT_PATH",
           "SAMPLES_PATH"]

log = logging.getLogger("sigops.testbed")

SUBMIT_PATH = "/v1/pcs/submit"
SAMPLES_PATH = "/v1/samples/failures"


@dataclass(frozen=True)
class BackendSettings:
    """Behaviour that is not part of the backend's env (flags of ``sigops testbed backend``)."""

    profile: str = "python"
    """Canonical profile the backend verifies under (upstream's Go backend: ``go``)."""
    max_skew_seconds: float | None = None
    """Freshness: reject (401) a PCS whose ``sent_at`` is further than this from the clock."""
    clock_offset_seconds: float = 0.0
    """Added to the real time: simulates a backend clock that is wrong."""
    signature_error_metric: str = "flk_signature_err"
    dedup_ttl_seconds: float = DEFAULT_TTL
    dedup_max_entries: int = 200_000
    samples_max: int = 1000
    """How many recent signature failures ``/v1/samples/failures`` keeps."""
    max_body_bytes: int = 64 * 1024
    wal_dir: str | None = None
    """Append every request body to ``<wal_dir>/inbox-YYYYMMDD.wal`` before verifying it,
    as upstream does (``WAL_DIR``)."""
    samples_endpoint: bool = True
    """Serve ``/v1/samples/failures`` (upstream has no such endpoint: off to act like it)."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Active:
    """The configuration in use and what is built from it."""

    config: LoadedConfig
    generation: int
    diagnoser: Diagnoser
    bucket: TokenBucket
    loaded_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)


def _clean_source(value: str | None, fallback: str) -> str:
    if not value:
        return fallback
    text = "".join(c for c in value.strip()[:128] if c.isprintable() and c.isascii())
    return text or fallback


class Backend:
    """The submit logic, independent of HTTP (the server below is a thin shell over it)."""

    def __init__(self, settings: BackendSettings = BackendSettings(),
                 config: LoadedConfig | None = None) -> None:
        self.settings = settings
        self.metrics = BackendMetrics(settings.signature_error_metric)
        self._dedup = DedupCache(settings.dedup_ttl_seconds, settings.dedup_max_entries)
        self._samples: deque[dict[str, Any]] = deque(maxlen=settings.samples_max)
        self._samples_lock = threading.Lock()
        self.wal = InboxWal(settings.wal_dir) if settings.wal_dir else None
        self.rejections = RejectionLog()
        self._active: _Active | None = None
        self._apply_lock = threading.Lock()
        self.config_error: str | None = None
        # Set on SIGTERM: /healthz says 503 and every reply closes its connection, so clients
        # move to the other pods while the ones in flight finish here.
        self.draining = False
        if config is not None:
            self.apply(config)

    # -- clock ----------------------------------------------------------------------------

    def clock(self) -> float:
        """The backend's idea of the time (epoch seconds), offset included."""
        return time.time() + self.settings.clock_offset_seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- configuration --------------------------------------------------------------------

    def apply(self, config: LoadedConfig) -> None:
        """Switch to a new configuration (start-up or a rollout)."""
        s = self.settings
        ring = KeyRing(config.backend.keys, profile=s.profile, max_skew_seconds=s.max_skew_seconds)
        with self._apply_lock:
            old = self._active
            bucket = (old.bucket if old is not None and old.config.token_rate == config.token_rate
                      else TokenBucket(config.token_rate))
            gen = 1 if old is None else old.generation + 1
            self._active = _Active(config, gen, Diagnoser(ring, s.profile, s.max_skew_seconds),
                                   bucket, time.time())
            self.config_error = None
        self.metrics.inc("reloads")
        self.metrics.set("generation", gen)
        log.info("config generation %d loaded: %s", gen, config.describe())

    def report_error(self, message: str) -> None:
        """A configuration that could not be applied (the old one keeps serving)."""
        self.config_error = message

    @property
    def ready(self) -> bool:
        return self._active is not None and not self.draining

    def current_config(self) -> dict[str, Any] | None:
        """The configuration in use, without key material (kids are fingerprint-derived)."""
        a = self._active
        if a is None:
            return None
        cfg = a.config
        return {
            "generation": a.generation,
            "source": cfg.source,
            "template_hash": cfg.template_hash,
            "alg": cfg.backend.alg,
            "keys": [{"kid": k.kid, "fingerprint": k.fingerprint} for k in cfg.backend.keys],
            "fingerprints": cfg.backend.fingerprints,
            "token_rate": cfg.token_rate,
            "profile": self.settings.profile,
            "max_skew_seconds": self.settings.max_skew_seconds,
            "clock_offset_seconds": self.settings.clock_offset_seconds,
            "loaded_at": datetime.fromtimestamp(a.loaded_at, UTC).isoformat(),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for tests and drills."""
        m = self.metrics
        with self._samples_lock:
            n_samples = len(self._samples)
        return {
            "ingest": int(m.value("ingest")),
            "accepted": int(m.value("accepted")),
            "signature_err": int(m.value("signature_err")),
            "malformed": int(m.value("malformed")),
            "rate_limited": int(m.value("rate_limited")),
            "dedup_hits": int(m.value("dedup_hits")),
            "verdicts": {c: int(v) for c, v in m.by_label("verdicts").items()},
            "reloads": int(m.value("reloads")),
            "generation": self._active.generation if self._active else 0,
            "config_error": self.config_error,
            "dedup_entries": len(self._dedup),
            "samples": n_samples,
        }

    # -- the submit path ------------------------------------------------------------------

    def submit(self, body: bytes, source: str) -> Reply:
        """Judge one ``POST /v1/pcs/submit`` body from ``source``."""
        a = self._active
        if a is None:
            return Reply(503, {"error": "not ready", "reason": "no configuration loaded"})
        m = self.metrics
        m.inc("ingest")
        if not a.bucket.take():
            m.inc("rate_limited")
            return Reply(429, {"error": "rate limited"}, {"Retry-After": "1"})
        if self.wal is not None:
            try:
                self.wal.append(body, time.time_ns() + int(self.settings.clock_offset_seconds
                                                           * 1e9))
            except OSError as e:
                log.error("inbox WAL append failed: %s", e)
                return Reply(500, {"error": "internal error"})
        try:
            obj = loads(body, self.settings.max_body_bytes)
            pcs = parse_pcs(obj)
        except MalformedInput as e:
            m.inc("malformed")
            m.inc("verdicts", "malformed")
            return Reply(400, {"error": "malformed", "reason": e.reason})
        content = pcs.content_key()
        seen = self._dedup.lookup(pcs.pcs_id, content)
        if seen == "same":
            m.inc("dedup_hits")
            m.inc("accepted")
            return Reply(200, {"status": "accepted", "pcs_id": pcs.pcs_id, "dedup": True})
        now = self.now()
        if seen == "conflict":
            cause = "tampered"  # one pcs_id, two signed contents: never verify the second
        else:
            with a.lock:  # the Diagnoser keeps caches: one sample at a time
                cause = a.diagnoser.classify(Sample(pcs, now, source), 0).cause
        m.inc("verdicts", cause)
        if cause == "valid":
            self._dedup.add(pcs.pcs_id, content)
            m.inc("accepted")
            return Reply(200, {"status": "accepted", "pcs_id": pcs.pcs_id})
        m.inc("signature_err")
        self.rejections.rejected(pcs.pcs_id, error_text(a.config.backend.alg, cause),
                                 self.clock())
        received = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._samples_lock:
            self._samples.append({"pcs": obj, "received_at": received, "source": source})
        return Reply(401, {"error": "signature verification failed", "pcs_id": pcs.pcs_id})

    def oversize(self, length: int) -> Reply:
        """The answer to a body larger than ``max_body_bytes`` (not read, so not parsed)."""
        m = self.metrics
        m.inc("ingest")
        m.inc("malformed")
        m.inc("verdicts", "malformed")
        return Reply(400, {"error": "malformed", "reason": f"body of {length} bytes exceeds "
                           f"the limit of {self.settings.max_body_bytes}"})

    def samples(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` signature failures, oldest first, as diagnosis envelopes."""
        with self._samples_lock:
            items = list(self._samples)
        return items[-limit:] if limit > 0 else []


# -- HTTP ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self.inflight = 0  # requests being answered (not idle keep-alive connections)
        self.inflight_lock = threading.Lock()
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the agents reuse connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: _Server

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header tells sigops what time the backend thinks it is (scenario B).
        return email.utils.formatdate(self.server.backend.clock() if timestamp is None
                                      else timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def parse_request(self) -> bool:
        # Counted once the request line and headers are in: an idle keep-alive connection is
        # not a request in flight.
        ok = super().parse_request()
        if ok:
            with self.server.inflight_lock:
                self.server.inflight += 1
            self._counted = True
        return ok

    def finish(self) -> None:
        self._uncount()
        super().finish()

    def _uncount(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            with self.server.inflight_lock:
                self.server.inflight -= 1

    def _send(self, status: int, body: bytes, ctype: str,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.server.backend.draining:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._uncount()

    def _json(self, reply: Reply) -> None:
        self._send(reply.status, json.dumps(reply.body).encode() + b"\n", "application/json",
                   reply.headers)

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        backend = self.server.backend
        if urlsplit(self.path).path != SUBMIT_PATH:
            self.close_connection = True
            self._json(Reply(404, {"error": "not found"}))
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._json(Reply(400, {"error": "malformed", "reason": "Content-Length required"}))
            return
        n = int(length)
        if n > backend.settings.max_body_bytes:
            self.close_connection = True  # the body is not read: the connection cannot go on
            self._json(backend.oversize(n))
            return
        body = self.rfile.read(n)
        source = _clean_source(self.headers.get("X-Agent-Id"), self.client_address[0])
        self._json(backend.submit(body, source))

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        backend = self.server.backend
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._send(200, backend.metrics.render(), CONTENT_TYPE)
        elif url.path == "/healthz":
            ok = backend.ready
            self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n", "text/plain")
        elif url.path == SAMPLES_PATH and backend.settings.samples_endpoint:
            raw = parse_qs(url.query).get("limit", ["100"])[0]
            if not raw.isdigit():
                self._json(Reply(400, {"error": "limit must be a non-negative integer"}))
                return
            limit = min(int(raw), backend.settings.samples_max)
            self._json(Reply(200, {"samples": backend.samples(limit)}))
        elif url.path == "/v1/testbed/config":
            self._json(Reply(200, {"config": backend.current_config(),
                                   "error": backend.config_error}))
        elif url.path == "/v1/testbed/stats":
            self._json(Reply(200, backend.stats()))
        else:
            self._json(Reply(404, {"error": "not found"}))

    do_HEAD = do_GET  # noqa: N815 - http.server API; _send skips the body


class BackendServer:
    """A :class:`Backend` on a loopback (or given) address, optionally fed by a watcher.

    >>> from sigops.testbed.reload import config_from_env
    >>> cfg = config_from_env({"PCS_HMAC_KEY": "doctest-only"})
    >>> with BackendServer(Backend(config=cfg)) as srv:
    ...     srv.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, backend: Backend, host: str = "127.0.0.1", port: int = 0,
                 watcher: DeploymentWatcher | None = None) -> None:
        self.backend = backend
        self.host, self.port = host, port
        self.watcher = watcher
        self._srv: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._srv is None:
            raise RuntimeError("server not started")
        host, port = self._srv.server_address[:2]
        return f"http://{host!s}:{port}" if ":" not in str(host) else f"http://[{host!s}]:{port}"

    def start(self) -> BackendServer:
        """Bind, serve in a daemon thread and start the watcher (after one synchronous poll)."""
        self._srv = _Server((self.host, self.port), self.backend)
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,),
                                        name="testbed-backend", daemon=True)
        self._thread.start()
        if self.watcher is not None:
            self.watcher.poll_once()
            self.watcher.start()
        log.info("testbed backend listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def drain(self, delay: float = 2.0, timeout: float = 10.0) -> int:
        """Stop like a server behind a Service should: for ``delay`` seconds keep answering but
        report not ready and close each connection after its reply (the endpoints and the
        clients move on), then stop accepting and wait up to ``timeout`` for the requests in
        flight (the real server's graceful shutdown also waits 10 s). Returns how many were
        still in flight at the deadline (0 when all finished)."""
        self.backend.draining = True
        log.info("draining: not ready, closing connections after each reply (%.1fs)", delay)
        time.sleep(max(delay, 0.0))
        srv = self._srv
        left = 0
        if srv is not None:
            srv.shutdown()  # no new connections are accepted
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with srv.inflight_lock:
                    left = srv.inflight
                if left <= 0:
                    break
                time.sleep(0.02)
        self.stop()
        log.info("stopped (%d requests unfinished)", left)
        return left

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI's foreground mode)."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
