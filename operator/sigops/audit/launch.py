"""Start an audit's Job on the API server: suspended Job, then what it owns, then resume.

Idempotent (kopf re-runs an interrupted handler): an existing Job of the same name is
reused, objects that exist already are kept, and the audit's public key is read back from
the Secret that holds it, so a rerun verifies partials with the key the pods really have.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.keys import Key, key_from_entry
from ..kube.api import Conflict, Kube, secret_strings
from .job import AuditJob, job_manifest, owned_manifests

__all__ = ["launch"]


def launch(kube: Kube, plan: AuditJob, key: Key) -> tuple[dict[str, Any], Key]:
    """The running Job and the audit's key as stored (public part only).

    ``key`` (a fresh Ed25519 key with its private part) is used only if the audit's Secret
    does not exist yet."""
    ns, name = plan.namespace, plan.name
    job = kube.read_job(ns, name)
    if job is None:
        try:
            job = kube.create_object(job_manifest(plan))
        except Conflict:
            job = kube.read_job(ns, name)
    assert job is not None
    uid = str(job["metadata"]["uid"])
    for obj in owned_manifests(plan, uid, json.dumps(key.to_entry())):
        try:
            kube.create_object(obj)
        except Conflict:
            pass  # made by an earlier run of this handler
    stored = key_from_entry(json.loads(secret_strings(kube.read_secret(ns, name))["key.json"]))
    public = Key(stored.kid, stored.alg, stored.state, public=stored.public)
    if job["spec"].get("suspend"):
        job = kube.patch_job(ns, name, {"spec": {"suspend": False}})
    return job, public
