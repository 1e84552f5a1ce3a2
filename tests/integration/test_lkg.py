"""Last-known-good snapshots (scenario E's rollback target) are taken only of a state that is
known good: not while a rollout is under way, not while a rotation holds the keyring."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from sigops.backend.deployment import Backend
from sigops.backend.lkg import read_snapshot, take_snapshot
from sigops.core.keys import HMAC
from sigops.kube.api import Kube
from tests.support import make_backend, wait_for

DEP = "fractal-lba-backend"


def test_no_snapshot_mid_rollout_or_while_a_rotation_holds_the_ring(api: Any,
                                                                    namespace: str) -> None:
    kube = Kube(api)
    make_backend(api, namespace, HMAC)  # replicas 0: its rollout is complete at once
    backend = Backend(kube, namespace, DEP)
    wait_for(lambda: (kube.read_deployment(namespace, DEP) or {}).get("status", {})
             .get("observedGeneration"), what="the deployment controller")
    ring = backend.import_ring(HMAC, kube.read_deployment(namespace, DEP) or {})
    ring.lock = {"name": "rot", "uid": "u-1"}
    backend.write_ring(ring, HMAC, None)
    assert take_snapshot(kube, namespace, DEP) is False, "a rotation holds the keyring"
    assert read_snapshot(kube, namespace, DEP) is None
    held, existing = backend.read_ring()
    assert held is not None
    held.lock = None
    backend.write_ring(held, HMAC, existing)
    # A template younger than the soak time is not known good yet.
    assert take_snapshot(kube, namespace, DEP, min_age=3600) is False
    assert take_snapshot(kube, namespace, DEP) is True
    first = read_snapshot(kube, namespace, DEP)
    assert first is not None

    # A new template on a replica that can never become available (no node here): the
    # rollout is not done, so the new template is not known good and not snapshotted.
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment(DEP, namespace)
    dep.spec.replicas = 1
    dep.spec.template.spec.containers[0].env.append(client.V1EnvVar(name="X", value="1"))
    apps.replace_namespaced_deployment(DEP, namespace, dep)
    wait_for(lambda: apps.read_namespaced_deployment(DEP, namespace).status.observed_generation
             == apps.read_namespaced_deployment(DEP, namespace).metadata.generation,
             what="the new generation observed")
    assert take_snapshot(kube, namespace, DEP) is False
    assert read_snapshot(kube, namespace, DEP) == first
