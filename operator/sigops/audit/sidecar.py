"""Backend pods' WAL reader sidecars as an audit source (``walSource: sidecar``).

At launch the operator lists the Deployment's own ready pods (pods one of its ReplicaSets
controls, by UID: never a pod a requester names, never a neighbour that matches the
selector) that have a ``flk-wal`` port, and writes them -- name, IP, port -- into the Job's
input ConfigMap ``<job>-pods`` (key ``pods.json``); index ``i`` audits pod ``i``. The list
comes in the ConfigMap, not from the API: the index's Role stays what it was.

An index reads its pod's window forward through ``GET /v1/wal/range``, one page (whole
entries, at most ``page_bytes``) at a time, as :class:`~sigops.core.audit.ShardInput`\\ s
that :func:`~sigops.core.audit.audit_shard` consumes one by one: memory holds one page. The
bearer token comes from a mounted Secret file and is never logged; no redirect is followed
(a 3xx is an error) and no proxy used: the token goes to the pod's address only. A page must
carry a Content-Length and arrive whole: a body cut short (the sidecar gives up on a read
past its deadline) is retried like a 429 or 503, which are waited out (``Retry-After``,
bounded); each a bounded number of times. Any other failure raises :class:`WalReadError`
and fails the index (the Job's ``backoffLimitPerIndex`` retries it alone).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..backend.deployment import WAL_PORT_NAME, Backend, pod_of
from ..core.audit import ShardInput
from ..core.errors import SigopsError
from ..core.timeparse import format_time
from ..kube.door import KubeDoor

__all__ = ["WalPod", "WalReadError", "PODS_KEY", "wal_pods", "pods_json", "pods_digest",
           "parse_pods", "read_pages", "RANGE_PATH", "WAL_WINDOW_SECONDS", "WAL_MARGIN_SECONDS"]

PODS_KEY = "pods.json"
WAL_WINDOW_SECONDS = 24 * 3600
"""How far back the sidecars serve (``sigops wal serve --max-window``, default 24h)."""
WAL_MARGIN_SECONDS = 600
"""How far inside the sidecars' window an audit's window starts when its ``since`` lies
further back (the sidecars answer range reads up to their read grace, 6 h, past the window:
indexes that start later still read the launch's window)."""
RANGE_PATH = "/v1/wal/range"
_DNS = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class WalReadError(SigopsError):
    """A pod's WAL could not be read through its sidecar: the index fails (and is retried)."""


@dataclass(frozen=True)
class WalPod:
    """One backend pod whose WAL an index reads."""

    name: str
    ip: str
    port: int

    def url(self, query: dict[str, str]) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}{RANGE_PATH}?{urllib.parse.urlencode(query)}"


def _ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and bool(st.get("podIP")) and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in st.get("conditions") or []) and not (
        pod.get("metadata") or {}).get("deletionTimestamp")


def _wal_port(pod: dict[str, Any]) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == WAL_PORT_NAME and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return None


def wal_pods(kube: KubeDoor, namespace: str, deployment: str
             ) -> tuple[list[WalPod], int, int]:
    """The Deployment's own ready pods with a ``flk-wal`` port, sorted by name; and how many
    of its own pods were not ready, and how many ready ones had no such port."""
    backend = Backend(kube, namespace, deployment)
    dep = backend.deployment()
    if dep is None:
        return [], 0, 0
    own = backend.own_replica_sets(dep)
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not own or not match:
        return [], 0, 0
    pods = [p for p in kube.list_pods(namespace, ",".join(f"{k}={v}"
                                                          for k, v in sorted(match.items())))
            if pod_of(p, own)]
    out, not_ready, no_port = [], 0, 0
    for pod in pods:
        if not _ready(pod):
            not_ready += 1
            continue
        port = _wal_port(pod)
        if port is None:
            no_port += 1
            continue
        out.append(WalPod(pod["metadata"]["name"], str(pod["status"]["podIP"]), port))
    return sorted(out, key=lambda p: p.name), not_ready, no_port


def pods_json(pods: list[WalPod] | tuple[WalPod, ...]) -> str:
    """The input ConfigMap's ``pods.json``: one object per index, in index order."""
    return json.dumps([{"name": p.name, "ip": p.ip, "port": p.port} for p in pods])


def pods_digest(text: str) -> str:
    """The SHA-256 of a ``pods.json``: the Job's arguments carry it (a pod template cannot
    change), and an index sends its token only to the pods of a list with this digest -- not
    to whatever a writer of ConfigMaps in the namespace put in the ConfigMap."""
    return hashlib.sha256(text.encode()).hexdigest()


