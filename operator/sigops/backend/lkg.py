"""Last known good: snapshots of a backend's Deployment template, taken while it is healthy,
for scenario E (apps/v1 has no rollback API). Kept in a Secret, since a template may carry
literal key material in its env."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from ..core.timeparse import now_iso
from ..kube.api import MANAGED, Conflict, Kube, secret_strings
from .deployment import Backend, rollout_done

__all__ = ["snapshot_name", "read_snapshot", "take_snapshot", "template_digest"]

log = logging.getLogger("sigops.lkg")


def snapshot_name(deployment: str) -> str:
    return f"sigops-lkg-{deployment}"[:253]


def template_digest(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def read_snapshot(kube: Kube, ns: str, deployment: str) -> dict[str, Any] | None:
    sec = kube.read_secret(ns, snapshot_name(deployment))
    if sec is None or not sec.data or "snapshot.json" not in sec.data:
        return None
    doc: dict[str, Any] = json.loads(secret_strings(sec)["snapshot.json"])
    return doc


def take_snapshot(kube: Kube, ns: str, deployment: str, min_age: float = 0.0) -> bool:
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


def _template_age(kube: Kube, ns: str, dep: dict[str, Any]) -> float:
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
