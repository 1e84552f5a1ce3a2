"""The operator's HTTP endpoints on one asyncio event loop (aiohttp, which kopf already brings):
the alert receiver (``POST /v1/alerts``, optionally over TLS) and ``/metrics`` with the health
endpoints.

Why not a thread per connection (``http.server``, what sigops had): a thousand clients that
open a connection and send nothing cost a thousand threads. Here a connection is a few objects
on the loop; only the work of an authorized alert (API calls) runs in a small, fixed pool of
threads. A connection that has not sent its request headers within ``idle_timeout`` is closed
(aiohttp's keep-alive timer, which also runs before the first request); a body that has not
arrived within ``body_timeout`` is answered 408 and the connection closed; a TLS handshake gets
``handshake_timeout``.

The receiver's certificate and key are reloaded when their files change (:class:`TLSFiles`),
as a mounted Secret (cert-manager) rotates them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..incident.intake import MAX_BODY, AlertIntake, Reply, gate, receive, too_large
from ..telemetry.metrics import ALERT_POST_SECONDS, REGISTRY
from .health import Health

__all__ = ["Endpoints", "TLSFiles", "parse_listen"]

log = logging.getLogger("sigops.http")


class _OneLine(logging.Filter):
    """aiohttp logs a malformed request as an error with a traceback and an excerpt of the
    offending bytes, which may hold a bearer token: keep one warning line naming the error's
    type, nothing of the input."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        record.msg, record.args = "HTTP request refused: %s", (
            type(exc).__name__ if exc else "protocol error",)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


protocol_log = logging.getLogger("sigops.http.protocol")
protocol_log.addFilter(_OneLine())



