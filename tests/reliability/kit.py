"""Shared pieces of the reliability suite: the registry of key material (for the leak scan),
the figures each test measured, an in-process Kube that can "crash" after any write, a fake
clock, and raw HTTP helpers for hostile webhook clients.

Nothing here edits the system under test; it only watches it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from sigops.core.keys import Key
from sigops.kube.api import GROUP, VERSION, Kube

# -- figures ---------------------------------------------------------------------------------

FIGURES: dict[str, dict[str, Any]] = {}
_FIG_LOCK = threading.Lock()


def figure(section: str, **values: Any) -> None:
    """Record measured numbers under ``section`` (a later value replaces an earlier one)."""
    with _FIG_LOCK:
        FIGURES.setdefault(section, {}).update(values)


def bump(section: str, **counts: int | float) -> None:
    """Add measured counts under ``section``."""
    with _FIG_LOCK:
        cur = FIGURES.setdefault(section, {})
        for k, v in counts.items():
            cur[k] = cur.get(k, 0) + v


CLI_RUNS = {"runs": 0, "tracebacks": 0}
"""Counted by :func:`run_cli`: what the figures report, and what the tests require."""


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``sigops ARGV`` in process: (exit code, stdout, stderr); a traceback on stderr is
    counted in :data:`CLI_RUNS` and fails the caller."""
    import contextlib
    import io

    from sigops import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
    CLI_RUNS["runs"] += 1
    if "Traceback" in err.getvalue():
        CLI_RUNS["tracebacks"] += 1
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return rc, out.getvalue(), err.getvalue()


def fuzz_seconds() -> float | None:
    """SIGOPS_FUZZ_SECONDS: run the fuzzers for this long instead of the short default."""
    raw = os.environ.get("SIGOPS_FUZZ_SECONDS")
    return float(raw) if raw else None


def run_for_budget(fn: Callable[[], None], default_rounds: int = 1) -> float:
    """Call a hypothesis test ``default_rounds`` times (fresh random examples each time), or
    over and over until SIGOPS_FUZZ_SECONDS have passed; returns the seconds spent."""
    budget = fuzz_seconds()
    t0 = time.monotonic()
    rounds = 0
    while True:
        fn()
        rounds += 1
        if budget is None and rounds >= default_rounds:
            break
        if budget is not None and time.monotonic() - t0 >= budget:
            break
    return time.monotonic() - t0


# -- key material registry and leak scan ------------------------------------------------------

_MIN_LEN = 16  # shorter strings would match by accident


class SecretRegistry:
    """Every piece of key material the suite generated or found in a Secret, in the forms a
    leak would take (as stored, base64, hex)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str | bytes | None) -> None:
        if not value:
            return
        forms: set[str] = set()
        if isinstance(value, bytes):
            forms |= {base64.b64encode(value).decode(), value.hex()}
            try:
                forms.add(value.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        else:
            forms.add(value)
            try:  # a base64 seed: also look for its raw hex
                raw = base64.b64decode(value, validate=True)
                if len(raw) >= _MIN_LEN:
                    forms.add(raw.hex())
            except ValueError:
                pass
        with self._lock:
            self._values |= {f for f in forms if len(f) >= _MIN_LEN}

    def add_key(self, key: Key) -> None:
        if key.secret:
            self.add(key.secret.decode("utf-8", "replace"))
            self.add(key.secret)
        if key.private_seed:
            self.add(key.private_seed)

    def add_entry(self, entry: Any) -> None:
        """Walk a JSON document and register every ``secret``/``private_b64``/``agent``."""
        if isinstance(entry, dict):
            for k, v in entry.items():
                if k in ("secret", "private_b64", "agent") and isinstance(v, str):
                    self.add(v)
                else:
                    self.add_entry(v)
        elif isinstance(entry, list):
            for v in entry:
                self.add_entry(v)

    def harvest_secrets(self, api: Any, namespace: str) -> int:
        """Register the key material held in every Secret of ``namespace``."""
        try:
            items = client.CoreV1Api(api).list_namespaced_secret(namespace).items
        except client.ApiException:
            return 0
        for s in items:
            for name, v in (s.data or {}).items():
                text = base64.b64decode(v).decode("utf-8", "replace")
                if name.endswith(".json"):
                    try:
                        self.add_entry(json.loads(text))
                    except ValueError:
                        self.add(text)
                elif name in ("PCS_HMAC_KEY", "PCS_HMAC_KEYS", "PCS_ED25519_PRIV_B64",
                              "token"):
                    for part in text.split(","):
                        self.add(part.strip())
        return len(items)

    def hits(self, text: str) -> list[str]:
        """Masked names of registered values found in ``text``. Values are looked up by
        their first 16 characters inside the text's key-like tokens, so a scan costs one pass
        over the text however many values are registered."""
        with self._lock:
            values = list(self._values)
        prefixes: dict[str, list[str]] = {}
        for v in values:
            prefixes.setdefault(v[:_MIN_LEN], []).append(v)
        found: set[str] = {v for v in values if not _TOKEN.fullmatch(v) and v in text}
        for m in _TOKEN.finditer(text):
            tok = m.group(0)
            for i in range(len(tok) - _MIN_LEN + 1):
                for v in prefixes.get(tok[i:i + _MIN_LEN], ()):
                    if text.startswith(v, m.start() + i):
                        found.add(v)
        return [f"{v[:4]}…({len(v)} chars)" for v in sorted(found)]


# Characters key material is written with (base64, base64url, hex, the test secrets' dashes).
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{" + str(_MIN_LEN) + ",}")


REGISTRY = SecretRegistry()
OPERATOR_NAMESPACES: set[str] = set()
LOG_DIRS: set[Path] = set()
"""Temporary directories of this suite's tests (their ``*.log`` files are swept at the end)."""


