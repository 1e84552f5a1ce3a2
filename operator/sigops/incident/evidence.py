"""Evidence for a SignatureIncident: failed samples, KeyRotations, the Deployment's revision
history, Prometheus and a live golden probe -- gathered through the API, then judged by the
core.

Nothing here changes anything. Secret material never leaves this module: the result carries
key ids and fingerprints only.
"""

from __future__ import annotations

import json
import logging
import urllib.error
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..backend.config import EnvNames
from ..backend.deployment import Backend, owned_by
from ..backend.keyring import REVISION_ANNOTATION
from ..backend.probe import http_get, probe_pcs
from ..core.diagnose import Diagnoser, Verdict, aggregate
from ..core.errors import KeyringError, MalformedInput
from ..core.keys import Key, KeyRing
from ..core.timeparse import format_time, parse_time
from ..core.wal import WalEntry
from ..kube.api import KubeError, NotFound
from ..kube.door import KubeDoor, plain
from ..prometheus.client import Prom
from ..rotation.model import TERMINAL
from ..settings import Settings, Target
from .backendpods import PodEvidence, gather_pods

__all__ = ["Evidence", "gather", "samples_config_map", "failure_text"]

log = logging.getLogger("sigops.evidence")
MAX_SAMPLES = 2000


@dataclass
class Evidence:
    """What diagnosis saw; ``summary`` is what goes into status.evidence."""

    report: dict[str, Any] | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    ring: KeyRing | None = None
    backend_alg: str | None = None
    rotations: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    recent_signing_change: bool = False
    error_rate: float | None = None
    skew_metric: float | None = None
    probe: list[dict[str, Any]] = field(default_factory=list)
    samples_source: str | None = None
    notes: list[str] = field(default_factory=list)
    pods: PodEvidence | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Each source tried: ``{source, status: ok|unavailable|skipped, detail}``."""

    @property
    def rotation_in_progress(self) -> bool:
        return any(r.get("phase") not in TERMINAL for r in self.rotations)

    def summary(self) -> dict[str, Any]:
        rep = dict(self.report or {})
        rep.pop("samples", None)
        return {
            "samples": {"source": self.samples_source, "report": rep or None},
            "keyRotations": self.rotations,
            "revisions": self.revisions[-5:],
            "recentSigningChange": self.recent_signing_change,
            "errorRate": self.error_rate,
            "skewMetricSeconds": self.skew_metric,
            "goldenProbe": self.probe,
            "notes": self.notes,
            "sources": self.sources + (self.pods.sources if self.pods else []),
            "pods": self.pods.pods if self.pods else [],
            "logs": self.pods.logs.to_dict() if self.pods and self.pods.logs else None,
            "events": self.pods.events if self.pods else [],
        }

    def source(self, name: str, status: str, detail: str) -> None:
        self.sources.append({"source": name, "status": status, "detail": detail})


def samples_config_map(target: Target, ref: object) -> tuple[str | None, str]:
    """The ConfigMap (in the target's namespace) whose failed samples evidence may read for a
    ``spec.samples.configMapRef``, and why: only the target's configured ``samplesConfigMap``
    (a ConfigMap any requester could write would let her choose the diagnosis).

    >>> t = Target(namespace="be", samplesConfigMap="failed")
    >>> samples_config_map(t, {"name": "failed"})[0]
    'failed'
    >>> samples_config_map(t, {"name": "mine"})[0] is None
    True
    """
    name = ref.get("name") if isinstance(ref, dict) else None
    if not isinstance(name, str) or not name:
        return None, "spec.samples.configMapRef has no name"
    if target.samples_config_map is None:
        return None, (f"spec.samples.configMapRef is not read: the config names no "
                      f"samplesConfigMap for {target.ref}")
    if name != target.samples_config_map:
        return None, (f"spec.samples.configMapRef is not read: only the configured "
                      f"samplesConfigMap of {target.ref} ({target.samples_config_map}) is")
    return name, f"configmap {target.namespace}/{name}"


def _samples_from_configmap(kube: KubeDoor, ns: str, name: str, key: object) -> list[bytes]:
    cm = kube.read_config_map(ns, name)
    if cm is None:
        raise NotFound(404, f"configmap {ns}/{name} not found")
    text = (cm.data or {}).get(key if isinstance(key, str) and key else "samples.jsonl", "")
    return [line.encode() for line in text.splitlines() if line.strip()][:MAX_SAMPLES]


def _samples_from_pods(backend: Backend, dep: dict[str, Any], timeout: float,
                       replica_sets: set[str]) -> tuple[list[Any], str | None]:
    """The failed samples of every ready pod of the Deployment's own ReplicaSets, up to
    MAX_SAMPLES in all. A pod that does not answer is skipped (the others still count); none
    answering is no source."""
    raw: list[Any] = []
    answered = 0
    urls = backend.pod_urls(dep, "", replica_sets)
    for url in urls:
        if len(raw) >= MAX_SAMPLES:
            break
        try:
            raw += _samples_from_backend(url, timeout)[:MAX_SAMPLES - len(raw)]
            answered += 1
        except (OSError, ValueError) as e:
            log.info("samples from %s: %s", url, type(e).__name__)
    if not answered:
        return [], None
    return raw, f"{answered} of {len(urls)} backend pods /v1/samples/failures"


def _samples_from_backend(url: str, timeout: float) -> list[Any]:
    doc = json.loads(http_get(f"{url.rstrip('/')}/v1/samples/failures?limit={MAX_SAMPLES}",
                              timeout, 8 << 20))
    samples = doc.get("samples") if isinstance(doc, dict) else None
    return list(samples or [])[:MAX_SAMPLES]


def failure_text(e: BaseException) -> str:
    """What came back, for a person: an HTTP status, or the kind of failure (never a body).

    >>> import urllib.error
    >>> failure_text(urllib.error.HTTPError("u", 404, "Not Found", {}, None))  # type: ignore
    'HTTP 404'
    >>> failure_text(ValueError("x"))
    'an answer that is not a JSON sample list (ValueError)'
    """
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return f"no answer ({type(e.reason).__name__})"
    if isinstance(e, ValueError):
        return f"an answer that is not a JSON sample list ({type(e).__name__})"
    return f"no answer ({type(e).__name__})"


def _revisions(kube: KubeDoor, backend: Backend, dep: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's ReplicaSets, oldest first, with the fingerprints each accepted."""
    sel = dep["spec"].get("selector", {}).get("matchLabels") or {}
    label_selector = ",".join(f"{k}={v}" for k, v in sel.items())
    rss = kube.list_replica_sets(backend.ns, label_selector)
    out = []
    for rs in rss:
        if not owned_by(rs, dep):
            continue
        ann = rs.metadata.annotations or {}
        tmpl = plain(rs.spec.template)
        try:
            eff = backend.effective_of_template(tmpl)
            fps, alg = eff.fingerprints, eff.alg
        except KeyringError:
            fps, alg = [], None
        out.append({
            "name": rs.metadata.name,
            "hash": (rs.metadata.labels or {}).get("pod-template-hash"),
            "revision": int(ann.get("deployment.kubernetes.io/revision", "0")),
            "created": format_time(rs.metadata.creation_timestamp),
            "alg": alg, "fingerprints": fps,
            "bySigops": REVISION_ANNOTATION in ((tmpl.get("metadata") or {}).get(
                "annotations") or {}),
            "_template": tmpl,
        })
    return sorted(out, key=lambda r: r["revision"])


def _diagnosis_ring(backend: Backend, ring_doc: Any, effective: Any,
                    revisions: list[dict[str, Any]], target: Target) -> KeyRing | None:
    """Every key sigops knows for this target, with the backend's effective set as
    ``backend_accepts`` so a key the backend dropped shows up as stale or pending."""
    keys: dict[str, Key] = {}
    if ring_doc is not None:
        for e in ring_doc.entries:
            try:
                k = ring_doc.key(e.get("kid"))
            except KeyringError:
                continue
            if k is not None:
                keys.setdefault(k.fingerprint, k)
    for k in effective.keys:
        keys.setdefault(k.fingerprint, Key(f"backend-{k.fingerprint}", k.alg, "active",
                                           k.secret, k.public))
    for rev in revisions:
        try:
            eff = backend.effective_of_template(rev["_template"])
        except KeyringError:
            continue
        for k in eff.keys:
            keys.setdefault(k.fingerprint, Key(f"rev{rev['revision']}-{k.fingerprint}", k.alg,
                                               "retired", k.secret, k.public))
    if not keys:
        return None
    accepted = set(effective.fingerprints)
    return KeyRing(tuple(keys.values()), profile=target.profile,
                   max_skew_seconds=target.max_skew_seconds,
                   backend_accepts=frozenset(k.kid for fp, k in keys.items() if fp in accepted))


LOOKBACK = timedelta(minutes=10)
"""Logs and WAL are read from this long before the alert started (the alert fires after its
rate window and ``for``), and at most :data:`MAX_WINDOW` back."""
MAX_WINDOW = timedelta(hours=1)


def _window_start(spec: dict[str, Any], now: datetime, settings: Settings) -> datetime:
    starts = ((spec.get("alert") or {}).get("startsAt") or "").strip()
    try:
        # Go's zero time (an alert without a start) is far in the past: clamp it first.
        start = max(parse_time(starts), now - MAX_WINDOW) - LOOKBACK if starts else (
            now - LOOKBACK)
    except (MalformedInput, OverflowError, TypeError):
        start = now - LOOKBACK
    return min(max(start, now - MAX_WINDOW), now - timedelta(seconds=60))


def gather(kube: KubeDoor, prom: Prom, settings: Settings, incident: dict[str, Any],
           target: Target, now: datetime) -> Evidence:
    ev = Evidence()
    spec = incident.get("spec") or {}
    names = EnvNames.from_spec(target.env.model_dump(by_alias=True))
    backend = Backend(kube, target.namespace, target.deployment, target.container, names)
    dep = backend.deployment()
    if dep is None:
        ev.notes.append(f"deployment {target.namespace}/{target.deployment} not found")
        return ev
    # KeyRotations on the target.
    try:
        for kr in kube.list_cr(target.namespace, "keyrotations"):
            t = (kr.get("spec") or {}).get("target") or {}
            if (t.get("deployment") or "fractal-lba-backend") == target.deployment:
                st = kr.get("status") or {}
                ev.rotations.append({"name": kr["metadata"]["name"], "phase": st.get("phase"),
                                     "newKeyId": st.get("newKeyId"),
                                     "previousKeyId": st.get("previousKeyId")})
    except KubeError as e:
        ev.notes.append(f"cannot list KeyRotations: {e.status}")
    # Revision history and recent signing changes.
    try:
        revs = _revisions(kube, backend, dep)
    except KubeError as e:
        revs = []
        ev.notes.append(f"cannot list ReplicaSets: {e.status}")
    window = settings.seconds("e_auto_window")
    if len(revs) >= 2:
        last, prev = revs[-1], revs[-2]
        created = datetime.fromisoformat(last["created"].replace("Z", "+00:00"))
        changed = (last["fingerprints"], last["alg"]) != (prev["fingerprints"], prev["alg"])
        if changed and not last["bySigops"] and (now - created).total_seconds() <= window:
            ev.recent_signing_change = True
            ev.notes.append(f"signing config changed in revision {last['revision']} at "
                            f"{last['created']}")
    ev.revisions = [{k: v for k, v in r.items() if k != "_template"} for r in revs]
    # The backend's effective config and sigops' keyring.
    try:
        effective = backend.effective(dep)
        ev.backend_alg = effective.alg
    except KeyringError as e:
        ev.notes.append(f"backend signing config unusable: {e}")
        effective = None
    ring_doc, _ = backend.read_ring()
    if effective is not None:
        ev.ring = _diagnosis_ring(backend, ring_doc, effective, revs, target)
        # Live golden probe: does the backend accept each key sigops knows?
        if ev.ring is not None:
            accepted = Diagnoser(effective.keyring()) if effective.keys else None
            for k in ev.ring.keys:
                if not k.can_sign:
                    continue
                ok = bool(accepted and accepted.classify_obj(probe_pcs(k), 0).valid)
                ev.probe.append({"kid": k.kid, "fingerprint": k.fingerprint, "accepted": ok})
    # Samples: an attached ConfigMap if it is the target's configured one, else the configured
    # backend URL's sample endpoint, else each running pod of the Deployment's own ReplicaSets
    # (each pod keeps the failures it answered; a Service would show one),
    # else -- as a real FLK backend gives them -- the PCS its logs name as refused, read from
    # its inbox WAL. The pods' state, clocks, logs and Events are evidence either way.
    raw: list[Any] = []
    ref = (spec.get("samples") or {}).get("configMapRef")
    tried: list[str] = []
    if ref:
        cm_name, why = samples_config_map(target, ref)
        if cm_name is None:
            tried.append(why)
            ev.source("samplesConfigMap", "skipped", why)
        else:
            try:
                raw = _samples_from_configmap(kube, target.namespace, cm_name,
                                              ref.get("key") if isinstance(ref, dict) else None)
                ev.samples_source = f"configmap/{cm_name}"
            except KubeError as e:
                tried.append(f"{why}: {'not found' if e.status == 404 else e.status}")
    if ev.samples_source is None and target.backend_url:
        url = f"{target.backend_url}/v1/samples/failures"
        try:
            raw = _samples_from_backend(target.backend_url, settings.probe_timeout)
            ev.samples_source = url
        except (OSError, ValueError) as e:
            tried.append(f"GET {url} (the configured backendURL) answered {failure_text(e)}")
    if ev.samples_source is None and not target.backend_url:
        try:
            raw, ev.samples_source = _samples_from_pods(
                backend, dep, settings.probe_timeout, {r["name"] for r in revs})
        except KubeError as e:
            tried.append(f"cannot list the backend pods: {e.status}")
        if ev.samples_source is None:
            tried.append("no ready backend pod serves /v1/samples/failures (a real FLK "
                         "backend has none)")
    if ev.samples_source:
        ev.source("samples", "ok", f"{len(raw)} failed samples from {ev.samples_source}")
    else:
        if not ref:
            tried.insert(0, "no ConfigMap attached")
        ev.source("samples", "unavailable", "; ".join(tried))
    try:
        ev.pods = gather_pods(
            kube, backend.ns, dep, target.container,
            {r["hash"]: r["revision"] for r in revs if r.get("hash")},
            [r["name"] for r in revs if r.get("name")], _window_start(spec, now, settings),
            now, settings.probe_timeout, read_wal_entries=not raw,
            wal_exec_dir=settings.wal_exec_dir if settings.wal_exec else None)
    except Exception as e:  # noqa: BLE001 - the other evidence still counts
        log.warning("evidence from the backend pods failed: %s", type(e).__name__)
        ev.source("pods", "unavailable", f"failed: {type(e).__name__}")
    if not raw and ev.pods is not None and ev.pods.wal:
        raw = list(ev.pods.wal)
        ev.pods.wal = []  # judged below; the bodies need not stay in the cache
        ev.samples_source = f"inbox WAL of the backend pods ({len(raw)} entries)"
    if raw and ev.ring is not None:
        d = Diagnoser(ev.ring)
        ev.verdicts = [d.settle(*d.judge_wal(r, i)) if isinstance(r, WalEntry)
                       else d.classify_line(r, i) if isinstance(r, bytes)
                       else d.classify_obj(r, i) for i, r in enumerate(raw)]
        ev.report = aggregate(ev.verdicts, max_skew_seconds=ev.ring.max_skew_seconds,
                              recent_config_change=ev.recent_signing_change,
                              verifier_profile=ev.ring.profile)
    # Prometheus.
    if prom.configured:
        ev.error_rate = prom.scalar(settings.error_query(target.namespace, target.deployment))
        res = prom.query(f"max(abs({settings.skew_metric}))")
        if res:
            try:
                ev.skew_metric = float(res[0]["value"][1])
            except (KeyError, IndexError, ValueError):
                pass
    return ev

