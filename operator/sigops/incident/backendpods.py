"""Evidence from the backend's pods, as a real FLK backend gives it: each pod's state and
clock, its log lines about refused PCS, its inbox WAL (through the ``sigops wal serve``
sidecar), and the Events on the Deployment, its ReplicaSets, pods and Secrets.

Read-only and bounded: logs are streamed (at most :data:`LOG_LIMIT_BYTES` per pod), WAL
answers are capped, at most :data:`MAX_PODS` pods are asked. A pod that does not answer is
recorded as such and the others still count. The WAL sidecar answers only the bearer token
of ``--wal-token-file`` (:func:`use_wal_token`), which is never logged. No key material is
read here: logs, WAL bodies (signed PCS) and Events hold none.
"""

from __future__ import annotations

import email.utils
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..backend.config import find_container
from ..backend.deployment import WAL_PORT_NAME, pod_of
from ..core.backendlog import LogSummary
from ..core.errors import KeyringError, MalformedInput
from ..core.strictjson import loads
from ..core.timeparse import format_time, parse_time
from ..core.wal import WalEntry, read_wal, whole_entries
from ..kube.door import KubeDoor
from ..settings.tokens import TokenFile

__all__ = ["PodEvidence", "gather_pods", "use_wal_token", "WAL_PORT_NAME", "LOG_LIMIT_BYTES",
           "MAX_PODS", "CLOCK_TOLERANCE_SECONDS", "WAL_MAX_WINDOW"]

log = logging.getLogger("sigops.evidence")

LOG_LIMIT_BYTES = 4 << 20
"""Most log bytes read per pod."""
WAL_LIMIT_BYTES = 8 << 20
"""Most WAL bytes asked of one pod's sidecar."""
WAL_MAX_WINDOW = timedelta(hours=24)
"""How far back the sidecar serves by default (``sigops wal serve --max-window``): a longer
window is asked from this far back only (the sidecar would refuse it)."""
MAX_PODS = 20
MAX_WAL_SAMPLES = 2000
WAL_TOTAL_BYTES = 32 << 20
"""Most WAL bytes read for one diagnosis, all pods together."""
TIME_BUDGET_SECONDS = 60.0
"""The pods' evidence takes at most about this long; pods not reached by then are noted."""
CLOCK_TOLERANCE_SECONDS = 5.0
"""A pod whose ``Date`` header is further than this from ours counts as off (the header has
one-second resolution, and the request takes time)."""


_wal_token: TokenFile | None = None


def use_wal_token(token: TokenFile | None) -> None:
    """The token presented to every WAL reader sidecar (``--wal-token-file``, set once at
    start-up); without one the sidecars are not asked (they would answer 401)."""
    global _wal_token
    _wal_token = token


@dataclass
class PodEvidence:
    pods: list[dict[str, Any]] = field(default_factory=list)
    logs: LogSummary | None = None
    wal: list[WalEntry] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def source(self, name: str, status: str, detail: str) -> None:
        self.sources.append({"source": name, "status": status, "detail": detail})

    @property
    def clocks_off(self) -> dict[str, float]:
        return {p["name"]: p["clockOffsetSeconds"] for p in self.pods
                if p.get("clockOffsetSeconds") is not None
                and abs(p["clockOffsetSeconds"]) > CLOCK_TOLERANCE_SECONDS}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _port(pod: dict[str, Any], name: str | None, container: str | None) -> int | None:
    """The pod's container port called ``name`` (any container), else ``container``'s
    ``http`` port or its first port."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if name is not None and p.get("name") == name:
                return int(p["containerPort"])
    if name is not None:
        return None
    try:
        c = find_container({"spec": {"template": {"spec": pod.get("spec") or {}}}}, container)
    except KeyringError:  # a pod of another template, without that container
        return None
    ports = c.get("ports") or []
    p = next((p for p in ports if p.get("name") == "http"), ports[0] if ports else None)
    return int(p["containerPort"]) if p else None


def _base(pod: dict[str, Any], port: int) -> str:
    ip = (pod.get("status") or {}).get("podIP") or ""
    return f"http://{f'[{ip}]' if ':' in ip else ip}:{port}"


def clock_offset(url: str, timeout: float) -> float | None:
    """The server's clock minus ours, from its ``Date`` header (None if it gave none)."""
    start = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            date = r.headers.get("Date")
            r.read(1024)
    except urllib.error.HTTPError as e:  # a pod that is not ready still has a clock
        date = e.headers.get("Date")
    end = time.time()
    if not date:
        return None
    theirs = email.utils.parsedate_to_datetime(date).timestamp()
    # The header is truncated to the second: its middle is half a second later.
    return round(theirs + 0.5 - (start + end) / 2, 1)