def cluster_documents(api: Any, namespaces: Iterable[str]) -> list[tuple[str, str]]:
    """(what, JSON text) of every Event, KeyRotation, SignatureIncident (status, metadata,
    annotations and all), ConfigMap and Deployment annotation set in ``namespaces``."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    co = client.CustomObjectsApi(api)
    ser = client.ApiClient().sanitize_for_serialization
    out: list[tuple[str, str]] = []
    for ns in namespaces:
        try:
            for e in core.list_namespaced_event(ns).items:
                out.append((f"event {ns}/{e.metadata.name}", json.dumps(ser(e))))
            for plural in ("keyrotations", "signatureincidents"):
                for o in co.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]:
                    out.append((f"{plural} {ns}/{o['metadata']['name']}", json.dumps(o)))
            for cm in core.list_namespaced_config_map(ns).items:
                out.append((f"configmap {ns}/{cm.metadata.name}", json.dumps(ser(cm))))
            for d in apps.list_namespaced_deployment(ns).items:
                ann = {"meta": d.metadata.annotations,
                       "template": d.spec.template.metadata.annotations
                       if d.spec.template.metadata else None}
                out.append((f"deployment annotations {ns}/{d.metadata.name}", json.dumps(ann)))
        except client.ApiException as e:
            if e.status != 404:
                raise
    return out


def log_documents(root: Path) -> list[tuple[str, str]]:
    return [(str(p), p.read_text(errors="replace")) for p in sorted(root.rglob("*.log"))
            if p.is_file()]


def scan(docs: Iterable[tuple[str, str]]) -> tuple[int, int, list[str]]:
    """(documents, bytes, findings) of a leak scan against the registry."""
    n = size = 0
    found: list[str] = []
    for what, text in docs:
        n += 1
        size += len(text)
        for h in REGISTRY.hits(text):
            found.append(f"{what}: {h}")
    return n, size, found


# -- fast reads for invariant checks ------------------------------------------------------------


class RawApi:
    """GETs straight through the client's connection pool (no model (de)serialization): the
    invariant checks run after every write, so they must be cheap."""

    def __init__(self, api: Any) -> None:
        self.pool = api.rest_client.pool_manager
        self.host = api.configuration.host
        self.headers = {"Accept": "application/json"}
        auth = api.configuration.get_api_key_with_prefix("BearerToken")
        if auth:
            self.headers["Authorization"] = auth

    def get(self, path: str) -> dict[str, Any] | None:
        r = self.pool.request("GET", self.host + path, headers=self.headers)
        if r.status == 404:
            return None
        assert r.status == 200, (path, r.status)
        doc: dict[str, Any] = json.loads(r.data)
        return doc

    def secret(self, ns: str, name: str) -> dict[str, str] | None:
        doc = self.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
        if doc is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}

    def deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")

    def backend_fingerprints(self, ns: str, deployment: str = "fractal-lba-backend") -> list[str]:
        from sigops.backend.config import EnvNames, backend_config, find_container, resolve_env

        dep = self.deployment(ns, deployment)
        assert dep is not None
        cache: dict[str, dict[str, str] | None] = {}

        def read(name: str, key: str) -> str | None:
            if name not in cache:
                cache[name] = self.secret(ns, name)
            return (cache[name] or {}).get(key)

        return backend_config(resolve_env(find_container(dep, None), read),
                              EnvNames()).fingerprints

    def agent_fingerprint(self, ns: str, alg: str, name: str = "agent-key") -> str:
        from sigops.core.keys import ED25519, HMAC

        data = self.secret(ns, name) or {}
        if alg == HMAC:
            return Key("a", HMAC, secret=data["PCS_HMAC_KEY"].encode()).fingerprint
        return Key("a", ED25519, private_seed=base64.b64decode(data["PCS_ED25519_PRIV_B64"])
                   ).fingerprint


# -- in-process crashes -----------------------------------------------------------------------


class Crash(BaseException):
    """A simulated SIGKILL: a BaseException so no ``except Exception`` in sigops catches it."""


_WRITES = ("create_", "replace_", "patch_", "delete_")


class _Recorder:
    def __init__(self, target: Any, kube: CrashingKube) -> None:
        self._target, self._kube = target, kube

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not name.startswith(_WRITES):
            return attr

        def wrapped(*a: Any, **kw: Any) -> Any:
            err = self._kube.fail_before.pop(name, None)
            if err is not None:
                raise err
            out = attr(*a, **kw)
            self._kube.wrote(name, a)
            return out

        return wrapped


class CrashingKube(Kube):
    """A :class:`Kube` that counts every mutating API call, runs ``check`` after each one and
    raises :class:`Crash` right after write number ``crash_after`` (counted since ``arm``).
    ``fail_before[method] = exc`` makes the next call of ``method`` raise ``exc`` unperformed
    (e.g. a 409 Conflict)."""

    def __init__(self, api: Any, check: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.check = check
        self.writes: list[str] = []
        self.crash_after: int | None = None
        self._armed_at = 0
        self.crashed = False
        self.fail_before: dict[str, BaseException] = {}

    def arm(self, crash_after: int | None) -> None:
        self.crash_after, self._armed_at = crash_after, len(self.writes)

    @property
    def since_arm(self) -> int:
        return len(self.writes) - self._armed_at

    def wrote(self, name: str, args: tuple[Any, ...]) -> None:
        what = name + ":" + ",".join(str(a) for a in args[:2] if isinstance(a, str))
        self.writes.append(what)
        if self.check is not None:
            self.check(what)
        if self.crash_after is not None and self.since_arm == self.crash_after:
            self.crash_after = None
            self.crashed = True
            raise Crash(what)

    @property
    def core(self) -> Any:
        return _Recorder(client.CoreV1Api(self.api), self)

    @property
    def apps(self) -> Any:
        return _Recorder(client.AppsV1Api(self.api), self)

    @property
    def custom(self) -> Any:
        return _Recorder(client.CustomObjectsApi(self.api), self)


class FakeClock:
    """A clock that moves ``step`` forward on every reading (overlap windows pass at once)."""

    def __init__(self, step: float = 1.0) -> None:
        self.t = datetime.now(UTC)
        self.step = timedelta(seconds=step)

    def __call__(self) -> datetime:
        self.t += self.step
        return self.t


# -- raw HTTP ---------------------------------------------------------------------------------


def raw_request(port: int, data: bytes, timeout: float = 15.0) -> tuple[int | None, bytes]:
    """Send raw bytes, read the reply until the server closes; (status or None, body).

    The sending side stays open (no half-close): the receiver, like most HTTP servers, takes a
    client's end of input as the end of the connection and would not answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except OSError:
            pass
    reply = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return (int(m.group(1)) if m else None), reply.partition(b"\r\n\r\n")[2]


def post_bytes(port: int, body: bytes, headers: dict[str, str] | None = None,
               path: str = "/v1/alerts") -> tuple[int | None, bytes]:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1",
            "Content-Type: application/json", "Connection: close"]
    hdrs = {"Content-Length": str(len(body)), **(headers or {})}
    head += [f"{k}: {v}" for k, v in hdrs.items() if v is not None]
    return raw_request(port, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def metric_values(port: int, name: str) -> dict[str, float]:
    """``{label-string: value}`` of one metric family on /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, val = line.rpartition(" ")
            out[key[len(name):]] = float(val)
    return out


def rejected_by_reason(port: int) -> dict[str, int]:
    """Rejections counted per reason (the reasons still at 0 left out)."""
    vals = metric_values(port, "sigops_signals_rejected_total")
    out = {}
    for k, v in vals.items():
        m = re.search(r'reason="([^"]*)"', k)
        if m and v:
            out[m.group(1)] = int(v)
    return out


def wait_until(fn: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    return None
