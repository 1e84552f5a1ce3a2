"""A flood of idle and half-sent connections against the real operator's receiver.

1,000 loopback connections open and then send nothing, half of a request's headers, or whole
headers and half a body. The receiver (one event loop, a small fixed pool for API work) must
not spend a thread on any of them, must still answer a real alert within 2 s while they hang,
and must close every one of them after its idle or body timeout (10 s).
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from pathlib import Path

from sigops.core.keys import HMAC, Key
from tests.reliability import kit
from tests.reliability.test_webhook_hostile import alert_doc, bearer
from tests.support import TOKEN, backend, incidents, start

FLOOD = 1000


def proc_status(pid: int) -> dict[str, int]:
    """Threads and resident memory (KiB) of a process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("Threads", "VmRSS"):
            out[key] = int(val.split()[0])
    return out


def test_a_flood_of_idle_connections_costs_no_threads(api, namespace, operator_factory,
                                                      tmp_path):
    t0 = time.monotonic()
    key = Key("k", HMAC, secret=b"reliability-flood-backend-key-0001")
    kit.REGISTRY.add_key(key)
    backend(api, namespace, key)
    op = start(operator_factory, tmp_path, namespace, None)
    assert op.proc is not None
    pid, port = op.proc.pid, op.alerts_port
    # Warm up: one alert through the whole path, so the worker pool has its thread already.
    warm = json.dumps(alert_doc(namespace, "00000000000000f0")).encode()
    assert kit.post_bytes(port, warm, bearer(TOKEN))[0] == 200
    before = proc_status(pid)

    head = (f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n").encode()
    prefixes = [b"", b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n", head + b'{"version": "4",']
    socks: list[socket.socket] = []
    opened = time.monotonic()
    try:
        for i in range(FLOOD):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if prefixes[i % 3]:
                s.sendall(prefixes[i % 3])
            socks.append(s)
        time.sleep(1.0)  # let the server take them all in
        during = proc_status(pid)

        # A real alert while they hang.
        t = time.monotonic()
        code, reply = kit.post_bytes(port, json.dumps(alert_doc(namespace, "00000000000000f1")
                                                      ).encode(), bearer(TOKEN))
        answered = time.monotonic() - t
        assert code == 200, reply
        assert json.loads(reply)["results"] == {"created": 1}
        assert answered < 2.0, f"the real alert took {answered:.2f}s during the flood"
        assert during["Threads"] <= before["Threads"] + 2, (before, during)

        # Every flood connection is closed by the server after its timeout.
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        open_left, deadline = len(socks), time.monotonic() + 40
        closed_at: list[float] = []
        while open_left and time.monotonic() < deadline:
            for k, _ in sel.select(timeout=1.0):
                sock = k.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # closed (a 408 for the half bodies comes first)
                    sel.unregister(sock)
                    closed_at.append(time.monotonic() - opened)
                    open_left -= 1
        sel.close()
        assert open_left == 0, f"{open_left} of {FLOOD} flood connections still open after 40s"
        after = proc_status(pid)
    finally:
        for s in socks:
            s.close()
    assert len(incidents(api, namespace)) == 2
    kit.figure("receiver flood", connections=FLOOD,
               threads_before=before["Threads"], threads_during=during["Threads"],
               threads_after=after["Threads"],
               rss_mib_before=round(before["VmRSS"] / 1024, 1),
               rss_mib_during=round(during["VmRSS"] / 1024, 1),
               rss_mib_after=round(after["VmRSS"] / 1024, 1),
               real_alert_answered_s=round(answered, 3),
               flood_closed_after_s=[round(min(closed_at), 1), round(max(closed_at), 1)],
               seconds=round(time.monotonic() - t0, 1))
