"""An in-memory :class:`sigops.kube.door.KubeDoor` for the unit tier.

It behaves as the real API server does where the reconcilers depend on it, and
``tests/integration/test_kube_contract.py`` runs the same assertions on both: a missing object
reads as None; a create of an existing object and a replace with a stale resourceVersion are a
``Conflict``; a delete of a missing Secret is quiet; a status patch is a JSON merge patch of
``status`` that leaves the spec alone. A replaced Deployment's rollout is done at once (no
kubelet here); pods exist only where a test adds them. ``writes`` records every write, so a
test can check an invariant after each one.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from sigops.kube.api import Conflict, Forbidden, NotFound, b64, unb64

__all__ = ["MemoryKube"]


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: dicts merge, None deletes, anything else replaces."""
    out = dict(into)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class MemoryKube:
    def __init__(self, on_write: Callable[[str], None] | None = None) -> None:
        self._rv = itertools.count(1)
        self.secrets: dict[tuple[str, str], client.V1Secret] = {}
        self.config_maps: dict[tuple[str, str], client.V1ConfigMap] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.crs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.replica_sets: dict[str, list[client.V1ReplicaSet]] = {}
        self.events: list[dict[str, Any]] = []
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.nodes: dict[str, dict[str, str]] = {}
        self.writes: list[str] = []
        self.on_write = on_write

    def _wrote(self, what: str) -> None:
        self.writes.append(what)
        if self.on_write is not None:
            self.on_write(what)

    # -- Secrets --------------------------------------------------------------------------------

    def read_secret(self, ns: str, name: str) -> client.V1Secret | None:
        sec = self.secrets.get((ns, name))
        return copy.deepcopy(sec)

    def secret_value(self, ns: str, name: str, key: str) -> str | None:
        sec = self.secrets.get((ns, name))
        value = (sec.data or {}).get(key) if sec is not None else None
        return None if value is None else unb64(value)

    def write_secret(self, ns: str, name: str, data: dict[str, str],
                     existing: client.V1Secret | None, labels: dict[str, str] | None = None,
                     annotations: dict[str, str] | None = None) -> client.V1Secret:
        current = self.secrets.get((ns, name))
        if existing is None and current is not None:
            raise Conflict(409, f"write secret {ns}/{name}: 409 AlreadyExists")
        if existing is not None:
            if current is None:
                raise NotFound(404, f"write secret {ns}/{name}: 404 Not Found")
            if existing.metadata.resource_version != current.metadata.resource_version:
                raise Conflict(409, f"write secret {ns}/{name}: 409 Conflict")
            if labels is None:
                labels = current.metadata.labels
        sec = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=ns, labels=labels,
                                         annotations=annotations,
                                         resource_version=str(next(self._rv))),
            type="Opaque", data={k: b64(v) for k, v in data.items()})
        self.secrets[(ns, name)] = sec
        self._wrote(f"secret {ns}/{name}")
        return copy.deepcopy(sec)

    def delete_secret(self, ns: str, name: str) -> None:
        if self.secrets.pop((ns, name), None) is not None:
            self._wrote(f"delete secret {ns}/{name}")

    # -- ConfigMaps -----------------------------------------------------------------------------

    def read_config_map(self, ns: str, name: str) -> client.V1ConfigMap | None:
        return copy.deepcopy(self.config_maps.get((ns, name)))

    def write_config_map(self, ns: str, name: str, data: dict[str, str],
                         existing: client.V1ConfigMap | None,
                         annotations: dict[str, str] | None = None) -> client.V1ConfigMap:
        current = self.config_maps.get((ns, name))
        if existing is None and current is not None:
            raise Conflict(409, f"write configmap {ns}/{name}: 409 AlreadyExists")
        if existing is not None and (current is None or existing.metadata.resource_version
                                     != current.metadata.resource_version):
            raise Conflict(409, f"write configmap {ns}/{name}: 409 Conflict")
        cm = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, namespace=ns, annotations=annotations,
                                         resource_version=str(next(self._rv))),
            data=dict(data))
        self.config_maps[(ns, name)] = cm
        self._wrote(f"configmap {ns}/{name}")
        return copy.deepcopy(cm)

    # -- Deployments and pods -------------------------------------------------------------------

    def add_deployment(self, ns: str, body: dict[str, Any]) -> None:
        dep = copy.deepcopy(body)
        dep["metadata"].update(namespace=ns, generation=1, resourceVersion=str(next(self._rv)),
                               uid=f"uid-{next(self._rv)}")
        self.deployments[(ns, dep["metadata"]["name"])] = self._rolled_out(dep)
        # Its ReplicaSet, as the deployment controller makes one: "<name>-rs", owned by UID.
        self.replica_sets.setdefault(ns, []).append(client.V1ReplicaSet(
            metadata=client.V1ObjectMeta(
                name=f"{dep['metadata']['name']}-rs", namespace=ns,
                creation_timestamp=datetime(2026, 12, 6, tzinfo=UTC),
                annotations={"deployment.kubernetes.io/revision": "1"},
                labels=dict(dep["spec"]["selector"]["matchLabels"]),
                owner_references=[client.V1OwnerReference(
                    api_version="apps/v1", kind="Deployment", name=dep["metadata"]["name"],
                    uid=dep["metadata"]["uid"], controller=True)]),
            spec=client.V1ReplicaSetSpec(
                selector=client.V1LabelSelector(
                    match_labels=dict(dep["spec"]["selector"]["matchLabels"])),
                template=client.V1PodTemplateSpec.from_dict(
                    copy.deepcopy(dep["spec"]["template"])))))

    @staticmethod
    def _rolled_out(dep: dict[str, Any]) -> dict[str, Any]:
        want = dep["spec"].get("replicas", 1)
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"],
                         "replicas": want, "updatedReplicas": want, "availableReplicas": want}
        return dep

    def read_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.deployments.get((ns, name)))

    def replace_deployment(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        current = self.deployments.get((ns, name))
        if current is None:
            raise NotFound(404, f"replace deployment {ns}/{name}: 404 Not Found")
        rv = body["metadata"].get("resourceVersion")
        if rv is not None and rv != current["metadata"]["resourceVersion"]:
            raise Conflict(409, f"replace deployment {ns}/{name}: 409 Conflict")
        dep = copy.deepcopy(body)
        dep["metadata"] = {**current["metadata"], "resourceVersion": str(next(self._rv))}
        if dep["spec"] != current["spec"]:
            dep["metadata"]["generation"] = current["metadata"]["generation"] + 1
        self.deployments[(ns, name)] = self._rolled_out(dep)
        self._wrote(f"deployment {ns}/{name}")
        return copy.deepcopy(dep)

    def list_replica_sets(self, ns: str, selector: str) -> list[client.V1ReplicaSet]:
        want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
        return [copy.deepcopy(rs) for rs in self.replica_sets.get(ns, [])
                if all((rs.metadata.labels or {}).get(k) == v for k, v in want.items())]

    def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods.get(ns, []))

    def pod_log_lines(self, ns: str, pod: str, container: str | None, since_seconds: int,
                      limit_bytes: int, max_line: int = 8192) -> Iterator[str]:
        yield from self.logs.get((ns, pod), [])

    def exec_output(self, ns: str, pod: str, container: str | None, command: list[str],
                    limit_bytes: int, timeout: float = 15.0) -> tuple[bytes, str, str]:
        raise Forbidden(403, f"exec in pod {ns}/{pod}: 403 (no exec in memory)")

    def list_events(self, ns: str) -> list[dict[str, Any]]:
        return []  # Events sigops reads as evidence: none here (its own are in .events)

    def list_nodes(self) -> list[client.V1Node]:
        return [client.V1Node(metadata=client.V1ObjectMeta(name=n, labels=dict(labels)))
                for n, labels in self.nodes.items()]

    def label_node(self, name: str, key: str, value: str) -> None:
        self.nodes.setdefault(name, {})[key] = value
        self._wrote(f"node {name}")

    def create_cr(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        if not obj["metadata"].get("name"):
            obj["metadata"]["name"] = obj["metadata"].get("generateName", "x-") + str(
                next(self._rv))
        return self.add_cr(ns, plural, obj)

    # -- custom resources and Events ------------------------------------------------------------

    def add_cr(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        name = obj["metadata"]["name"]
        if (ns, plural, name) in self.crs:
            raise Conflict(409, f"create {plural} {ns}/{name}: 409 AlreadyExists")
        n = next(self._rv)
        obj["metadata"].update(namespace=ns, uid=f"uid-{n}", generation=1,
                               resourceVersion=str(n),
                               creationTimestamp=f"2026-12-06T00:00:{n % 60:02d}Z")
        self.crs[(ns, plural, name)] = obj
        return copy.deepcopy(obj)

    def list_cr(self, ns: str, plural: str, selector: str | None = None
                ) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (n, p, _), o in sorted(self.crs.items())
                if n == ns and p == plural]

    def get_cr(self, ns: str, plural: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.crs.get((ns, plural, name)))

    def patch_status(self, ns: str, plural: str, name: str, status: dict[str, Any]) -> None:
        obj = self.crs.get((ns, plural, name))
        if obj is None:
            raise NotFound(404, f"patch status of {plural} {ns}/{name}: 404 Not Found")
        obj["status"] = _merge(obj.get("status") or {}, status)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def event(self, obj: dict[str, Any], reason: str, message: str,
              type_: str = "Normal") -> None:
        self.events.append({"object": obj["metadata"]["name"], "reason": reason,
                            "message": message[:1024], "type": type_})
