"""Secrets never leak (runs last in this folder): every operator log of the session, every
``*.log`` of this suite's tests, and every Event, KeyRotation and SignatureIncident (status,
metadata, annotations), ConfigMap and Deployment annotation set left in the cluster, searched
for every piece of key material the suite generated or found in a Secret (HMAC secrets,
Ed25519 seeds, the operators' own signing keys, the alert token), in the forms a leak would
take.

Each test that used a namespace was already scanned before its namespace was deleted (see
conftest.py); this is the sweep over what is left, the whole session's logs included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.reliability import kit


def test_no_key_material_anywhere(api: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    core = client.CoreV1Api(api)
    namespaces = [n.metadata.name for n in core.list_namespace().items]
    for ns in namespaces:  # every Secret left in the cluster, operators' signing keys too
        kit.REGISTRY.harvest_secrets(api, ns)
    assert len(kit.REGISTRY) > 0
    docs = kit.cluster_documents(api, namespaces)
    # Every operator log of the session, and every log file of this suite's tests.
    base = Path(str(tmp_path_factory.getbasetemp()))
    paths = {p for p in base.rglob("operator.log")}
    for d in kit.LOG_DIRS:
        paths |= set(d.rglob("*.log"))
    logs = [(str(p), p.read_text(errors="replace")) for p in sorted(paths) if p.is_file()]
    n, size, found = kit.scan([*docs, *logs])
    per_test = kit.FIGURES.get("leak scan (per test)", {})
    kit.figure("leak scan (session end)", key_material_values_tracked=len(kit.REGISTRY),
               namespaces=len(namespaces), cluster_documents=len(docs), log_files=len(logs),
               bytes_scanned=size, findings=len(found),
               per_test_documents=per_test.get("documents", 0),
               per_test_bytes=per_test.get("bytes", 0),
               per_test_findings=per_test.get("findings", 0))
    assert not found, f"key material leaked: {found[:20]}"
    assert n == len(docs) + len(logs)
