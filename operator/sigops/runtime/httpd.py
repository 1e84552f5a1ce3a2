"""Small threaded HTTP servers: /metrics and /healthz, and the alert receiver's socket."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..telemetry.metrics import REGISTRY

__all__ = ["parse_listen", "serve", "MetricsHandler"]


def parse_listen(addr: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) to a (host, port) pair, with a clear error."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {addr!r} must be host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsHandler(BaseHTTPRequestHandler):
    healthy: Callable[[], bool] = staticmethod(lambda: True)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.split("?")[0] == "/metrics":
            body, ctype, code = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
        elif self.path.split("?")[0] == "/healthz":
            ok = type(self).healthy()
            body, ctype, code = (b"ok\n" if ok else b"unhealthy\n"), "text/plain", (
                200 if ok else 503)
        else:
            body, ctype, code = b"not found\n", "text/plain", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet access log
        return


class _Server(ThreadingHTTPServer):
    # Alertmanager delivers bursts; socketserver's default backlog of 5 resets them.
    request_queue_size = 128


def serve(addr: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Start a daemon-thread server on ``addr``; returns it (``.server_address`` has the port)."""
    srv = _Server(parse_listen(addr), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name=f"http-{addr}", daemon=True).start()
    return srv
