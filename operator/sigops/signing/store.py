"""The operator's own Ed25519 signing key (Secret) and its published public keys (ConfigMap).

Created on first start; an observer verifies any signal in a status with
``sigops signal verify --pubkeys <(kubectl get cm sigops-signal-pubkeys -o
jsonpath='{.data.pubkeys\\.json}') SIGNAL.json``.
"""

from __future__ import annotations

import json

from kubernetes import client

from ..core.keys import ED25519, Key, generate_key, key_from_entry
from ..core.signals import pubkeys_document
from ..kube.api import ApiException, Kube, unb64

__all__ = ["SIGNING_SECRET", "PUBKEYS_CONFIGMAP", "ensure_signing_key"]

SIGNING_SECRET = "sigops-signing-key"
PUBKEYS_CONFIGMAP = "sigops-signal-pubkeys"


def _ensure_namespace(kube: Kube, ns: str) -> None:
    try:
        kube.core.read_namespace(ns)
    except ApiException as e:
        if e.status != 404:
            raise
        try:
            kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        except ApiException as e2:
            if e2.status != 409:
                raise


def ensure_signing_key(kube: Kube, ns: str) -> Key:
    """Load the signing key, creating it (and the pubkeys ConfigMap) on first start.

    Two operators starting at once: the second create gets 409 and reads the first's key.
    """
    _ensure_namespace(kube, ns)
    sec = kube.read_secret(ns, SIGNING_SECRET)
    if sec is None:
        key = generate_key(ED25519, state="active")
        try:
            kube.write_secret(ns, SIGNING_SECRET, {"key.json": json.dumps(key.to_entry())}, None,
                              labels={"app.kubernetes.io/managed-by": "sigops"})
        except ApiException as e:
            if e.status != 409:
                raise
            sec = kube.read_secret(ns, SIGNING_SECRET)
    if sec is not None:
        key = key_from_entry(json.loads(unb64(sec.data["key.json"])))
    doc = json.dumps(pubkeys_document([key]), sort_keys=True)
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name=PUBKEYS_CONFIGMAP, namespace=ns, labels={"app.kubernetes.io/managed-by": "sigops"}),
        data={"pubkeys.json": doc})
    try:
        existing = kube.core.read_namespaced_config_map(PUBKEYS_CONFIGMAP, ns)
        old = json.loads((existing.data or {}).get("pubkeys.json", "{}")).get("keys", {})
        merged = {**old, **pubkeys_document([key])["keys"]}  # keep published older keys
        cm.data = {"pubkeys.json": json.dumps({"keys": merged}, sort_keys=True)}
        if (existing.data or {}).get("pubkeys.json") != cm.data["pubkeys.json"]:
            kube.core.replace_namespaced_config_map(PUBKEYS_CONFIGMAP, ns, cm)
    except ApiException as e:
        if e.status != 404:
            raise
        kube.core.create_namespaced_config_map(ns, cm)
    return key
