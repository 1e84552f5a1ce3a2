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
from .job import AuditJob, AuditRefused, job_manifest, owned_manifests

__all__ = ["launch"]


def _own(kube: Kube, kind: str, ns: str, name: str, job_uid: str) -> None:
    """Refuse (:class:`AuditRefused`) an object of the Job's name that the Job does not own."""
    obj = kube.read_secret(ns, name) if kind == "Secret" else kube.read_config_map(ns, name)
    owners = (obj.metadata.owner_references or []) if obj is not None else []
    if not any(o.uid == job_uid and o.controller for o in owners):
        raise AuditRefused("NotOwned", f"{kind.lower()} {ns}/{name} exists and is not the "
                                       "audit Job's (made by someone else before it); the Job "
                                       f"stays suspended, no pod runs: delete job {ns}/{name} "
                                       "and that object, then create the audit again")


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
            # Made by an earlier run of this handler -- or by someone else, first: what the
            # pods read (the key that signs their partials, the pods list, their results)
            # must be the Job's own.
            if obj["kind"] in ("Secret", "ConfigMap"):
                _own(kube, obj["kind"], ns, obj["metadata"]["name"], uid)
    secret = kube.read_secret(ns, name)
    stored = key_from_entry(json.loads(secret_strings(secret)["key.json"]))
    public = Key(stored.kid, stored.alg, stored.state, public=stored.public)
    if job["spec"].get("suspend"):
        job = kube.patch_job(ns, name, {"spec": {"suspend": False}})
    return job, public