def parse_pods(text: str) -> list[WalPod]:
    """``pods.json`` read back, strictly (a pod name, an IP address, a port)."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise WalReadError("the pods file is not JSON") from None
    if not isinstance(doc, list):
        raise WalReadError("the pods file must be a JSON list")
    out = []
    for i, row in enumerate(doc):
        try:
            name, ip, port = row["name"], row["ip"], row["port"]
            if not (isinstance(name, str) and _DNS.fullmatch(name)):
                raise ValueError
            ipaddress.ip_address(ip)
            if not (isinstance(port, int) and not isinstance(port, bool)
                    and 0 < port < 65536):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise WalReadError(f"entry {i} of the pods file is not a pod (name, ip, "
                               "port)") from None
        out.append(WalPod(name, ip, port))
    return out


def _wait(header: str | None, cap: float) -> float:
    try:
        return min(max(float(header or 1), 0.0), cap)
    except ValueError:
        return min(1.0, cap)


def read_pages(pod: WalPod, token: bytes, since: datetime, until: datetime, *,
               page_bytes: int = 4 << 20, timeout: float = 30.0, attempts: int = 10,
               max_wait: float = 30.0, sleep: Callable[[float], None] = time.sleep,
               stats: dict[str, int] | None = None) -> Iterator[ShardInput]:
    """The pod's window ``[since, until)``, page by page (empty pages are not yielded),
    each named after the pod: :func:`~sigops.core.audit.audit_shard` makes them one input
    (one running SHA-256, whatever the page size). ``stats`` (if given) counts ``pages``
    and ``damaged``."""
    headers = {"Authorization": f"Bearer {token.decode()}"}
    cursor: str | None = None
    while True:
        query = {"since": format_time(since), "until": format_time(until),
                 "max_bytes": str(page_bytes)}
        if cursor is not None:
            query["cursor"] = cursor
        data, answer = _get(pod, query, headers, page_bytes, timeout, attempts, max_wait,
                            sleep)
        if stats is not None:
            stats["pages"] = stats.get("pages", 0) + 1
            stats["damaged"] = stats.get("damaged", 0) + int(answer.get("X-WAL-Damaged") or 0)
        if data:
            yield ShardInput(pod.name, data)
        nxt = answer.get("X-WAL-Next-Cursor")
        if not nxt:
            if answer.get("X-WAL-Complete") != "true":
                raise WalReadError(f"{pod.name}: the sidecar gave no next cursor and did not "
                                   "say the window is read (an older sidecar?)")
            return
        if nxt == cursor and not data:
            raise WalReadError(f"{pod.name}: the sidecar answered the same cursor again")
        cursor = nxt


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: a 3xx stays an error (the token is never sent elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _build_opener() -> urllib.request.OpenerDirector:
    """An opener that follows no redirect and uses no proxy (not even one the environment
    names): the token goes to the pod's own address and nowhere else."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


_OPENER = _build_opener()


class _ShortPage(Exception):
    """A page whose body ended before its Content-Length (the sidecar cut it off)."""


def _body(pod: WalPod, r: Any, page_bytes: int) -> bytes:
    """The whole body of answer ``r``: exactly its Content-Length bytes."""
    length = r.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        raise WalReadError(f"{pod.name}: the sidecar's page has no Content-Length")
    want = int(length)
    if want > page_bytes:
        raise WalReadError(f"{pod.name}: a page is longer than the {page_bytes} bytes "
                           "asked for")
    data = bytearray()
    try:
        while len(data) < want:
            chunk = r.read(want - len(data))
            if not chunk:
                break
            data += chunk
    except (OSError, http.client.HTTPException):
        pass
    if len(data) < want:
        raise _ShortPage(f"{pod.name}: a page ended after {len(data)} of its {want} bytes")
    return bytes(data)


def _get(pod: WalPod, query: dict[str, str], headers: dict[str, str], page_bytes: int,
         timeout: float, attempts: int, max_wait: float, sleep: Callable[[float], None]
         ) -> tuple[bytes, Any]:
    for attempt in range(1, attempts + 1):
        try:
            with _OPENER.open(urllib.request.Request(pod.url(query), headers=headers),
                              timeout=timeout) as r:
                return _body(pod, r, page_bytes), r.headers
        except _ShortPage as e:
            if attempt < attempts:
                sleep(_wait(None, max_wait))
                continue
            raise WalReadError(f"{e} (after {attempt} attempts)") from None
        except urllib.error.HTTPError as e:
            if e.code in (429, 503) and attempt < attempts:
                sleep(_wait(e.headers.get("Retry-After"), max_wait))
                continue
            detail = ""
            try:
                detail = str(json.loads(e.read(4096)).get("error", ""))[:200]
            except (ValueError, AttributeError, OSError):
                pass
            raise WalReadError(f"{pod.name}: the sidecar answered HTTP {e.code}"
                               + (f": {detail}" if detail else "")
                               + (f" (after {attempt} attempts)" if attempt > 1 else "")
                               ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or type(e).__name__
            raise WalReadError(f"{pod.name}: cannot read its WAL sidecar: {reason}") from None
    raise AssertionError("unreachable")