def parse_listen(addr: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) to a (host, port) pair, with a clear error.

    >>> parse_listen("[::1]:8080"), parse_listen(":9")
    (('::1', 8080), ('0.0.0.0', 9))
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {addr!r} must be host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def _stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class TLSFiles:
    """A server TLS context (TLS 1.2 and up) from a certificate chain and a key file, reloaded
    by :meth:`refresh` when either file changes. A pair that does not load (a half-written
    file, a key that does not match) is tried on a scratch context first and the previous pair
    stays in use, so a bad rotation never leaves the receiver without a certificate."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamps = self._read_stamps()
        self.context.load_cert_chain(cert_file, key_file)
        self.reloads = 0

    def _read_stamps(self) -> tuple[tuple[int, int, int, int], ...]:
        return (_stamp(self.cert_file), _stamp(self.key_file))

    def refresh(self) -> bool:
        """Reload the pair if a file changed; True when a new pair is in use."""
        try:
            stamps = self._read_stamps()
            if stamps == self._stamps:
                return False
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(self.cert_file, self.key_file)
            # New handshakes use the new pair; connections already open keep theirs.
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            log.warning("receiver certificate files changed but do not load (%s); keeping "
                        "the previous certificate", type(e).__name__)
            return False
        self._stamps = stamps
        self.reloads += 1
        log.info("receiver certificate reloaded from %s", self.cert_file)
        return True


def _json(reply: Reply, close: bool = False) -> web.Response:
    resp = web.json_response(reply.body, status=reply.code)
    if close:
        resp.force_close()
    return resp


class Endpoints:
    """Both servers on one event loop in one thread: :meth:`start`, then :meth:`stop`.

    ``/livez``, ``/readyz`` and ``/healthz`` answer ``health``'s checks; the receiver's loop
    renews the ``intake`` heartbeat through its worker pool every ``tick`` seconds, and each
    alert post is work in flight. ``alerts_address`` / ``metrics_address`` are the bound
    (host, port) pairs."""

    def __init__(self, intake: AlertIntake, alerts_listen: str, metrics_listen: str, *,
                 health: Health | None = None, tls: TLSFiles | None = None,
                 idle_timeout: float = 10.0, body_timeout: float = 10.0,
                 handshake_timeout: float = 10.0, workers: int = 8, tick: float = 2.0,
                 heartbeat_max_age: float = 60.0) -> None:
        self.intake, self.tls = intake, tls
        self.health = health or Health()
        self.health.expect("intake", heartbeat_max_age)
        self.idle_timeout, self.body_timeout = idle_timeout, body_timeout
        self.handshake_timeout, self.tick = handshake_timeout, tick
        self._beat: asyncio.Future[None] | None = None
        self._listen = (parse_listen(alerts_listen), parse_listen(metrics_listen))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-work")
        self.loop = asyncio.new_event_loop()
        self.alerts_address: tuple[str, int] = ("", 0)
        self.metrics_address: tuple[str, int] = ("", 0)
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None

    # -- handlers ------------------------------------------------------------------------

    async def _alerts(self, request: web.Request) -> web.StreamResponse:
        src = request.remote or "unknown"
        early = gate(self.intake, request.path, request.headers.get("Authorization"),
                     request.content_length, src)
        if early is not None:
            # Unread body: do not keep the connection for the next request.
            return _json(early, close=request.can_read_body)
        try:
            async with asyncio.timeout(self.body_timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(too_large(src), close=True)
        except TimeoutError:
            return _json(Reply(408, {"error": "request body not received in time"}),
                         close=True)
        started = self.loop.time()
        reply = await self.loop.run_in_executor(self.pool, self._receive, raw, src)
        ALERT_POST_SECONDS.labels(str(reply.code)).observe(self.loop.time() - started)
        return _json(reply)

    def _receive(self, raw: bytes, src: str) -> Reply:
        with self.health.working("intake", f"an alert post from {src}"):
            return receive(self.intake, raw, src)

    async def _alerts_other(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/healthz":
            return web.json_response({"status": "ok"})
        return web.json_response({"error": "not found"}, status=404)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body = await self.loop.run_in_executor(self.pool, generate_latest, REGISTRY)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    def _probe(self, check: Callable[[], tuple[bool, str]]
               ) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ok, why = check()
            return web.Response(text=f"{'ok' if ok else 'unhealthy'}: {why}\n",
                                status=200 if ok else 503)

        return handler

    # -- lifecycle -------------------------------------------------------------------------

    def _apps(self) -> tuple[web.Application, web.Application]:
        alerts = web.Application(client_max_size=MAX_BODY)
        alerts.router.add_post("/v1/alerts", self._alerts)
        alerts.router.add_route("*", "/{tail:.*}", self._alerts_other)
        metrics = web.Application()
        metrics.router.add_get("/metrics", self._metrics)
        metrics.router.add_get("/healthz", self._probe(self.health.healthz))
        metrics.router.add_get("/livez", self._probe(self.health.live))
        metrics.router.add_get("/readyz", self._probe(self.health.ready))
        return alerts, metrics

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        servers: list[asyncio.Server] = []
        bound: list[tuple[str, int]] = []
        for app, (host, port), tls in zip(self._apps(), self._listen,
                                          (self.tls, None), strict=True):
            # keepalive_timeout also runs from the moment a connection opens: a client that
            # sends nothing, or half its headers, is closed after it.
            # A body left unread (refused, or too slow) is drained for at most a second
            # before the connection closes, not aiohttp's default ten.
            runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.idle_timeout,
                                   lingering_time=1.0, handler_cancellation=True,
                                   logger=protocol_log)
            await runner.setup()
            self._runners.append(runner)
            assert runner.server is not None
            # The loop's own server (not aiohttp's TCPSite) to bound the TLS handshake too.
            srv = await self.loop.create_server(
                runner.server, host, port, backlog=1024, reuse_address=True,
                ssl=tls.context if tls else None,
                ssl_handshake_timeout=self.handshake_timeout if tls else None)
            servers.append(srv)
            sock = srv.sockets[0].getsockname()
            bound.append((str(sock[0]), int(sock[1])))
        self.alerts_address, self.metrics_address = bound
        self._started.set()
        while True:
            self._heartbeat()
            try:
                await asyncio.wait_for(self._stopping.wait(), self.tick)
                break
            except TimeoutError:
                pass
            if self.tls is not None:
                self.tls.refresh()
        for srv in servers:
            srv.close()
        for runner in self._runners:
            await runner.cleanup()

    def _heartbeat(self) -> None:
        """Renew ``intake`` through the worker pool: a loop that no longer ticks, or a pool
        whose threads all hang, stops it. One beat in the pool's queue at a time."""
        if self._beat is None or self._beat.done():
            self._beat = self.loop.run_in_executor(self.pool, self.health.beat, "intake")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._error = e
            self._started.set()
        finally:
            self.loop.close()

    def start(self, timeout: float = 30.0) -> Endpoints:
        """Bind both addresses and serve; an address that cannot be bound raises here."""
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("HTTP endpoints did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stopping is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=15)
        self.pool.shutdown(wait=False, cancel_futures=True)
