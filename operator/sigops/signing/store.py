"""The operator's own Ed25519 signing key (Secret) and its published public keys (ConfigMap).

Created on first start; an observer verifies any signal in a status with
``sigops signal verify --pubkeys <(kubectl get cm sigops-signal-pubkeys -o
jsonpath='{.data.pubkeys\\.json}') SIGNAL.json``.
"""

from __future__ import annotations

import json

from ..core.keys import ED25519, Key, generate_key, key_from_entry
from ..core.signals import pubkeys_document
from ..kube.api import Conflict, Kube, secret_strings

__all__ = ["SIGNING_SECRET", "PUBKEYS_CONFIGMAP", "ensure_signing_key"]

SIGNING_SECRET = "sigops-signing-key"
PUBKEYS_CONFIGMAP = "sigops-signal-pubkeys"


def ensure_signing_key(kube: Kube, ns: str) -> Key:
    """Load the signing key, creating it (and the pubkeys ConfigMap) on first start.

    Two operators starting at once: the second create gets Conflict and reads the first's key.
    """
    kube.ensure_namespace(ns)
    sec = kube.read_secret(ns, SIGNING_SECRET)
    if sec is None:
        key = generate_key(ED25519, state="active")
        try:
            kube.write_secret(ns, SIGNING_SECRET, {"key.json": json.dumps(key.to_entry())}, None,
                              labels={"app.kubernetes.io/managed-by": "sigops"})
        except Conflict:
            sec = kube.read_secret(ns, SIGNING_SECRET)
    if sec is not None:
        key = key_from_entry(json.loads(secret_strings(sec)["key.json"]))
    _publish(kube, ns, key)
    return key


def _publish(kube: Kube, ns: str, key: Key, attempts: int = 3) -> None:
    """Add ``key`` to the pubkeys ConfigMap, keeping the keys published before it (an
    observer must still verify older records). A concurrent writer makes us read again."""
    for attempt in range(attempts):
        existing = kube.read_config_map(ns, PUBKEYS_CONFIGMAP)
        old = json.loads(((existing.data or {}) if existing else {}).get("pubkeys.json", "{}"))
        merged = {**old.get("keys", {}), **pubkeys_document([key])["keys"]}
        # Other entries (``revoked``: key ids an admin revoked, and since when) are kept.
        doc = json.dumps({**old, "keys": merged}, sort_keys=True)
        if existing is not None and (existing.data or {}).get("pubkeys.json") == doc:
            return
        try:
            kube.write_config_map(ns, PUBKEYS_CONFIGMAP, {"pubkeys.json": doc}, existing)
            return
        except Conflict:
            if attempt == attempts - 1:
                raise
