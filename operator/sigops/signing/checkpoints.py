"""Signed checkpoints of each object's history, where the object's status writers cannot
rewrite them: ConfigMap ``sigops-history`` in the operator's namespace, one key per object
(``<plural>.<namespace>.<name>``), each a signed record naming the object's UID, the chain's
path, its length (the last sequence number plus one) and the hash of its last record.

A user who may patch an object's status can remove or reorder its records; the checkpoint then
disagrees and ``kubectl sigops verify`` says ``truncated`` or ``reordered``. The operator writes
a checkpoint right after each status write that grows a chain; a crash in between leaves it one
record behind, which verification accepts (the chain is longer than the checkpoint, never
shorter)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kubernetes import client

from ..core.signals import signal_hash
from ..kube.api import Conflict, KubeError
from .records import Signer, next_seq

__all__ = ["CHECKPOINTS_CONFIGMAP", "checkpoint_key", "checkpoint", "publish", "load_checkpoints"]

log = logging.getLogger("sigops.signing")
CHECKPOINTS_CONFIGMAP = "sigops-history"


class _ConfigMaps(Protocol):
    def read_config_map(self, ns: str, name: str) -> client.V1ConfigMap | None: ...

    def write_config_map(self, ns: str, name: str, data: dict[str, str],
                         existing: client.V1ConfigMap | None,
                         annotations: dict[str, str] | None = None) -> client.V1ConfigMap: ...


def checkpoint_key(plural: str, namespace: str, name: str) -> str:
    """The ConfigMap key of one object's checkpoint (names are DNS names: valid key chars)."""
    return f"{plural}.{namespace}.{name}"


def checkpoint(signer: Signer, plural: str, meta: Mapping[str, Any], path: str,
               chain: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The signed checkpoint of ``chain`` (``status.history`` or ``status.actions``)."""
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    return signer.record([], "checkpoint", f"{plural}/{ns}/{name}", uid=meta.get("uid"),
                         namespace=ns, object=f"{plural}/{name}", path=path,
                         count=next_seq(chain), head=signal_hash(chain[-1]) if chain else None)


def publish(kube: _ConfigMaps, operator_namespace: str, signer: Signer, plural: str,
            meta: Mapping[str, Any], path: str, chain: Sequence[Mapping[str, Any]],
            attempts: int = 3) -> bool:
    """Write the checkpoint (best effort: a failure is logged; the history itself is written
    already, and verification accepts a checkpoint that lags)."""
    key = checkpoint_key(plural, str(meta.get("namespace")), str(meta.get("name")))
    doc = json.dumps(checkpoint(signer, plural, meta, path, chain), sort_keys=True)
    for _ in range(attempts):
        try:
            existing = kube.read_config_map(operator_namespace, CHECKPOINTS_CONFIGMAP)
            data = dict((existing.data or {}) if existing is not None else {})
            data[key] = doc
            kube.write_config_map(operator_namespace, CHECKPOINTS_CONFIGMAP, data, existing)
            return True
        except Conflict:
            continue
        except KubeError as e:
            log.warning("history checkpoint of %s not written: %s", key, e)
            return False
    log.warning("history checkpoint of %s not written: the ConfigMap kept changing", key)
    return False


def load_checkpoints(doc: Any) -> dict[str, dict[str, Any]]:
    """Checkpoints by key from the ConfigMap's data (or a saved ConfigMap), unverified."""
    data = doc.get("data") if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap" \
        else doc
    out: dict[str, dict[str, Any]] = {}
    for k, v in (data or {}).items() if isinstance(data, Mapping) else ():
        try:
            rec = json.loads(v) if isinstance(v, str) else v
        except ValueError:
            continue
        if isinstance(rec, dict):
            out[str(k)] = rec
    return out
