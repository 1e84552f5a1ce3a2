"""Last known good: snapshots of a backend's Deployment template, taken while it is healthy,
for scenario E (apps/v1 has no rollback API). Kept in a Secret, since a template may carry
literal key material in its env.

The snapshot Secret lives in the target's namespace, where people with rights there could
write one. So the snapshot only says *which* template was good (its digest); scenario E rolls
back to the template of a ReplicaSet the Deployment itself owns (by its UID) with that digest,
never to a template read from the Secret. A snapshot that matches none is never restored."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from ..core.timeparse import now_iso
from ..kube.api import MANAGED, Conflict, secret_strings
from ..kube.door import KubeDoor, plain
from .deployment import Backend, owned_by, rollout_done

__all__ = ["snapshot_name", "read_snapshot", "take_snapshot", "template_digest",
           "own_templates", "replica_set_template"]

log = logging.getLogger("sigops.lkg")


def snapshot_name(deployment: str) -> str:
    return f"sigops-lkg-{deployment}"[:253]


def template_digest(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


POD_TEMPLATE_HASH = "pod-template-hash"


def replica_set_template(template: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as its Deployment's template was: without the
    ``pod-template-hash`` label the Deployment controller adds.

    >>> t = {"metadata": {"labels": {"app": "b", "pod-template-hash": "5f"}}, "spec": {}}
    >>> replica_set_template(t)
    {'metadata': {'labels': {'app': 'b'}}, 'spec': {}}
    """
    out = json.loads(json.dumps(template))
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return out  # type: ignore[no-any-return]


def own_templates(kube: KubeDoor, dep: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The templates of the ReplicaSets this Deployment owns (controller owner reference with
    its UID), by digest: ``{digest: (replica set name, template)}``. The only templates
    scenario E may roll back to."""
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    ns = (dep.get("metadata") or {}).get("namespace", "")
    if not match or not ns:
        return {}
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for rs in kube.list_replica_sets(ns, ",".join(f"{k}={v}" for k, v in sorted(match.items()))):
        if not owned_by(rs, dep) or rs.spec is None or rs.spec.template is None:
            continue
        tmpl = replica_set_template(plain(rs.spec.template))
        out.setdefault(template_digest(tmpl), (rs.metadata.name, tmpl))
    return out


def read_snapshot(kube: KubeDoor, ns: str, deployment: str) -> dict[str, Any] | None:
    sec = kube.read_secret(ns, snapshot_name(deployment))
    if sec is None or not sec.data or "snapshot.json" not in sec.data:
        return None
    doc: dict[str, Any] = json.loads(secret_strings(sec)["snapshot.json"])
    return doc


def take_snapshot(kube: KubeDoor, ns: str, deployment: str, min_age: float = 0.0) -> bool:
    """Snapshot the current template if it differs from the stored one; True if written.

    Not while the template is rolling out or younger than ``min_age`` seconds (not known to be
    good yet: a bad change looks healthy until its errors show), nor while a rotation holds
    the backend's keyring (its intermediate states are not a state to roll back to)."""
    dep = kube.read_deployment(ns, deployment)
    if dep is None or not rollout_done(dep):
        return False
    if min_age > 0 and _template_age(kube, ns, dep) < min_age:
        return False
    ring, _ = Backend(kube, ns, deployment).read_ring()
    if ring is not None and ring.lock is not None:
        return False
    template = dep["spec"]["template"]
    digest = template_digest(template)
    sec = kube.read_secret(ns, snapshot_name(deployment))
    if sec is not None and sec.data and "snapshot.json" in sec.data:
        if json.loads(secret_strings(sec)["snapshot.json"]).get("digest") == digest:
            return False
    doc = {"template": template, "digest": digest,
           "revision": (dep["metadata"].get("annotations") or {}).get(
               "deployment.kubernetes.io/revision"),
           "takenAt": now_iso()}
    try:
        kube.write_secret(ns, snapshot_name(deployment), {"snapshot.json": json.dumps(doc)}, sec,
                          labels={**MANAGED, "sigops.fractal-lba.io/target": deployment})
    except Conflict:
        return False
    log.info("last-known-good snapshot of %s/%s (template %s)", ns, deployment, digest)
    return True


def _template_age(kube: KubeDoor, ns: str, dep: dict[str, Any]) -> float:
    """Seconds since the ReplicaSet of the Deployment's current revision was created (0 when
    it cannot be told)."""
    rev = (dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not rev or not match:
        return 0.0
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    for rs in kube.list_replica_sets(ns, selector):
        if (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == rev:
            created = rs.metadata.creation_timestamp
            return (datetime.now(UTC) - created).total_seconds() if created else 0.0
    return 0.0