def _pod_row(pod: dict[str, Any], revisions: dict[str, int]) -> dict[str, Any]:
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    statuses = st.get("containerStatuses") or []
    waiting = [s["state"]["waiting"].get("reason") for s in statuses
               if (s.get("state") or {}).get("waiting")]
    row: dict[str, Any] = {
        "name": meta.get("name"), "phase": st.get("phase"), "ready": _ready(pod),
        "restarts": sum(int(s.get("restartCount") or 0) for s in statuses),
        "revision": revisions.get((meta.get("labels") or {}).get("pod-template-hash", "")),
        "clockOffsetSeconds": None,
    }
    if waiting:
        row["waiting"] = sorted({w for w in waiting if w})
    return row


def _event_row(e: dict[str, Any]) -> dict[str, Any]:
    obj = e.get("involvedObject") or {}
    return {"time": e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp"),
            "type": e.get("type"), "reason": e.get("reason"),
            "object": f"{(obj.get('kind') or '').lower()}/{obj.get('name')}",
            "count": e.get("count") or 1, "message": (e.get("message") or "")[:300]}


def _secret_names(dep: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in spec.get("containers") or []:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                names.add(ref["name"])
        for ef in c.get("envFrom") or []:
            if (ef.get("secretRef") or {}).get("name"):
                names.add(ef["secretRef"]["name"])
    for v in spec.get("volumes") or []:
        if (v.get("secret") or {}).get("secretName"):
            names.add(v["secret"]["secretName"])
    return names


def _failing_or_unparsed(entry: WalEntry, failing: set[str] | None) -> bool:
    """A WAL entry worth judging: its pcs_id is one the logs name as refused (every entry
    when the logs named none), or its body is not a PCS at all (upstream answered 400)."""
    if entry.error is not None or entry.body is None:
        return True
    if failing is None:
        return True
    try:
        obj = loads(entry.body, 1 << 20)
    except MalformedInput:
        return True
    pcs_id = obj.get("pcs_id") if isinstance(obj, dict) else None
    return not isinstance(pcs_id, str) or pcs_id in failing


def gather_pods(kube: KubeDoor, ns: str, dep: dict[str, Any], container: str | None,
                revisions: dict[str, int], replica_sets: list[str], since: datetime,
                now: datetime, timeout: float, read_wal_entries: bool,
                wal_exec_dir: str | None = None) -> PodEvidence:
    """Everything the backend's pods tell about the window ``[since, now]``.

    ``revisions`` maps pod-template-hash to the Deployment revision; ``replica_sets`` are the
    Deployment's ReplicaSet names (their Events count). With ``read_wal_entries`` the failing
    PCS are looked up in each pod's WAL sidecar, or, for pods without one and only with
    ``wal_exec_dir``, read with ``tail -c`` through ``pods/exec``."""
    pe = PodEvidence()
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    name = (dep.get("metadata") or {}).get("name", "")
    try:
        pods = [p for p in kube.list_pods(ns, ",".join(f"{k}={v}"
                                                       for k, v in sorted(match.items())))
                if not (p.get("metadata") or {}).get("deletionTimestamp")][:MAX_PODS]
    except Exception as e:  # noqa: BLE001 - KubeError, transport errors
        pe.source("pods", "unavailable",
                  f"cannot list pods: {getattr(e, 'status', 0) or type(e).__name__}")
        return pe
    # Only the Deployment's own pods: matching labels alone could be any pod of the namespace
    # (its logs and WAL would then be evidence someone else wrote).
    own = set(replica_sets)
    foreign = [p for p in pods if not pod_of(p, own)]
    if foreign:
        pods = [p for p in pods if p not in foreign]
        pe.source("pods", "skipped", f"{len(foreign)} pod(s) match the Deployment's selector "
                                     "but belong to none of its ReplicaSets: not read")
    if not pods:
        pe.source("pods", "unavailable", "no pods")
    try:
        container_name = container or find_container(dep, None).get("name")
    except KeyringError:
        container_name = None
    since_seconds = int(max(1.0, (now - since).total_seconds()))

    # State and clock of each pod.
    asked = 0
    for pod in pods:
        row = _pod_row(pod, revisions)
        port = _port(pod, None, container)
        if (row["phase"] == "Running" and port and (pod.get("status") or {}).get("podIP")
                and time.monotonic() < deadline):
            asked += 1
            try:
                row["clockOffsetSeconds"] = clock_offset(_base(pod, port) + "/healthz",
                                                         timeout)
            except Exception as e:  # noqa: BLE001 - any answer that is not HTTP: no clock
                log.info("clock of pod %s: %s", row["name"], type(e).__name__)
        pe.pods.append(row)
    if pods:
        clocks = sum(1 for p in pe.pods if p["clockOffsetSeconds"] is not None)
        off = pe.clocks_off
        pe.source("pods", "ok", f"{len(pods)} pods, {sum(p['ready'] for p in pe.pods)} ready, "
                  f"{sum(p['restarts'] for p in pe.pods)} restarts; clock read from "
                  f"{clocks} of {asked} (Date header)"
                  + (f"; off by more than {CLOCK_TOLERANCE_SECONDS:g}s: "
                     + ", ".join(f"{n} ({o:+g}s)" for n, o in sorted(off.items()))
                     if off else ""))

    # Logs: the upstream rejection lines, counted.
    summary = LogSummary()
    read, failed = 0, []
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        if time.monotonic() > deadline:
            failed.append(f"{pod_name}: skipped (time budget spent)")
            continue
        try:
            for line in kube.pod_log_lines(ns, pod_name, container_name, since_seconds,
                                           LOG_LIMIT_BYTES):
                summary.add(line, pod=pod_name)
                if time.monotonic() > deadline:
                    raise TimeoutError("time budget spent")
            read += 1
        except Exception as e:  # noqa: BLE001 - KubeError, transport errors, the budget
            failed.append(f"{pod_name}: {getattr(e, 'status', 0) or type(e).__name__}")
    if read:
        pe.logs = summary
        pe.source("logs", "ok", f"{summary.rejections} rejection lines in {summary.lines} lines "
                  f"of the last {since_seconds}s from {read} of {len(pods)} pods"
                  + (f"; failed: {', '.join(failed)}" if failed else ""))
    elif pods:
        pe.source("logs", "unavailable", "; ".join(failed) or "no pod log")

    # The WAL, through each pod's sidecar (or, when allowed, pods/exec).
    if read_wal_entries:
        failing = set(summary.pcs_ids) if pe.logs is not None and summary.rejections else None
        _wal(pe, kube, ns, pods, container_name, since, now, timeout, failing, wal_exec_dir,
             deadline)

    # Events on the Deployment, its ReplicaSets, its pods and the Secrets it reads.
    wanted = ({("deployment", name)} | {("replicaset", r) for r in replica_sets}
              | {("pod", p["metadata"]["name"]) for p in pods}
              | {("secret", s) for s in _secret_names(dep)})
    try:
        rows = []
        for event in kube.list_events(ns):
            obj = event.get("involvedObject") or {}
            if ((obj.get("kind") or "").lower(), obj.get("name")) not in wanted:
                continue
            row = _event_row(event)
            try:
                if row["time"] and parse_time(row["time"]) < since:
                    continue
            except MalformedInput:
                pass
            rows.append(row)
        # Warnings first (probe failures, back-offs, failed mounts), then the newest others.
        rows.sort(key=lambda r: r["time"] or "")
        warn = [r for r in rows if r["type"] == "Warning"][-10:]
        pe.events = sorted(warn + [r for r in rows if r["type"] != "Warning"][-5:],
                           key=lambda r: r["time"] or "")
        warnings = sum(1 for r in rows if r["type"] == "Warning")
        pe.source("events", "ok", f"{len(rows)} events ({warnings} warnings) on the "
                  "Deployment, its ReplicaSets, pods and Secrets in the window")
    except Exception as e:  # noqa: BLE001 - KubeError, transport errors
        pe.source("events", "unavailable",
                  f"cannot list events: {getattr(e, 'status', 0) or type(e).__name__}")
    return pe


def _wal_days(since: datetime, now: datetime) -> list[str]:
    """The ``YYYYMMDD`` of each UTC day from ``since`` to ``now``, at most 3."""
    days: list[str] = []
    t = since
    while t <= now + timedelta(days=1) and len(days) < 3:
        day = t.strftime("%Y%m%d")
        if day <= now.strftime("%Y%m%d") and day not in days:
            days.append(day)
        t += timedelta(days=1)
    return days


def _read_bounded(url: str, timeout: float, limit: int, deadline: float,
                  token: bytes | None = None) -> bytes:
    """At most ``limit`` bytes of ``url``'s body, read in chunks, given up at ``deadline``
    (a server that trickles bytes cannot hold the diagnosis); ``token`` is sent as the
    bearer token."""
    out = bytearray()
    headers = {"Authorization": f"Bearer {token.decode()}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=timeout) as r:
        while len(out) < limit:
            if time.monotonic() > deadline:
                raise TimeoutError("time budget spent")
            chunk = r.read(min(65536, limit - len(out)))
            if not chunk:
                break
            out += chunk
    return bytes(out)


def _wal(pe: PodEvidence, kube: KubeDoor, ns: str, pods: list[dict[str, Any]],
         container: str | None, since: datetime, now: datetime, timeout: float,
         failing: set[str] | None, exec_dir: str | None, deadline: float) -> None:
    got, notes, via = 0, [], set()
    budget = WAL_TOTAL_BYTES
    offsets = {p["name"]: p.get("clockOffsetSeconds") for p in pe.pods}
    reachable = [p for p in pods if (p.get("status") or {}).get("podIP")
                 and (p.get("status") or {}).get("phase") == "Running"]
    for pod in reachable:
        if len(pe.wal) >= MAX_WAL_SAMPLES or budget <= 0:
            break
        name = pod["metadata"]["name"]
        if time.monotonic() > deadline:
            notes.append(f"{name}: skipped (time budget spent)")
            continue
        # The entries carry the pod's clock: the window moves with it (a pod far behind
        # would otherwise seem to have written nothing in it), with a minute to spare.
        offset = offsets.get(name) or 0.0
        pod_since = since + timedelta(seconds=offset) - timedelta(seconds=60)
        port = _port(pod, WAL_PORT_NAME, None)
        if port is not None:
            if _wal_token is None:
                notes.append(f"{name}: sigops has no WAL reader token (--wal-token-file)")
                continue
            # The sidecar serves a bounded window back from its own clock.
            pod_since = max(pod_since, now + timedelta(seconds=offset) - WAL_MAX_WINDOW
                            + timedelta(seconds=60))
            url = (f"{_base(pod, port)}/v1/wal?since={format_time(pod_since)}"
                   f"&max_bytes={min(WAL_LIMIT_BYTES, budget)}")
            try:
                data = _read_bounded(url, timeout, min(WAL_LIMIT_BYTES, budget), deadline,
                                     _wal_token.first())
            except urllib.error.HTTPError as e:
                notes.append(f"{name}: HTTP {e.code}" + (
                    " (the sidecar refused sigops' WAL token: is the token Secret the same "
                    "in both namespaces?)" if e.code == 401 else ""))
                continue
            except Exception as e:  # noqa: BLE001 - any failure: this pod's WAL is missing
                notes.append(f"{name}: {type(e).__name__}")
                continue
            budget -= len(data)
            via.add("sidecar")
        elif exec_dir is not None:
            parts = []
            for day in _wal_days(pod_since, now + timedelta(seconds=offset)):
                path = f"{exec_dir.rstrip('/')}/inbox-{day}.wal"
                limit = max(0, min(WAL_LIMIT_BYTES, budget))
                try:
                    out, err, failure = kube.exec_output(
                        ns, name, container, ["tail", "-c", str(limit), path], limit,
                        timeout=max(1.0, min(max(timeout, 10.0), deadline - time.monotonic())))
                except Exception as e:  # noqa: BLE001 - KubeError, transport errors
                    notes.append(f"{name}: exec {getattr(e, 'status', 0) or type(e).__name__}")
                    break
                if failure and "No such file" not in err:
                    notes.append(f"{name}: exec: {(err or failure).strip()[:120]}")
                    break
                budget -= len(out)
                parts.append(whole_entries(out, pod_since, cut=True)[0])
            else:
                data = b"".join(parts)
                via.add("pods/exec")
                got += 1
                _pick(pe, data, failing)
            continue
        else:
            continue
        got += 1
        _pick(pe, data, failing)
    if not via and not notes:
        pe.source("wal", "unavailable", f"no backend pod has a {WAL_PORT_NAME!r} port (add "
                  "the sigops wal serve sidecar) and reading by pods/exec is off")
    elif not got:
        pe.source("wal", "unavailable", "; ".join(notes))
    else:
        picked = ("entries of the pcs_ids the logs name as refused" if failing is not None
                  else "all entries (the logs named no refused pcs_id)")
        pe.source("wal", "ok", f"{len(pe.wal)} {picked} from {got} of {len(reachable)} pods "
                  f"({', '.join(sorted(via))})" + (f"; failed: {', '.join(notes)}"
                                                    if notes else ""))


def _pick(pe: PodEvidence, data: bytes, failing: set[str] | None) -> None:
    for entry in read_wal(data):
        if len(pe.wal) >= MAX_WAL_SAMPLES:
            return
        if _failing_or_unparsed(entry, failing):
            pe.wal.append(entry)
