"""A loopback HTTP server that answers every GET with what a function returns: the stand-in for
a backend's failed-sample endpoint or a metrics exporter in tests, benchmarks and drills."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["StubServer"]


class StubServer:
    """Serves ``body()`` (fresh on every GET) on 127.0.0.1 at a free port until closed."""

    def __init__(self, body: Callable[[], bytes],
                 content_type: str = "application/json") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                data = body()
                self.send_response(200)  # with a Date header, which scenario B reads
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.srv.server_address[1]}"
        self.url = f"http://{self.address}"
        threading.Thread(target=self.srv.serve_forever, daemon=True, name="stub-http").start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
